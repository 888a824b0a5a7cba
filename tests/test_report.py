from __future__ import annotations

import html
import json
import math
import random
import re
import shutil
import struct
import subprocess
import zlib
from typing import NamedTuple

import numpy as np
import pytest

from pnngraph.exceptions import ConfigError
from pnngraph.report import (
    PHASES,
    RunRecord,
    TaskRecord,
    busy_fractions,
    phase_of,
    records_from_slots,
    records_from_task_stream,
    render_report,
    render_run,
    step_makespans,
    step_of,
)
from pnngraph.run.session import live_workers

TOKEN = "1a2b3c4d"
SECTION_TITLES = [
    "Schedule: planned vs measured", "Planned schedule", "Measured schedule",
    "Makespan per step: predicted vs measured", "Relative error", "Loss per step",
    "Accuracy per epoch", "Worker use", "Busy fraction", "Bytes moved",
]


class Slot(NamedTuple):  # the shape of schedulers.Slot
    processor: str
    start: float
    finish: float


# --- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "phase", "step"), [
    ((f"grad-dense-{TOKEN}", 3, 1, 0), "grad", 3),
    ((f"forward-dense-{TOKEN}", 3, 0, 1, 0), "forward", 3),
    ((f"backward-conv-dense-{TOKEN}", 0, 0, 1, 1), "backward", 0),
    ((f"aggregate-dense-{TOKEN}", 5, 0, 1, 0), "aggregate", 5),
    ((f"update-dense-{TOKEN}", 7, 0), "update", 7),
    ((f"steps-dense-{TOKEN}", 40), "steps", 40),
    ((f"local-dense-{TOKEN}", 4, 2), "local", 4),
    ((f"average-dense-{TOKEN}", 9), "average", 9),
    ((f"transfer-dense-{TOKEN}", 2, 0), "other", None),  # transfers are records, not keys
    ((f"params-dense-{TOKEN}", 2, 0), "params", 2),
    ((f"tohost-dense-{TOKEN}", 2, 1), "tohost", 2),
    ((f"data-{TOKEN}", 0), "other", None),
    ((f"init-{TOKEN}", 1), "other", None),
    ((f"grad-dense-{TOKEN}", "3"), "grad", None),
    ((f"grad-dense-{TOKEN}", True), "grad", None),
    ((f"update-dense-{TOKEN}",), "update", None),
    ("aggregate-conv-dense", "aggregate", None),
    (str((f"forward-dense-{TOKEN}", 3, 0)), "forward", None),
    ("finalize-0123456789abcdef0123456789abcdef", "other", None),
    ("forwardish-dense", "other", None),
    (b"update-dense", "update", None),
    (None, "other", None),
])
def test_phase_and_step_of_keys(key, phase, step):
    assert phase_of(key) == phase
    assert step_of(key) == step


def test_step_of_numpy_int_index_is_a_python_int():
    step = step_of((f"update-dense-{TOKEN}", np.int64(4), 0))
    assert step == 4 and type(step) is int


def test_every_phase_word_is_recognised():
    from pnngraph.compile.keys import PHASES as KEY_PHASES

    for phase in KEY_PHASES:  # every phase a key can have gets its colour, or "other"
        assert phase_of((f"{phase}-dense-{TOKEN}", 0)) == (phase if phase in PHASES else "other")
    assert {"data", "init"} == set(KEY_PHASES) - set(PHASES)  # inputs, not tasks that run


# --- records --------------------------------------------------------------------------------


def test_task_record_checks_its_fields():
    TaskRecord("k", "grad", "w", 1.0, 1.0, step=0)  # zero length is fine
    with pytest.raises(ConfigError, match="stop") as err:
        TaskRecord("k", "grad", "w", 2.0, 1.0)
    assert isinstance(err.value, ValueError) and err.value.got == 1.0
    with pytest.raises(ConfigError, match="phase"):
        TaskRecord("k", "fwd", "w", 0.0, 1.0)
    with pytest.raises(ConfigError, match="finite"):
        TaskRecord("k", "grad", "w", 0.0, math.nan)
    with pytest.raises(ConfigError, match="step"):
        TaskRecord("k", "grad", "w", 0.0, 1.0, step=True)
    with pytest.raises(TypeError, match="worker"):
        TaskRecord("k", "grad", ("cpu", 0), 0.0, 1.0)  # type: ignore[arg-type]


def test_records_from_slots():
    slots = {
        (f"update-dense-{TOKEN}", 0, 0): Slot("cpu-0", 0.5, 0.6),
        (f"grad-dense-{TOKEN}", 0, 1, 0): ("gpu-0", 0.0, 0.25),
        (f"grad-dense-{TOKEN}", 0, 0, 0): (("cpu", 0), 0.0, 0.5),
    }
    records = records_from_slots(slots)
    assert [(r.phase, r.worker, r.start, r.stop, r.step) for r in records] == [
        ("grad", "('cpu', 0)", 0.0, 0.5, 0),
        ("grad", "gpu-0", 0.0, 0.25, 0),
        ("update", "cpu-0", 0.5, 0.6, 0),
    ]
    assert records[0].key == str((f"grad-dense-{TOKEN}", 0, 0, 0))
    assert records_from_slots({}) == []


@pytest.mark.parametrize(("slots", "error"), [
    ({"a": ("w", 1.0, 0.5)}, ConfigError),
    ({"a": ("w", 0.0)}, ConfigError),
    ({"a": ("w", "0", 1.0)}, ConfigError),
    ([("w", 0.0, 1.0)], TypeError),
])
def test_records_from_slots_rejects_bad_slots(slots, error):
    with pytest.raises(error):
        records_from_slots(slots)


def stream_record(key, worker, *startstops):
    """A record as ``distributed.get_task_stream`` gives it (captured from 2026.8.0)."""
    return {"key": key, "worker": worker, "nbytes": 800, "status": "OK", "metadata": {},
            "thread": 1, "typename": "numpy.ndarray", "startstops": list(startstops)}


def test_records_from_task_stream_real_format():
    t0 = 1_795_977_770.0
    w0, w1 = "inproc://192.0.2.2/11639/4", "inproc://192.0.2.2/11639/6"
    stream = [
        stream_record((f"grad-dense-{TOKEN}", 0, 1, 0), w1,
                      {"action": "compute", "start": t0 + 0.01, "stop": t0 + 0.05}),
        stream_record((f"grad-dense-{TOKEN}", 0, 0, 0), w0,
                      {"action": "disk-read", "start": t0, "stop": t0 + 0.001},
                      {"action": "compute", "start": t0 + 0.002, "stop": t0 + 0.04}),
        stream_record((f"aggregate-dense-{TOKEN}", 0, 0, 0, 0), w0,
                      {"action": "transfer", "source": w1, "start": t0 + 0.05, "stop": t0 + 0.06},
                      {"action": "compute", "start": t0 + 0.06, "stop": t0 + 0.07}),
        stream_record("finalize-abc", w0, {"action": "compute", "start": t0 + 0.08,
                                           "stop": t0 + 0.09}),
    ]
    records = records_from_task_stream(stream)
    assert [(r.phase, r.worker, r.step) for r in records] == [
        ("grad", w0, 0), ("grad", w1, 0), ("transfer", w0, 0), ("aggregate", w0, 0),
        ("other", w0, None),
    ]
    assert records[0].start == pytest.approx(0.0)  # relative to the earliest kept start
    assert records[2].key == str((f"aggregate-dense-{TOKEN}", 0, 0, 0, 0))
    assert [r.seconds for r in records] == pytest.approx([0.038, 0.04, 0.01, 0.01, 0.01],
                                                         abs=1e-6)
    assert records_from_task_stream([]) == []


@pytest.mark.parametrize(("stream", "error"), [
    ([{"key": "a", "worker": "w"}], ConfigError),
    ([stream_record("a", "w", {"action": "compute", "start": 1.0})], ConfigError),
    ([stream_record("a", "w", {"action": "compute", "start": 2.0, "stop": 1.0})], ConfigError),
    ([stream_record("a", "w", {"action": "compute", "start": "x", "stop": 1.0})], ConfigError),
    ({"key": "a"}, TypeError),
])
def test_records_from_task_stream_rejects_bad_records(stream, error):
    with pytest.raises(error):
        records_from_task_stream(stream)


def make(n):
    return np.ones(n)


def add(a, b):
    return a + b


@pytest.mark.cluster
def test_records_from_task_stream_on_a_local_cluster():
    distributed = pytest.importorskip("distributed")
    # dashboard_address=None still serves the scheduler's HTTP routes on port 8787 (and warns when
    # that port is taken, e.g. by another test run): a free port instead, dashboard still off
    # (":0" would bind every interface)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    ) as cluster, distributed.Client(cluster) as client:
        w0, w1 = list(live_workers(client))
        with distributed.get_task_stream(client) as ts:
            a = client.submit(make, 100_000, key=(f"grad-dense-{TOKEN}", 0, 0, 0), workers=w0)
            b = client.submit(make, 100_000, key=(f"grad-dense-{TOKEN}", 0, 1, 0), workers=w1)
            c = client.submit(add, a, b, key=(f"aggregate-dense-{TOKEN}", 0, 0, 0, 0), workers=w0)
            assert c.result().sum() == 200_000
    records = records_from_task_stream(ts.data)
    by_phase = {phase: [r for r in records if r.phase == phase] for phase in PHASES}
    assert sorted(r.worker for r in by_phase["grad"]) == [w0, w1]
    assert [r.worker for r in by_phase["aggregate"]] == [w0]
    assert [r.worker for r in by_phase["transfer"]] == [w0]  # b's result moved to w0
    assert {r.step for r in records} == {0}
    # the stream's own intervals, counted from the earliest start (not compared across workers:
    # each worker shifts its times by its own estimate of its clock's offset to the scheduler,
    # which a loaded machine puts milliseconds apart)
    intervals = sorted((s["start"], s["stop"]) for rec in ts.data for s in rec["startstops"]
                       if s["action"] in ("compute", "transfer"))
    t0 = intervals[0][0]
    assert sorted((r.start, r.stop) for r in records) == [(a - t0, b - t0) for a, b in intervals]
    assert min(r.start for r in records) == 0.0
    assert all(0.0 <= r.start <= r.stop for r in records)


def test_step_makespans():
    records = [
        TaskRecord("a", "grad", "w0", 0.0, 1.0, step=0),
        TaskRecord("b", "grad", "w1", 0.5, 1.5, step=0),
        TaskRecord("c", "update", "w0", 2.0, 2.25, step=1),
        TaskRecord("d", "other", "w0", 0.0, 10.0),
    ]
    assert step_makespans(records) == {0: 1.5, 1: 0.25}
    assert step_makespans([]) == {}
    with pytest.raises(TypeError):
        step_makespans([("a", "grad", "w0", 0.0, 1.0)])  # type: ignore[list-item]


def test_busy_fractions_are_fractions_of_the_wall_span():
    records = [
        TaskRecord("a", "grad", "w0", 0.0, 2.0), TaskRecord("b", "grad", "w0", 1.0, 3.0),
        TaskRecord("c", "grad", "w0", 3.5, 4.0), TaskRecord("t", "transfer", "w1", 0.0, 4.0),
    ]
    assert busy_fractions(records) == {"w0": 0.875, "w1": 0.0}
    assert busy_fractions([]) == {}


# --- the HTML report --------------------------------------------------------------------------


def fake_run(steps: int = 8, seed: int = 0) -> dict:
    """A data-parallel run on a CPU and a GPU worker: the plan as slots, the run as task stream."""
    rng = random.Random(seed)
    cpu, gpu = "tcp://10.0.0.1:40311", "tcp://10.0.0.2:40377"
    slots: dict[tuple, tuple[str, float, float]] = {}
    stream: list[dict] = []
    t, m = 0.0, 1_795_977_770.0
    for s in range(steps):
        for j, (proc, worker, cost) in enumerate([("cpu-0", cpu, 0.040), ("gpu-0", gpu, 0.020)]):
            key = (f"grad-dense-{TOKEN}", s, j, 0)
            slots[key] = (proc, t, t + cost)
            took = cost * rng.uniform(1.1, 1.4)
            stream.append(stream_record(key, worker,
                                        {"action": "compute", "start": m, "stop": m + took}))
        t, m = t + 0.040, m + 0.055
        moved = {"action": "transfer", "source": gpu, "start": m, "stop": m + 0.004}
        m += 0.005
        for phase, index, cost in [("aggregate", (s, 0, 0, 0), 0.004), ("update", (s, 0), 0.003)]:
            tail_key = (f"{phase}-dense-{TOKEN}", *index)
            slots[tail_key] = ("cpu-0", t, t + cost)
            took = cost * rng.uniform(1.2, 1.8)
            ss = [moved] if phase == "aggregate" else []
            stream.append(stream_record(tail_key, cpu, *ss, {"action": "compute", "start": m,
                                                          "stop": m + took}))
            t, m = t + cost, m + took + 0.002
    return {
        "title": "mlp on 2 workers",
        "planned": records_from_slots(slots),
        "measured": records_from_task_stream(stream),
        "losses": [2.3 * 0.8**s + 0.05 * rng.random() for s in range(steps)],
        "accuracy": [(0, 0.41), (1, 0.73), (2, 0.86)],
        "bytes_moved": {cpu: 8 * 4_000_000, gpu: 0},
        "meta": {"model": "mlp 784-128-10", "strategy": "data parallel, S=2", "scheduler": "heft",
                 "workers": "1 CPU + 1 GPU"},
    }


def page_texts(page: str) -> str:
    """Every ``text`` of the Bokeh document embedded in a page (Div contents, chart titles)."""
    found = re.search(r'<script type="application/json" id="[^"]+">(.*?)</script>', page, re.S)
    assert found is not None, "no Bokeh document in the page"
    texts: list[str] = []

    def walk(x):
        if isinstance(x, dict):
            texts.extend(v for k, v in x.items() if k == "text" and isinstance(v, str))
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(json.loads(html.unescape(found.group(1))))
    return "\n".join(texts)


def page_document(page: str) -> dict:
    """The Bokeh document embedded in a page, as JSON."""
    found = re.search(r'<script type="application/json" id="[^"]+">(.*?)</script>', page, re.S)
    assert found is not None, "no Bokeh document in the page"
    (doc,) = json.loads(html.unescape(found.group(1))).values()
    return doc


def page_objects(page: str, name: str | None = None) -> list[dict]:
    """Every Bokeh model of a page's document (of type ``name`` when given), depth first."""
    found: list[dict] = []

    def walk(x):
        if isinstance(x, dict):
            if x.get("type") == "object" and name in (None, x.get("name")):
                found.append(x)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(page_document(page)["roots"])
    return found


def curves(page: str) -> list[tuple[list, list]]:
    """(x, y) of every curve of a page (the data sources with exactly x and y), in page order:
    the loss per step, then the accuracy per epoch."""
    columns = [dict(o["attributes"]["data"]["entries"])
               for o in page_objects(page, "ColumnDataSource")]
    return [(c["x"], c["y"]) for c in columns if set(c) == {"x", "y"}]


def test_render_report_writes_every_section(tmp_path):
    run = fake_run()
    path = render_report(tmp_path / "report.html", **run)
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    texts = page_texts(text)
    for title in [*SECTION_TITLES, "mlp on 2 workers", "data parallel, S=2", "heft"]:
        assert title in texts, title
    assert "<title>mlp on 2 workers</title>" in text
    assert "cdn.bokeh.org" not in text  # inline resources: the machines have no internet
    assert "Bokeh.embed.embed_items" in text


def test_render_report_leaves_out_missing_sections(tmp_path):
    run = fake_run()
    only_loss = page_texts(render_report(tmp_path / "a.html", losses=run["losses"]).read_text())
    assert "Loss per step" in only_loss
    for title in SECTION_TITLES:
        if title != "Loss per step":
            assert title not in only_loss, title
    serial = page_texts(render_report(tmp_path / "b.html", measured=run["measured"], losses=[],
                                      accuracy=None, bytes_moved={}, meta={}).read_text())
    for title in ["Measured schedule", "Makespan per step", "Busy fraction"]:
        assert title in serial, title
    for title in ["Planned schedule", "Relative error", "Loss per step", "Accuracy", "Bytes moved"]:
        assert title not in serial, title
    empty = page_texts(render_report(tmp_path / "c.html", title="nothing yet").read_text())
    assert "nothing yet" in empty and "Schedule" not in empty


def test_render_report_escapes_metadata(tmp_path):
    page = render_report(tmp_path / "r.html", meta={"model": "<b>mlp</b>"}).read_text("utf-8")
    texts = page_texts(page)  # a Div's text is HTML: the value must arrive escaped in it
    assert "&lt;b&gt;mlp&lt;/b&gt;" in texts and "<b>mlp</b>" not in texts


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"planned": [("k", "grad", "w", 0.0, 1.0)]}, TypeError),
    ({"measured": "not records"}, TypeError),
    ({"losses": [1.0, "x"]}, ConfigError),
    ({"losses": 1.0}, TypeError),
    ({"accuracy": [(0.5, 0.9)]}, ConfigError),
    ({"accuracy": [(0, 0.9, 1)]}, ConfigError),
    ({"accuracy": [(0, "high")]}, ConfigError),
    ({"bytes_moved": {"w": -1}}, ConfigError),
    ({"bytes_moved": {"w": 1.5}}, ConfigError),
    ({"bytes_moved": [("w", 1)]}, TypeError),
    ({"meta": ["model"]}, TypeError),
    ({"title": None}, TypeError),
])
def test_render_report_rejects_bad_input(tmp_path, kwargs, error):
    with pytest.raises(error):
        render_report(tmp_path / "r.html", **kwargs)
    assert not (tmp_path / "r.html").exists()


# --- in a browser -----------------------------------------------------------------------------


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium"):
        if found := shutil.which(name):
            return found
    return None


def open_in_chromium(html_path, tmp_path) -> tuple[list[str], bytes]:
    """Load a page headless: its console messages and a screenshot (PNG bytes)."""
    browser = find_chromium()
    if browser is None:
        pytest.skip("no Chromium found (apt-get install -y chromium)")
    shot = tmp_path / f"{html_path.stem}.png"
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1400,1800",
         html_path.resolve().as_uri()],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert shot.exists(), done.stderr[-2000:]
    return [line for line in done.stderr.splitlines() if "CONSOLE" in line], shot.read_bytes()


def console_errors(console: list[str]) -> list[str]:
    return [line for line in console if "Uncaught" in line or "Error" in line]


def unfilter(kind: int, line: bytearray, prev: bytearray, bpp: int) -> bytearray:
    """Undo one PNG row filter (RFC 2083, section 6) in place."""
    n = len(line)
    if kind == 1:  # sub
        for i in range(bpp, n):
            line[i] = (line[i] + line[i - bpp]) & 255
    elif kind == 2:  # up
        line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
    elif kind == 3:  # average
        for i in range(n):
            line[i] = (line[i] + (((line[i - bpp] if i >= bpp else 0) + prev[i]) >> 1)) & 255
    elif kind == 4:  # paeth
        for i in range(bpp):
            line[i] = (line[i] + prev[i]) & 255
        for i in range(bpp, n):
            a, b, c = line[i - bpp], prev[i], prev[i - bpp]
            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    return line


def png_colours(data: bytes) -> set[tuple[int, int, int]]:
    """The distinct RGB colours of an 8-bit non-interlaced RGB(A) PNG, by the standard library."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, bytearray(), None
    while pos < len(data):
        (n,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data[pos + 8 : pos + 8 + n])
        elif kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + n]
        pos += 12 + n
    assert header is not None
    width, height, depth, colour_type, _, _, interlace = header
    assert (depth, interlace) == (8, 0) and colour_type in (2, 6), header
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(bytes(idat)), width * bpp + 1
    prev, colours = bytearray(stride - 1), set[tuple[int, int, int]]()
    for y in range(height):
        row = bytearray(raw[y * stride + 1 : (y + 1) * stride])
        prev = unfilter(raw[y * stride], row, prev, bpp)
        colours.update(zip(prev[0::bpp], prev[1::bpp], prev[2::bpp], strict=True))
    return colours


@pytest.mark.slow
def test_report_renders_in_chromium(tmp_path):
    path = render_report(tmp_path / "report.html", **fake_run())
    console, png = open_in_chromium(path, tmp_path)
    assert console_errors(console) == []
    assert any("document idle" in line for line in console), console  # Bokeh finished rendering
    assert len(png_colours(png)) > 200  # bars, lines, text: far from a blank page


@pytest.mark.slow
def test_chromium_check_catches_a_broken_report(tmp_path):
    path = render_report(tmp_path / "report.html", losses=[1.0, 0.5])
    broken = tmp_path / "broken.html"
    text = path.read_text("utf-8")
    assert '"name":"Line"' in text
    broken.write_text(text.replace('"name":"Line"', '"name":"NoSuchGlyph"'), "utf-8")
    console, _ = open_in_chromium(broken, tmp_path)
    assert any("NoSuchGlyph" in line for line in console_errors(console)), console


# --- series as numpy arrays, the header table, the page width ---------------------------------


@pytest.mark.parametrize("losses", [
    np.array([2.5, 1.25, 0.5]), np.array([2.5, 1.25, 0.5], dtype=np.float32), (2.5, 1.25, 0.5),
    [np.float64(2.5), np.float32(1.25), 0.5],
], ids=["float64 array", "float32 array", "tuple", "numpy scalars"])
def test_render_report_takes_losses_as_arrays_and_any_sequence(tmp_path, losses):
    """`TrainingResult.losses` is a numpy array: it goes to the report as it is."""
    page = render_report(tmp_path / "r.html", losses=losses).read_text("utf-8")
    assert curves(page) == [([0, 1, 2], [2.5, 1.25, 0.5])]
    assert "Loss per step" in page_texts(page)


def test_render_report_takes_a_training_result_and_accuracy_arrays(tmp_path):
    import dask

    import pnngraph

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 4)), rng.integers(0, 2, 40)
    model = pnngraph.Sequential([pnngraph.Dense(4, 2)], input_shape=(4,))
    graph = pnngraph.build(model, (X, y), strategy=pnngraph.DataParallel(2), steps=3,
                           batch_size=20)
    (result,) = dask.compute(graph, scheduler="sync")
    assert isinstance(result.losses, np.ndarray)
    accuracy = np.array([[0, 0.5], [1, 0.75]])  # epochs in a float array beside the accuracies
    page = render_report(tmp_path / "r.html", losses=result.losses,
                         accuracy=accuracy).read_text("utf-8")
    assert curves(page) == [([0, 1, 2], result.losses.tolist()), ([0, 1], [0.5, 0.75])]
    record = RunRecord(losses=result.losses, accuracy=accuracy)
    assert record.losses == result.losses.tolist() and record.accuracy == [(0, 0.5), (1, 0.75)]
    assert RunRecord.from_json(record.to_json()) == record
    assert render_run(tmp_path / "run.html", record).exists()


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"losses": np.zeros((2, 2))}, ConfigError),      # rows are not numbers
    ({"losses": np.array(1.0)}, TypeError),            # a 0-d array is no sequence
    ({"losses": np.array(["a", "b"])}, ConfigError),
    ({"accuracy": np.array([[0.5, 0.9]])}, ConfigError),  # epoch 0.5
    ({"accuracy": np.array([0.9, 0.8])}, ConfigError),    # no epochs
])
def test_render_report_rejects_bad_arrays(tmp_path, kwargs, error):
    with pytest.raises(error):
        render_report(tmp_path / "r.html", **kwargs)


CLI_META = {  # what `pnngraph train` records, in the order the header shows it
    "model": "mlp", "widths": [64, 64], "data": "digits", "strategy": "DataParallel(2)",
    "workers": 2, "scheduler": "heft", "epochs": 20, "batch size": 32, "optimizer": "sgd",
    "learning rate": 0.1, "momentum": 0.9, "seed": 0, "wall seconds": 41.23456,
    "final train loss": 0.0312345, "final test loss": 0.0912345, "final test accuracy": 0.972222,
}


def header_rows(page: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(key, shown value) of every row of the header table, nested rows included, in order;
    and the keys whose value is a nested table."""
    (table,) = [t for t in page_texts(page).split("\n") if t.startswith("<table")]
    rows = re.findall(r"<tr><th[^>]*>([^<]*)</th><td[^>]*>(?!<table)([^<]*)</td>", table)
    nested = re.findall(r"<tr><th[^>]*>([^<]*)</th><td[^>]*><table", table)
    return [(html.unescape(k), html.unescape(v)) for k, v in rows], nested


def test_meta_table_shows_every_entry_well_known_first(tmp_path):
    shuffled = list(CLI_META.items())
    random.Random(3).shuffle(shuffled)
    meta = {"note": "<b>first try</b>", **dict(shuffled),
            "time": {"cluster start": 3.2, "training": 30.51, "report": 1.1}, "resumed": False,
            "samples": 1_437_000}
    rows, nested = header_rows(render_report(tmp_path / "r.html", meta=meta).read_text("utf-8"))
    keys = [k for k, _ in rows]
    assert keys == [*CLI_META, "note", "resumed", "samples", "cluster start", "training",
                    "report"]
    assert nested == ["time"]  # the mapping comes last, as a table of its own
    shown = dict(rows)
    assert shown["widths"] == "64, 64" and shown["learning rate"] == "0.1"
    assert shown["wall seconds"] == "41.23" and shown["final test accuracy"] == "0.9722"
    assert shown["final train loss"] == "0.03123" and shown["seed"] == "0"
    assert shown["samples"] == "1,437,000" and shown["resumed"] == "no"
    assert shown["training"] == "30.51 s" and shown["note"] == "<b>first try</b>"  # escaped


def test_meta_keys_match_in_any_spelling(tmp_path):
    meta = {"note": 1, "batch_size": 32, "LR": 0.01, "Model": "cnn", "test-accuracy": 0.5}
    rows, _ = header_rows(render_report(tmp_path / "r.html", meta=meta).read_text("utf-8"))
    assert [k for k, _ in rows] == ["Model", "batch_size", "LR", "test-accuracy", "note"]


def test_report_fills_the_page_width(tmp_path):
    """Every chart and text stretches to the page's width (no fixed pixel width), and so does
    the column that holds them: the page has no width of its own to be narrower than."""
    page = render_report(tmp_path / "r.html", **fake_run()).read_text("utf-8")
    (root,) = page_document(page)["roots"]
    assert root["name"] == "Column" and root["attributes"]["sizing_mode"] == "stretch_width"
    laid_out = [o for o in page_objects(page) if o["name"] in ("Figure", "Div", "Column")]
    assert len([o for o in laid_out if o["name"] == "Figure"]) >= 6
    for obj in laid_out:
        attrs = obj["attributes"]
        assert attrs.get("sizing_mode") == "stretch_width", (obj["name"], attrs.get("title"))
        assert "width" not in attrs, (obj["name"], attrs["width"])


def test_a_run_json_nested_too_deep_is_a_config_error(tmp_path):
    from pnngraph.exceptions import ConfigError
    from pnngraph.record import RunRecord

    path = tmp_path / "run.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="run.json: expected a file written by pnngraph train"):
        RunRecord.load(path)


def test_the_report_shows_shard_sizes_per_worker_per_chunk(tmp_path):
    chunks = [{"step": 4, "measured": 1.0, "predicted": 1.0,
               "shards": {"tcp://127.0.0.1:1": 200, "tcp://127.0.0.1:2": 200}},
              {"step": 8, "measured": 1.0, "predicted": 1.0,
               "shards": {"tcp://127.0.0.1:1": 300, "tcp://127.0.0.1:2": 100}}]
    page = page_texts(render_report(tmp_path / "s.html", chunks=chunks).read_text())
    assert "Shard size per worker per chunk" in page
    assert "<td>8</td><td>300</td><td>100</td>" in page
    plain = render_report(tmp_path / "p.html", chunks=[{k: v for k, v in c.items()
                                                        if k != "shards"} for c in chunks])
    assert "Shard size per worker" not in page_texts(plain.read_text())
