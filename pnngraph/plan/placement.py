"""Placement: where every task of a training graph runs, decided once, as a value.

:func:`place` is the one decision: from the abstract graph, what is known of the cluster (a
:class:`~pnngraph.plan.cluster.ClusterModel`, or only the workers' addresses) and the
:class:`PlacementOptions`, it returns a :class:`Placement`, which the lowering turns into
per-key annotations. The options name one scheduler::

    a list scheduler ("heft", "peft", ...)  needs a cluster model; pins every node, orders them
                                            by the plan's start times, picks each node's array
                                            library, predicts the timeline (``Placement.plan``)
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
import numpy as np

from pnngraph.compile.keys import Key
from pnngraph.compile.strategies import DataParallel, Strategy
from pnngraph.exceptions import ConfigError, UnknownNameError
from pnngraph.plan.cluster import ClusterModel
from pnngraph.plan.planner import DEVICES, Plan, auto_shares, make_plan, scheduler_name
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
    return Placement(dict(plan.placement), dict(plan.priorities), dict(plan.backends), plan)


def size_shards(
    strategy: Strategy, cluster: ClusterModel | None, *, flops_per_sample: float,
    param_bytes: float, batch_size: int, dtype: str, devices: str = "any",
    grad_sig: str | None = None,
) -> tuple[Strategy, tuple[str, ...] | None]:
    """``DataParallel("auto")`` -> one shard per usable worker, sized so that all gradients
    reach the update together (speed and transfers priced, :func:`planner.auto_shares`; a
    worker's speed is its measured gradient kernel's with the corrections runs learned), and
    the worker of each shard. Any other strategy comes back as it is, with no shard workers."""
    if not strategy.auto:
        return strategy, None
    if cluster is None:
        raise ConfigError("shards", "a client or cluster model for shards='auto'", "auto")
    workers = cluster.usable(devices)
    if not workers:
        raise ConfigError("devices", f"workers of kind {devices!r} in the cluster", "none")
    per_sample = {}  # the gradient kernel's measured seconds per sample, where it was measured
    for a in workers:
        seconds = grad_seconds_per_sample(cluster, a, grad_sig, batch_size / len(workers))
        if seconds is not None:
            per_sample[a] = seconds
    shares = auto_shares(cluster, workers, flops_per_sample=flops_per_sample, batch=batch_size,
                         param_bytes=param_bytes, dtype=dtype,
                         seconds_per_sample=per_sample if len(per_sample) == len(workers)
                         else None)
    return DataParallel(list(shares.values())), tuple(shares)


def grad_seconds_per_sample(cluster: ClusterModel | None, worker: str, grad_sig: str | None,
                            rows: float) -> float | None:
    """Seconds per sample of the gradient kernel ``grad_sig`` on ``worker`` for a shard of about
    ``rows`` rows: its measured line read there, ``(a + b * rows) / rows`` (the whole call, not
    the slope alone, which is the difference of two noisy sizes), times what runs learned of
    that kernel there (:meth:`ClusterModel.correction`); ``None`` where it was not measured."""
    line = cluster.kernels.get(f"{grad_sig}|{worker}") if cluster and grad_sig else None
    rows = max(rows, 1.0)
    if line is None or line[0] + line[1] * rows <= 0:
        return None
    assert cluster is not None and grad_sig is not None
    return (line[0] + line[1] * rows) / rows * cluster.correction("grad", worker, grad_sig)


def model_sizes(model: Any, spec: Any = None) -> dict[str, Any]:
    """What :func:`size_shards` needs to know of a model: FLOPs per sample of a training step,
    parameter bytes, dtype and (given the run's spec) the signature of its gradient kernel."""
    from pnngraph.compile.cost import stage_costs

    itemsize = np.dtype(model.dtype).itemsize
    out = {"flops_per_sample": 3.0 * sum(model.layer_flops()),
           "param_bytes": float(model.n_params * itemsize), "dtype": model.dtype}
    if spec is not None:
        sig = stage_costs(model, [(0, len(model.layers))], spec.optimizer, spec.loss).sigs[0]
        out["grad_sig"] = f"grad:{sig}"
    return out
