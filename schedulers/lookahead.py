"""Lookahead HEFT: choose a node's processor by how early its children could then finish.

Policy
------
HEFT's greedy rule puts a node wherever it finishes first. On a CPU+GPU mix that is often a slow CPU
that happens to be idle, and the node's children then wait for the slow result and for a transfer
back to the GPU: the makespan can exceed running everything on the GPU. The lookahead variant of
Bittencourt, Sakellariou & Madeira (2010) keeps HEFT's order (upward rank, ties by topological
index) but, for each candidate processor ``p`` of the node ``n``:

1. places ``n`` on ``p`` tentatively (insertion-based, as HEFT);
2. places each child of ``n``, by decreasing rank, where it finishes earliest given the
   predecessors placed so far (unplaced ones are ignored);
3. scores ``p`` by the latest of those children's finish times (``n``'s own finish if it has no
   children), then undoes the tentative placements.

``n`` goes to the processor with the lowest score; ties by ``n``'s own finish time, then the
processor listed first. It costs ``O(p^2 * children)`` slot searches per node instead of HEFT's
``O(p)``: fine for thousands of nodes, slow for a hundred thousand.

Data: as every scheduler, a DAG with ``costs`` and ``comm``; the result is a `Schedule`.

>>> import networkx as nx
>>> graph = nx.DiGraph()
>>> graph.add_node("a", costs={"cpu": 2.0, "gpu": 3.0})
>>> graph.add_node("b", costs={"cpu": 9.0, "gpu": 1.0})
>>> graph.add_edge("a", "b", comm=4.0)
>>> from schedulers.heft import heft
>>> heft(graph, ["cpu", "gpu"]).makespan, heft_lookahead(graph, ["cpu", "gpu"]).makespan
(7.0, 4.0)

HEFT ran ``a`` on the CPU (finish 2 < 3), so ``b`` waited for the transfer: ``2 + 4 + 1 = 7``;
lookahead sees that ``b`` would finish at ``3 + 1 = 4`` with ``a`` on the GPU.

References
----------
.. [1] L. F. Bittencourt, R. Sakellariou, E. R. M. Madeira. DAG scheduling using a lookahead
   variant of the Heterogeneous Earliest Finish Time algorithm. 18th Euromicro Conference on
   Parallel, Distributed and Network-based Processing (PDP), 27-34, 2010.
.. [2] H. Topcuoglu, S. Hariri, M.-Y. Wu. Performance-effective and low-complexity task scheduling
   for heterogeneous computing. IEEE TPDS 13(3), 260-274, 2002.
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
    quantize,
    upward_rank,
)
from schedulers.schedule import Schedule

__all__ = ["heft_lookahead"]


def heft_lookahead(graph: nx.DiGraph, processors: Sequence[Hashable]) -> Schedule:
    """Schedule ``graph`` on ``processors`` with lookahead HEFT (Bittencourt et al. 2010).

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
    rank = upward_rank(problem)
    key = [-value for value in quantize(rank)]
    children = [
        sorted({j for j, _, _ in succs}, key=lambda j: (key[j], j)) for succs in problem.succs
    ]

    def choose(placer: Placer, i: int) -> Option:
        scored = []
        for option in placer.options(i):
            placer.place(i, option)
            latest = option[0]
            placed = []
            for j in children[i]:
                best = earliest_finish(placer, j)  # HEFT's rule: by finish, then processor
                placer.place(j, best)
                placed.append(j)
                latest = max(latest, best[0])
            for j in reversed(placed):
                placer.unplace(j)
            placer.unplace(i)
            scored.append(((latest, option[0], option[2]), option))
        return min(scored)[1]

    return list_schedule(problem, rank, choose, "heft_lookahead")
