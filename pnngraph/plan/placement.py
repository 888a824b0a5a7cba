"""Placement: where every task of a training graph runs, decided once, as a value.

:func:`place` is the one decision: from the abstract graph, what is known of the cluster (a
:class:`~pnngraph.plan.cluster.ClusterModel`, or only the workers' addresses) and the
:class:`PlacementOptions`, it returns a :class:`Placement`, which the lowering turns into
per-key annotations. The options name one scheduler::

    a list scheduler ("heft", "peft", ...)  needs a cluster model; pins every node (the data
                                            and initial states in the graph next to their
                                            first reader), orders them by the plan's start
                                            times, picks each node's array library, predicts
                                            the timeline (``Placement.plan``)
    "static"                                shard j of stage k on worker (j K + k) mod W; needs
                                            only the workers (a cluster model adds a prediction)
    "dask"                                  no pins: Dask decides (a cluster model adds a
                                            prediction of Dask's own earliest-start rule)

``None`` is the default: "heft" when there is a cluster to plan for, else "dask".
:func:`needs_cluster_model` says whether a run must measure its cluster first, and
:func:`size_shards` turns ``DataParallel("auto")`` into shards sized for the workers' speeds.

>>> import networkx as nx
>>> g = nx.DiGraph()
>>> g.add_node(("grad-dense-1a2b3c4d", 0, 0, 0), kind="grad", shard=0, stage=0, flops=1e9,
...            bytes=1e6)
>>> place(g, PlacementOptions("static"), workers=["w0", "w1"]).workers
{('grad-dense-1a2b3c4d', 0, 0, 0): 'w0'}
>>> place(g, PlacementOptions()).workers
{}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx

from pnngraph.compile.keys import Key
from pnngraph.compile.strategies import DataParallel, Strategy
from pnngraph.exceptions import ConfigError, UnknownNameError
from pnngraph.plan.cluster import ClusterModel
from pnngraph.plan.planner import (
    DEVICES,
    Plan,
    auto_shares,
    machine_for,
    make_plan,
    scheduler_name,
    scheduling_graph,
    source_workers,
)
from pnngraph.plan.static import static_placement

DEFAULT_SCHEDULER = "heft"
UNPLANNED = ("static", "dask")  # the schedulers that need no cluster model


@dataclass(frozen=True)
class PlacementOptions:
    """How to place: a scheduler name (``None``: the default, see the module docstring) and
    which devices may be used ("any", "cpu" or "gpu")."""

    scheduler: str | None = None
    devices: str = "any"

    def __post_init__(self) -> None:
        if self.scheduler is not None:
            scheduler_name(self.scheduler)
        if self.devices not in DEVICES:
            raise UnknownNameError("devices", self.devices, DEVICES)

    def resolved(self, planned: bool) -> PlacementOptions:
        """These options with the default scheduler filled in (``planned``: there is a client
        or a cluster model to place on)."""
        if self.scheduler is not None:
            return self
        return replace(self, scheduler=DEFAULT_SCHEDULER if planned else "dask")


@dataclass(frozen=True)
class Placement:
    """Where each node runs: ``workers`` (node -> worker address; empty: Dask decides),
    ``priorities`` (node -> Dask priority), ``backends`` (node -> array library, "numpy" when
    absent), ``plan`` (the placed, ordered and predicted schedule, when a cluster model was
    there to plan with) and ``loose`` (pins let Dask run a node elsewhere when its worker is
    gone)."""

    workers: Mapping[Key, str] = field(default_factory=dict)
    priorities: Mapping[Key, int] = field(default_factory=dict)
    backends: Mapping[Key, str] = field(default_factory=dict)
    plan: Plan | None = None
    loose: bool = True

    def without(self, gone: set[str]) -> Placement:
        """The same placement with no node pinned to a worker of ``gone``."""
        kept = {k: w for k, w in self.workers.items() if w not in gone}
        return replace(self, workers=kept)


def needs_cluster_model(options: PlacementOptions, strategy: Strategy) -> bool:
    """Whether a run placed with ``options`` must know its cluster's speeds: a list scheduler,
    shards sized to the workers (``DataParallel("auto")``), or GPU workers only (a plan of
    the cluster model picks each task's array library)."""
    return options.scheduler not in UNPLANNED or strategy.auto or options.devices == "gpu"


def place(
    abstract: nx.DiGraph,
    options: PlacementOptions,
    *,
    cluster: ClusterModel | None = None,
    workers: Sequence[str] = (),
    dtype: str = "float64",
    shard_workers: Sequence[str] | None = None,
) -> Placement:
    """The :class:`Placement` of ``abstract`` (see the module docstring).

    ``options.scheduler`` must be resolved (:meth:`PlacementOptions.resolved`).
    ``shard_workers[j]`` is the only worker shard j's gradient tasks may run on.
    """
    scheduler = options.scheduler or "dask"
    if cluster is None:
        if scheduler == "dask":
            return Placement()
        if scheduler != "static":
            raise ConfigError("scheduler", f"a client or a cluster model to plan {scheduler!r} "
                              "with (or scheduler='dask')", scheduler)
        if not workers:
            raise ConfigError("workers", "at least one worker", list(workers))
        stages = abstract.graph.get("layout", (1, 1, 1))[1]
        return Placement(static_placement(abstract, list(workers), stages=stages))
    plan = make_plan(abstract, cluster, scheduler=scheduler, dtype=dtype,
                     devices=options.devices, shard_workers=shard_workers)  # type: ignore[arg-type]
    if not plan.pinned:  # Dask places: every task may land anywhere, so every task is numpy
        return Placement(plan=plan)
    # a source in the graph's message sits where its first reader runs (else Dask puts it
    # anywhere, and the worker that reads it first copies it: kernels._adopt)
    pins = {**source_workers(abstract, plan), **plan.placement}
    return Placement(pins, dict(plan.priorities), dict(plan.backends), plan)


def size_shards(
    strategy: Strategy, cluster: ClusterModel | None, model: Any, spec: Any, *,
    devices: str = "any",
) -> tuple[Strategy, tuple[str, ...] | None]:
    """``DataParallel("auto")`` -> one shard per worker worth one, sized so that every worker
    ends its step at the same time (:func:`planner.auto_shares`, from the planner's price of a
    shard's gradient and of an update on each worker: :func:`step_terms`), and the worker of
    each shard. Any other strategy comes back as it is, with no shard workers."""
    if not strategy.auto:
        return strategy, None
    if cluster is None:
        raise ConfigError("shards", "a client or cluster model for shards='auto'", "auto")
    workers = cluster.usable(devices)
    if not workers:
        raise ConfigError("devices", f"workers of kind {devices!r} in the cluster", "none")
    rows = max(1, round(spec.batch_size / len(workers)))
    per_sample, fixed = step_terms(cluster, model, spec, workers, rows=rows,
                                   parts=len(workers))
    shares = auto_shares(per_sample, fixed, batch=spec.batch_size,
                         exchange=exchange_seconds(cluster, model, workers))
    return DataParallel(list(shares.values())), tuple(shares)


def exchange_seconds(cluster: ClusterModel, model: Any, workers: Sequence[str]) -> float:
    """What more than one worker adds to a data-parallel step: a gradient (the size of the
    parameters) reaching the other workers over the slowest link between two of ``workers``,
    and a hop."""
    param_bytes = sum(int(a.nbytes) for layer in model.params for a in layer.values())
    machine = machine_for(cluster, model.dtype)
    return cluster.hop_latency_seconds + max(
        (machine.link(a, b).transfer_seconds(param_bytes) for a in workers for b in workers
         if a != b), default=0.0)


def predicted_step(cluster: ClusterModel, model: Any, spec: Any,
                   sizes: Mapping[str, float]) -> float:
    """Seconds of a data-parallel step whose shards hold ``sizes`` (worker -> samples of the
    batch, each worker with its own copy of the state), priced as :func:`size_shards` prices
    one: the longest of every worker's gradient (at its own rows) and update, plus the
    exchange where there is more than one worker."""
    workers = [a for a, n in sizes.items() if n > 0]
    ends = []
    for a in workers:
        rows = max(1, round(sizes[a]))
        per_sample, fixed = step_terms(cluster, model, spec, [a], rows=rows,
                                       parts=len(workers))
        ends.append(per_sample[a] * rows + fixed[a])
    extra = exchange_seconds(cluster, model, workers) if len(workers) > 1 else 0.0
    return max(ends, default=0.0) + extra


def step_terms(cluster: ClusterModel, model: Any, spec: Any, workers: Sequence[str], *,
               rows: int, parts: int) -> tuple[dict[str, float], dict[str, float]]:
    """A data-parallel step's time on each of ``workers`` as :func:`planner.auto_shares`
    reads it: seconds per sample of a shard's gradient (the kernel's time for a shard of
    ``rows`` samples, over ``rows``) and the seconds each step costs there whatever its
    shard (an update summing ``parts`` gradients, and Dask's overhead of both tasks). Both
    kernels are priced as the planner prices them (their measured line where the cluster
    model has one, else the roofline, times what runs learned of that kernel there:
    :func:`planner.scheduling_graph`)."""
    from pnngraph.compile.cost import stage_costs

    costs = stage_costs(model, [(0, len(model.layers))], spec.optimizer, spec.loss)
    step = nx.DiGraph()
    step.add_node("grad", kind="grad", **costs.grad(0, rows))
    step.add_node("update", kind="update", **costs.update(0, parts))
    priced = scheduling_graph(step, cluster, dtype=model.dtype).nodes
    overhead = cluster.task_overhead_seconds
    return ({a: (priced["grad"]["costs"][a] - overhead) / rows for a in workers},
            {a: priced["update"]["costs"][a] + overhead for a in workers})
