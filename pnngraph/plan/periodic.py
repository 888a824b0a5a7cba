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

The tiled start times give each processor its order. Running that placement and order in the
simulator with zero overhead gives the plan's timeline, valid by construction
(``Schedule.validate`` holds) and equal to what the simulator predicts; with the hop latency on
every edge, the plan's prediction. How much of the graph is priced and simulated to get them
(``verify``):

``"full"``
    the whole graph, now: linear in the tasks (about 25 us a task).
``"periodic"`` (the default)
    a *short graph* of ``SHORT`` periods: the graph's first ``WARMUP + STEADY`` periods, then
    its last ``SHORT - WARMUP - STEADY`` (two steady ones and the drain), the inputs that these
    read from the periods in between taken from the head's periods of the same role. It stands
    for the whole graph when every node is priced like its twin (the same ``PRICED``
    attributes and number of inputs; a short last batch of an epoch is not) and when, once
    simulated, its steady periods ``WARMUP + STEADY - 2`` to ``SHORT - DRAIN - 1`` repeat, each
    the one before it shifted by one length ``L`` (to 1e-9). Then the whole graph's times
    follow: a simulation with a fixed order is a max-plus linear recurrence (a node starts at
    the latest of its inputs' and its predecessor's finish plus a transfer time), every edge
    and every link of a processor's order goes forward in tiled start time, and periods repeat,
    so a steady period that is its predecessor shifted by ``L`` makes the next one so too.
    Every period in between takes the times of the head's last period plus ``L`` per period,
    the tail its own plus ``L`` per period left out. The plan's makespans and priorities come
    from that extension, its placement from the twins; its slots (a :class:`DeferredSlots`)
    are the whole graph's simulation, run when first read (``validate``, a Gantt chart, a
    report), and equal the extension up to rounding. Where the conditions fail, ``"full"``.

Planning then costs one window and one short graph, whatever the number of steps; what stays
linear in the tasks is one pass over the nodes (period, twin, the check of identical prices)
and the plan's node -> worker and priority mappings, which lowering needs anyway.
A tiled plan is kept only when its makespan is within ``TOLERANCE`` of the window's own
extrapolated over the periods (window makespan plus the period length per extra period);
else, or when the graph is not periodic, the caller plans the whole graph.

A period's index comes from a node's ``step`` and the graph's ``period`` attribute ``(P,
origin)``: ``(step - origin) // P``. Node ``(name, step, *rest)`` of index ``i`` corresponds to
``(name, step - (i - j) * P, *rest)`` of window index ``j``.

>>> import networkx as nx
>>> g = nx.DiGraph(period=(1, 0))
>>> for s in range(12):
...     g.add_node(("update-x", s), costs={"p": 1.0, "q": 2.0}, step=s, kind="update")
...     if s:
...         g.add_edge(("update-x", s - 1), ("update-x", s), comm=0.5)
>>> import schedulers
>>> def price(keys):  # the scheduling graph of those nodes: here, already priced
...     return g.subgraph(g if keys is None else keys).copy()
>>> plan, reason = tile(g, list(g), ["p", "q"], schedulers.heft, price, edge_latency=0.25)
>>> reason, plan.schedule.makespan, plan.predicted.makespan, set(plan.placement.values())
('', 12.0, 14.75, {'p'})
>>> plan.schedule.slots.ready, len(plan.schedule.slots), plan.schedule.slots.ready
(False, 12, True)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import networkx as nx
import numpy as np

import schedulers
from pnngraph.exceptions import UnknownNameError

WARMUP = 2
"""Periods of warm-up in the window before the period that is tiled."""
DRAIN = 2
"""Periods after it: the graph's last ``DRAIN`` periods copy the window's last ones."""
TOLERANCE = 0.01
"""A tiled makespan may exceed the window's extrapolation by this fraction."""
STEADY = 3
"""Steady periods at the head of the short graph that ``verify="periodic"`` simulates."""
SHORT = WARMUP + STEADY + 2 + DRAIN
"""Periods of that short graph: the head, then two steady periods and the drain of the tail."""
VERIFY = ("periodic", "full")
"""How a tiled plan is checked: a short graph simulated and extended, or the whole graph."""
PRICED = ("kind", "flops", "bytes", "sig", "rows", "count", "home", "copy", "shard")
"""What a node's costs depend on: a node and its twin must agree on these and on their number
of inputs for the short graph to stand for the whole one."""


def period_index(abstract: nx.DiGraph, nodes: Any) -> dict[Any, int] | None:
    """Node -> period index for ``nodes`` of ``abstract`` (``None``: a node has no step or a
    key that is not ``(name, step, ...)``, so the graph is not tiled)."""
    P, origin = abstract.graph.get("period", (1, 0))
    attrs = dict(abstract.nodes(data=True))
    index = {}
    for k in nodes:
        step = attrs[k].get("step")
        if step is None or not isinstance(k, tuple) or len(k) < 2 or k[1] != step:
            return None
        index[k] = (step - origin) // P
    return index


@dataclass(frozen=True)
class Tiled:
    """A tiled plan: ``schedule``, its timeline (the simulation at zero overhead and latency),
    ``predicted`` (with the hop latency on every edge), ``placement`` node -> processor and
    ``priorities`` node -> rank, ``len(nodes)`` for the earliest predicted start down to 1."""

    schedule: schedulers.Schedule
    predicted: schedulers.Schedule
    placement: dict[Any, Hashable]
    priorities: dict[Any, int]


class _Replay:
    """The simulation of the whole tiled graph, run once, when first asked for."""

    def __init__(self, run: Callable[[], tuple[schedulers.Schedule, schedulers.Schedule]]):
        self._run = run
        self.result: tuple[schedulers.Schedule, schedulers.Schedule] | None = None

    def __call__(self) -> tuple[schedulers.Schedule, schedulers.Schedule]:
        if self.result is None:
            self.result = self._run()
        return self.result


class DeferredSlots(Mapping[Any, schedulers.Slot]):
    """The slots of one timeline of a :class:`_Replay` (0: zero latency, 1: the hop latency),
    simulated when first read; a pickle holds them as a plain dict."""

    def __init__(self, replay: _Replay, which: int) -> None:
        self._replay, self._which = replay, which

    @property
    def ready(self) -> bool:
        """Whether the whole graph was simulated already."""
        return self._replay.result is not None

    def _slots(self) -> dict[Any, schedulers.Slot]:
        return self._replay()[self._which].slots

    def __getitem__(self, key: Any) -> schedulers.Slot:
        return self._slots()[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._slots())

    def __len__(self) -> int:
        return len(self._slots())

    def __contains__(self, key: object) -> bool:
        return key in self._slots()

    def keys(self) -> Any:
        return self._slots().keys()

    def items(self) -> Any:
        return self._slots().items()

    def values(self) -> Any:
        return self._slots().values()

    def __eq__(self, other: object) -> bool:
        return self._slots() == (other._slots() if isinstance(other, DeferredSlots) else other)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return dict, (dict(self._slots()),)


@dataclass(frozen=True)
class TiledSchedule(schedulers.Schedule):
    """A schedule of a tiled graph whose slots (:class:`DeferredSlots`) are simulated when first
    read; until then its makespan is ``span``, the periodic extension's (equal to the
    simulation's up to rounding: the tests check both to 1e-9)."""

    span: float = 0.0

    @property
    def makespan(self) -> float:
        slots = self.slots
        if isinstance(slots, DeferredSlots) and not slots.ready:
            return self.span
        return super().makespan


# node -> (processor, the twin's start in the window, periods shifted, period, twin's rank,
# the twin's key in this graph)
Entries = dict[Any, tuple[Hashable, float, int, int, int, Any]]
Price = Callable[[Sequence[Any] | None], nx.DiGraph]


def tile(
    abstract: nx.DiGraph,
    nodes: Sequence[Any],
    processors: Sequence[Hashable],
    scheduler: Callable[..., schedulers.Schedule],
    price: Price,
    *,
    edge_latency: float = 0.0,
    verify: Literal["periodic", "full"] = "periodic",
    **options: Any,
) -> tuple[Tiled | None, str]:
    """The tiled plan of ``nodes`` (the computing nodes of ``abstract``) and ``""``. ``None,
    ""`` when there is nothing to tile (not periodic, too few periods to gain); ``None`` and why
    the tiled plan was refused: a node without a counterpart in the window, an order that
    deadlocks, or a makespan beyond ``TOLERANCE``.

    ``price(keys)`` is the scheduling graph of those nodes (``None``: of every node).
    ``verify="periodic"`` prices and simulates a short graph only and extends it (see the
    module docstring), falling back to ``"full"`` where its conditions do not hold;
    ``"full"`` prices and simulates the whole tiled graph now."""
    if verify not in VERIFY:
        raise UnknownNameError("verify", verify, VERIFY)
    index = period_index(abstract, nodes)
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

    window_graph = price([k for k, i in index.items() if i - first < width])
    window = _window(window_graph, canonical, processors, scheduler, options)
    starts: dict[int, float] = {}
    slots: dict[Any, schedulers.Slot] = window.slots
    for k, (_, start, _) in slots.items():
        j = k[1] // P
        starts[j] = min(starts.get(j, start), start)
    length = starts[WARMUP + 1] - starts[WARMUP]
    rank = {k: r for r, k in enumerate(window.slots)}
    twins = {k: (window.slots[c].processor, window.slots[c].start, rank[c])
             for k, c in ((k, canonical(k)) for k in window_graph)}
    entries: Entries = {}
    for k, i in index.items():
        rel = i - first
        shift = 0 if rel <= WARMUP else rel - WARMUP if rel < count - DRAIN else count - width
        key = (k[0], k[1] - shift * P, *k[2:]) if shift else k
        twin = twins.get(key)
        if twin is None:
            return None, f"no counterpart of {k!r} in the window"
        entries[k] = (twin[0], twin[1], shift, rel, twin[2], key)
    expected = window.makespan + (count - width) * length
    algorithm = window.algorithm
    if verify == "periodic" and count > SHORT:
        short = _short(abstract, entries, count, P, price, processors, edge_latency, length)
        if short is not None:
            return _extended(entries, short, count, P, price, processors, edge_latency,
                             length, expected, algorithm)
    return _replayed(entries, price, processors, edge_latency, length, expected, algorithm)


def _order(entries: Entries, processors: Sequence[Hashable], length: float,
           delta: Callable[[int], int] = lambda rel: 0) -> dict[Hashable, list[Any]]:
    """processor -> its nodes by tiled start (the twin's start plus ``length`` per period
    shifted, ``delta(period)`` periods fewer), ties by period and the twin's rank."""
    def when(k: Any) -> tuple[float, int, int]:
        _, start, shift, rel, rank, _ = entries[k]
        back = delta(rel)
        return start + (shift - back) * length, rel - back, rank

    order: dict[Hashable, list[Any]] = {p: [] for p in processors}
    for k in sorted(entries, key=when):
        order[entries[k][0]].append(k)
    return order


def _refused(makespan: float, expected: float) -> str:
    if makespan > expected * (1 + TOLERANCE):
        return (f"tiled makespan {makespan:.6g} s over {1 + TOLERANCE:g} x "
                f"the window's extrapolation {expected:.6g} s")
    return ""


def _replay(entries: Entries, price: Price, processors: Sequence[Hashable],
            edge_latency: float, length: float, algorithm: str
            ) -> tuple[schedulers.Schedule, schedulers.Schedule]:
    """The whole tiled graph priced and simulated: its timeline and its prediction."""
    placement = {k: e[0] for k, e in entries.items()}
    timeline, predicted = schedulers.simulate_latencies(
        price(None), placement, _order(entries, processors, length),
        edge_latencies=(0.0, edge_latency), processors=processors)
    return schedulers.Schedule(timeline.slots, timeline.processors, algorithm), predicted


def _replayed(entries: Entries, price: Price, processors: Sequence[Hashable],
              edge_latency: float, length: float, expected: float, algorithm: str
              ) -> tuple[Tiled | None, str]:
    """The tiled plan checked by simulating the whole graph (``verify="full"``)."""
    try:
        timeline, predicted = _replay(entries, price, processors, edge_latency, length,
                                      algorithm)
    except schedulers.DeadlockError:
        return None, "the tiled order deadlocks"
    refused = _refused(timeline.makespan, expected)
    if refused:
        return None, refused
    slots = predicted.slots
    by_start = sorted(slots, key=lambda k: (slots[k].start, slots[k].finish))
    return Tiled(timeline, predicted, {k: e[0] for k, e in entries.items()},
                 {k: len(by_start) - i for i, k in enumerate(by_start)}), ""


def _short(abstract: nx.DiGraph, entries: Entries, count: int, P: int, price: Price,
           processors: Sequence[Hashable], edge_latency: float, length: float
           ) -> tuple[tuple[schedulers.Schedule, ...], tuple[float, float]] | None:
    """The short graph of ``SHORT`` periods simulated, and its steady period's length in
    either timeline; ``None`` where the periodic check does not apply: a node not priced like
    its twin (other attributes or inputs, as in the short last batch of an epoch), inputs
    that do not map onto the short graph, or steady periods that do not repeat."""
    B, C = WARMUP + STEADY, SHORT - WARMUP - STEADY
    delta = count - SHORT
    attrs, preds = dict(abstract.nodes(data=True)), abstract.pred
    inputs = dict(abstract.in_degree())

    def priced(k: Any) -> tuple[Any, ...]:
        node = attrs[k]
        return (*map(node.get, PRICED), inputs[k])

    head, tail = [], []
    signature = {twin: priced(twin) for twin in {e[5] for e in entries.values()}}
    for k, (_, _, shift, rel, _, twin) in entries.items():
        if shift and (*map(attrs[k].get, PRICED), inputs[k]) != signature[twin]:
            return None
        if rel < B:
            head.append(k)
        elif rel >= count - C:
            tail.append(k)
    if any(u in entries and entries[u][3] > entries[v][3] for v in head for u in preds[v]):
        return None  # an input from a later period: the head would not stand alone
    bridges = []  # an input of the tail from before it, and where it comes from in the head
    for v in tail:
        for u in preds[v]:
            if u not in entries or entries[u][3] >= count - C:
                continue
            twin = (u[0], u[1] - delta * P, *u[2:])
            if twin not in entries or not WARMUP <= entries[u][3] - delta < B:
                return None
            bridges.append((u, v, twin))
    short = price([*head, *dict.fromkeys(u for u, _, _ in bridges if entries[u][3] >= B),
                   *tail])
    for u, v, twin in bridges:
        if short.has_edge(twin, v):
            return None
        short.add_edge(twin, v, **short.edges[u, v])
        short.remove_edge(u, v)
    short.remove_nodes_from([u for u, _, _ in bridges if entries[u][3] >= B])
    part = {k: entries[k] for k in short}
    try:
        timelines = schedulers.simulate_latencies(
            short, {k: e[0] for k, e in part.items()},
            _order(part, processors, length, lambda rel: delta if rel >= count - C else 0),
            edge_latencies=(0.0, edge_latency), processors=processors)
    except schedulers.DeadlockError:
        return None
    # the steady periods B - 2 .. SHORT - DRAIN - 1 of the short graph repeat, each the one
    # before it shifted by one length per timeline
    lengths = []
    for timeline in timelines:
        slots = timeline.slots
        tol = 1e-9 * max(1.0, timeline.makespan)
        seen: float | None = None
        for k, (_, _, _, rel, _, _) in part.items():
            r = rel - delta if rel >= count - C else rel
            if not B - 2 <= r < SHORT - DRAIN - 1:
                continue
            after = (k[0], k[1] + (P if r != B - 1 else (1 + delta) * P), *k[2:])
            if after not in slots:
                return None
            for a, b in ((slots[k].start, slots[after].start),
                         (slots[k].finish, slots[after].finish)):
                if seen is None:
                    seen = b - a
                elif abs(b - a - seen) > tol:
                    return None
        lengths.append(seen if seen is not None else length)
    return timelines, (lengths[0], lengths[1])


def _extended(entries: Entries,
              short: tuple[tuple[schedulers.Schedule, ...], tuple[float, float]], count: int,
              P: int, price: Price, processors: Sequence[Hashable], edge_latency: float,
              length: float, expected: float, algorithm: str) -> tuple[Tiled | None, str]:
    """The tiled plan from the short graph's simulation (``verify="periodic"``): every node at
    its representative's times in the short graph plus its period's lengths; the whole
    graph's slots are simulated when first read."""
    (timeline, predicted), lengths = short
    B, C = WARMUP + STEADY, SHORT - WARMUP - STEADY
    delta = count - SHORT
    names = list(timeline.slots)
    position = {k: i for i, k in enumerate(names)}
    keys = list(entries)
    # a period in between has the times of the head's last one (found by the twin they share)
    last = {entries[k][5]: i for k, i in position.items() if entries[k][3] == B - 1}
    low, high = B, count - C
    rep = np.array([position[k] if not low <= e[3] < high else last[e[5]]
                    for k, e in entries.items()], dtype=np.intp)
    rel = np.array([e[3] for e in entries.values()])
    periods = np.where(rel < low, 0, np.where(rel >= high, delta, rel - B + 1)).astype(float)
    spans, firsts = [], []
    for schedule, period in zip((timeline, predicted), lengths, strict=True):
        slots = [schedule.slots[k] for k in names]
        start = np.array([s.start for s in slots])[rep] + periods * period
        finish = np.array([s.finish for s in slots])[rep] + periods * period
        spans.append(float(finish.max(initial=0.0)))
        firsts.append((start, finish))
    refused = _refused(spans[0], expected)
    if refused:
        return None, refused
    start, finish = firsts[1]
    ranked = np.lexsort((finish, start))
    priorities = dict(zip([keys[i] for i in ranked.tolist()], range(len(keys), 0, -1),
                          strict=True))
    replay = _Replay(lambda: _replay(entries, price, processors, edge_latency, length,
                                     algorithm))
    procs = tuple(processors)
    return Tiled(
        TiledSchedule(cast(dict, DeferredSlots(replay, 0)), procs, algorithm, spans[0]),
        TiledSchedule(cast(dict, DeferredSlots(replay, 1)), procs, "simulate", spans[1]),
        {k: e[0] for k, e in entries.items()}, priorities), ""


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
