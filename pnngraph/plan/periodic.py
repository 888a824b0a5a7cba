"""Periodic plans: schedule one period of a long training graph and tile it over the others.

A training graph repeats: a warm-up, then a steady state where every period (one step; H local
steps for model averaging; the steps of one fused task) has the same tasks at the same places,
then a drain. So the list scheduler sees only a short *window* of periods (``WARMUP`` of
warm-up, the period, ``DRAIN`` more), and every period of the graph takes the processors and
the start offsets of its counterpart in the window: the warm-up periods their own, the steady
ones the middle period's shifted by the period's length, the last ``DRAIN`` periods the
window's last ones shifted to the end::

    window (scheduled):   w0 w1 [w2] w3 w4
    graph (tiled):        w0 w1  w2 w2 w2 ... w2 w3 w4       w2 shifted by k periods

The tiled start times give each processor its order; the simulator then runs that placement
and order with zero overhead, which is the plan's timeline, valid by construction
(``Schedule.validate`` holds) and equal to what the simulator predicts, and with the hop
latency, which is the plan's prediction (one indexing of the graph for both). Planning costs one
window, whatever the number of steps; tiling and the simulation are linear in the tasks.
A tiled plan is kept only when its makespan is within ``TOLERANCE`` of the window's own
extrapolated over the periods (window makespan plus the period length per extra period);
else, or when the graph is not periodic, the caller plans the whole graph.

A period's index comes from a node's ``step`` and the graph's ``period`` attribute ``(P,
origin)``: ``(step - origin) // P``. Node ``(name, step, *rest)`` of index ``i`` corresponds to
``(name, step - (i - j) * P, *rest)`` of window index ``j``.

>>> import networkx as nx
>>> g = nx.DiGraph(period=(1, 0))
>>> for s in range(12):
...     g.add_node(("update-x", s), costs={"p": 1.0, "q": 2.0}, step=s)
...     if s:
...         g.add_edge(("update-x", s - 1), ("update-x", s), comm=0.5)
>>> import schedulers
>>> (tiled, predicted), reason = tile(g, g, ["p", "q"], schedulers.heft, edge_latency=0.25)
>>> reason, tiled.makespan, predicted.makespan, set(tiled.placement.values())
('', 12.0, 14.75, {'p'})
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import networkx as nx

import schedulers

WARMUP = 2
"""Periods of warm-up in the window before the period that is tiled."""
DRAIN = 2
"""Periods after it: the graph's last ``DRAIN`` periods copy the window's last ones."""
TOLERANCE = 0.01
"""A tiled makespan may exceed the window's extrapolation by this fraction."""


def period_index(abstract: nx.DiGraph, nodes: Any) -> dict[Any, int] | None:
    """Node -> period index for ``nodes`` of ``abstract`` (``None``: a node has no step or a
    key that is not ``(name, step, ...)``, so the graph is not tiled)."""
    P, origin = abstract.graph.get("period", (1, 0))
    attrs = abstract.nodes
    index = {}
    for k in nodes:
        step = attrs[k].get("step")
        if step is None or not isinstance(k, tuple) or len(k) < 2 or k[1] != step:
            return None
        index[k] = (step - origin) // P
    return index


def tile(
    costed: nx.DiGraph,
    abstract: nx.DiGraph,
    processors: Sequence[Hashable],
    scheduler: Callable[..., schedulers.Schedule],
    *,
    edge_latency: float = 0.0,
    **options: Any,
) -> tuple[tuple[schedulers.Schedule, schedulers.Schedule] | None, str]:
    """The tiled plan of ``costed`` (a scheduling graph of ``abstract``) and ``""``: its
    timeline (the simulation with zero overhead) and its prediction (with ``edge_latency`` on
    every edge). ``None, ""`` when there is nothing to tile (not periodic, too few periods to
    gain); ``None`` and why the tiled plan was refused: a node without a counterpart in the
    window, an order that deadlocks, or a makespan beyond ``TOLERANCE``."""
    index = period_index(abstract, costed)
    if index is None:
        return None, ""
    first = min(index.values(), default=0)
    count = max(index.values(), default=-1) - first + 1
    width = WARMUP + 1 + DRAIN
    if count < width + 2:
        return None, ""
    P, origin = abstract.graph.get("period", (1, 0))
    base = origin + first * P  # the window's first step
    suffix = f"-{abstract.graph.get('token', '')}"

    def canonical(k: Any) -> Any:  # the same for the same role in any build
        name = k[0][: -len(suffix)] if k[0].endswith(suffix) else k[0]
        return (name, k[1] - base, *k[2:])

    window_graph = costed.subgraph([k for k, i in index.items() if i - first < width]).copy()
    window = _window(window_graph, canonical, processors, scheduler, options)
    slots: dict[Any, schedulers.Slot] = window.slots
    starts: dict[int, float] = {}
    for k, (_, start, _) in slots.items():
        j = k[1] // P
        starts[j] = min(starts.get(j, start), start)
    length = starts[WARMUP + 1] - starts[WARMUP]
    placement: dict[Any, Hashable] = {}
    when: dict[Any, tuple[float, int, int]] = {}
    rank = {k: r for r, k in enumerate(slots)}
    for k, i in index.items():
        rel = i - first
        shift = 0 if rel <= WARMUP else rel - WARMUP if rel < count - DRAIN else count - width
        twin = canonical(k)
        if shift:
            twin = (twin[0], twin[1] - shift * P, *twin[2:])
        slot = slots.get(twin)
        if slot is None:
            return None, f"no counterpart of {k!r} in the window"
        placement[k] = slot.processor
        when[k] = (slot.start + shift * length, rel, rank[twin])
    order: dict[Hashable, list[Any]] = {p: [] for p in processors}
    for k in sorted(when, key=when.__getitem__):
        order[placement[k]].append(k)
    try:
        timeline, predicted = schedulers.simulate_latencies(
            costed, placement, order, edge_latencies=(0.0, edge_latency), processors=processors)
    except schedulers.DeadlockError:
        return None, "the tiled order deadlocks"
    expected = window.makespan + (count - width) * length
    if timeline.makespan > expected * (1 + TOLERANCE):
        return None, (f"tiled makespan {timeline.makespan:.6g} s over {1 + TOLERANCE:g} x "
                      f"the window's extrapolation {expected:.6g} s")
    return (schedulers.Schedule(timeline.slots, timeline.processors, window.algorithm),
            predicted), ""


_WINDOWS: OrderedDict[Any, schedulers.Schedule] = OrderedDict()
"""The newest window schedules (``CACHED`` at most), keyed by what they depend on: the
scheduler, its options, the processors, and every node's role and costs and every edge's
transfer times in the window. A build with other keys (the next chunk of ``fit``) plans
nothing new; a changed cluster or cost model changes the costs, so it plans anew."""
CACHED = 16


def clear_windows() -> None:
    """Forget every cached window schedule (the next plan of each window schedules it)."""
    _WINDOWS.clear()


def _window(window: nx.DiGraph, canonical: Callable[[Any], Any], processors: Sequence[Hashable],
            scheduler: Callable[..., schedulers.Schedule], options: Mapping[str, Any]
            ) -> schedulers.Schedule:
    """The schedule of ``window``, its nodes named by ``canonical``: from the cache when the
    same problem was scheduled before, else from ``scheduler``."""
    try:
        key: Any = (
            scheduler, tuple(sorted(options.items())), tuple(processors),
            tuple((canonical(k), tuple(c.items())) for k, c in window.nodes(data="costs")),
            tuple((canonical(u), canonical(v), tuple(c.items()) if isinstance(c, dict) else c)
                  for u, v, c in window.edges(data="comm", default=0.0)),
        )
        hash(key)
    except TypeError:  # an option that cannot be a key: no caching
        key = None
    if key is not None and key in _WINDOWS:
        _WINDOWS.move_to_end(key)
        return _WINDOWS[key]
    plan = scheduler(window, processors, **options)
    named = schedulers.Schedule({canonical(k): s for k, s in plan.slots.items()},
                                plan.processors, plan.algorithm)
    if key is not None:
        _WINDOWS[key] = named
        while len(_WINDOWS) > CACHED:
            _WINDOWS.popitem(last=False)
    return named
