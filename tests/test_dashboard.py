"""The pnngraph page of the Dask dashboard: the scheduler's board, the page it draws, what fit
feeds it, the named data keys, and the page served by a `dask scheduler` started from the shell
and rendered in headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
from dask.utils import key_split
from distributed import Client

import pnngraph
from pnngraph.run import dashboard
from pnngraph.run.cluster import local_cluster
from tests.graph.conftest import make_data, make_mlp
from tests.shell import shell_cluster, wait_for
from tests.test_report import find_chromium, png_colours

A, B = "tcp://127.0.0.1:40001", "tcp://127.0.0.1:40002"
TOKEN = "1a2b3c4d"


def chunk(token=TOKEN, lo=0, hi=2, predicted=1.0, bars=(), marks=()):
    return ("chunk", {"token": token, "lo": lo, "hi": hi, "predicted": predicted,
                      "algorithm": "heft", "bars": list(bars), "marks": list(marks)})


def compute(start, stop):
    return [{"action": "compute", "start": start, "stop": stop}]


# --- the board and the page, no cluster -------------------------------------------------------


def test_the_board_follows_a_run_from_its_messages_and_the_tasks_that_finish():
    board = dashboard.Board()
    assert board.view()["title"] is None
    board.receive("r", [("begin", {"title": "data parallel, 2 shards", "total": 4, "first": 0})])
    update0, update1 = (f"update-dense-{TOKEN}", 0, 0), (f"update-dense-{TOKEN}", 1, 0)
    # a task finishing before its chunk's marks arrive still counts once they do
    board.record(update0, A, compute(100.0, 100.5))
    board.record(("grad-dense-ffffffff", 0, 0), A, compute(90.0, 91.0))  # another build
    board.record(("finalize-abc", 0), A, compute(0.0, 1.0))  # not a training graph's key
    board.receive("r", [chunk(bars=[("grad", A, 0.0, 0.25, 0), ("update", B, 0.25, 0.5, 0)],
                              marks=[(list(update0), 1), (update1, 1)])])
    view = board.view()
    assert view["step"] == 1 and view["total"] == 4 and view["left"] == pytest.approx(1.5)
    assert view["busy"] == {A: 0.5} and view["measured"] == [("update", A, 0.0, 0.5, 0)]
    board.record(update1, B, [{"action": "transfer", "start": 100.5, "stop": 100.6},
                              {"action": "compute", "start": 100.6, "stop": 101.0}])
    board.receive("r", [chunk(token="2b3c4d5e", lo=2, hi=4, predicted=3.0,
                              bars=[("grad", A, 0.0, 1.0, 2)]),
                        ("losses", {"offset": 0, "values": [0.9, 0.8, 0.7]})])
    view = board.view()
    # the second chunk's plan starts where the first one's prediction ends
    assert view["planned"][-1] == ("grad", A, 1.0, 2.0, 2)
    assert view["step"] == 3 and view["losses"] == [(0, 0.9), (1, 0.8), (2, 0.7)]
    assert view["left"] == pytest.approx(1.0)  # 4 s predicted for 4 steps, one step left
    assert ("transfer", B, 0.5, pytest.approx(0.6), 1) in view["measured"]
    assert view["chunks"] == 2 and view["algorithm"] == "heft"


def test_the_board_shows_the_run_that_began_last_and_keeps_a_few():
    board = dashboard.Board()
    for i in range(dashboard.MAX_RUNS + 2):
        board.receive(f"r{i}", [("begin", {"title": f"run {i}", "total": 2, "first": 0}),
                                chunk(token=f"{i:08x}")])
    assert board.view()["title"] == f"run {dashboard.MAX_RUNS + 1}"
    assert len(board.runs) == dashboard.MAX_RUNS and "r0" not in board.runs
    assert f"{0:08x}" not in board.marks
    board.receive("r0", [("losses", {"offset": 0, "values": [1.0]})])  # a forgotten run: ignored
    assert board.view("r0") == {"title": None}


def test_the_board_keeps_count_of_the_latest_builds_only(monkeypatch):
    monkeypatch.setattr(dashboard, "MAX_TOKENS", 3)
    board = dashboard.Board()
    for i in range(5):
        board.record((f"update-dense-{i:08x}", 0, 0), A, compute(float(i), i + 0.5))
    assert list(board.busy) == [f"{i:08x}" for i in (2, 3, 4)]
    assert set(board.early) == set(board.first_start) == set(board.busy)


def test_the_page_draws_the_board_with_full_worker_labels():
    board = dashboard.Board()
    page = dashboard.Page(board)
    assert "No pnngraph run has reported" in page.header.text
    board.receive("r", [("begin", {"title": "pipeline, 2 stages x 4 micro-batches; dense 4->8",
                                   "total": 10, "first": 0}),
                        chunk(bars=[("forward", A, 0.0, 0.1, 0), ("backward", B, 0.1, 0.3, 0)])])
    board.record((f"forward-dense-{TOKEN}", 0, 0, 0, 0), A, compute(5.0, 5.2))
    page.update()
    heading = "<h2>pnngraph: pipeline, 2 stages x 4 micro-batches; dense 4-&gt;8</h2>"
    assert heading in page.header.text
    assert "step <b>0</b> of 10 &middot; 1 chunk &middot;" in page.header.text
    assert "predicted time left <b>5.0 s</b>" in page.header.text  # 0.5 s a step, 10 left
    assert list(page.workers.factors) == [A, B]  # whole addresses, nothing cut
    assert page.sources["planned"].data["phase"] == ["forward", "backward"]
    assert page.sources["measured"].data["worker"] == [A]
    assert page.busy.data == {"worker": [A], "seconds": [pytest.approx(0.2)]}
    board.receive("r", [("losses", {"offset": 0, "values": [0.5] * 10})])
    page.update()
    assert page.loss.data["loss"] == [0.5] * 10 and "finished" in page.header.text


def test_a_failure_to_publish_never_fails_the_caller(caplog):
    feed = dashboard.Feed(None, "title", 4, 0)  # no client: no page, nothing to do
    feed.chunk(object(), 0, 2)
    feed.path = "/pnngraph"  # a page, but a graph that is not one: logged, not raised
    with caplog.at_level(logging.DEBUG, logger="pnngraph.run.dashboard"):
        feed.chunk(object(), 0, 2)
    assert "chunk 0-2 not published" in caplog.text


# --- on a cluster -----------------------------------------------------------------------------


def finished(client, steps):
    view = dashboard.view(client)
    return view if view["step"] == steps and len(view["losses"]) == steps else None


def pulled_document(url):
    """The page's Bokeh document as a browser gets it, over the page's websocket."""
    from bokeh.client import pull_session
    from bokeh.models import ColumnDataSource, Div

    with pull_session(url=url) as session:
        root = session.document.roots[0]
        texts = [d.text for d in root.select({"type": Div})]
        rows = {s.name: len(next(iter(s.data.values())))
                for s in root.select({"type": ColumnDataSource}) if s.name}
    return texts, rows


@pytest.mark.cluster
def test_fit_feeds_the_page_of_the_embedded_cluster():
    model, data = make_mlp(), make_data("mlp", n=120)
    with local_cluster(2, 0, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        result = pnngraph.fit(model, data, strategy=pnngraph.DataParallel(2), steps=8,
                              chunk_steps=2, batch_size=20, client=client, scheduler="heft",
                              progress=False)
        view = wait_for(lambda: finished(client, 8), "the page to see every step")
        url = dashboard.attach(client)
        assert url == client.dashboard_link.rsplit("/", 1)[0] + "/pnngraph"
        page = urllib.request.urlopen(url, timeout=30).read().decode()
        status = urllib.request.urlopen(client.dashboard_link, timeout=30).read().decode()
        texts, rows = pulled_document(url)
    assert [v for _, v in view["losses"]] == result.losses.tolist()  # the very same numbers
    assert view["title"] == ("data parallel, 2 shards; dense 5->12, relu, dense 12->8, tanh, "
                             "dense 8->3 (203 parameters)")
    assert view["chunks"] == 4 and view["algorithm"] == "heft"
    assert {w for _, w, *_ in view["measured"]} == set(view["busy"]) and len(view["busy"]) == 2
    assert {p for p, *_ in view["planned"]} >= {"grad", "update"}
    for html in (page, status):  # Dask's template, with the page in its navigation bar
        assert '<a href="pnngraph">Pnngraph</a>' in html and "statics/css/base.css" in html
    assert any(view["title"].replace(">", "&gt;") in t and "finished" in t for t in texts)
    # both Gantt charts, the busy bars and the loss curve
    assert rows["pnngraph-loss"] == 8 and rows["pnngraph-busy"] == 2
    assert rows["pnngraph-planned"] > 0 and rows["pnngraph-measured"] > 0


@pytest.mark.cluster
def test_no_page_where_the_scheduler_shows_no_dashboard():
    with local_cluster(2, 0, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        assert dashboard.attach(client) is None
        result = pnngraph.fit(make_mlp(), make_data("mlp"), strategy="data", steps=2,
                              batch_size=20, client=client, progress=False)
        assert dashboard.view(client)["title"] is None  # nothing was sent
    assert len(result.losses) == 2


@pytest.mark.cluster
def test_the_data_has_named_keys_of_its_own_per_build():
    model, data = make_mlp(), make_data("mlp")
    with local_cluster(2, 0, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        graphs = [pnngraph.build(model, data, strategy=pnngraph.DataParallel(2), steps=1,
                                 batch_size=20, client=client) for _ in range(2)]
        data_keys = []
        for graph in graphs:
            hlg = graph.__dask_graph__()
            deps = {d for layer in hlg.layers.values() for task in layer.values()
                    for d in getattr(task, "dependencies", ())}
            data_keys.append(sorted(d for d in deps if isinstance(d, str)
                                    and d.startswith("data-")))
        result, = client.compute([graphs[0]], sync=True)
        # the graphs hold their data's futures: the scheduler has both builds' data by now
        held = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks))
    assert [[key_split(k) for k in ks] for ks in data_keys] == [["data-X", "data-y"]] * 2
    assert not set(data_keys[0]) & set(data_keys[1])  # the same data, never the same keys
    assert set(data_keys[0]) | set(data_keys[1]) <= set(held)  # on the cluster under those names
    assert len(result.losses) == 1


# --- a scheduler and workers started from the shell, the page in a browser --------------------


async def _browse(browser: str, url: str, profile: Path) -> tuple[int, bytes]:
    """Open ``url`` in headless Chromium over the DevTools protocol; once Bokeh says the document
    is idle, count the canvases of the page (inside Bokeh's shadow roots) and take a PNG."""
    from tornado.websocket import websocket_connect

    proc = subprocess.Popen(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", "--window-size=1400,1400", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        port = next(int(m.group(1)) for line in proc.stderr
                    if (m := re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)))
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                                    timeout=30).read())
        ws = await websocket_connect(next(t["webSocketDebuggerUrl"] for t in targets
                                          if t["type"] == "page"))
        calls = iter(range(1, 1 << 30))

        async def call(method: str, **params):
            n = next(calls)
            await ws.write_message(json.dumps({"id": n, "method": method, "params": params}))
            while True:  # events come between the replies: skip them
                reply = json.loads(await ws.read_message())
                if reply.get("id") == n:
                    return reply.get("result", {})

        async def value(expression: str):
            return (await call("Runtime.evaluate", expression=expression,
                               returnByValue=True))["result"].get("value")

        await call("Page.navigate", url=url)
        end = asyncio.get_running_loop().time() + 120
        while not await value("typeof Bokeh !== 'undefined' && Bokeh.documents.length > 0 "
                              "&& Bokeh.documents[0].is_idle"):
            assert asyncio.get_running_loop().time() < end, "Bokeh never rendered the page"
            await asyncio.sleep(0.1)
        canvases = await value("""(() => { let n = 0;
            const walk = (root) => { for (const el of root.querySelectorAll('*')) {
                if (el.tagName === 'CANVAS') n++; if (el.shadowRoot) walk(el.shadowRoot); } };
            walk(document); return n; })()""")
        shot = await call("Page.captureScreenshot", format="png")
        ws.close()
        return canvases, base64.b64decode(shot["data"])
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
@pytest.mark.cluster
def test_the_page_of_a_scheduler_started_from_the_shell_renders_in_chromium(tmp_path):
    browser = find_chromium()
    with shell_cluster(tmp_path, workers=2) as address, Client(address, timeout=60) as client:
        result = pnngraph.fit(make_mlp(), make_data("mlp", n=200),
                              strategy=pnngraph.DataParallel(2), steps=12, chunk_steps=3,
                              batch_size=20, client=client, scheduler="heft", progress=False)
        view = wait_for(lambda: finished(client, 12), "the page to see every step")
        url = dashboard.attach(client)
        assert url is not None and url.startswith("http://127.0.0.1:")
        page = urllib.request.urlopen(url, timeout=30).read().decode()
        texts, rows = pulled_document(url)
        shown = (None if browser is None else
                 asyncio.run(_browse(browser, url, tmp_path / "chromium-profile")))
    assert [v for _, v in view["losses"]] == result.losses.tolist()
    assert '<a href="pnngraph">Pnngraph</a>' in page
    assert any("data parallel, 2 shards" in t for t in texts)
    assert rows["pnngraph-loss"] == 12 and min(rows.values()) > 0
    if shown is None:
        pytest.skip("no Chromium found (apt-get install -y chromium): the page was not rendered")
    canvases, png = shown
    assert canvases >= 4  # two Gantt charts, the busy bars, the loss curve
    (tmp_path / "page.png").write_bytes(png)
    assert len(png_colours(png)) > 200  # bars, lines and text, far from a blank page
