"""Baseline schedulers: what a list scheduler has to beat.

Every baseline takes the nodes in a fixed order and appends each after the last node on its
processor (no insertion into idle gaps), starting it as soon as its inputs have arrived:

- `round_robin`: the nodes in topological order, dealt to the processors in turn (a processor that
  cannot run the node is skipped).
- `fastest_single`: every node on the one processor that runs the whole graph in the least time,
  which is the sequential time of the speedup metric; nodes it cannot run go to the processor where
  they finish earliest.
- `greedy_start`: nodes as they become ready (earliest data-ready time first), each on the processor
  where it can *start* earliest, blind to how long it runs there: the decision Dask's own scheduler
  makes (``decide_worker``/``worker_objective`` minimise the estimated start time).
- `random_placement` (exported as ``schedulers.random``): each node on a processor drawn uniformly
  among those that can run it, with ``numpy.random.default_rng(seed)``.

Data: as every scheduler, a DAG with ``costs`` and ``comm``; the result is a `Schedule`.

>>> from schedulers.examples import topcuoglu2002
>>> graph, processors = topcuoglu2002()
>>> schedule = fastest_single(graph, processors)
>>> set(schedule.placement.values()), schedule.makespan
({'p1'}, 127.0)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Sequence

import networkx as nx
import numpy as np

from schedulers._core import Placer, Problem, build_problem
from schedulers.schedule import Schedule

__all__ = ["fastest_single", "greedy_start", "random_placement", "round_robin"]


def _append_on(placer: Placer, i: int, q: int) -> None:
    """Place ``i`` on processor ``q`` after everything already there."""
    start, index = placer.timelines.append_start(q, placer.data_ready(i)[q])
    placer.place(i, (start + float(placer.problem.cost[i, q]), start, q, index))


def _in_order(problem: Problem, choose_q: list[int], algorithm: str) -> Schedule:
    placer = Placer(problem)
    for i in range(problem.n):
        _append_on(placer, i, choose_q[i])
    return placer.schedule(algorithm)


def round_robin(graph: nx.DiGraph, processors: Sequence[Hashable]) -> Schedule:
    """Deal the nodes, in topological order, to the processors in turn.

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
    runnable = np.isfinite(problem.cost)
    turn, chosen = 0, []
    for i in range(problem.n):
        while not runnable[i, turn % problem.p]:
            turn += 1
        chosen.append(turn % problem.p)
        turn += 1
    return _in_order(problem, chosen, "round_robin")


def fastest_single(graph: nx.DiGraph, processors: Sequence[Hashable]) -> Schedule:
    """Run the whole graph on the processor that runs it fastest.

    The processor minimises ``(number of nodes it cannot run, total time of those it can)``, ties
    to the one listed first. Nodes it cannot run go, in topological order, to the processor where
    they finish earliest.

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
    runnable = np.isfinite(problem.cost)
    totals = np.where(runnable, problem.cost, 0.0).sum(axis=0).tolist()
    missing = (~runnable).sum(axis=0).tolist()
    best = min(range(problem.p), key=lambda q: (missing[q], totals[q], q))
    placer = Placer(problem)
    for i in range(problem.n):
        if runnable[i, best]:
            _append_on(placer, i, best)
        else:
            option = min(placer.options(i, insertion=False), key=lambda o: (o[0], o[2]))
            placer.place(i, option)
    return placer.schedule("fastest_single")


def greedy_start(graph: nx.DiGraph, processors: Sequence[Hashable]) -> Schedule:
    """Dask-like greedy: each ready node on the processor where it starts earliest.

    Nodes are taken as they become ready, by earliest data-ready time (the latest finish among
    their predecessors; ties by topological index); each goes where its inputs have arrived and
    the processor is free soonest, ties to the shorter run there, then the processor listed first.

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
    placer = Placer(problem)
    waiting = [len(preds) for preds in problem.preds]
    heap = [(0.0, i) for i in range(problem.n) if waiting[i] == 0]
    heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        options = placer.options(i, insertion=False)
        placer.place(i, min(options, key=lambda o: (o[1], o[0] - o[1], o[2])))
        for j, _, _ in problem.succs[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                released = max(placer.finish[k] for k, _, _ in problem.preds[j])
                heapq.heappush(heap, (released, j))
    return placer.schedule("greedy_start")


def random_placement(
    graph: nx.DiGraph, processors: Sequence[Hashable], *, seed: int = 0
) -> Schedule:
    """Place each node on a random processor that can run it; run them in topological order.

    Parameters
    ----------
    graph : networkx.DiGraph
        A DAG with node ``costs`` and edge ``comm`` (see `schedulers.heft`).
    processors : sequence of hashable
        The processors, distinct.
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same schedule.

    Returns
    -------
    Schedule
    """
    problem = build_problem(graph, processors)
    rng = np.random.default_rng(seed)
    chosen = []
    for row in problem.cost.tolist():
        allowed = [q for q, seconds in enumerate(row) if seconds != math.inf]
        chosen.append(allowed[int(rng.integers(len(allowed)))])
    return _in_order(problem, chosen, "random")
