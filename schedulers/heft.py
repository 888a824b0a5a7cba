"""HEFT: Heterogeneous Earliest Finish Time list scheduling.

Policy
------
1. Priority: the upward rank, ``rank_u(n) = mean_cost(n) + max over successors s of
   (mean_comm(n, s) + rank_u(s))``, with the mean execution time over the processors that can run
   ``n`` and the edge's transfer time averaged over pairs of distinct processors.
2. Nodes are taken by decreasing rank (a topological order; ties by topological index).
3. Each goes to the processor where it finishes earliest, allowed to fill an idle gap between two
   nodes already placed there (insertion-based); ties go to the processor listed first.

Data: a DAG whose nodes carry ``costs`` (dict processor -> seconds) and edges ``comm`` (seconds
between distinct processors); the result is a `Schedule`.

>>> import networkx as nx
>>> graph = nx.DiGraph()
>>> graph.add_node("load", costs={"cpu": 1.0, "gpu": 1.0})
>>> graph.add_node("gemm", costs={"cpu": 8.0, "gpu": 2.0})
>>> graph.add_edge("load", "gemm", comm=0.5)
>>> schedule = heft(graph, ["cpu", "gpu"])
>>> schedule.slots["load"], schedule.slots["gemm"]
(Slot(processor='cpu', start=0.0, finish=1.0), Slot(processor='gpu', start=1.5, finish=3.5))

``load`` finishes at 1 on either processor and goes to the one listed first; ``gemm`` finishes
earlier on the GPU (at ``1 + 0.5 + 2``, after the transfer) than on the CPU (``1 + 8``).

References
----------
.. [1] H. Topcuoglu, S. Hariri, M.-Y. Wu. Performance-effective and low-complexity task scheduling
   for heterogeneous computing. IEEE Transactions on Parallel and Distributed Systems 13(3),
   260-274, 2002.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import networkx as nx

from schedulers._core import (
    Option,
    Placer,
    build_problem,
    earliest_finish,
    list_schedule,
    option_on,
    upward_rank,
)
from schedulers.schedule import Schedule

__all__ = ["heft"]


def _earliest_finish_appending(placer: Placer, i: int) -> Option:
    finish, start, index = placer.candidates(i, insertion=False)
    return option_on(finish, start, index, int(finish.argmin()))


def heft(graph: nx.DiGraph, processors: Sequence[Hashable], *, insertion: bool = True) -> Schedule:
    """Schedule ``graph`` on ``processors`` with HEFT (Topcuoglu, Hariri & Wu 2002).

    Parameters
    ----------
    graph : networkx.DiGraph
        A DAG; node attribute ``costs`` (dict processor -> seconds, absent processors cannot run the
        node), edge attribute ``comm`` (seconds when the ends run on different processors).
    processors : sequence of hashable
        The processors, distinct; ties go to the one listed first.
    insertion : bool
        Let a node fill an idle gap between nodes already placed (the paper's policy). ``False``
        appends every node after the last one on its processor.

    Returns
    -------
    Schedule

    Examples
    --------
    >>> from schedulers.examples import topcuoglu2002
    >>> heft(*topcuoglu2002()).makespan
    80.0
    """
    problem = build_problem(graph, processors)
    choose = earliest_finish if insertion else _earliest_finish_appending
    return list_schedule(problem, upward_rank(problem), choose, "heft")
