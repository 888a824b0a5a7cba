"""PEFT: Predict Earliest Finish Time, list scheduling with an optimistic cost table.

Policy
------
1. The optimistic cost table ``OCT[n, p]``: the longest remaining time from the end of ``n`` to
   the end of the graph when ``n`` runs on ``p`` and every later node runs on its best processor,
   ignoring processor contention::

       OCT[n, p] = max over successors s of  min over processors w of
                   OCT[s, w] + cost[s, w] + (mean_comm(n, s) if w != p else 0)

   with ``OCT[exit, p] = 0``.
2. Priority ``rank_oct(n)``: the mean of ``OCT[n, p]`` over the processors that can run ``n``. Ready
   nodes are taken by decreasing rank (ties by topological index).
3. Each node goes to the processor minimising ``EFT + OCT[n, p]`` (insertion-based EFT; ties by
   EFT, then the processor listed first): it looks ahead at what the choice costs the rest of the
   graph, at the price of one table of ``nodes x processors``.

Data: as every scheduler, a DAG with ``costs`` and ``comm``; the result is a `Schedule`.

>>> import networkx as nx
>>> graph = nx.DiGraph()
>>> graph.add_node("a", costs={"p": 1.0, "q": 1.0})
>>> graph.add_node("b", costs={"p": 3.0, "q": 1.0})
>>> graph.add_edge("a", "b", comm=0.5)
>>> from schedulers._core import build_problem
>>> optimistic_cost_table(build_problem(graph, ["p", "q"])).tolist()
[[1.5, 1.0], [0.0, 0.0]]
>>> peft(graph, ["p", "q"]).placement
{'a': 'q', 'b': 'q'}

References
----------
.. [1] H. Arabnejad, J. G. Barbosa. List scheduling algorithm for heterogeneous systems by an
   optimistic cost table. IEEE Transactions on Parallel and Distributed Systems 25(3), 682-694,
   2014.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import networkx as nx
import numpy as np

from schedulers._core import (
    Option,
    Placer,
    Problem,
    build_problem,
    edge_ranges,
    list_schedule,
    option_on,
)
from schedulers.schedule import Schedule

__all__ = ["optimistic_cost_table", "peft"]


def optimistic_cost_table(problem: Problem) -> np.ndarray:
    """The ``(nodes, processors)`` optimistic cost table of Arabnejad & Barbosa (2014).

    Filled a layer at a time from the exit nodes (whose rows are 0): per edge ``(n, s)`` the
    row ``min(via, min(via) + mean_comm)`` with ``via = OCT[s] + cost[s]``, then per node the
    max over its edges and 0, the same values a loop over a reversed topological order takes.
    """
    table = np.zeros((problem.n, problem.p))
    edges = problem.out_edges
    succ, mean = problem.dst[edges], problem.mean_comm[edges]
    for layer in problem.height_layers[1:]:
        positions, begins = edge_ranges(problem.out_ptr, layer)
        j = succ[positions]
        via = table[j] + problem.cost[j]  # inf where j cannot run
        np.minimum(via, (via.min(axis=1) + mean[positions])[:, None], out=via)
        table[layer] = np.maximum(np.maximum.reduceat(via, begins, axis=0), 0.0)
    return table


def peft(graph: nx.DiGraph, processors: Sequence[Hashable]) -> Schedule:
    """Schedule ``graph`` on ``processors`` with PEFT (Arabnejad & Barbosa 2014).

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
    table = optimistic_cost_table(problem)
    runnable = np.isfinite(problem.cost)
    rank = np.where(runnable, table, 0.0).sum(axis=1) / np.maximum(runnable.sum(axis=1), 1)

    def choose(placer: Placer, i: int) -> Option:
        finish, start, index = placer.candidates(i)
        key = finish + table[i]
        tied = np.flatnonzero(key == key.min())  # ties by EFT, then the processor listed first
        q = int(tied[0]) if tied.size == 1 else int(tied[finish[tied].argmin()])
        return option_on(finish, start, index, q)

    return list_schedule(problem, rank, choose, "peft")
