"""A Gantt chart of a `Schedule` as a small standalone SVG document (no plotting dependency).

One row per processor, one bar per node from its start to its finish, labelled with the node when it
fits; a time axis below.

>>> from schedulers.examples import topcuoglu2002
>>> from schedulers.heft import heft
>>> svg = gantt_svg(heft(*topcuoglu2002()), title="HEFT")
>>> svg.startswith("<svg"), svg.count("<rect") - 1  # one rect per node, plus the background
(True, 10)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from html import escape

from schedulers.schedule import Schedule

__all__ = ["gantt_svg"]

_PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)  # fmt: skip


def _tick_step(span: float, ticks: int = 8) -> float:
    raw = span / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def gantt_svg(
    schedule: Schedule,
    *,
    title: str = "",
    width: int = 720,
    row_height: int = 30,
    label: Callable[[Hashable], str] = str,
    processor_label: Callable[[Hashable], str] = str,
) -> str:
    """Draw ``schedule`` as an SVG Gantt chart.

    Parameters
    ----------
    schedule : Schedule
        The schedule to draw.
    title : str
        A title above the chart (the makespan is appended).
    width : int
        Width in pixels.
    row_height : int
        Height of one processor's row in pixels.
    label : callable
        node -> the text drawn on its bar.
    processor_label : callable
        processor -> the text at the start of its row.

    Returns
    -------
    str
        The SVG document.
    """
    left, right, top, bottom = 90, 20, 34, 40
    procs = list(schedule.order)
    height = top + bottom + row_height * len(procs)
    span = schedule.makespan or 1.0
    scale = (width - left - right) / span
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="14">'
        f"{escape(title)}{': ' if title else ''}makespan {schedule.makespan:.4g} s</text>",
    ]
    for row, proc in enumerate(procs):
        y = top + row * row_height
        out.append(
            f'<text x="{left - 8}" y="{y + row_height / 2 + 4:.1f}" text-anchor="end">'
            f"{escape(processor_label(proc))}</text>"
        )
        out.append(
            f'<line x1="{left}" y1="{y + row_height}" x2="{width - right}" '
            f'y2="{y + row_height}" stroke="#ddd"/>'
        )
    rows = {proc: row for row, proc in enumerate(procs)}
    for number, (node, (proc, start, finish)) in enumerate(schedule.slots.items()):
        x, w = left + start * scale, max((finish - start) * scale, 1.0)
        y = top + rows[proc] * row_height + 3
        text = escape(label(node))
        out.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_height - 6}" '
            f'fill="{_PALETTE[number % len(_PALETTE)]}" stroke="white">'
            f"<title>{text}: {start:g}-{finish:g}</title></rect>"
        )
        if 7 * len(text) + 4 < w:
            out.append(
                f'<text x="{x + w / 2:.1f}" y="{y + row_height / 2 + 1:.1f}" fill="white" '
                f'text-anchor="middle">{text}</text>'
            )
    axis_y = top + row_height * len(procs)
    step = _tick_step(span)
    for k in range(int(span / step) + 1):
        x = left + k * step * scale
        out.append(
            f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 5}" stroke="black"/>'
        )
        out.append(f'<text x="{x:.1f}" y="{axis_y + 18}" text-anchor="middle">{k * step:g}</text>')
    out.append(f'<text x="{width - right}" y="{axis_y + 34}" text-anchor="end">seconds</text>')
    out.append("</svg>")
    return "\n".join(out)
