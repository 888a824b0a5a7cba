"""Discrete-event simulation of running a fixed placement, to predict what a run will take.

Model
-----
Each processor runs one node at a time, without preemption. A node can start once the processor is
free and every input has arrived: an input arrives ``comm`` seconds after its producer finishes when
the two run on different processors (0 on the same one), plus ``edge_latency`` seconds on every
edge (a scheduler round trip per dependent hop, as Dask pays about 6 ms). Running a node takes its
cost on that processor plus ``task_overhead`` seconds.

With ``contention``, each processor's network link carries one transfer at a time each way (it
sends one output at a time and receives one at a time, full duplex): a transfer starts when its
producer has finished and both links are free, and an output crosses to each other processor
once, however many nodes there read it. Transfers take their turn in the order their producers
finish (ties: the graph's edge order). Without it every transfer runs at once, as a list
scheduler assumes, which a node with many inputs, or an output read on many processors, makes
far too hopeful.

Which node a free processor starts:

- with ``order`` (processor -> its nodes), the next one in that order, waiting for its inputs if
  need be. Fed a list scheduler's ``placement`` and ``order`` with zero overhead and latency, the
  simulation reproduces that scheduler's slots exactly: a list scheduler starts each node at
  ``max(inputs arrived, previous node on the processor finished)``, and so does this.
- without ``order``, the highest-priority node whose inputs have arrived (``priority``: nodes
  listed first go first; by default the topological order), as a work-conserving runtime would.

With an order and no contention, no event queue is needed: each node starts at ``max(previous
node on its processor finished, latest input arrived)``, so the nodes are taken in a topological
order of the graph with each processor's order chained in, and a node that never becomes ready
is a deadlock.
Without one, state is an event heap of ``(time, sequence, kind, node)`` (kinds: an input set
arrives, a node finishes); per processor the node running and a heap of the nodes arrived; per
node the count of unfinished predecessors and the latest input arrival. All events at one time are
applied before any processor starts a node.

>>> from schedulers.examples import topcuoglu2002
>>> from schedulers.heft import heft
>>> graph, processors = topcuoglu2002()
>>> plan = heft(graph, processors)
>>> simulate(graph, plan.placement, plan.order).makespan == plan.makespan == 80.0
True
>>> simulate(graph, plan.placement, plan.order, task_overhead=0.5).makespan
82.5
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable, Mapping, Sequence

import networkx as nx
import numpy as np

from schedulers._core import Problem, build_problem, topological_order
from schedulers.exceptions import DeadlockError, UnschedulableNodeError
from schedulers.schedule import Key, Schedule, Slot

__all__ = ["simulate", "simulate_latencies"]

_FINISH, _ARRIVE = 0, 1


def _check_seconds(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"expected {name} as finite seconds >= 0, got {value!r}")
    return float(value)


def _check_order(
    order: Mapping[Hashable, Sequence[Key]],
    placement: Mapping[Key, Hashable],
    index: Mapping[Key, int],
) -> None:
    listed = [node for nodes in order.values() for node in nodes]
    misplaced = [
        node for proc, nodes in order.items() for node in nodes if placement.get(node, proc) != proc
    ]
    unknown = [node for node in listed if node not in index]
    if misplaced or unknown or len(listed) != len(index) or len(set(listed)) != len(listed):
        raise ValueError(
            "expected order to list every node once, on its placed processor; got "
            f"{len(listed)} entries for {len(index)} nodes, misplaced {misplaced[:5]!r}, "
            f"unknown {unknown[:5]!r}"
        )


def simulate(
    graph: nx.DiGraph,
    placement: Mapping[Key, Hashable],
    order: Mapping[Hashable, Sequence[Key]] | None = None,
    *,
    task_overhead: float = 0.0,
    edge_latency: float = 0.0,
    priority: Sequence[Key] | None = None,
    processors: Sequence[Hashable] | None = None,
    contention: bool = False,
) -> Schedule:
    """Simulate running ``graph`` with a fixed ``placement`` (and per-processor ``order``).

    Parameters
    ----------
    graph : networkx.DiGraph
        A DAG with node ``costs`` and edge ``comm`` (see `schedulers.heft`).
    placement : Mapping
        node -> processor, for every node of the graph; the processor must be able to run it.
    order : Mapping, optional
        processor -> its nodes in the order to run them (as `Schedule.order`); every node once,
        on its processor. Without it, a free processor starts its highest-priority arrived node.
    task_overhead : float
        Seconds added to every node's run time.
    edge_latency : float
        Seconds added to every edge, across processors or not.
    priority : sequence, optional
        Without ``order``: nodes listed first start first (default: topological order).
    processors : sequence, optional
        The processors of the returned schedule (default: those of ``order``, then of
        ``placement``).
    contention : bool
        Transfers share each processor's link, one at a time each way (see the module
        docstring).

    Returns
    -------
    Schedule
        The simulated timeline; ``algorithm`` is ``"simulate"``.

    Raises
    ------
    DeadlockError
        If ``order`` puts a node before one of its own ancestors on a processor.
    """
    return simulate_latencies(graph, placement, order, edge_latencies=(edge_latency,),
                              task_overhead=task_overhead, priority=priority,
                              processors=processors, contention=contention)[0]


def simulate_latencies(
    graph: nx.DiGraph,
    placement: Mapping[Key, Hashable],
    order: Mapping[Hashable, Sequence[Key]] | None = None,
    *,
    edge_latencies: Sequence[float],
    task_overhead: float = 0.0,
    priority: Sequence[Key] | None = None,
    processors: Sequence[Hashable] | None = None,
    contention: bool = False,
) -> tuple[Schedule, ...]:
    """`simulate` once per edge latency of ``edge_latencies``, checking and indexing the graph
    once: the timelines, in that order.

    >>> from schedulers.examples import topcuoglu2002
    >>> from schedulers.heft import heft
    >>> graph, processors = topcuoglu2002()
    >>> plan = heft(graph, processors)
    >>> [t.makespan for t in simulate_latencies(graph, plan.placement, plan.order,
    ...                                         edge_latencies=(0.0, 1.0))]
    [80.0, 83.0]
    """
    overhead = _check_seconds("task_overhead", task_overhead)
    latencies = [_check_seconds("edge_latency", latency) for latency in edge_latencies]
    missing = [node for node in graph if node not in placement]
    extra = [node for node in placement if node not in graph]
    if missing or extra:
        raise ValueError(
            f"expected a processor for every node, got none for {missing[:5]!r} "
            f"and placement of unknown nodes {extra[:5]!r}"
        )
    if processors is None:
        listed = list(order or ()) + [placement[node] for node in topological_order(graph)]
        processors = list(dict.fromkeys(listed))
    if not processors and graph.number_of_nodes() == 0:
        return tuple(Schedule({}, (), "simulate") for _ in latencies)
    problem = build_problem(graph, processors)
    index = {node: i for i, node in enumerate(problem.nodes)}
    proc_index = {proc: q for q, proc in enumerate(problem.processors)}
    strangers = ({placement[node] for node in graph} | set(order or ())) - set(proc_index)
    if strangers:
        raise ValueError(f"expected processors among {list(proc_index)!r}, got {strangers!r}")
    where = [proc_index[placement[node]] for node in problem.nodes]
    for i, node in enumerate(problem.nodes):
        if problem.cost[i, where[i]] == math.inf:
            raise UnschedulableNodeError(node, [placement[node]])

    if order is not None:
        _check_order(order, placement, index)
        sequences: list[list[int]] = [[] for _ in problem.processors]
        for proc, nodes in order.items():
            sequences[proc_index[proc]] = [index[node] for node in nodes]
        if not contention:
            return _replay(problem, where, sequences, overhead, latencies)
        return tuple(_run(problem, where, index, None, overhead, latency, sequences, True)
                     for latency in latencies)
    return tuple(_run(problem, where, index, priority, overhead, latency, None, contention)
                 for latency in latencies)


def _replay(problem: Problem, where: list[int], sequences: list[list[int]], overhead: float,
            latencies: Sequence[float]) -> tuple[Schedule, ...]:
    """The simulation with a fixed order, for every latency at once: each node starts at
    ``max(previous node on its processor finished, latest input arrived)``, which is the time
    the event simulation starts it, computed with the same sums in a topological order of the
    graph with each processor's sequence chained in (no event queue needed)."""
    n = problem.n
    waiting = np.diff(problem.in_ptr).tolist()
    before, after = [-1] * n, [-1] * n  # the previous and the next node on the processor
    for nodes in sequences:
        for a, b in itertools.pairwise(nodes):
            before[b], after[a] = a, b
            waiting[b] += 1
    cost, preds, succs = problem.cost.tolist(), problem.preds, problem.succs
    finishes = [[0.0] * n for _ in latencies]
    starts = [[0.0] * n for _ in latencies]
    ready = [i for i in range(n) if waiting[i] == 0]
    ran = [False] * n
    while ready:
        i = ready.pop()
        ran[i] = True
        q, prev = where[i], before[i]
        run = cost[i][q] + overhead
        for latency, start, finish in zip(latencies, starts, finishes, strict=True):
            t = finish[prev] if prev >= 0 else 0.0
            for j, comm, _ in preds[i]:
                src = where[j]
                transfer = 0.0 if src == q else comm if isinstance(comm, float) else \
                    float(comm[src, q])
                arrival = finish[j] + transfer + latency
                if arrival > t:
                    t = arrival
            start[i] = t
            finish[i] = t + run
        for j, _, _ in succs[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
        j = after[i]
        if j >= 0:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if not all(ran):
        raise DeadlockError({
            problem.processors[q]: problem.nodes[next(i for i in nodes if not ran[i])]
            for q, nodes in enumerate(sequences) if not all(ran[i] for i in nodes)
        })
    position = [0] * n
    for nodes in sequences:
        for r, i in enumerate(nodes):
            position[i] = r
    names, procs = problem.nodes, problem.processors
    timelines = []
    for start, finish in zip(starts, finishes, strict=True):
        ranked = sorted(range(n), key=lambda i: (start[i], where[i], position[i]))
        slots = {names[i]: Slot(procs[where[i]], start[i], finish[i]) for i in ranked}
        timelines.append(Schedule(slots, procs, "simulate"))
    return tuple(timelines)


def _run(problem: Problem, where: list[int], index: Mapping[Key, int],
         priority: Sequence[Key] | None, overhead: float, latency: float,
         sequences: list[list[int]] | None = None, contention: bool = False) -> Schedule:
    """The event simulation: a free processor starts the next node of its sequence once its
    inputs have arrived (``sequences``, an order), else its highest-priority node whose inputs
    have arrived (a heap of ``(priority, node)`` per processor); with ``contention``, transfers
    take their turn on each processor's link."""
    ready: list[list[tuple[int, int]]] = [[] for _ in problem.processors]
    pending = [list(reversed(nodes)) for nodes in sequences] if sequences is not None else None
    first = {index[node]: r for r, node in enumerate(priority or ()) if node in index}
    rank = [(first.get(i, problem.n), i) for i in range(problem.n)]
    cost = problem.cost.tolist()

    waiting = np.diff(problem.in_ptr).tolist()  # unfinished predecessors
    sends, receives = [0.0] * problem.p, [0.0] * problem.p  # when each link is next free
    sent: dict[tuple[int, int], float] = {}  # (node, processor) -> when its output is there
    arrival = [0.0] * problem.n
    arrived = [False] * problem.n
    running: list[int | None] = [None] * problem.p
    slots: dict[Key, Slot] = {}
    events = [(0.0, i, _ARRIVE, i) for i in range(problem.n) if waiting[i] == 0]
    sequence = len(events)
    heapq.heapify(events)
    while events:
        now = events[0][0]
        touched: set[int] = set()
        while events and events[0][0] == now:
            _, _, kind, i = heapq.heappop(events)
            q = where[i]
            touched.add(q)
            if kind == _ARRIVE:
                arrived[i] = True
                heapq.heappush(ready[q], rank[i])
                continue
            running[q] = None
            for j, comm, _ in problem.succs[i]:
                r = where[j]
                if r == q:
                    there = now
                elif (i, r) in sent:
                    there = sent[(i, r)]
                else:
                    transfer = comm if isinstance(comm, float) else float(comm[q, r])
                    begin = max(now, sends[q], receives[r]) if contention else now
                    there = begin + transfer
                    if contention:
                        sends[q] = receives[r] = sent[(i, r)] = there
                arrival[j] = max(arrival[j], there + latency)
                waiting[j] -= 1
                if waiting[j] == 0:
                    heapq.heappush(events, (arrival[j], sequence, _ARRIVE, j))
                    sequence += 1
        for q in sorted(touched):
            if running[q] is not None:
                continue
            if pending is not None:
                if not pending[q] or not arrived[pending[q][-1]]:
                    continue
                i = pending[q].pop()
            elif ready[q]:
                _, i = heapq.heappop(ready[q])
            else:
                continue
            finish = now + cost[i][q] + overhead
            slots[problem.nodes[i]] = Slot(problem.processors[q], now, finish)
            running[q] = i
            heapq.heappush(events, (finish, sequence, _FINISH, i))
            sequence += 1
    if pending is not None and len(slots) < problem.n:
        raise DeadlockError({problem.processors[q]: problem.nodes[left[-1]]
                             for q, left in enumerate(pending) if left})
    return Schedule(slots, problem.processors, "simulate")
