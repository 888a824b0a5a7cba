"""How good a schedule is, in the literature's measures.

- ``lower_bound``: the critical path with every node at its minimum cost over the processors and
  transfers free; no schedule can be shorter.
- ``slr`` (schedule length ratio) = makespan / lower_bound, >= 1; lower is better.
- ``speedup`` = sequential time / makespan, where the sequential time is the `fastest_single`
  makespan (the whole graph on the one processor that runs it fastest).
- ``efficiency`` = speedup / number of processors.
- ``failed``: speedup < 1, the schedule is slower than using one processor (with a relative
  tolerance of 1e-9: summing the same costs in another order may differ in the last bit).

Conventions for degenerate graphs: an empty graph (or one of zero-cost nodes) has SLR and speedup
1; a positive makespan over a zero bound has SLR ``inf``.

>>> from schedulers.examples import topcuoglu2002
>>> from schedulers.heft import heft
>>> graph, processors = topcuoglu2002()
>>> m = evaluate(heft(graph, processors), graph)
>>> m.makespan, m.lower_bound, m.slr, m.speedup, m.failed
(80.0, 41.0, 1.951219512195122, 1.5875, False)

References
----------
.. [1] H. Topcuoglu, S. Hariri, M.-Y. Wu. Performance-effective and low-complexity task scheduling
   for heterogeneous computing. IEEE TPDS 13(3), 260-274, 2002 (SLR and speedup, section 5.1).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import NamedTuple

import networkx as nx
import numpy as np

from schedulers._core import build_problem
from schedulers.baselines import fastest_single
from schedulers.schedule import Schedule

__all__ = ["Metrics", "critical_path_lower_bound", "evaluate", "sequential_time"]


class Metrics(NamedTuple):
    """The measures of one schedule (see the module docstring)."""

    makespan: float
    lower_bound: float
    slr: float
    speedup: float
    efficiency: float
    failed: bool


def critical_path_lower_bound(graph: nx.DiGraph, processors: Sequence[Hashable]) -> float:
    """The longest path with each node at its minimum cost over ``processors``, transfers free.

    >>> from schedulers.examples import topcuoglu2002
    >>> critical_path_lower_bound(*topcuoglu2002())  # 9 + 13 + 12 + 7 (tasks 1, 2, 9, 10)
    41.0
    """
    problem = build_problem(graph, processors)
    least = np.min(problem.cost, axis=1).tolist() if problem.n else []
    longest = [0.0] * problem.n
    for i in range(problem.n):
        longest[i] = least[i] + max((longest[j] for j, _, _ in problem.preds[i]), default=0.0)
    return max(longest, default=0.0)


def sequential_time(graph: nx.DiGraph, processors: Sequence[Hashable]) -> float:
    """The `fastest_single` makespan: the whole graph on its fastest processor."""
    return fastest_single(graph, processors).makespan


def _ratio(numerator: float, denominator: float) -> float:
    if denominator == 0:
        return 1.0 if numerator == 0 else math.inf
    return numerator / denominator


def evaluate(schedule: Schedule, graph: nx.DiGraph) -> Metrics:
    """Measure ``schedule`` of ``graph`` on its own processors.

    Parameters
    ----------
    schedule : Schedule
        A schedule of ``graph``.
    graph : networkx.DiGraph
        The graph it schedules, with ``costs`` and ``comm``.

    Returns
    -------
    Metrics
    """
    makespan = schedule.makespan
    bound = critical_path_lower_bound(graph, schedule.processors)
    speedup = _ratio(sequential_time(graph, schedule.processors), makespan)
    return Metrics(
        makespan=makespan,
        lower_bound=bound,
        slr=_ratio(makespan, bound),
        speedup=speedup,
        efficiency=speedup / len(schedule.processors),
        failed=speedup < 1 - 1e-9,
    )
