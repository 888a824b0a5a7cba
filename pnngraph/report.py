"""The run report: one standalone HTML file (Bokeh, inline resources) that shows a training run.

It takes plain data, so a serial run, a planned-only run or a measured-only run all render:

    planned      TaskRecords of the schedule the planner predicted (`records_from_slots`)
    measured     TaskRecords of what the cluster did (`records_from_task_stream` on the records of
                 ``distributed.get_task_stream``)
    losses       one training loss per step;  accuracy  (epoch, accuracy) pairs
    bytes_moved  worker -> bytes it received;  meta  run metadata (model, strategy, workers, ...)

The data lives in :mod:`pnngraph.record` (``TaskRecord``, the run record of ``run.json``); this
module draws it: :func:`render_report` from the pieces, :func:`render_run` from a
:class:`~pnngraph.record.RunRecord`.

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as folder:
...     out = render_run(pathlib.Path(folder) / "r.html", RunRecord(losses=[0.5, 0.25]))
...     out.stat().st_size > 10_000
True

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
from os import PathLike
from typing import Any, Final

import numpy as np
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

from pnngraph.exceptions import ConfigError
from pnngraph.record import (
    PHASE_COLORS,
    PHASES,
    RunRecord,
    TaskRecord,
    _is_int,
    _records,
    _sequence,
    busy_fractions,
    phase_of,
    records_from_slots,
    records_from_task_stream,
    step_makespans,
    step_of,
)

__all__ = [  # the records are defined in pnngraph.record and are found here too
    "META_ORDER",
    "PHASES",
    "PHASE_COLORS",
    "RunRecord",
    "TaskRecord",
    "busy_fractions",
    "format_value",
    "meta_items",
    "phase_of",
    "records_from_slots",
    "records_from_task_stream",
    "render_report",
    "render_run",
    "step_makespans",
    "step_of",
]

STRETCH: Final = "stretch_width"  # every chart and text fills the page's width; heights are fixed


def _total(records: list[TaskRecord]) -> float:
    return max(r.stop for r in records) - min(r.start for r in records)


def _heading(text: str, level: int = 2) -> Div:
    return Div(text=f"<h{level}>{html.escape(text)}</h{level}>", sizing_mode=STRETCH)


def _gantt(title: str, records: list[TaskRecord], x_range: Range1d) -> Any:
    workers = sorted({r.worker for r in records}, reverse=True)
    p = figure(title=title, sizing_mode=STRETCH, height=140 + 40 * len(workers), x_range=x_range,
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
    out: list[Any] = [_heading("Makespan per step: predicted vs measured"),
                      Div(text=text, sizing_mode=STRETCH)]
    pred, meas = step_makespans(planned), step_makespans(measured)
    if not pred and not meas:
        return out
    p = figure(sizing_mode=STRETCH, height=300, x_axis_label="step", y_axis_label="seconds",
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
        q = figure(sizing_mode=STRETCH, height=220, x_axis_label="step", y_axis_label="%",
                   tools="pan,box_zoom,reset,save",
                   title="Relative error (measured - predicted) / predicted")
        q.xaxis.ticker = BasicTicker(min_interval=1)
        q.vbar(x="step", top="err", width=0.8, color="#7f7f7f",
               source=ColumnDataSource({"step": common, "err": err}))
        q.add_tools(HoverTool(tooltips=[("step", "@step"), ("error", "@err{0.0} %")]))
        out.append(q)
    return out


def _chunk_section(chunks: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Each chunk's predicted and measured wall time, and the whole run's error: the planned
    chunks lie end to end as predicted, so nothing here is anchored to a measurement."""
    rows = [(int(c["step"]), float(c["predicted"]), float(c["measured"])) for c in chunks
            if c.get("predicted") is not None and c.get("measured") is not None]
    if not rows:
        return []
    pred, meas = sum(r[1] for r in rows), sum(r[2] for r in rows)
    text = (f"Whole run: predicted {pred:.4g} s, measured {meas:.4g} s, "
            f"error {100.0 * (pred - meas) / meas:+.1f} % (prediction - measurement)"
            if meas > 0 else "")
    p = figure(sizing_mode=STRETCH, height=300, x_axis_label="step reached", y_axis_label="seconds",
               title="Wall time per chunk", tools="pan,wheel_zoom,box_zoom,reset,save",
               y_range=DataRange1d(start=0.0))
    source = ColumnDataSource({
        "step": [r[0] for r in rows], "predicted": [r[1] for r in rows],
        "measured": [r[2] for r in rows],
        "error": [100.0 * (r[1] - r[2]) / r[2] if r[2] > 0 else 0.0 for r in rows]})
    for name, colour in (("predicted", "#1f77b4"), ("measured", "#d62728")):
        p.line("step", name, source=source, color=colour, legend_label=name)
        p.scatter("step", name, source=source, color=colour, legend_label=name, size=6)
    p.add_tools(HoverTool(tooltips=[("step", "@step"), ("predicted", "@predicted{0.0000} s"),
                                    ("measured", "@measured{0.0000} s"),
                                    ("error", "@error{0.0} %")]))
    _legend_above(p)
    return [_heading("Prediction per chunk"), Div(text=text, sizing_mode=STRETCH), p]


def _shard_section(chunks: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Samples of the batch per worker in each chunk of a data-parallel run (the shard sizes an
    adaptive run changed), stacked bars and a table; nothing when no chunk has them."""
    rows = [(int(c["step"]), {str(w): int(n) for w, n in c["shards"].items()})
            for c in chunks if isinstance(c.get("shards"), Mapping) and c["shards"]]
    if not rows:
        return []
    workers = sorted({w for _, sizes in rows for w in sizes})
    palette = list(PHASE_COLORS.values())
    data: dict[str, list[Any]] = {"step": [str(step) for step, _ in rows]}
    for i, w in enumerate(workers):
        data[f"w{i}"] = [sizes.get(w, 0) for _, sizes in rows]
    p = figure(sizing_mode=STRETCH, height=300, x_range=FactorRange(factors=data["step"]),
               x_axis_label="step reached", y_axis_label="samples of the batch",
               title="Shard size per worker per chunk", tools="save")
    p.vbar_stack([f"w{i}" for i in range(len(workers))], x="step", width=0.8,
                 color=[palette[i % len(palette)] for i in range(len(workers))],
                 source=ColumnDataSource(data), legend_label=workers)
    _legend_above(p)
    head = "".join(f"<th>{html.escape(w)}</th>" for w in workers)
    body = "".join("<tr><td>" + str(step) + "</td>"
                   + "".join(f"<td>{sizes.get(w, 0)}</td>" for w in workers) + "</tr>"
                   for step, sizes in rows)
    table = Div(text=f"<table style='border-collapse:collapse'><tr><th>step</th>{head}</tr>"
                     f"{body}</table>", sizing_mode=STRETCH)
    return [_heading("Shard size per worker per chunk"), p, table]


def _curve(title: str, x: list[int], y: list[float], x_label: str, y_label: str) -> Any:
    p = figure(title=title, sizing_mode=STRETCH, height=280, x_axis_label=x_label,
               y_axis_label=y_label, tools="pan,wheel_zoom,box_zoom,reset,save")
    p.xaxis.ticker = BasicTicker(min_interval=1)
    source = ColumnDataSource({"x": x, "y": y})
    p.line("x", "y", source=source, line_width=2)
    if len(x) <= 200:
        p.scatter("x", "y", source=source, size=5)
    p.add_tools(HoverTool(tooltips=[(x_label, "@x"), (y_label, "@y{0.0000}")]))
    return p


def _worker_bars(title: str, values: Mapping[str, float], x_label: str) -> Any:
    workers = sorted(values, reverse=True)
    p = figure(title=title, sizing_mode=STRETCH, height=80 + 30 * len(workers),
               x_axis_label=x_label, y_range=FactorRange(factors=workers),
               x_range=DataRange1d(start=0.0), tools="save")
    p.hbar(y="worker", right="value", height=0.7, color="#1f77b4",
           source=ColumnDataSource({"worker": workers, "value": [values[w] for w in workers]}))
    p.add_tools(HoverTool(tooltips=[("worker", "@worker"), (x_label, "@value{0.000}")]))
    return p


META_ORDER: tuple[tuple[str, ...], ...] = (
    ("model",), ("widths", "hidden"), ("data", "dataset"), ("dtype",),
    ("strategy",), ("workers",), ("gpu workers",), ("scheduler",),
    ("epochs",), ("steps",), ("batch size",), ("optimizer",), ("learning rate", "lr"),
    ("momentum",), ("seed",),
    ("wall seconds", "wall time"), ("final train loss", "train loss"),
    ("final test loss", "test loss"), ("final test accuracy", "test accuracy"),
)
"""The well-known metadata keys, in the order the header shows them (each with its aliases):
what was trained, how it ran, the hyperparameters, then the outcome. Keys compare in lower case
with ``_`` and ``-`` read as spaces; other keys follow in their own order, and mappings (such as
``time``: phase -> seconds) come last, each as a small table of its own."""

META_UNITS = {"time": " s"}
"""A unit for the values of a nested mapping, by its key: ``meta["time"]`` holds seconds."""


def _meta_rank(key: Any) -> int:
    name = str(key).lower().replace("_", " ").replace("-", " ").strip()
    for rank, names in enumerate(META_ORDER):
        if name in names:
            return rank
    return len(META_ORDER)


def format_value(value: Any) -> str:
    """A metadata value as the report shows it: whole numbers as they are (thousands grouped from
    10,000), other numbers to 4 significant digits, sequences joined by commas.

    >>> [format_value(v) for v in (64, 12288, 0.1, 0.974930362, 24.38712, 1e-5, True, None)]
    ['64', '12,288', '0.1', '0.9749', '24.39', '1e-05', 'yes', 'none']
    >>> format_value([64, 64]), format_value(float("nan")), format_value("DataParallel(2)")
    ('64, 64', 'nan', 'DataParallel(2)')
    """
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def _cell(value: Any, unit: str = "") -> str:
    numeric = isinstance(value, numbers.Real) and not isinstance(value, bool)
    style = "text-align:right;font-variant-numeric:tabular-nums" if numeric else "text-align:left"
    text = format_value(value) + (unit if numeric else "")
    return f"<td style='{style};padding:1px 0.5em'>{html.escape(text)}</td>"


def _meta_rows(items: Sequence[tuple[Any, Any]], unit: str = "") -> str:
    th = "<th style='text-align:left;padding:1px 1.5em 1px 0;vertical-align:top'>"
    rows = []
    for key, value in items:
        if isinstance(value, Mapping):
            inner = _meta_rows(list(value.items()), META_UNITS.get(str(key), ""))
            cell = (f"<td style='padding:0'><table style='border-collapse:collapse'>{inner}"
                    "</table></td>")
        else:
            cell = _cell(value, unit)
        rows.append(f"<tr>{th}{html.escape(str(key))}</th>{cell}</tr>")
    return "".join(rows)


def meta_items(meta: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """The entries of ``meta`` in the order of the report's header (`META_ORDER`).

    >>> [k for k, _ in meta_items({"time": {"training": 3.0}, "note": "x", "lr": 0.1,
    ...                            "model": "mlp", "final test accuracy": 0.97})]
    ['model', 'lr', 'final test accuracy', 'note', 'time']
    """
    entries = list(meta.items())
    return sorted(entries, key=lambda kv: (isinstance(kv[1], Mapping), _meta_rank(kv[0])))


def _meta_table(meta: Mapping[str, Any]) -> Div:
    return Div(text=f"<table style='border-collapse:collapse'>{_meta_rows(meta_items(meta))}"
                    "</table>", sizing_mode=STRETCH)


def _series(name: str, xs: Any) -> Sequence[Any]:
    """A sequence as it is; a numpy array (or anything with ``__array__``) as the list of its
    elements, rows for a 2-D one: the report takes ``TrainingResult.losses`` as it comes."""
    if hasattr(xs, "__array__") and not isinstance(xs, str | bytes | Mapping | Sequence):
        array = np.asarray(xs)
        if array.ndim > 0:
            return list(array.tolist())
    return _sequence(name, xs)


def _numbers(name: str, xs: Any) -> list[float]:
    out = []
    for i, x in enumerate(_series(name, xs)):
        if not isinstance(x, numbers.Real) or isinstance(x, bool):
            raise ConfigError(f"{name}[{i}]", "a real number", x)
        out.append(float(x))
    return out


def _whole(x: Any) -> bool:
    """An int, or a real number with an integral value (an epoch held in a float array)."""
    if _is_int(x):
        return True
    return (isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)
            and float(x).is_integer())


def _accuracy(pairs: Any) -> tuple[list[int], list[float]]:
    epochs, values = [], []
    for i, pair in enumerate(_series("accuracy", pairs)):
        if hasattr(pair, "__array__") and not isinstance(pair, Sequence):
            pair = np.asarray(pair).tolist()
        if not isinstance(pair, Sequence) or len(pair) != 2 or not _whole(pair[0]):
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
    losses: Sequence[float] | np.ndarray | None = None,
    accuracy: Sequence[tuple[int, float]] | np.ndarray | None = None,
    bytes_moved: Mapping[str, int] | None = None,
    meta: Mapping[str, Any] | None = None,
    chunks: Sequence[Mapping[str, Any]] | None = None,
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
    losses : sequence of float or 1-D array
        Training loss of each step (``TrainingResult.losses``, a numpy array, as it is).
    accuracy : sequence of (epoch, accuracy), or an array of shape (n, 2)
        Accuracy per epoch.
    bytes_moved : mapping worker -> int
        Bytes each worker received.
    meta : mapping
        Run metadata, shown as a table: every entry, the well-known keys first (`META_ORDER`:
        model, widths, data, strategy, workers, scheduler, epochs, batch size, optimizer,
        learning rate, momentum, seed, wall seconds, final losses and accuracy), numbers
        formatted by `format_value`, a nested mapping (``time``: phase -> seconds) as a table.
    chunks : sequence of mappings
        Per chunk: ``step`` reached, ``predicted`` and ``measured`` wall seconds, and for a
        data-parallel run ``shards``: worker -> samples of the batch (drawn as "Shard size
        per worker per chunk").

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
    parts += _chunk_section(_sequence("chunks", chunks) if chunks is not None else [])
    parts += _shard_section(_sequence("chunks", chunks) if chunks is not None else [])
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
    page = file_html(column(*parts, sizing_mode=STRETCH), resources=INLINE, title=title)
    out.write_text(page, encoding="utf-8")
    return out


def render_run(
    path: str | PathLike[str], record: RunRecord, *, title: str = "pnngraph run"
) -> pathlib.Path:
    """Write the report of a :class:`~pnngraph.record.RunRecord` (what ``run.json`` holds)."""
    return render_report(
        path, title=title, planned=record.planned or None, measured=record.measured or None,
        losses=record.losses or None, accuracy=record.accuracy or None, meta=record.meta,
        bytes_moved=record.bytes_moved or None, chunks=record.chunks or None,
    )
