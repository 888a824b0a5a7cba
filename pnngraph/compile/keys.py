"""Task keys: how a node of the training graph is named, and how a name is read back.

A node's key is its Dask key, a tuple ``(f"{phase}-{label}-{token}", step, ...)``: ``phase`` is
the node's kind, ``label`` the parametric layer kinds of its stage (``dense``, ``conv-dense``),
``token`` eight hex digits naming the build, and every index (step, shard, micro-batch, stage,
...) goes in the tuple. The string part holds letters and dashes only, because the dashboard
groups keys by ``dask.utils.key_split``, which cuts at the first word holding a digit; the
token is cut off there, so tasks group as ``grad-dense``, ``forward-conv``, ...::

    ("grad-dense-1a2b3c4d", 3, 1, 0)          step 3, shard 1, micro-batch 0
    ("tohost-grad-dense-1a2b3c4d", 3, 1, 0)   its copy to the host, on the same worker

This module is the one place that builds and parses that format (the graph compiler builds,
the planner, the report and the dashboard read).

>>> key = node_key("forward", "dense", "1a2b3c4d", 3, 0, 1, 0)
>>> key
('forward-dense-1a2b3c4d', 3, 0, 1, 0)
>>> phase_of(key), step_of(key), phase_of(host_key(key)), step_of(host_key(key))
('forward', 3, 'tohost', 3)
>>> phase_of("finalize-0a1b"), step_of(("data-1a2b3c4d", 0)), phase_of(None)
('other', None, 'other')
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

Key = str | tuple[Any, ...]
"""A node of the training graph, which is also its Dask key: a tuple ``(name, indices...)``."""

PHASES = (
    "data", "init", "grad", "forward", "backward", "aggregate", "update", "params", "steps",
    "local", "average", "tohost", "norm", "segment", "stats",
)  # fmt: skip
"""Every phase a key of a training graph may have; :func:`phase_of` calls the rest "other"."""

STEPLESS = ("data", "init")


def node_key(phase: str, label: str, token: str, *indices: int) -> tuple[Any, ...]:
    """The key of a node: ``(f"{phase}-{label}-{token}", *indices)`` (no label: no dash)."""
    name = f"{phase}-{label}-{token}" if label else f"{phase}-{token}"
    return (name, *indices)


def host_key(key: Key) -> Key:
    """Key of the device-to-host copy of ``key``'s output: ``tohost-`` before its name."""
    if isinstance(key, tuple):
        return (f"tohost-{key[0]}", *key[1:])
    return f"tohost-{key}"


def value_key(key: Key) -> Key:
    """Key of the unpinned root that a pinned data or initial-state node's task waits for
    (the lowering's: it holds ``None``): ``value-`` before its name."""
    if isinstance(key, tuple):
        return (f"value-{key[0]}", *key[1:])
    return f"value-{key}"


def phase_of(key: Any) -> str:
    """The phase of a key (the first dash-separated word of its name), else ``"other"``.

    Keys as Dask reports them elsewhere are read too: bytes, and the ``str()`` of a tuple key.
    """
    name = key[0] if isinstance(key, tuple) and key else key
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    if not isinstance(name, str):
        return "other"
    if name.startswith("('"):  # str() of a tuple key
        name = name[2:]
    word = name.split("-", 1)[0]
    return word if word in PHASES else "other"


def step_of(key: Any) -> int | None:
    """The step of a tuple key of a training phase (its first index), else ``None``."""
    if not isinstance(key, tuple) or len(key) < 2 or phase_of(key) in ("other", *STEPLESS):
        return None
    step = key[1]
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        return None
    return int(step)


def step_spans(intervals: Iterable[tuple[int | None, float, float]]) -> dict[int, float]:
    """Per step, its latest stop minus its earliest start, from ``(step, start, stop)``
    intervals (``step`` ``None``: belongs to no step), in step order.

    >>> step_spans([(0, 0.0, 1.0), (0, 1.5, 2.0), (None, 9.0, 10.0), (1, 2.0, 2.5)])
    {0: 2.0, 1: 0.5}
    """
    lo: dict[int, float] = {}
    hi: dict[int, float] = {}
    for step, start, stop in intervals:
        if step is not None:
            lo[step] = min(lo.get(step, start), start)
            hi[step] = max(hi.get(step, stop), stop)
    return {s: hi[s] - lo[s] for s in sorted(lo)}
