"""Small published scheduling problems, as (graph, processors) pairs ready for any scheduler.

>>> graph, processors = topcuoglu2002()
>>> graph.number_of_nodes(), graph.number_of_edges(), processors
(10, 15, ['p1', 'p2', 'p3'])
>>> graph.nodes[1]["costs"], graph.edges[1, 2]["comm"]
({'p1': 14.0, 'p2': 16.0, 'p3': 9.0}, 18.0)

References
----------
.. [1] H. Topcuoglu, S. Hariri, M.-Y. Wu. Performance-effective and low-complexity task scheduling
   for heterogeneous computing. IEEE TPDS 13(3), 260-274, 2002 (Fig. 2: the sample DAG, the
   execution-time table and the schedules of HEFT, makespan 80, and CPOP, makespan 86).
"""

from __future__ import annotations

import networkx as nx

__all__ = ["topcuoglu2002"]

# task: seconds on p1, p2, p3 (Topcuoglu et al. 2002, Fig. 2)
_COSTS = {
    1: (14, 16, 9),
    2: (13, 19, 18),
    3: (11, 13, 19),
    4: (13, 8, 17),
    5: (12, 13, 10),
    6: (13, 16, 9),
    7: (7, 15, 11),
    8: (5, 11, 14),
    9: (18, 12, 20),
    10: (21, 7, 16),
}
# (parent, child): transfer seconds between distinct processors
_COMM = {
    (1, 2): 18, (1, 3): 12, (1, 4): 9, (1, 5): 11, (1, 6): 14,
    (2, 8): 19, (2, 9): 16, (3, 7): 23, (4, 8): 27, (4, 9): 23,
    (5, 9): 13, (6, 8): 15, (7, 10): 17, (8, 10): 11, (9, 10): 13,
}  # fmt: skip


def topcuoglu2002() -> tuple[nx.DiGraph, list[str]]:
    """The 10-task, 3-processor sample DAG of Topcuoglu, Hariri & Wu (2002).

    Returns
    -------
    graph : networkx.DiGraph
        Nodes 1..10 with ``costs`` on ``"p1"``, ``"p2"``, ``"p3"``; edges with ``comm``.
    processors : list of str
        ``["p1", "p2", "p3"]``.
    """
    processors = ["p1", "p2", "p3"]
    graph = nx.DiGraph()
    for task, seconds in _COSTS.items():
        graph.add_node(task, costs={p: float(s) for p, s in zip(processors, seconds, strict=True)})
    for (u, v), transfer in _COMM.items():
        graph.add_edge(u, v, comm=float(transfer))
    return graph, processors
