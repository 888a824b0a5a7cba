"""Planning: the abstract training graph and a cluster model in, a placed and ordered plan out.

The planner prices every computing node on every worker (Dask's per-task overhead plus the
roofline time from its FLOPs and bytes and the worker's measured speeds, the latter times the
history correction of its phase on that worker) and every edge between two workers (latency
plus bytes over the network; a GPU end adds the host <-> device copy). A scheduler from
:mod:`schedulers` places and orders the nodes; the simulator then replays the placement with
Dask's dependent-hop latency on every edge (and, where the cluster model says its links are
shared, each worker's link carrying one transfer at a time each way), which is the prediction of
the run. Data and initial-state nodes are left out: the data is on every worker before the run,
and initial states come with the graph; but a block of chunked data whose worker is known (its
``home``) stays in, fixed there at no cost, so that its edges price moving it (its bytes over the
network).

    abstract graph --costs/comm--> scheduling graph --heft/peft/...--> Schedule
                   --simulate(+hop latency)--> predicted timeline  ==>  Plan

>>> from pnngraph.plan.cluster import simulated_cluster
>>> import networkx as nx
>>> g = nx.DiGraph()
>>> g.add_node("a", kind="grad", flops=1e9, bytes=1e6)
>>> g.add_node("b", kind="update", flops=1e6, bytes=1e6)
>>> g.add_edge("a", "b", bytes=1e6)
>>> plan = make_plan(g, simulated_cluster(cpus=2, gpus=0), scheduler="heft")
>>> sorted(plan.placement.values()) == ["sim-cpu-0", "sim-cpu-0"]
True
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx

import schedulers
from pnngraph.collect import without_gc
from pnngraph.compile.keys import Key, step_of, step_spans
from pnngraph.exceptions import ConfigError, UnknownNameError
from pnngraph.plan.cluster import ClusterModel
from pnngraph.plan.periodic import VERIFY, tile
from pnngraph.plan.static import static_placement

SCHEDULERS: tuple[str, ...] = (*schedulers.SCHEDULERS, "static", "dask")
"""Every way to place a training graph: the list schedulers of :mod:`schedulers`, the static
shard/stage rule and Dask's own placement."""
DEVICES = ("any", "cpu", "gpu")
SOURCES = ("data", "init")


def scheduler_name(name: Any) -> str:
    """``name`` if it is one of :data:`SCHEDULERS`, else :class:`UnknownNameError`."""
    if name not in SCHEDULERS:
        raise UnknownNameError("scheduler", name, SCHEDULERS)
    return str(name)


@dataclass(frozen=True)
class Plan:
    """A placed, ordered training graph and its predicted timeline.

    ``schedule`` is the scheduler's own timeline; ``predicted`` the simulated one with Dask's
    hop latency (its makespan is the prediction). ``placement`` maps node -> worker address,
    ``priorities`` node -> Dask priority (earlier start, higher), ``backends`` node -> array
    library. With ``algorithm == "dask"`` nothing is pinned and the prediction models Dask's
    own earliest-start rule. ``terms`` splits the predicted wall time (:func:`wall_terms`);
    with ``strategy="auto"``, ``alternatives`` holds every candidate strategy and its predicted
    wall time for the whole run, fastest first (the first is this plan's). ``tiling`` says how
    the schedule was made: ``"periodic"`` (one period planned and tiled,
    :mod:`pnngraph.plan.periodic`), ``"whole"`` (the whole graph planned) or ``"whole
    (tiling refused: <why>)"`` (a tiled plan was made, refused, and the whole graph planned).
    With ``fan_in="auto"``, ``fan_ins`` holds every fan-in tried and its predicted seconds per
    step, the chosen one first. ``peak_bytes`` is each worker's predicted peak memory (computed
    when first read) and ``limit_bytes`` what it may use, where its limit is known
    (:mod:`pnngraph.plan.memory`).
    """

    algorithm: str
    schedule: schedulers.Schedule
    predicted: schedulers.Schedule
    placement: dict[Key, str]
    priorities: dict[Key, int]
    backends: dict[Key, str]
    pinned: bool = True
    terms: dict[str, float] = field(default_factory=dict)
    alternatives: tuple[tuple[str, float], ...] = ()
    tiling: str = "whole"
    fan_ins: tuple[tuple[int, float], ...] = ()
    peak_bytes: Mapping[str, float] = field(default_factory=dict)
    limit_bytes: dict[str, float] = field(default_factory=dict)

    @property
    def makespan(self) -> float:
        """Predicted seconds from the graph's first task to its last."""
        return self.predicted.makespan

    @property
    def wall_seconds(self) -> float:
        """Predicted wall time of ``client.compute(graph).result()``: submission, every step
        and the result coming back (:func:`wall_terms`)."""
        return float(sum(self.terms.values())) if self.terms else self.makespan

    def step_makespans(self) -> dict[int, float]:
        """Predicted seconds per step (from the first start to the last finish of its nodes)."""
        return step_spans((step_of(k), s.start, s.finish) for k, s in self.predicted.slots.items())

    def summary(self) -> str:
        """A few lines: algorithm, predicted wall time and its terms, nodes per worker."""
        per: dict[str, int] = {}
        for w in self.placement.values():
            per[w] = per.get(w, 0) + 1
        terms = ", ".join(f"{k} {v:.4f} s" for k, v in self.terms.items())
        lines = [f"plan: {self.algorithm}, predicted wall time {self.wall_seconds:.4f} s "
                 f"({terms})"]
        if self.fan_ins:
            tried = ", ".join(f"{f}: {seconds:.4f} s" for f, seconds in self.fan_ins)
            lines.append(f"fan-in {self.fan_ins[0][0]}, predicted fastest per step ({tried})")
        if len(per) > 16:  # a large cluster: its busiest workers only
            top = sorted(per.items(), key=lambda item: (-item[1], item[0]))[:8]
            lines += [f"  {w}: {n} tasks{self._memory(w)}" for w, n in top]
            lines.append(f"  ... and {len(per) - 8} more workers")
        else:
            lines += [f"  {w}: {n} tasks{self._memory(w)}" for w, n in sorted(per.items())]
        return "\n".join(lines)

    def _memory(self, worker: str) -> str:
        """``", peak 412 MiB of 800 MiB"`` for ``worker`` (what is known of it)."""
        if worker not in self.peak_bytes:
            return ""
        limit = self.limit_bytes.get(worker)
        of = f" of {limit / 2**20:.0f} MiB" if limit else ""
        return f", peak {self.peak_bytes[worker] / 2**20:.0f} MiB{of}"


def machine_for(cluster: ClusterModel, dtype: str) -> schedulers.Machine:
    """The cluster as a :class:`schedulers.Machine` for arrays of ``dtype``: one network, and
    at a GPU end of a transfer its host <-> device copy."""
    processors: dict[Hashable, schedulers.ProcessorSpec] = {}
    kinds: dict[tuple[Any, ...], schedulers.ProcessorSpec] = {}  # one spec per kind of worker
    for w in cluster.workers:
        copy = w.host_device_bytes_per_s if w.gpu else None
        kind = (w.gpu, w.flops_per_s(dtype), w.memory_bytes_per_s, copy)
        if kind not in kinds:
            kinds[kind] = schedulers.ProcessorSpec(
                "gpu" if w.gpu else "cpu", {"default": w.flops_per_s(dtype)},
                w.memory_bytes_per_s, cluster.task_overhead_seconds, copy or None)
        processors[w.address] = kinds[kind]
    return schedulers.Machine(processors, schedulers.Link(cluster.network_bytes_per_s, 0.0))


def computing_nodes(abstract: nx.DiGraph, cluster: ClusterModel, devices: str = "any"
                    ) -> list[Any]:
    """The nodes of ``abstract`` that a plan places: every node but the sources (data and
    initial states), except blocks of data at home on a usable worker."""
    allowed = set(cluster.usable(devices))
    return [k for k, n in abstract.nodes(data=True)
            if n["kind"] not in SOURCES or n.get("home") in allowed]


def source_workers(abstract: nx.DiGraph, plan: Plan) -> dict[Any, str]:
    """The worker of each source in ``abstract``'s graph message (data and initial states that
    are not external) under ``plan``: its first consumer's (the highest priority), where
    pinning it puts its value, and the copy a kernel makes of it (kernels._adopt), next to
    the first task that reads it."""
    out = {}
    for key, node in abstract.nodes(data=True):
        if node["kind"] not in SOURCES or node["source"].external or key in plan.placement:
            continue
        readers = [c for c in abstract.succ[key] if c in plan.placement]
        if readers:
            first = max(readers, key=lambda c: plan.priorities.get(c, 0))
            out[key] = plan.placement[first]
    return out


def scheduling_graph(
    abstract: nx.DiGraph, cluster: ClusterModel, *, dtype: str = "float64", devices: str = "any",
    nodes: Sequence[Any] | None = None,
) -> nx.DiGraph:
    """The computing nodes of ``abstract`` with ``costs`` per worker and ``comm`` per edge
    (``nodes``: only those of :func:`computing_nodes` and the edges between them).

    A node's compute time is its kernel's measured time on that worker when the cluster model
    has one (:meth:`ClusterModel.kernel_seconds`), else the roofline of its FLOPs and bytes;
    either way times the history correction of its kernel (else its phase) there, plus Dask's
    task overhead.
    """
    allowed = set(cluster.usable(devices))
    attrs = abstract.nodes
    keep = {k: attrs[k] for k in (computing_nodes(abstract, cluster, devices)
                                  if nodes is None else nodes)}
    sub = nx.DiGraph()
    sub.add_nodes_from(
        (k, {"kind": n["kind"], "flops": float(n["flops"]), "bytes": float(n["bytes"]),
             "sig": n.get("sig"), "rows": n.get("rows", 0.0), "count": n.get("count", 1)})
        for k, n in keep.items())
    succ = abstract.succ
    sub.add_edges_from((u, v, {"bytes": float(d["bytes"])}) for u in keep
                       for v, d in succ[u].items() if v in keep)
    costed = schedulers.annotate_costs(sub, machine_for(cluster, dtype), copy=False)
    overhead = cluster.task_overhead_seconds
    # workers without measured kernels or history: the roofline as it is (the same float ops)
    known = {key.rpartition("|")[2] for key in (*cluster.kernels, *cluster.history)}
    priced: dict[tuple[Any, ...], dict[Hashable, float]] = {}
    for key, node in costed.nodes(data=True):
        if node["kind"] in SOURCES:  # a block held by a worker: it stays there
            node["costs"] = {keep[key].get("home"): 0.0}
            continue
        what = (node["kind"], node["flops"], node["bytes"], node["sig"], node["rows"],
                node["count"])
        costs = priced.get(what)
        if costs is None:  # nodes of the same kernel and size cost the same: priced once
            costs = priced[what] = {}
            for proc, seconds in node["costs"].items():
                if proc not in allowed:
                    continue
                if proc not in known:
                    costs[proc] = overhead + (seconds - overhead)
                    continue
                measured = None if node["sig"] is None else cluster.kernel_seconds(
                    node["sig"], str(proc), node["rows"], node["count"])
                compute = seconds - overhead if measured is None else measured
                costs[proc] = overhead + compute * cluster.correction(node["kind"], proc,
                                                                      node["sig"])
        node["costs"] = dict(costs)
    return costed


def wall_terms(abstract: nx.DiGraph, cluster: ClusterModel, makespan: float,
               placement: Mapping[Any, Hashable] | None = None) -> dict[str, float]:
    """The predicted wall time of ``client.compute(graph).result()``, term by term (seconds):
    ``submit`` (the fixed cost of a graph and the data inside it reaching the first worker
    that reads it, then every other), ``steps`` (the simulated makespan, which charges every
    task its overhead) and ``gather`` (the outputs to the client)."""
    inside = 0.0
    for key, node in abstract.nodes(data=True):
        if node["kind"] not in SOURCES or node["source"].external:
            continue
        readers = {placement.get(v) for v in abstract.successors(key)} if placement else set()
        inside += node["bytes"] / cluster.send_bytes_per_s
        inside += node["bytes"] * max(len(readers) - 1, 0) / cluster.network_bytes_per_s
    outputs = sum(abstract.nodes[k]["bytes"] for k in abstract.graph.get("outputs", ()))
    return {
        "submit": cluster.graph_seconds + inside,
        "steps": makespan,
        "gather": outputs / cluster.result_bytes_per_s,
    }


def check_devices(devices: str, gpus: Sequence[bool] | None) -> None:
    """Refuse ``devices`` ("any", "cpu" or "gpu") that the workers cannot honour; ``gpus``
    says whether each worker has a GPU (``None``: no cluster to place on, so every task runs
    on this machine's CPU).

    >>> check_devices("gpu", [False, False])
    Traceback (most recent call last):
    ...
    pnngraph.exceptions.ConfigError: devices: expected a cluster with GPU workers for \
devices='gpu', got 'no worker has a GPU'
    """
    if devices not in DEVICES:
        raise UnknownNameError("devices", devices, DEVICES)
    if devices == "gpu" and not any(gpus or ()):
        raise ConfigError("devices", "a cluster with GPU workers for devices='gpu'",
                          "no client or cluster model" if gpus is None else "no worker has a GPU")
    if devices == "cpu" and gpus and all(gpus):
        raise ConfigError("devices", "a cluster with CPU workers for devices='cpu'",
                          "every worker has a GPU")


@without_gc
def make_plan(
    abstract: nx.DiGraph,
    cluster: ClusterModel,
    *,
    scheduler: str = "heft",
    dtype: str = "float64",
    devices: Literal["any", "cpu", "gpu"] = "any",
    shard_workers: Sequence[str] | None = None,
    periodic: bool = True,
    verify: Literal["periodic", "full"] = "periodic",
    **options: Any,
) -> Plan:
    """Place and order ``abstract`` on ``cluster`` with ``scheduler`` and predict the run.

    ``scheduler`` is any of :data:`schedulers.SCHEDULERS`, ``"static"`` (the shard/stage rule)
    or ``"dask"`` (no pins; predicted with the earliest-start rule Dask follows). ``devices``
    restricts the workers used ("cpu" or "gpu" only); ``shard_workers[j]`` is the only worker
    shard j's gradient tasks may run on (shards sized for their worker's speed). A state kept in
    copies has each copy at home on one worker (``shard_workers[r]``, else the r-th usable
    worker): copy r's update and the gradients that read it run there. With ``periodic`` a list
    scheduler plans a window of a few periods and the plan tiles it
    (:func:`pnngraph.plan.periodic.tile`), unless the graph is too short, not periodic, or the
    tiled plan is refused (``Plan.tiling`` says which), or the cluster's links are shared (the
    tiled replay does not model links). ``verify`` says how a tiled plan is checked:
    ``"periodic"`` prices and simulates a short graph of a few periods and extends its steady
    state (the plan's slots are simulated when first read), ``"full"`` prices and simulates
    the whole graph at once.
    """
    scheduler_name(scheduler)
    if verify not in VERIFY:
        raise UnknownNameError("verify", verify, VERIFY)
    check_devices(devices, [w.gpu for w in cluster.workers])
    processors = cluster.usable(devices)
    homes, sized = list(shard_workers or processors), bool(shard_workers)
    nodes = computing_nodes(abstract, cluster, devices)

    def price(keys: Sequence[Any] | None) -> nx.DiGraph:
        costed = scheduling_graph(abstract, cluster, dtype=dtype, devices=devices,
                                  nodes=nodes if keys is None else keys)
        _tie(costed, abstract, homes, sized)
        return costed

    tiling, predicted = "whole", None
    priorities: dict[Key, int] | None = None
    if scheduler == "static":
        costed = price(None)
        stages = abstract.graph.get("layout", (1, 1, 1))[1]
        placement: Mapping[Any, Hashable] = {
            **{k: abstract.nodes[k]["home"] for k in costed if abstract.nodes[k].get("home")},
            **static_placement(abstract.subgraph(costed.nodes), processors, stages=stages)}
        schedule = schedulers.simulate(costed, placement, processors=processors)
    else:
        fn = schedulers.SCHEDULERS["greedy_start" if scheduler == "dask" else scheduler]
        tiled, refused = tile(abstract, nodes, processors, fn, price, **options,
                              edge_latency=cluster.hop_latency_seconds, verify=verify) \
            if periodic and not cluster.shared_links else (None, "")
        if tiled is not None:
            tiling, schedule, predicted = "periodic", tiled.schedule, tiled.predicted
            placement, priorities = tiled.placement, tiled.priorities
        else:
            tiling = f"whole (tiling refused: {refused})" if refused else "whole"
            costed = price(None)
            schedule = fn(costed, processors, **options)
            placement = schedule.placement
    if predicted is None:
        predicted = schedulers.simulate(
            costed, placement, schedule.order, edge_latency=cluster.hop_latency_seconds,
            processors=processors, contention=cluster.shared_links,
        )
    if priorities is None:
        slots = predicted.slots
        by_start: list[Any] = sorted(slots, key=lambda k: (slots[k].start, slots[k].finish))
        priorities = {k: len(by_start) - i for i, k in enumerate(by_start)}
    backend_of = {w.address: w.backend for w in cluster.workers}
    return Plan(
        algorithm=scheduler if scheduler == "static" else schedule.algorithm or scheduler,
        schedule=schedule,
        predicted=predicted,
        placement={k: str(p) for k, p in placement.items()},
        priorities=priorities,
        backends={k: backend_of[str(p)] for k, p in placement.items()},
        pinned=scheduler != "dask",
        terms=wall_terms(abstract, cluster, predicted.makespan, placement),
        tiling=tiling,
    )


def _tie(costed: nx.DiGraph, abstract: nx.DiGraph, homes: list[str], sized: bool) -> None:
    """Leave one worker in the costs of the nodes that must run there: copy r's tasks on
    ``homes[r]``; with shards sized for their workers (``sized``), shard j's gradients on
    ``homes[j]``."""
    for key, node in costed.nodes(data=True):
        where = abstract.nodes[key]
        copy, shard = where.get("copy"), where.get("shard")
        home = None
        if copy is not None:
            home = homes[copy % len(homes)]
        elif sized and node["kind"] == "grad" and shard is not None and shard < len(homes):
            home = homes[shard]
        if home is not None and home in node["costs"]:
            node["costs"] = {home: node["costs"][home]}


def auto_shares(
    per_sample: Mapping[str, float], update: Mapping[str, float], *, batch: int,
    exchange: float = 0.0,
) -> dict[str, float]:
    """Samples of ``batch`` per worker for ``DataParallel("auto")``: the workers, and their
    shares, that end a step soonest (workers left out take no share).

    Each worker keeps its own copy of the state, so a step on worker ``i`` is its shard's
    gradient, ``n_i p_i`` seconds (``per_sample[i]``), then, once every gradient reached it,
    its own update, ``u_i`` seconds (``update[i]``: the sum of the gradients and the optimizer
    step, whatever its shard). All ending together at ``T``: ``n_i = (T - u_i) / p_i``, and
    ``sum n_i = batch`` gives ``T``. More than one worker costs ``exchange`` seconds more (a
    gradient reaching the other workers: a transfer and a hop). The workers are taken fastest
    first (an equal share's gradient and an update); of the first 1, 2, ... of them, the set
    with the shortest ``T`` (plus the exchange) wins, where a worker whose share would be
    under one sample is left out.

    >>> shares = auto_shares({"a": 1e-3, "b": 1e-3, "c": 3e-3},
    ...                      {"a": 0.01, "b": 0.01, "c": 0.03}, batch=600, exchange=0.005)
    >>> {w: round(n) for w, n in shares.items()}  # c: 3x slower at both, and 0.02 s lost
    {'a': 260, 'b': 260, 'c': 80}
    >>> shares = auto_shares({"a": 1e-5, "b": 1e-5}, {"a": 1e-3, "b": 1e-3}, batch=24,
    ...                      exchange=0.006)  # a hop costs more than half the gradient saves
    >>> {w: round(n) for w, n in shares.items()}
    {'a': 24}
    """
    workers = list(per_sample)
    order = sorted(workers, key=lambda a: (batch / len(workers) * per_sample[a] + update[a],
                                           workers.index(a)))
    best: tuple[float, dict[str, float]] | None = None
    for k in range(1, len(order) + 1):
        T, shares = balanced_shares(per_sample, update, batch, order[:k])
        total = T + (exchange if len(shares) > 1 else 0.0)
        if best is None or total < best[0]:
            best = (total, shares)
    assert best is not None
    return {a: best[1][a] for a in workers if a in best[1]}


def balanced_shares(per_sample: Mapping[str, float], update: Mapping[str, float], batch: float,
                    active: Sequence[str]) -> tuple[float, dict[str, float]]:
    """``T`` and the shares of :func:`auto_shares` on the workers ``active``, less those whose
    share would be under one sample."""
    active = list(active)
    while True:
        rate = sum(1.0 / per_sample[a] for a in active)
        T = (batch + sum(update[a] / per_sample[a] for a in active)) / rate
        shares = {a: (T - update[a]) / per_sample[a] for a in active}
        low = [a for a in active if shares[a] < 1.0]
        if not low or len(low) == len(active):
            return T, shares
        active = [a for a in active if a not in low]
