"""Seeded random DAGs with the parameters of the scheduling literature.

Shape (Topcuoglu et al. 2002, section 5.2): ``n`` nodes in ``round(sqrt(n) / alpha)`` levels of
random width (``alpha`` > 1: short and wide, much parallelism; < 1: long and thin). Every node has
about ``out_degree`` children drawn from the next two levels, and every node below the first level
has a parent in the level above. Nodes are the ints ``0..n-1`` level by level (a topological order).

Costs: node ``i`` has a mean cost ``w_i ~ U(0, 2 * mean_seconds)``; on each processor it takes
``w_i * U(1 - beta / 2, 1 + beta / 2)`` (``beta``, in [0, 2]: the heterogeneity of the processors).
An edge's transfer time is ``U(0, 2 * ccr * mean_seconds)``, so the communication-to-computation
ratio is about ``ccr``.

The CPU+GPU variant draws CPU costs so, and makes node ``i`` ``f_i`` times faster on a GPU with
``f_i`` log-uniform in ``gpu_speedup`` (a GPU is much better at some nodes than others); a transfer
touching a GPU costs ``gpu_transfer_factor`` times more (``comm`` is then a per-pair dict). Both
generators store the processors in ``graph.graph["processors"]``.

>>> graph = random_dag(20, ["a", "b", "c"], alpha=1.0, out_degree=2, ccr=0.5, beta=1.0, seed=1)
>>> graph.number_of_nodes(), sorted(graph.nodes[0]["costs"]), graph.graph["processors"]
(20, ['a', 'b', 'c'], ['a', 'b', 'c'])
>>> mixed = random_cpu_gpu_dag(30, cpus=2, gpus=1, seed=1)
>>> mixed.graph["processors"]
[('cpu', 0), ('cpu', 1), ('gpu', 0)]
>>> all(data["costs"][("gpu", 0)] < data["costs"][("cpu", 0)] for _, data in mixed.nodes(data=True))
True

References
----------
.. [1] H. Topcuoglu, S. Hariri, M.-Y. Wu. Performance-effective and low-complexity task scheduling
   for heterogeneous computing. IEEE TPDS 13(3), 260-274, 2002.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import networkx as nx
import numpy as np

__all__ = ["random_cpu_gpu_dag", "random_dag"]


def _check(n: int, alpha: float, out_degree: int, ccr: float, beta: float) -> None:
    if n < 0:
        raise ValueError(f"expected n >= 0, got {n!r}")
    if not alpha > 0:
        raise ValueError(f"expected alpha > 0, got {alpha!r}")
    if out_degree < 1:
        raise ValueError(f"expected out_degree >= 1, got {out_degree!r}")
    if not ccr >= 0:
        raise ValueError(f"expected ccr >= 0, got {ccr!r}")
    if not 0 <= beta <= 2:
        raise ValueError(f"expected beta in [0, 2], got {beta!r}")


def _shape(
    n: int, alpha: float, out_degree: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Edges of a random layered DAG over the nodes ``0..n-1`` (numbered level by level)."""
    if n == 0:
        return []
    height = min(n, max(1, round(math.sqrt(n) / alpha)))
    widths = rng.multinomial(n - height, np.full(height, 1.0 / height)) + 1
    bounds = np.concatenate([[0], np.cumsum(widths)]).tolist()
    edges: set[tuple[int, int]] = set()
    for level in range(height - 1):
        lo, hi = bounds[level + 1], bounds[min(level + 3, height)]
        for u in range(bounds[level], bounds[level + 1]):
            picks = rng.choice(hi - lo, size=min(out_degree, hi - lo), replace=False)
            edges.update((u, lo + int(k)) for k in picks)
    has_parent = {v for _, v in edges}
    for level in range(1, height):
        lo, hi = bounds[level - 1], bounds[level]
        for v in range(bounds[level], bounds[level + 1]):
            if v not in has_parent:
                edges.add((lo + int(rng.integers(hi - lo)), v))
    return sorted(edges)


def random_dag(
    n: int,
    processors: Sequence[Hashable],
    *,
    alpha: float = 1.0,
    out_degree: int = 3,
    ccr: float = 1.0,
    beta: float = 0.5,
    mean_seconds: float = 1.0,
    seed: int = 0,
) -> nx.DiGraph:
    """A random layered DAG with ``costs`` on ``processors`` and scalar ``comm``.

    Parameters
    ----------
    n : int
        Number of nodes.
    processors : sequence of hashable
        The processors every node gets a cost on.
    alpha : float
        Shape: ``round(sqrt(n) / alpha)`` levels.
    out_degree : int
        Children per node, drawn from the next two levels (fewer where they hold fewer nodes).
    ccr : float
        Communication-to-computation ratio: mean transfer time over mean cost.
    beta : float
        Heterogeneity in [0, 2]: a node's cost varies by ``+-beta/2`` of its mean across processors.
    mean_seconds : float
        Mean node cost.
    seed : int
        Seed of ``numpy.random.default_rng``: the same arguments give the same graph.

    Returns
    -------
    networkx.DiGraph
    """
    _check(n, alpha, out_degree, ccr, beta)
    procs = list(processors)
    rng = np.random.default_rng(seed)
    edges = _shape(n, alpha, out_degree, rng)
    mean = rng.uniform(0.0, 2.0 * mean_seconds, n)
    costs = mean[:, None] * rng.uniform(1 - beta / 2, 1 + beta / 2, (n, len(procs)))
    comm = rng.uniform(0.0, 2.0 * ccr * mean_seconds, len(edges))
    graph = nx.DiGraph(processors=procs)
    for i, row in enumerate(costs.tolist()):
        graph.add_node(i, costs=dict(zip(procs, row, strict=True)))
    graph.add_edges_from(
        (u, v, {"comm": c}) for (u, v), c in zip(edges, comm.tolist(), strict=True)
    )
    return graph


def random_cpu_gpu_dag(
    n: int,
    cpus: int = 4,
    gpus: int = 1,
    *,
    alpha: float = 1.0,
    out_degree: int = 3,
    ccr: float = 1.0,
    beta: float = 0.5,
    gpu_speedup: tuple[float, float] = (2.0, 50.0),
    gpu_transfer_factor: float = 3.0,
    mean_seconds: float = 1.0,
    seed: int = 0,
) -> nx.DiGraph:
    """A random layered DAG for ``cpus`` CPUs ``("cpu", i)`` and ``gpus`` GPUs ``("gpu", i)``.

    Parameters
    ----------
    n, alpha, out_degree, ccr, beta, mean_seconds, seed
        As `random_dag`; ``ccr`` and ``beta`` apply to the CPUs (and ``beta`` to the GPUs too).
    cpus, gpus : int
        How many processors of each kind.
    gpu_speedup : (float, float)
        Range of the per-node factor by which a GPU is faster, drawn log-uniformly.
    gpu_transfer_factor : float
        How much more a transfer touching a GPU costs than one between two CPUs.

    Returns
    -------
    networkx.DiGraph
    """
    _check(n, alpha, out_degree, ccr, beta)
    low, high = gpu_speedup
    if not 0 < low <= high:
        raise ValueError(f"expected 0 < low <= high for gpu_speedup, got {gpu_speedup!r}")
    if not gpu_transfer_factor >= 0:
        raise ValueError(f"expected gpu_transfer_factor >= 0, got {gpu_transfer_factor!r}")
    cpu_names: list[Hashable] = [("cpu", i) for i in range(cpus)]
    gpu_names: list[Hashable] = [("gpu", i) for i in range(gpus)]
    procs = cpu_names + gpu_names
    rng = np.random.default_rng(seed)
    edges = _shape(n, alpha, out_degree, rng)
    mean = rng.uniform(0.0, 2.0 * mean_seconds, n)
    spread = rng.uniform(1 - beta / 2, 1 + beta / 2, (n, len(procs)))
    speedup = np.exp(rng.uniform(math.log(low), math.log(high), n))
    factor = np.concatenate(
        [np.ones((n, cpus)), np.repeat(1.0 / speedup[:, None], gpus, axis=1)], 1
    )
    costs = mean[:, None] * spread * factor
    comm = rng.uniform(0.0, 2.0 * ccr * mean_seconds, len(edges))
    touches_gpu = {
        (src, dst): src in gpu_names or dst in gpu_names
        for src in procs
        for dst in procs
        if src != dst
    }
    graph = nx.DiGraph(processors=procs)
    for i, row in enumerate(costs.tolist()):
        graph.add_node(i, costs=dict(zip(procs, row, strict=True)))
    for (u, v), c in zip(edges, comm.tolist(), strict=True):
        per_pair = {
            pair: c * gpu_transfer_factor if gpu else c for pair, gpu in touches_gpu.items()
        }
        graph.add_edge(u, v, comm=per_pair)
    return graph
