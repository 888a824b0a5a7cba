"""CPOP: Critical-Path-On-a-Processor list scheduling.

Policy
------
1. Priority: ``rank_u(n) + rank_d(n)`` (upward plus downward rank, both with mean costs); the
   critical path (CP) is the chain of nodes whose priority equals the largest one, followed from an
   entry node through successors (ties by topological index); priorities within ``1e-9`` relative
   count as equal.
2. The CP processor is the one that runs the whole CP in the least total time (ties: listed first).
   If no processor can run every CP node, there is no CP processor and every node is placed by 3.
3. Ready nodes are taken by decreasing priority: a CP node goes to the CP processor at its earliest
   insertion-based start, any other node where it finishes earliest (as HEFT does).

Data: as every scheduler, a DAG with ``costs`` and ``comm``; the result is a `Schedule`.

>>> from schedulers.examples import topcuoglu2002
>>> schedule = cpop(*topcuoglu2002())
>>> schedule.makespan, [schedule.placement[n] for n in (1, 2, 9, 10)]
(86.0, ['p2', 'p2', 'p2', 'p2'])

References
----------
.. [1] H. Topcuoglu, S. Hariri, M.-Y. Wu. Performance-effective and low-complexity task scheduling
   for heterogeneous computing. IEEE Transactions on Parallel and Distributed Systems 13(3),
   260-274, 2002.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import networkx as nx
import numpy as np

from schedulers._core import (
    Option,
    Placer,
    Problem,
    build_problem,
    downward_rank,
    earliest_finish,
    list_schedule,
    option_on,
    upward_rank,
)
from schedulers.schedule import Schedule

__all__ = ["cpop", "critical_path"]


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def critical_path(problem: Problem, priority: Sequence[float]) -> list[int]:
    """The nodes (indices) of the critical path by ``priority``, from an entry node to an exit."""
    if problem.n == 0:
        return []
    top = max(priority)
    entries = np.flatnonzero(np.diff(problem.in_ptr) == 0).tolist()
    path = [next((i for i in entries if _same(priority[i], top)), -1)]
    if path[0] < 0:
        return []
    ptr, succ = problem.out_ptr, problem.dst[problem.out_edges]
    while True:
        i = path[-1]
        nexts = [j for j in succ[ptr[i] : ptr[i + 1]].tolist() if _same(priority[j], top)]
        if not nexts:
            return path
        path.append(min(nexts))


def cpop(graph: nx.DiGraph, processors: Sequence[Hashable]) -> Schedule:
    """Schedule ``graph`` on ``processors`` with CPOP (Topcuoglu, Hariri & Wu 2002).

    Parameters
    ----------
    graph : networkx.DiGraph
        A DAG with node ``costs`` and edge ``comm`` (see `schedulers.heft`).
    processors : sequence of hashable
        The processors, distinct.

    Returns
    -------
    Schedule
    """
    problem = build_problem(graph, processors)
    priority = (upward_rank(problem) + downward_rank(problem)).tolist()
    path = critical_path(problem, priority)
    totals = problem.cost[path].sum(axis=0) if path else np.array([math.inf])
    best = int(np.argmin(totals))
    on_path = set(path) if math.isfinite(totals[best]) else set()

    def choose(placer: Placer, i: int) -> Option:
        if i not in on_path:
            return earliest_finish(placer, i)
        return option_on(*placer.candidates(i), best)

    return list_schedule(problem, priority, choose, "cpop")
