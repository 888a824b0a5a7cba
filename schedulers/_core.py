"""Machinery shared by the list schedulers: the checked problem, ranks and processor timelines.

Data
----
`Problem` is the graph after checking at the public boundary, indexed by position ``i`` in a
deterministic topological order (ties by the graph's insertion order, never by node names, so
renaming nodes renames the schedule and nothing else):

- ``nodes[i]``: the node; ``processors[q]``: the processor, ``q`` its index;
- ``cost[i, q]``: seconds to run node ``i`` on processor ``q``, ``inf`` where it cannot run;
- ``preds[i]`` / ``succs[i]``: lists of ``(j, comm, mean_comm)``; ``comm`` is a float (the
  transfer time between any two distinct processors) or a ``(p, p)`` array ``[src, dst]`` with a
  zero diagonal, and ``mean_comm`` its mean over pairs of distinct processors (the paper's average
  transfer cost).

`Timelines` keeps, per processor, the busy intervals sorted by start in two lists, and finds the
earliest gap that fits a node with `bisect` (insertion-based scheduling).

>>> import networkx as nx
>>> graph = nx.DiGraph()
>>> graph.add_edge("a", "b", comm=1.0)
>>> for node in graph:
...     graph.nodes[node]["costs"] = {"cpu": 2.0, "gpu": 1.0}
>>> problem = build_problem(graph, ["cpu", "gpu"])
>>> problem.nodes, problem.cost.tolist(), upward_rank(problem).tolist()
(['a', 'b'], [[2.0, 1.0], [2.0, 1.0]], [4.0, 1.5])
"""

from __future__ import annotations

import heapq
import math
import numbers
from bisect import bisect_right
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import networkx as nx
import numpy as np

from schedulers.exceptions import (
    CycleError,
    InvalidCostError,
    MissingCostError,
    NoProcessorsError,
    UnschedulableNodeError,
)
from schedulers.schedule import Schedule, Slot

Comm: TypeAlias = float | np.ndarray
Edge: TypeAlias = tuple[int, Comm, float]


@dataclass
class Problem:
    """The checked, indexed scheduling problem (see the module docstring)."""

    nodes: list[Hashable]
    processors: tuple[Hashable, ...]
    cost: np.ndarray
    preds: list[list[Edge]]
    succs: list[list[Edge]]

    @property
    def n(self) -> int:
        return len(self.nodes)

    @property
    def p(self) -> int:
        return len(self.processors)


def check_processors(processors: Sequence[Hashable]) -> tuple[Hashable, ...]:
    """Return ``processors`` as a tuple; raise if it is empty or repeats a processor."""
    procs = tuple(processors)
    if not procs:
        raise NoProcessorsError()
    if len(set(procs)) != len(procs):
        raise ValueError(f"expected distinct processors, got {list(procs)!r}")
    return procs


def topological_order(graph: nx.DiGraph) -> list[Hashable]:
    """A topological order of ``graph``, ties by insertion order; raise `CycleError` on a cycle."""
    if not isinstance(graph, nx.DiGraph) or graph.is_multigraph():
        raise TypeError(f"expected a networkx.DiGraph, got {type(graph).__name__}")
    position = {node: i for i, node in enumerate(graph)}
    try:
        return list(nx.lexicographical_topological_sort(graph, key=position.__getitem__))
    except nx.NetworkXUnfeasible:
        raise CycleError(nx.find_cycle(graph)) from None


def _is_seconds(value: Any) -> bool:
    """Whether ``value`` is a real number of seconds, finite and >= 0 (not a bool, not NaN)."""
    kind = type(value)
    if kind is float or kind is int:
        return bool(0 <= value < math.inf)
    if kind is bool or not isinstance(value, numbers.Real):
        return False
    return 0 <= float(value) < math.inf


def _comm(value: Any, edge: tuple[Hashable, Hashable], procs: tuple[Hashable, ...]) -> Comm:
    """Check an edge's ``comm`` and return a float or a ``(p, p)`` matrix with a zero diagonal."""
    if not isinstance(value, Mapping):
        if not _is_seconds(value):
            raise InvalidCostError(value, edge=edge)
        return float(value)
    p = len(procs)
    if p == 1:
        return 0.0
    matrix = np.zeros((p, p))
    for a, src in enumerate(procs):
        for b, dst in enumerate(procs):
            if a == b:
                continue
            if (src, dst) not in value:
                raise MissingCostError(edge[0], edge=edge, pair=(src, dst))
            seconds = value[(src, dst)]
            if not _is_seconds(seconds):
                raise InvalidCostError(seconds, edge=edge, processor=(src, dst))
            matrix[a, b] = seconds
    off = matrix[~np.eye(p, dtype=bool)]
    if off.size and (off == off[0]).all():
        return float(off[0])
    return matrix


def _mean_comm(comm: Comm) -> float:
    if isinstance(comm, float):
        return comm
    p = comm.shape[0]
    return float(comm.sum() / (p * (p - 1)))


def build_problem(graph: nx.DiGraph, processors: Sequence[Hashable]) -> Problem:
    """Check ``graph`` and ``processors`` at the public boundary and index them as a `Problem`.

    Raises `NoProcessorsError`, `CycleError`, `MissingCostError`, `InvalidCostError` or
    `UnschedulableNodeError`; a ``ValueError`` for repeated processors; a ``TypeError`` for a graph
    that is not a ``networkx.DiGraph`` or ``costs`` that is not a dict.
    """
    procs = check_processors(processors)
    nodes = topological_order(graph)
    index = {node: i for i, node in enumerate(nodes)}
    proc_index = {proc: q for q, proc in enumerate(procs)}
    cost = np.full((len(nodes), len(procs)), np.inf)
    for i, node in enumerate(nodes):
        costs = graph.nodes[node].get("costs")
        if costs is None:
            raise MissingCostError(node)
        if not isinstance(costs, Mapping):
            raise TypeError(f"node {node!r}: expected costs as a dict, got {type(costs).__name__}")
        row = [math.inf] * len(procs)
        for proc, value in costs.items():
            q = proc_index.get(proc)
            if q is not None:
                if not _is_seconds(value):
                    raise InvalidCostError(value, node=node, processor=proc)
                row[q] = float(value)
        if min(row) == math.inf:
            raise UnschedulableNodeError(node, procs)
        cost[i] = row
    preds: list[list[Edge]] = [[] for _ in nodes]
    succs: list[list[Edge]] = [[] for _ in nodes]
    for u, v, value in graph.edges(data="comm", default=0.0):
        if type(value) is float and 0 <= value < math.inf:
            comm: Comm = value
            mean = value
        else:
            comm = _comm(value, (u, v), procs)
            mean = _mean_comm(comm)
        i, j = index[u], index[v]
        succs[i].append((j, comm, mean))
        preds[j].append((i, comm, mean))
    return Problem(nodes, procs, cost, preds, succs)


def mean_cost(problem: Problem) -> np.ndarray:
    """Per node, the mean execution time over the processors that can run it."""
    finite = np.isfinite(problem.cost)
    total = np.where(finite, problem.cost, 0.0).sum(axis=1)
    return total / np.maximum(finite.sum(axis=1), 1)


def upward_rank(problem: Problem) -> np.ndarray:
    """``rank_u(i) = mean_cost(i) + max over successors j of (mean_comm(i, j) + rank_u(j))``."""
    w = mean_cost(problem).tolist()
    rank = [0.0] * problem.n
    for i in reversed(range(problem.n)):
        rank[i] = w[i] + max((mean + rank[j] for j, _, mean in problem.succs[i]), default=0.0)
    return np.array(rank)


def downward_rank(problem: Problem) -> np.ndarray:
    """``rank_d(i) = max over predecessors j of (rank_d(j) + mean_cost(j) + mean_comm(j, i))``."""
    w = mean_cost(problem).tolist()
    rank = [0.0] * problem.n
    for i in range(problem.n):
        rank[i] = max((rank[j] + w[j] + mean for j, _, mean in problem.preds[i]), default=0.0)
    return np.array(rank)


class Timelines:
    """Per processor, the busy intervals as two parallel lists sorted by time."""

    def __init__(self, p: int) -> None:
        self.starts: list[list[float]] = [[] for _ in range(p)]
        self.finishes: list[list[float]] = [[] for _ in range(p)]

    def earliest(self, q: int, ready: float, duration: float) -> tuple[float, int]:
        """The earliest start >= ``ready`` of a gap on ``q`` that fits ``duration``, and its index.

        The gap starts at ``ready`` or at the finish of the interval just before it, so a list
        scheduler's start is ``max(ready, finish of the previous node on q)``, which is what the
        simulator computes too.
        """
        starts, finishes = self.starts[q], self.finishes[q]
        if not finishes or finishes[-1] <= ready:
            return ready, len(finishes)
        i = bisect_right(finishes, ready)  # the first interval ending after ready
        # compare the very finish time the node will get, so not even rounding makes an overlap
        if ready + duration <= starts[i]:
            return ready, i
        # past interval i, each gap runs from finishes[k - 1] (> ready) to starts[k]
        end = len(starts)
        for k in range(i + 1, end):
            if finishes[k - 1] + duration <= starts[k]:
                return finishes[k - 1], k
        return finishes[-1], end

    def append_start(self, q: int, ready: float) -> tuple[float, int]:
        """The earliest start >= ``ready`` after every node on ``q`` (no insertion)."""
        finishes = self.finishes[q]
        last = finishes[-1] if finishes else 0.0
        return max(ready, last), len(finishes)

    def insert(self, q: int, index: int, start: float, finish: float) -> None:
        self.starts[q].insert(index, start)
        self.finishes[q].insert(index, finish)

    def remove(self, q: int, index: int) -> None:
        del self.starts[q][index]
        del self.finishes[q][index]


class Placer:
    """Mutable state of a list scheduler: timelines, finish times and processors placed so far."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.timelines = Timelines(problem.p)
        self.finish = [0.0] * problem.n
        self.proc = [-1] * problem.n  # -1: not placed
        self.start = [0.0] * problem.n
        self.placed: list[int] = []
        self.slot_index = [0] * problem.n

    def data_ready(self, i: int) -> list[float]:
        """Per processor, when all inputs of ``i`` from placed predecessors have arrived there."""
        p = self.problem.p
        ready = np.zeros(p)
        for j, comm, _ in self.problem.preds[i]:
            q = self.proc[j]
            if q < 0:
                continue
            f = self.finish[j]
            if isinstance(comm, float):
                arrival = np.full(p, f + comm)
                arrival[q] = f
            else:
                arrival = f + comm[q]
            np.maximum(ready, arrival, out=ready)
        return ready.tolist()

    def options(self, i: int, *, insertion: bool = True) -> list[tuple[float, float, int, int]]:
        """Every processor that can run ``i``: ``(finish, start, q, gap index)``."""
        ready = self.data_ready(i)
        out = []
        for q, duration in enumerate(self.problem.cost[i].tolist()):
            if duration == math.inf:
                continue
            if insertion:
                start, index = self.timelines.earliest(q, ready[q], duration)
            else:
                start, index = self.timelines.append_start(q, ready[q])
            out.append((start + duration, start, q, index))
        return out

    def place(self, i: int, option: tuple[float, float, int, int]) -> None:
        finish, start, q, index = option
        self.timelines.insert(q, index, start, finish)
        self.finish[i], self.start[i], self.proc[i] = finish, start, q
        self.slot_index[i] = index
        self.placed.append(i)

    def unplace(self, i: int) -> None:
        """Undo the latest `place` of ``i`` (the caller undoes placements in reverse order)."""
        self.timelines.remove(self.proc[i], self.slot_index[i])
        self.proc[i] = -1
        self.placed.pop()

    def schedule(self, algorithm: str) -> Schedule:
        problem = self.problem
        slots = {
            problem.nodes[i]: Slot(problem.processors[self.proc[i]], self.start[i], self.finish[i])
            for i in self.placed
        }
        return Schedule(slots, problem.processors, algorithm)


def ready_order(problem: Problem, key: Sequence[Any]) -> Iterable[int]:
    """Yield nodes as they become ready (all predecessors yielded), smallest ``key[i]`` first.

    Ties fall to the topological index, so the order never depends on node names.
    """
    waiting = [len(preds) for preds in problem.preds]
    heap = [(key[i], i) for i in range(problem.n) if waiting[i] == 0]
    heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        yield i
        for j, _, _ in problem.succs[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(heap, (key[j], j))


def quantize(values: Sequence[float] | np.ndarray, digits: int = 12) -> list[float]:
    """Round ``values`` to a grid of ``max|value| * 10**-digits``: float noise breaks no tie.

    Rounding is monotone, so an order by the rounded values stays topological where the exact one
    was; exact ties then fall to the topological index.

    >>> first, second = quantize([0.1 + 0.2, 0.3])
    >>> 0.1 + 0.2 == 0.3, first == second
    (False, True)
    """
    array = np.asarray(values, dtype=float)
    top = float(np.abs(array).max(initial=0.0))
    if top == 0.0 or not math.isfinite(top):
        return array.tolist()
    scale = 10.0 ** (math.floor(math.log10(top)) - digits)
    return (np.round(array / scale) * scale).tolist()


def list_schedule(
    problem: Problem,
    priority: Sequence[float] | np.ndarray,
    choose: Callable[[Placer, int], tuple[float, float, int, int]],
    algorithm: str,
) -> Schedule:
    """Place ready nodes by decreasing ``priority``, each where ``choose(placer, i)`` says."""
    placer = Placer(problem)
    for i in ready_order(problem, [-value for value in quantize(priority)]):
        placer.place(i, choose(placer, i))
    return placer.schedule(algorithm)


def earliest_finish(placer: Placer, i: int) -> tuple[float, float, int, int]:
    """HEFT's choice: the insertion-based earliest finish, ties to the lower processor index."""
    return min(placer.options(i), key=lambda option: (option[0], option[2]))
