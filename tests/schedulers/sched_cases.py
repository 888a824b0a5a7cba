"""Shared cases of the schedulers tests: hand-made graphs and a hypothesis strategy of DAGs.

Imported as ``from sched_cases import ...`` (pytest puts this folder on ``sys.path``; the name is
unique in the repository). Costs and transfer times are multiples of 0.25, so sums are exact in
binary floating point and ties are real ties.
"""

from __future__ import annotations

from collections.abc import Hashable

import networkx as nx
from hypothesis import strategies as st

PROCS = ["cpu", "gpu"]


def costed(
    edges: list[tuple[Hashable, Hashable]], nodes: list[Hashable] | None = None
) -> nx.DiGraph:
    """A graph over ``edges`` whose nodes cost 2 s on the CPU and 1 s on the GPU, edges 1.5 s."""
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes or [])
    graph.add_edges_from(edges, comm=1.5)
    for node in graph:
        graph.nodes[node]["costs"] = {"cpu": 2.0, "gpu": 1.0}
    return graph


SHAPES = {
    "single": costed([], ["a"]),
    "independent": costed([], ["a", "b", "c", "d"]),
    "chain": costed([("a", "b"), ("b", "c"), ("c", "d")]),
    "fork": costed([("a", "b"), ("a", "c"), ("a", "d")]),
    "join": costed([("a", "d"), ("b", "d"), ("c", "d")]),
    "diamond": costed([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]),
}


_SECONDS = st.one_of(
    st.sampled_from([0.0, 0.25, 1.0, 2.0, 3.0]),
    st.integers(0, 40).map(lambda k: k / 4),
)
_NAMINGS = {
    "int": lambda i: i,
    "str": lambda i: f"node-{i}",
    "tuple": lambda i: ("forward-dense", i, i % 2),
    "mixed": lambda i: i if i % 3 == 0 else f"n{i}" if i % 3 == 1 else ("t", i),
}
_PROCESSORS = {
    "str": lambda q: f"p{q}",
    "tuple": lambda q: ("gpu" if q == 0 else "cpu", q),
    "int": lambda q: q,
}


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 9, max_processors: int = 4) -> tuple[nx.DiGraph, list]:
    """A random DAG with costs (some nodes restricted to some processors) and its processors.

    Node names, processor names, the insertion order of nodes (not always topological) and
    scalar or per-pair ``comm`` all vary.
    """
    p = draw(st.integers(1, max_processors))
    procs = [_PROCESSORS[draw(st.sampled_from(sorted(_PROCESSORS)))](q) for q in range(p)]
    n = draw(st.integers(1, max_nodes))
    name = _NAMINGS[draw(st.sampled_from(sorted(_NAMINGS)))]
    nodes = [name(i) for i in range(n)]
    inserted = draw(st.permutations(nodes))
    graph = nx.DiGraph()
    for node in inserted:
        allowed = draw(st.lists(st.booleans(), min_size=p, max_size=p))
        if not any(allowed):
            allowed[draw(st.integers(0, p - 1))] = True
        graph.add_node(
            node,
            costs={proc: draw(_SECONDS) for proc, ok in zip(procs, allowed, strict=True) if ok},
        )
    per_pair = draw(st.booleans())
    for j in range(n):
        for i in range(j):
            if draw(st.integers(0, 2)) == 0:
                if per_pair:
                    comm = {(a, b): draw(_SECONDS) for a in procs for b in procs if a != b}
                else:
                    comm = draw(_SECONDS)
                graph.add_edge(nodes[i], nodes[j], comm=comm)
    return graph, procs
