"""Machinery shared by the list schedulers: the checked problem, ranks and processor timelines.

Data
----
`Problem` is the graph after checking at the public boundary, as arrays indexed by position ``i``
in a deterministic topological order (ties by the graph's insertion order, never by node names, so
renaming nodes renames the schedule and nothing else):

- ``nodes[i]``: the node; ``processors[q]``: the processor, ``q`` its index;
- ``cost[i, q]``: seconds to run node ``i`` on processor ``q``, ``inf`` where it cannot run;
- edges ``k`` from ``src[k]`` to ``dst[k]``, sorted by ``dst`` (the edges into ``i`` are
  ``in_ptr[i]:in_ptr[i + 1]``); ``out_edges[out_ptr[i]:out_ptr[i + 1]]`` are those out of ``i``;
- ``comm[k]``: the transfer time between any two distinct processors, or NaN where it depends on
  the pair: then ``matrices[k]`` is the ``(p, p)`` matrix ``[src, dst]`` with a zero diagonal (a
  `schedulers.PairSum` becomes `PairRows`, which makes a row of that matrix when asked);
  ``mean_comm[k]`` is its mean over pairs of distinct processors (the paper's average).

`Timelines` keeps, per processor, the busy intervals sorted by start, and finds the earliest gap
that fits a node (insertion-based scheduling). `Timelines.search` looks at the last
``tail_width(p, n)`` intervals of every processor at once (numpy arrays of shape ``(p, width)``);
only on a processor whose intervals ending after the node's data-ready time reach back past them
does `Timelines.earliest` search alone (a binary search, then a scan of the gaps). Both do the same
float64 operations (``+``, ``max``, ``<=``, which numpy and Python round alike, IEEE 754), so the
schedules are identical whichever finds a start. Costs and transfer times become float64 at the
boundary (``float(value)``), so all arithmetic is float64 and there is no exact (rational) path
to keep: a `fractions.Fraction` cost schedules as the float nearest to it.

Ranks run over layers (`layers`): a layer holds nodes none of which depends on another of the
same layer, so a rank of the whole layer is a few array operations. They take the max of the same
float sums as a loop over a topological order, so they are identical to it.

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
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
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
from schedulers.schedule import PairSum, Schedule, Slot


class PairRows:
    """A `PairSum` over processor positions: ``rows[q]`` is row ``q`` of its ``(p, p)`` matrix
    (transfer times from processor ``q``, 0 to itself), ``rows[a, b]`` one entry; the same float
    operations as ``PairSum.__getitem__``. Nothing of size ``p * p`` is ever made."""

    def __init__(self, base: float, ends: np.ndarray, scale: float) -> None:
        self.base, self.ends, self.scale = base, ends, scale
        self.shape = (len(ends), len(ends))

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, tuple):
            a, b = index
            return 0.0 if a == b else self.base + self.scale * float(self.ends[a] + self.ends[b])
        row = self.base + self.scale * (self.ends[index] + self.ends)
        row[index] = 0.0
        return row

    def mean(self) -> float:
        """The mean over pairs of distinct processors."""
        p = len(self.ends)
        pairs = self.ends.sum() * 2 * (p - 1) / (p * (p - 1))
        return float(self.base + self.scale * pairs)


Comm: TypeAlias = float | np.ndarray | PairRows
Edge: TypeAlias = tuple[int, Comm, float]
Option: TypeAlias = tuple[float, float, int, int]
"""A place for a node: ``(finish, start, processor index, gap index)``."""


def tail_width(p: int, n: int) -> int:
    """How many of each processor's last busy intervals `Timelines.search` looks at at once,
    for ``n`` nodes on ``p`` processors.

    About 2,048 over all ``p`` processors, at least 32 each. On the random DAGs of the benchmark
    (100,000 nodes on 4, 16 or 64 processors) HEFT's search then reaches back past the tail for
    at most 2 nodes in 100,000, CPOP's for up to a quarter of the nodes (its critical-path
    processor runs far ahead); a wider tail would cost every node more than those searches.
    No timeline holds more than ``n`` intervals, so the tail is no wider.
    """
    return max(1, min(n, max(32, 2048 // max(p, 1))))


_FLOAT = {float}


@dataclass
class Problem:
    """The checked, indexed scheduling problem (see the module docstring)."""

    nodes: list[Hashable]
    processors: tuple[Hashable, ...]
    cost: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    comm: np.ndarray
    mean_comm: np.ndarray
    matrices: dict[int, np.ndarray | PairRows]
    in_ptr: np.ndarray
    out_ptr: np.ndarray
    out_edges: np.ndarray

    @property
    def n(self) -> int:
        return len(self.nodes)

    @property
    def p(self) -> int:
        return len(self.processors)

    def _edges(self, ks: np.ndarray, ends: np.ndarray, ptr: np.ndarray) -> list[list[Edge]]:
        """Per node, ``(other end, comm, mean_comm)`` of the edges ``ks`` (CSR by ``ptr``)."""
        comm: list[Comm] = self.comm[ks].tolist()
        if self.matrices:
            for pos, k in enumerate(ks.tolist()):
                if k in self.matrices:
                    comm[pos] = self.matrices[k]
        edges = list(zip(ends[ks].tolist(), comm, self.mean_comm[ks].tolist(), strict=True))
        bounds = ptr.tolist()
        return [edges[bounds[i] : bounds[i + 1]] for i in range(self.n)]

    @cached_property
    def preds(self) -> list[list[Edge]]:
        """Per node, ``(predecessor, comm, mean_comm)`` for each edge in, in the graph's order."""
        return self._edges(np.arange(self.src.size), self.src, self.in_ptr)

    @cached_property
    def succs(self) -> list[list[Edge]]:
        """Per node, ``(successor, comm, mean_comm)`` for each edge out, in the graph's order."""
        return self._edges(self.out_edges, self.dst, self.out_ptr)

    @cached_property
    def height_layers(self) -> list[np.ndarray]:
        """Layers from the exit nodes up: each node comes after all its successors."""
        ends = self.src  # removing a node removes one edge out of each of its predecessors
        return layers(np.diff(self.out_ptr), self.in_ptr, ends)

    @cached_property
    def depth_layers(self) -> list[np.ndarray]:
        """Layers from the entry nodes down: each node comes after all its predecessors."""
        return layers(np.diff(self.in_ptr), self.out_ptr, self.dst[self.out_edges])


def check_processors(processors: Sequence[Hashable]) -> tuple[Hashable, ...]:
    """Return ``processors`` as a tuple; raise if it is empty or repeats a processor."""
    procs = tuple(processors)
    if not procs:
        raise NoProcessorsError()
    if len(set(procs)) != len(procs):
        raise ValueError(f"expected distinct processors, got {list(procs)!r}")
    return procs


def _check_graph(graph: Any) -> None:
    if not isinstance(graph, nx.DiGraph) or graph.is_multigraph():
        raise TypeError(f"expected a networkx.DiGraph, got {type(graph).__name__}")


def _edges_by_position(graph: nx.DiGraph) -> tuple[list[Hashable], np.ndarray, np.ndarray, list]:
    """The nodes in insertion order; each edge's ends as positions in it, and its ``comm``."""
    listed = list(graph)
    position = {node: k for k, node in enumerate(listed)}
    adjacency = graph.adjacency  # node -> {neighbour: edge data}, in the graph's edge order
    counts = [len(nbrs) for _, nbrs in adjacency()]
    heads = [position[v] for _, nbrs in adjacency() for v in nbrs]
    values = [data.get("comm", 0.0) for _, nbrs in adjacency() for data in nbrs.values()]
    tails = np.repeat(np.arange(len(listed), dtype=np.intp), counts)
    return listed, tails, np.array(heads, dtype=np.intp), values


def _lexicographic_order(n: int, tails: np.ndarray, heads: np.ndarray) -> np.ndarray | None:
    """Positions in topological order, smallest position first among ready ones; None on a cycle.

    The edges come grouped by tail position (as `_edges_by_position` lists them).
    """
    if bool((tails < heads).all()):  # the insertion order is topological: it is the answer
        return np.arange(n, dtype=np.intp)
    ptr = np.searchsorted(tails, np.arange(n + 1)).tolist()
    succ = heads.tolist()
    waiting = np.bincount(heads, minlength=n).tolist()
    heap = [k for k in range(n) if waiting[k] == 0]  # sorted, so a heap
    order = []
    while heap:
        k = heapq.heappop(heap)
        order.append(k)
        for v in succ[ptr[k] : ptr[k + 1]]:
            waiting[v] -= 1
            if waiting[v] == 0:
                heapq.heappush(heap, v)
    return np.array(order, dtype=np.intp) if len(order) == n else None


def topological_order(graph: nx.DiGraph) -> list[Hashable]:
    """A topological order of ``graph``, ties by insertion order; raise `CycleError` on a cycle."""
    _check_graph(graph)
    listed, tails, heads, _ = _edges_by_position(graph)
    order = _lexicographic_order(len(listed), tails, heads)
    if order is None:
        raise CycleError(nx.find_cycle(graph))
    return [listed[k] for k in order.tolist()]


def _is_seconds(value: Any) -> bool:
    """Whether ``value`` is a real number of seconds, finite and >= 0 (not a bool, not NaN)."""
    kind = type(value)
    if kind is float or kind is int:
        return bool(0 <= value < math.inf)
    if kind is bool or not isinstance(value, numbers.Real):
        return False
    return 0 <= float(value) < math.inf


def _cost_row(node: Hashable, costs: Any, proc_index: dict[Hashable, int]) -> list[float]:
    """Check one node's ``costs`` and return its row of seconds per processor (inf: cannot run)."""
    if costs is None:
        raise MissingCostError(node)
    if not isinstance(costs, Mapping):
        raise TypeError(f"node {node!r}: expected costs as a dict, got {type(costs).__name__}")
    row = [math.inf] * len(proc_index)
    for proc, value in costs.items():
        q = proc_index.get(proc)
        if q is not None:
            if not _is_seconds(value):
                raise InvalidCostError(value, node=node, processor=proc)
            row[q] = float(value)
    if min(row) == math.inf:
        raise UnschedulableNodeError(node, tuple(proc_index))
    return row


def _cost_matrix(nodes: list[Hashable], costs: list[Any], procs: tuple) -> np.ndarray:
    """The ``(n, p)`` cost matrix of ``nodes`` (``costs[i]``: the attribute of ``nodes[i]``).

    A dict of floats over exactly ``procs``, in that order (what `annotate_costs` and the random
    DAGs make), is copied as it is and checked with the whole matrix; every other row, and a row
    that fails that check, goes through `_cost_row` in node order, so the error is the one of the
    first bad node.
    """
    cost = np.empty((len(nodes), len(procs)))
    slow = []
    for i, row in enumerate(costs):
        if type(row) is dict and tuple(row) == procs:
            values = list(row.values())
            if set(map(type, values)) == _FLOAT:
                cost[i] = values
                continue
        slow.append(i)
    with np.errstate(invalid="ignore"):
        good = (cost >= 0.0) & (cost < math.inf)
    bad = np.flatnonzero(~good.all(axis=1)).tolist()
    proc_index = {proc: q for q, proc in enumerate(procs)}
    for i in sorted(set(bad).union(slow)):
        cost[i] = _cost_row(nodes[i], costs[i], proc_index)
    return cost


def _comm(value: Any, edge: tuple[Hashable, Hashable], procs: tuple[Hashable, ...],
          ends: dict[int, tuple[Any, np.ndarray]] | None = None) -> Comm:
    """Check an edge's ``comm`` and return a float, a ``(p, p)`` matrix with a zero diagonal or
    `PairRows` (``ends`` caches each `PairSum`'s ends as an array, by identity)."""
    if isinstance(value, PairSum):
        return _pair_rows(value, edge, procs, {} if ends is None else ends)
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


def _pair_rows(value: PairSum, edge: tuple[Hashable, Hashable], procs: tuple[Hashable, ...],
               ends: dict[int, tuple[Any, np.ndarray]]) -> Comm:
    for number in (value.base, value.scale):
        if not _is_seconds(number):
            raise InvalidCostError(number, edge=edge)
    if id(value.ends) not in ends:
        for proc, seconds in value.ends.items():
            if not _is_seconds(seconds):
                raise InvalidCostError(seconds, edge=edge, processor=proc)
        vector = np.array([float(value.ends.get(proc, 0.0)) for proc in procs])
        ends[id(value.ends)] = (value.ends, vector)  # the mapping kept alive: its id stays its
    vector = ends[id(value.ends)][1]
    base, scale = float(value.base), float(value.scale)
    if len(procs) == 1:
        return 0.0
    if (vector == vector[0]).all():
        return base + scale * float(vector[0] + vector[0])
    return PairRows(base, vector, scale)


def _comms(
    values: list, edge: Callable[[int], tuple[Hashable, Hashable]], procs: tuple
) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray | PairRows]]:
    """Each edge's transfer time (NaN where per pair), its mean, and the per-pair matrices."""
    if set(map(type, values)) <= _FLOAT:
        comm = np.array(values, dtype=float)
        if bool(((comm >= 0.0) & (comm < math.inf)).all()):
            return comm, comm, {}
    comm = np.empty(len(values))
    mean = np.empty(len(values))
    matrices: dict[int, np.ndarray | PairRows] = {}
    ends: dict[int, tuple[Any, np.ndarray]] = {}
    for k, value in enumerate(values):
        if type(value) is float and 0 <= value < math.inf:
            comm[k] = mean[k] = value
            continue
        checked = _comm(value, edge(k), procs, ends)
        if isinstance(checked, float):
            comm[k] = mean[k] = checked
        elif isinstance(checked, PairRows):
            comm[k] = math.nan
            mean[k] = checked.mean()
            matrices[k] = checked
        else:
            p = checked.shape[0]
            comm[k] = math.nan
            mean[k] = float(checked.sum() / (p * (p - 1)))
            matrices[k] = checked
    return comm, mean, matrices


def _ptr(ends: np.ndarray, n: int) -> np.ndarray:
    """CSR offsets of edges sorted by ``ends``."""
    return np.concatenate([[0], np.cumsum(np.bincount(ends, minlength=n))]).astype(np.intp)


def build_problem(graph: nx.DiGraph, processors: Sequence[Hashable]) -> Problem:
    """Check ``graph`` and ``processors`` at the public boundary and index them as a `Problem`.

    Raises `NoProcessorsError`, `CycleError`, `MissingCostError`, `InvalidCostError` or
    `UnschedulableNodeError`; a ``ValueError`` for repeated processors; a ``TypeError`` for a graph
    that is not a ``networkx.DiGraph`` or ``costs`` that is not a dict.
    """
    procs = check_processors(processors)
    _check_graph(graph)
    listed, tails, heads, values = _edges_by_position(graph)
    n = len(listed)
    order = _lexicographic_order(n, tails, heads)
    if order is None:
        raise CycleError(nx.find_cycle(graph))
    index = np.empty(n, dtype=np.intp)
    index[order] = np.arange(n)
    positions = order.tolist()
    nodes = [listed[k] for k in positions]
    attrs = [costs for _, costs in graph.nodes(data="costs")]
    cost = _cost_matrix(nodes, [attrs[k] for k in positions], procs)
    del attrs
    comm, mean, matrices = _comms(values, lambda k: (listed[tails[k]], listed[heads[k]]), procs)
    src, dst = index[tails], index[heads]
    by_dst = np.argsort(dst, kind="stable")  # within a node, the graph's edge order
    by_src = np.argsort(src, kind="stable")
    slot = np.empty_like(by_dst)
    slot[by_dst] = np.arange(by_dst.size)
    return Problem(
        nodes,
        procs,
        cost,
        src[by_dst],
        dst[by_dst],
        comm[by_dst],
        mean[by_dst],
        {int(slot[k]): matrix for k, matrix in matrices.items()},
        _ptr(dst, n),
        _ptr(src, n),
        slot[by_src],
    )


def edge_ranges(ptr: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The runs ``ptr[i]:ptr[i + 1]`` of ``nodes``, concatenated, and where each run begins."""
    if nodes.size == 1:  # a chain's layers: no gathering
        i = int(nodes[0])
        return np.arange(ptr[i], ptr[i + 1]), np.zeros(1, dtype=np.intp)
    lo = ptr[nodes]
    counts = ptr[nodes + 1] - lo
    begins = np.cumsum(counts) - counts
    return np.arange(int(counts.sum())) + np.repeat(lo - begins, counts), begins


def layers(count: np.ndarray, ptr: np.ndarray, ends: np.ndarray) -> list[np.ndarray]:
    """Peel a DAG into layers: first the nodes whose ``count`` is 0, then repeatedly those whose
    count drops to 0 once each peeled node ``i`` takes 1 from every ``ends[ptr[i]:ptr[i + 1]]``.

    With ``count`` the out-degrees and ``ends`` the predecessors, a node's layer comes after all
    its successors' (its height); with in-degrees and successors, after its predecessors'. Each
    layer is sorted; a layer costs a few array operations, so a chain of ``n`` nodes (``n``
    layers) is the slowest case.
    """
    remaining = count.astype(np.intp)
    frontier = np.flatnonzero(remaining == 0)
    out = []
    while frontier.size:
        out.append(frontier)
        if frontier.size == 1:  # its ends are distinct (no multi-edges): no counting
            i = int(frontier[0])
            touched = ends[ptr[i] : ptr[i + 1]]
            remaining[touched] -= 1
            frontier = np.sort(touched[remaining[touched] == 0])
            continue
        positions, _ = edge_ranges(ptr, frontier)
        touched, times = np.unique(ends[positions], return_counts=True)
        remaining[touched] -= times
        frontier = touched[remaining[touched] == 0]
    return out


def mean_cost(problem: Problem) -> np.ndarray:
    """Per node, the mean execution time over the processors that can run it."""
    finite = np.isfinite(problem.cost)
    total = np.where(finite, problem.cost, 0.0).sum(axis=1)
    return total / np.maximum(finite.sum(axis=1), 1)


def upward_rank(problem: Problem) -> np.ndarray:
    """``rank_u(i) = mean_cost(i) + max over successors j of (mean_comm(i, j) + rank_u(j))``."""
    w = mean_cost(problem)
    rank = np.zeros(problem.n)
    edges = problem.out_edges
    succ, mean = problem.dst[edges], problem.mean_comm[edges]
    for layer in problem.height_layers:
        positions, begins = edge_ranges(problem.out_ptr, layer)
        if positions.size == 0:  # the exit nodes: the max over no successors is 0
            rank[layer] = w[layer] + 0.0
            continue
        tails = np.maximum.reduceat(mean[positions] + rank[succ[positions]], begins)
        rank[layer] = w[layer] + tails
    return rank


def downward_rank(problem: Problem) -> np.ndarray:
    """``rank_d(i) = max over predecessors j of (rank_d(j) + mean_cost(j) + mean_comm(j, i))``."""
    w = mean_cost(problem)
    rank = np.zeros(problem.n)
    for layer in problem.depth_layers[1:]:  # the entry nodes keep 0
        positions, begins = edge_ranges(problem.in_ptr, layer)
        pred = problem.src[positions]
        heads = rank[pred] + w[pred] + problem.mean_comm[positions]
        rank[layer] = np.maximum.reduceat(heads, begins)
    return rank


class Timelines:
    """Per processor, the busy intervals sorted by time, in two growable arrays.

    Processor ``q``'s intervals are `intervals` ``(q)``, ``count[q]`` of them; they are stored
    after ``width = tail + 1`` entries of ``-inf``, so that the last ``width`` stored entries are
    always the tail: ``tail_starts[q]`` / ``tail_finishes[q]`` copy them (right-aligned, ``-inf``
    where it has fewer) into two ``(p, width)`` arrays, from which `search` finds a start on
    every processor at once.
    """

    def __init__(self, p: int, tail: int) -> None:
        if tail < 1:
            raise ValueError(f"expected tail >= 1, got {tail!r}")
        self.width = width = tail + 1
        self.starts = [np.full(2 * width, -math.inf) for _ in range(p)]
        self.finishes = [np.full(2 * width, -math.inf) for _ in range(p)]
        self.count = np.zeros(p, dtype=np.intp)
        self.tail_starts = np.full((p, width), -math.inf)
        self.tail_finishes = np.full((p, width), -math.inf)

    def intervals(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        """Starts and finishes of processor ``q``'s busy intervals (views, sorted)."""
        end = self.width + int(self.count[q])
        return self.starts[q][self.width : end], self.finishes[q][self.width : end]

    def earliest(self, q: int, ready: float, duration: float) -> tuple[float, int]:
        """The earliest start >= ``ready`` of a gap on ``q`` that fits ``duration``, and its index.

        The gap starts at ``ready`` or at the finish of the interval just before it, so a list
        scheduler's start is ``max(ready, finish of the previous node on q)``, which is what the
        simulator computes too.
        """
        starts, finishes = self.intervals(q)
        size = starts.size
        if not size or finishes[-1] <= ready:
            return ready, size
        i = int(finishes.searchsorted(ready, side="right"))  # the first interval ending after ready
        # compare the very finish time the node will get, so not even rounding makes an overlap
        if ready + duration <= starts[i]:
            return ready, i
        # past interval i, each gap runs from finishes[k - 1] (> ready) to starts[k]
        fits = finishes[i:-1] + duration <= starts[i + 1 :]
        k = int(fits.argmax()) if fits.size else 0
        if fits.size and fits[k]:
            return float(finishes[i + k]), i + k + 1
        return float(finishes[-1]), size

    def search(self, ready: np.ndarray, duration: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`earliest` on every processor: arrays of starts and gap indices.

        In the tail, the gap before interval ``c`` starts at ``max(ready, finish of c - 1)`` and
        counts when interval ``c`` ends after ``ready``: the gaps `earliest` tries, with the same
        sums and comparisons. Only the columns from the first interval that ends after ``ready``
        on any processor are compared. Where the tail's first interval ends after ``ready``, the
        gaps reach back past the tail and `earliest` searches that processor alone.
        """
        ts, tf = self.tail_starts, self.tail_finishes
        start = np.maximum(tf[:, -1], ready)  # after the last interval
        index = self.count.copy()
        r = ready[:, None]
        after = tf > r  # per row, the intervals ending after ready: a suffix
        columns = np.logical_or.reduce(after, axis=0)
        if not columns[-1]:
            return start, index  # every processor is free from ready on
        first = max(int(columns.argmax()), 1)
        gap = np.maximum(tf[:, first - 1 : -1], r)
        fits = gap + duration[:, None] <= ts[:, first:]
        fits &= after[:, first:]
        if fits.any():
            rows = np.flatnonzero(fits.any(axis=1))
            cols = fits[rows].argmax(axis=1)
            start[rows] = gap[rows, cols]
            index[rows] += cols + first - self.width
        if columns[0]:
            deep = after[:, 0] & (duration < math.inf)
            for q in np.flatnonzero(deep).tolist():
                start[q], index[q] = self.earliest(q, float(ready[q]), float(duration[q]))
        return start, index

    def append_start(self, q: int, ready: float) -> tuple[float, int]:
        """The earliest start >= ``ready`` after every node on ``q`` (no insertion)."""
        size = int(self.count[q])
        last = float(self.finishes[q][self.width + size - 1]) if size else 0.0
        return max(ready, last), size

    def insert(self, q: int, index: int, start: float, finish: float) -> None:
        size = int(self.count[q])
        starts, finishes = self.starts[q], self.finishes[q]
        at, end = self.width + index, self.width + size
        if end == starts.size:  # full: double
            starts = self.starts[q] = np.concatenate([starts, np.empty(end)])
            finishes = self.finishes[q] = np.concatenate([finishes, np.empty(end)])
        if at < end:
            starts[at + 1 : end + 1] = starts[at:end]
            finishes[at + 1 : end + 1] = finishes[at:end]
        starts[at], finishes[at] = start, finish
        self._changed(q, index, size + 1)

    def remove(self, q: int, index: int) -> None:
        size = int(self.count[q])
        starts, finishes = self.starts[q], self.finishes[q]
        at, end = self.width + index, self.width + size
        starts[at : end - 1] = starts[at + 1 : end]
        finishes[at : end - 1] = finishes[at + 1 : end]
        self._changed(q, index, size - 1)

    def _changed(self, q: int, index: int, size: int) -> None:
        """Record ``q``'s new ``size`` and refresh its tail after a change at ``index``."""
        self.count[q] = size
        if index < size - self.width:
            return  # the tail holds the same intervals
        self.tail_starts[q] = self.starts[q][size : size + self.width]
        self.tail_finishes[q] = self.finishes[q][size : size + self.width]


class Placer:
    """Mutable state of a list scheduler: timelines, finish times and processors placed so far."""

    def __init__(self, problem: Problem, *, tail: int | None = None) -> None:
        self.problem = problem
        width = tail_width(problem.p, problem.n) if tail is None else tail
        self.timelines = Timelines(problem.p, width)
        self.finish = [-math.inf] * problem.n  # -inf: not placed, so no input arrives from it
        self.proc = [-1] * problem.n  # -1: not placed
        self.start = [0.0] * problem.n
        self.placed: list[int] = []
        self.slot_index = [0] * problem.n
        self._ptr = problem.in_ptr.tolist()
        self._pred = problem.src.tolist()
        self._comm = problem.comm.tolist()
        self._per_pair = set(problem.dst[list(problem.matrices)].tolist())

    def data_ready(self, i: int) -> np.ndarray:
        """Per processor, when all inputs of ``i`` from placed predecessors have arrived there.

        With one transfer time per edge, every processor but one gets the latest arrival
        ``finish + comm``; the one that ran that predecessor (the first such, if several) gets
        its inputs' max over ``finish`` from its own predecessors and ``finish + comm`` from
        the others: the same max as over all ``(predecessor, processor)`` pairs.
        """
        lo, hi = self._ptr[i], self._ptr[i + 1]
        if lo == hi:
            return np.zeros(self.problem.p)
        if i in self._per_pair:
            return self._data_ready_per_pair(lo, hi)
        finish, proc, pred, comm = self.finish, self.proc, self._pred, self._comm
        latest, host = -math.inf, -1
        for k in range(lo, hi):
            j = pred[k]
            arrival = finish[j] + comm[k]
            if arrival > latest:
                latest, host = arrival, proc[j]
        if host < 0:  # no predecessor placed
            return np.zeros(self.problem.p)
        ready = np.full(self.problem.p, latest)
        local = -math.inf
        for k in range(lo, hi):
            j = pred[k]
            arrival = finish[j] if proc[j] == host else finish[j] + comm[k]
            if arrival > local:
                local = arrival
        ready[host] = local
        return ready

    def _data_ready_per_pair(self, lo: int, hi: int) -> np.ndarray:
        ready = np.zeros(self.problem.p)
        matrices = self.problem.matrices
        for k in range(lo, hi):
            j = self._pred[k]
            q = self.proc[j]
            if q < 0:
                continue
            f = self.finish[j]
            matrix = matrices.get(k)
            if matrix is None:
                arrival = np.full(self.problem.p, f + self._comm[k])
                arrival[q] = f
            else:
                arrival = f + matrix[q]
            np.maximum(ready, arrival, out=ready)
        return ready

    def candidates(
        self, i: int, *, insertion: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """On every processor: ``(finish, start, gap index)`` arrays, ``finish`` inf where ``i``
        cannot run."""
        duration = self.problem.cost[i]
        ready = self.data_ready(i)
        if insertion:
            start, index = self.timelines.search(ready, duration)
        else:
            start = np.maximum(ready, self.timelines.tail_finishes[:, -1])
            index = self.timelines.count.copy()
        return start + duration, start, index

    def options(self, i: int, *, insertion: bool = True) -> list[Option]:
        """Every processor that can run ``i``: ``(finish, start, q, gap index)``."""
        finish, start, index = self.candidates(i, insertion=insertion)
        rows = zip(
            finish.tolist(), start.tolist(), range(self.problem.p), index.tolist(), strict=True
        )
        return [option for option in rows if option[0] < math.inf]

    def place(self, i: int, option: Option) -> None:
        finish, start, q, index = option
        finish, start = float(finish), float(start)
        self.timelines.insert(q, index, start, finish)
        self.finish[i], self.start[i], self.proc[i] = finish, start, q
        self.slot_index[i] = index
        self.placed.append(i)

    def unplace(self, i: int) -> None:
        """Undo the latest `place` of ``i`` (the caller undoes placements in reverse order)."""
        self.timelines.remove(self.proc[i], self.slot_index[i])
        self.proc[i] = -1
        self.finish[i] = -math.inf
        self.placed.pop()

    def schedule(self, algorithm: str) -> Schedule:
        nodes, procs = self.problem.nodes, self.problem.processors
        slots = {
            nodes[i]: Slot(procs[self.proc[i]], self.start[i], self.finish[i]) for i in self.placed
        }
        return Schedule(slots, procs, algorithm)


def option_on(finish: np.ndarray, start: np.ndarray, index: np.ndarray, q: int) -> Option:
    """The option on processor ``q`` from `Placer.candidates` arrays."""
    return float(finish[q]), float(start[q]), q, int(index[q])


def ready_order(problem: Problem, key: Sequence[Any]) -> Iterable[int]:
    """Yield nodes as they become ready (all predecessors yielded), smallest ``key[i]`` first.

    Ties fall to the topological index, so the order never depends on node names.
    """
    waiting = np.diff(problem.in_ptr).tolist()
    ptr = problem.out_ptr.tolist()
    succ = problem.dst[problem.out_edges].tolist()
    heap = [(key[i], i) for i in range(problem.n) if waiting[i] == 0]
    heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        yield i
        for j in succ[ptr[i] : ptr[i + 1]]:
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
    choose: Callable[[Placer, int], Option],
    algorithm: str,
) -> Schedule:
    """Place ready nodes by decreasing ``priority``, each where ``choose(placer, i)`` says."""
    placer = Placer(problem)
    for i in ready_order(problem, [-value for value in quantize(priority)]):
        placer.place(i, choose(placer, i))
    return placer.schedule(algorithm)


def earliest_finish(placer: Placer, i: int) -> Option:
    """HEFT's choice: the insertion-based earliest finish, ties to the lower processor index."""
    finish, start, index = placer.candidates(i)
    return option_on(finish, start, index, int(finish.argmin()))
