"""The run report: one standalone HTML file (Bokeh, inline resources) that shows a training run.

It takes plain data, so a serial run, a planned-only run or a measured-only run all render:

    planned      TaskRecords of the schedule the planner predicted (`records_from_slots`)
    measured     TaskRecords of what the cluster did (`records_from_task_stream` on the records of
                 ``distributed.get_task_stream``)
    losses       one training loss per step;  accuracy  (epoch, accuracy) pairs
    bytes_moved  worker -> bytes it received;  meta  run metadata (model, strategy, workers, ...)

A `TaskRecord` is one bar of a Gantt chart: a key, its phase, a worker and start/stop seconds from
the start of the run. The phase is the first word of the key's prefix, the step the key's first
index, following the graph's key layout ``(f"{phase}-{label}-{token}", step, ...)``:

>>> key = ("forward-dense-1a2b3c4d", 3, 0, 1, 0)  # (name, step, shard, micro-batch, stage)
>>> phase_of(key), step_of(key)
('forward', 3)
>>> phase_of("aggregate-conv-dense"), step_of("aggregate-conv-dense"), phase_of(("x-1", 2))
('aggregate', None, 'other')

The page has five sections, each left out when its data is missing: the header with the metadata,
the planned and measured Gantt charts on one time axis, predicted vs measured makespan per step,
the loss and accuracy curves, and per-worker busy fraction and bytes moved.
"""

from __future__ import annotations

import html
import math
import numbers
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.models import (
    BasicTicker,
    ColumnDataSource,
    DataRange1d,
    FactorRange,
    HoverTool,
    Plot,
    Range1d,
)
from bokeh.models.widgets import Div
from bokeh.plotting import figure
from bokeh.resources import INLINE
from dask.utils import key_split

from pnngraph.exceptions import ConfigError

PHASE_COLORS: dict[str, str] = {
    "forward": "#1f77b4",
    "backward": "#ff7f0e",
    "grad": "#9467bd",
    "aggregate": "#2ca02c",
    "update": "#d62728",
    "steps": "#8c564b",
    "local": "#17becf",
    "average": "#bcbd22",
    "transfer": "#7f7f7f",
    "tohost": "#e377c2",
    "other": "#c7c7c7",
}
"""Bar colour of each phase; the keys are every phase a record may have, in legend order."""

PHASES = tuple(PHASE_COLORS)
WIDTH = 1200  # pixels, every chart


@dataclass(frozen=True)
class TaskRecord:
    """One task (or one transfer) on one worker, in seconds from the start of the run.

    Parameters
    ----------
    key : str
        ``str()`` of the Dask key.
    phase : str
        One of `PHASES`.
    worker : str
        Worker address or name (a processor of a schedule).
    start, stop : float
        Seconds from the start of the run; ``start <= stop``.
    step : int or None
        Training step of the task, ``None`` when it belongs to none.
    """

    key: str
    phase: str
    worker: str
    start: float
    stop: float
    step: int | None = None

    def __post_init__(self) -> None:
        for name in ("key", "worker"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"TaskRecord.{name}: expected a str, got {getattr(self, name)!r}")
        if self.phase not in PHASE_COLORS:
            raise ConfigError("TaskRecord.phase", "one of " + ", ".join(PHASES), self.phase)
        _seconds("TaskRecord.start", self.start)
        _seconds("TaskRecord.stop", self.stop)
        if self.stop < self.start:
            raise ConfigError(f"TaskRecord({self.key!r}).stop", f"at least start={self.start}",
                              self.stop)
        if self.step is not None and not _is_int(self.step):
            raise ConfigError("TaskRecord.step", "an int or None", self.step)

    @property
    def seconds(self) -> float:
        """Duration, ``stop - start``."""
        return self.stop - self.start


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _seconds(name: str, x: Any) -> float:
    if not isinstance(x, numbers.Real) or isinstance(x, bool) or not math.isfinite(x):
        raise ConfigError(name, "a finite number of seconds", x)
    return float(x)


def phase_of(key: Any) -> str:
    """The phase of a Dask key: the first word of its ``key_split`` prefix, else ``"other"``.

    >>> phase_of(("update-dense-1a2b3c4d", 4, 0)), phase_of("finalize-0a1b"), phase_of(None)
    ('update', 'other', 'other')
    """
    word = key_split(key).split("-")[0]
    return word if word in PHASE_COLORS else "other"


def step_of(key: Any) -> int | None:
    """The step of a tuple key of a training phase (its element 1, when an int), else ``None``.

    >>> step_of(("average-dense-1a2b3c4d", 7)), step_of(("data-1a2b3c4d", 0)), step_of("grad")
    (7, None, None)
    """
    if not isinstance(key, tuple) or len(key) < 2 or not isinstance(key[0], str):
        return None
    if phase_of(key[0]) == "other" or not _is_int(key[1]):
        return None
    return int(key[1])


def _record(key: Any, phase: str, worker: Any, start: float, stop: float) -> TaskRecord:
    return TaskRecord(str(key), phase, str(worker), start, stop, step_of(key))


def records_from_task_stream(stream: Sequence[Mapping[str, Any]]) -> list[TaskRecord]:
    """Records of what a cluster ran, from ``distributed.get_task_stream`` records.

    Each compute interval of a record becomes a record of the key's phase, each transfer interval
    (the key's input arriving at the record's worker) a ``"transfer"`` record of that key; other
    actions (``disk-read``, ``deserialize``, ...) are left out. Times count from the earliest start.

    Parameters
    ----------
    stream : sequence of mappings
        Records with ``"key"``, ``"worker"`` and ``"startstops"``, a list of mappings with
        ``"action"``, ``"start"`` and ``"stop"`` in epoch seconds.

    Returns
    -------
    list of TaskRecord
        Sorted by start, worker and key.
    """
    rows: list[tuple[Any, str, Any, float, float]] = []
    for i, rec in enumerate(_sequence("stream", stream)):
        if not isinstance(rec, Mapping) or not {"key", "worker", "startstops"} <= rec.keys():
            raise ConfigError(f"stream[{i}]", "a mapping with key, worker and startstops", rec)
        for j, ss in enumerate(_sequence(f"stream[{i}]['startstops']", rec["startstops"])):
            name = f"stream[{i}]['startstops'][{j}]"
            if not isinstance(ss, Mapping) or not {"action", "start", "stop"} <= ss.keys():
                raise ConfigError(name, "a mapping with action, start and stop", ss)
            if ss["action"] in ("compute", "transfer"):
                phase = phase_of(rec["key"]) if ss["action"] == "compute" else "transfer"
                rows.append((rec["key"], phase, rec["worker"],
                             _seconds(name + "['start']", ss["start"]),
                             _seconds(name + "['stop']", ss["stop"])))
    t0 = min((row[3] for row in rows), default=0.0)
    records = [_record(key, phase, w, a - t0, b - t0) for key, phase, w, a, b in rows]
    return sorted(records, key=lambda r: (r.start, r.worker, r.key))


def records_from_slots(slots: Mapping[Any, tuple[Any, float, float]]) -> list[TaskRecord]:
    """Records of a planned schedule from its ``slots``, key -> ``(processor, start, finish)``.

    >>> [record] = records_from_slots({("grad-dense-1a2b3c4d", 0, 1, 0): ("cpu-1", 0.0, 0.5)})
    >>> record.key, record.phase, record.worker, record.step, record.seconds
    ("('grad-dense-1a2b3c4d', 0, 1, 0)", 'grad', 'cpu-1', 0, 0.5)
    """
    if not isinstance(slots, Mapping):
        raise TypeError(f"slots: expected a mapping key -> (processor, start, finish), "
                        f"got {slots!r}")
    records = []
    for key, slot in slots.items():
        if not isinstance(slot, tuple) or len(slot) != 3:
            raise ConfigError(f"slots[{key!r}]", "a tuple (processor, start, finish)", slot)
        proc, start, stop = slot
        name = f"slots[{key!r}]"
        start, stop = _seconds(name + " start", start), _seconds(name + " finish", stop)
        records.append(_record(key, phase_of(key), proc, start, stop))
    return sorted(records, key=lambda r: (r.start, r.worker, r.key))


def _sequence(name: str, x: Any) -> Sequence[Any]:
    if isinstance(x, str | bytes | Mapping) or not isinstance(x, Sequence):
        raise TypeError(f"{name}: expected a sequence, got {type(x).__name__} {x!r:.80}")
    return x


def _records(name: str, x: Sequence[TaskRecord] | None) -> list[TaskRecord]:
    if x is None:
        return []
    for i, r in enumerate(_sequence(name, x)):
        if not isinstance(r, TaskRecord):
            raise TypeError(f"{name}[{i}]: expected a TaskRecord, got {r!r}")
    return list(x)


def step_makespans(records: Sequence[TaskRecord]) -> dict[int, float]:
    """Per step, the span of its records: latest stop minus earliest start, in seconds.

    >>> recs = [TaskRecord("a", "grad", "w", 0.0, 1.0, step=0),
    ...         TaskRecord("b", "update", "v", 1.5, 2.0, step=0),
    ...         TaskRecord("c", "other", "w", 9.0, 10.0)]
    >>> step_makespans(recs)
    {0: 2.0}
    """
    lo: dict[int, float] = {}
    hi: dict[int, float] = {}
    for r in _records("records", records):
        if r.step is not None:
            lo[r.step] = min(lo.get(r.step, r.start), r.start)
            hi[r.step] = max(hi.get(r.step, r.stop), r.stop)
    return {s: hi[s] - lo[s] for s in sorted(lo)}


def busy_fractions(records: Sequence[TaskRecord]) -> dict[str, float]:
    """Per worker, the fraction of the run's wall span (all records) it spent computing.

    Transfers do not count; overlapping tasks on one worker (several threads) count once, so a
    fraction is at most 1.

    >>> busy_fractions([TaskRecord("a", "grad", "w", 0, 2), TaskRecord("b", "grad", "w", 1, 3),
    ...                 TaskRecord("c", "transfer", "v", 3, 4)])
    {'v': 0.0, 'w': 0.75}
    """
    records = _records("records", records)
    if not records:
        return {}
    span = max(r.stop for r in records) - min(r.start for r in records)
    busy = dict.fromkeys(sorted({r.worker for r in records}), 0.0)
    for worker in busy:
        end = -math.inf
        mine = [r for r in records if r.worker == worker and r.phase != "transfer"]
        for r in sorted(mine, key=lambda r: (r.start, r.stop)):
            busy[worker] += max(0.0, r.stop - max(r.start, end))
            end = max(end, r.stop)
    return {w: (b / span if span > 0 else 0.0) for w, b in busy.items()}


def _total(records: list[TaskRecord]) -> float:
    return max(r.stop for r in records) - min(r.start for r in records)


def _heading(text: str, level: int = 2) -> Div:
    return Div(text=f"<h{level}>{html.escape(text)}</h{level}>", width=WIDTH)


def _gantt(title: str, records: list[TaskRecord], x_range: Range1d) -> Any:
    workers = sorted({r.worker for r in records}, reverse=True)
    p = figure(title=title, width=WIDTH, height=140 + 40 * len(workers), x_range=x_range,
               y_range=FactorRange(factors=workers), x_axis_label="seconds from start",
               tools="xpan,xwheel_zoom,box_zoom,reset,save")
    renderers: list[Any] = []
    for phase in PHASES:
        rows = [r for r in records if r.phase == phase]
        if not rows:
            continue
        source = ColumnDataSource({
            "key": [r.key for r in rows], "worker": [r.worker for r in rows],
            "start": [r.start for r in rows], "stop": [r.stop for r in rows],
            "ms": [1e3 * r.seconds for r in rows],
        })
        renderers.append(p.hbar(y="worker", left="start", right="stop", height=0.7,
                                source=source, color=PHASE_COLORS[phase], legend_label=phase))
    p.add_tools(HoverTool(renderers=renderers, tooltips=[
        ("key", "@key"), ("worker", "@worker"), ("start", "@start{0.0000} s"),
        ("duration", "@ms{0.000} ms")]))
    _legend_above(p)
    return p


def _legend_above(p: Any) -> None:
    """One horizontal legend row above the frame, so stacked charts keep equal frame widths."""
    legend = p.legend[0]
    legend.orientation = "horizontal"
    legend.click_policy = "hide"
    p.add_layout(legend, "above")


def _makespan_section(planned: list[TaskRecord], measured: list[TaskRecord]) -> list[Any]:
    totals = []
    for name, recs in (("predicted", planned), ("measured", measured)):
        if recs:
            totals.append(f"{name} {_total(recs):.4g} s")
    text = "Total: " + ", ".join(totals)
    if planned and measured and _total(planned) > 0:
        text += f"; measured / predicted = {_total(measured) / _total(planned):.3g}"
    out: list[Any] = [_heading("Makespan per step: predicted vs measured"), Div(text=text)]
    pred, meas = step_makespans(planned), step_makespans(measured)
    if not pred and not meas:
        return out
    p = figure(width=WIDTH, height=300, x_axis_label="step", y_axis_label="seconds",
               title="Makespan per step", tools="pan,wheel_zoom,box_zoom,reset,save",
               y_range=DataRange1d(start=0.0))
    p.xaxis.ticker = BasicTicker(min_interval=1)
    for name, spans, colour in (("predicted", pred, "#1f77b4"), ("measured", meas, "#d62728")):
        if spans:
            source = ColumnDataSource({"step": list(spans), "seconds": list(spans.values())})
            p.line("step", "seconds", source=source, color=colour, legend_label=name)
            p.scatter("step", "seconds", source=source, color=colour, legend_label=name, size=6)
    p.add_tools(HoverTool(tooltips=[("step", "@step"), ("seconds", "@seconds{0.0000}")]))
    _legend_above(p)
    out.append(p)
    common = [s for s in pred if s in meas and pred[s] > 0]
    if common:
        err = [100.0 * (meas[s] - pred[s]) / pred[s] for s in common]
        q = figure(width=WIDTH, height=220, x_axis_label="step", tools="pan,box_zoom,reset,save",
                   y_axis_label="%", title="Relative error (measured - predicted) / predicted")
        q.xaxis.ticker = BasicTicker(min_interval=1)
        q.vbar(x="step", top="err", width=0.8, color="#7f7f7f",
               source=ColumnDataSource({"step": common, "err": err}))
        q.add_tools(HoverTool(tooltips=[("step", "@step"), ("error", "@err{0.0} %")]))
        out.append(q)
    return out


def _curve(title: str, x: list[int], y: list[float], x_label: str, y_label: str) -> Any:
    p = figure(title=title, width=WIDTH, height=280, x_axis_label=x_label, y_axis_label=y_label,
               tools="pan,wheel_zoom,box_zoom,reset,save")
    p.xaxis.ticker = BasicTicker(min_interval=1)
    source = ColumnDataSource({"x": x, "y": y})
    p.line("x", "y", source=source, line_width=2)
    if len(x) <= 200:
        p.scatter("x", "y", source=source, size=5)
    p.add_tools(HoverTool(tooltips=[(x_label, "@x"), (y_label, "@y{0.0000}")]))
    return p


def _worker_bars(title: str, values: Mapping[str, float], x_label: str) -> Any:
    workers = sorted(values, reverse=True)
    p = figure(title=title, width=WIDTH, height=80 + 30 * len(workers), x_axis_label=x_label,
               y_range=FactorRange(factors=workers), x_range=DataRange1d(start=0.0),
               tools="save")
    p.hbar(y="worker", right="value", height=0.7, color="#1f77b4",
           source=ColumnDataSource({"worker": workers, "value": [values[w] for w in workers]}))
    p.add_tools(HoverTool(tooltips=[("worker", "@worker"), (x_label, "@value{0.000}")]))
    return p


def _meta_table(meta: Mapping[str, Any]) -> Div:
    rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(str(k))}</th>"
                   f"<td>{html.escape(str(v))}</td></tr>" for k, v in meta.items())
    return Div(text=f"<table>{rows}</table>", width=WIDTH)


def _numbers(name: str, xs: Any) -> list[float]:
    out = []
    for i, x in enumerate(_sequence(name, xs)):
        if not isinstance(x, numbers.Real) or isinstance(x, bool):
            raise ConfigError(f"{name}[{i}]", "a real number", x)
        out.append(float(x))
    return out


def _accuracy(pairs: Any) -> tuple[list[int], list[float]]:
    epochs, values = [], []
    for i, pair in enumerate(_sequence("accuracy", pairs)):
        if not isinstance(pair, Sequence) or len(pair) != 2 or not _is_int(pair[0]):
            raise ConfigError(f"accuracy[{i}]", "a pair (epoch: int, accuracy: float)", pair)
        epochs.append(int(pair[0]))
        values += _numbers(f"accuracy[{i}]", pair[1:])
    return epochs, values


def render_report(
    path: str | PathLike[str],
    *,
    title: str = "pnngraph run",
    planned: Sequence[TaskRecord] | None = None,
    measured: Sequence[TaskRecord] | None = None,
    losses: Sequence[float] | None = None,
    accuracy: Sequence[tuple[int, float]] | None = None,
    bytes_moved: Mapping[str, int] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """Write the run report, one standalone HTML file with inline Bokeh resources.

    Every argument but ``path`` may be ``None`` or empty: its section is then left out.

    Parameters
    ----------
    path : str or path-like
        The HTML file to write (overwritten).
    title : str
        Page title and heading.
    planned, measured : sequences of TaskRecord
        The predicted schedule and what ran; Gantt charts on one time axis, makespan per step.
    losses : sequence of float
        Training loss of each step.
    accuracy : sequence of (epoch, accuracy)
        Accuracy per epoch.
    bytes_moved : mapping worker -> int
        Bytes each worker received.
    meta : mapping
        Run metadata (model, strategy, scheduler, workers, ...), shown as a table.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if not isinstance(title, str):
        raise TypeError(f"title: expected a str, got {title!r}")
    plan, meas = _records("planned", planned), _records("measured", measured)
    loss = _numbers("losses", losses) if losses is not None else []
    epochs, acc = _accuracy(accuracy) if accuracy is not None else ([], [])
    if bytes_moved is not None and not isinstance(bytes_moved, Mapping):
        raise TypeError(f"bytes_moved: expected a mapping worker -> bytes, got {bytes_moved!r}")
    for worker, n in (bytes_moved or {}).items():
        if not _is_int(n) or n < 0:
            raise ConfigError(f"bytes_moved[{worker!r}]", "a non-negative int", n)
    if meta is not None and not isinstance(meta, Mapping):
        raise TypeError(f"meta: expected a mapping, got {meta!r}")

    parts: list[Any] = [_heading(title, 1)]
    if meta:
        parts.append(_meta_table(meta))
    if plan or meas:
        parts.append(_heading("Schedule: planned vs measured"))
        end = max(r.stop for r in plan + meas)
        x_range = Range1d(start=0.0, end=1.02 * end if end > 0 else 1.0)
        for name, recs in (("Planned", plan), ("Measured", meas)):
            if recs:
                parts.append(_gantt(f"{name} schedule", recs, x_range))
        parts += _makespan_section(plan, meas)
    if loss or acc:
        parts.append(_heading("Training"))
    if loss:
        parts.append(_curve("Loss per step", list(range(len(loss))), loss, "step", "loss"))
    if acc:
        parts.append(_curve("Accuracy per epoch", epochs, acc, "epoch", "accuracy"))
    if meas or bytes_moved:
        parts.append(_heading("Worker use"))
    if meas:
        parts.append(_worker_bars("Busy fraction (compute time / wall span)",
                                  busy_fractions(meas), "busy fraction"))
    if bytes_moved:
        mb = {str(w): n / 1e6 for w, n in bytes_moved.items()}
        parts.append(_worker_bars("Bytes moved", mb, "MB"))
    # one left border for every chart, wide enough for the longest worker name, aligns the frames
    names = [r.worker for r in plan + meas] + [str(w) for w in bytes_moved or {}]
    left = max([60] + [7 * len(n) + 30 for n in names])
    for part in parts:
        if isinstance(part, Plot):
            part.min_border_left = left
    out = pathlib.Path(path)
    out.write_text(file_html(column(*parts), resources=INLINE, title=title), encoding="utf-8")
    return out
