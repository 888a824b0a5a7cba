"""The analytic lower bound of a data-parallel step with a ring all-reduce, to set beside the
planner's prediction of the step with pnngraph's gradient tree.

A ring all-reduce of ``G`` gradient bytes over ``N`` workers sends every worker ``2 (N - 1) / N
G`` bytes in ``2 (N - 1)`` rounds (reduce-scatter, then all-gather; Patarasuk and Yuan 2009), so
no step that sums gradients over the network can take less than::

    compute  +  2 (N - 1) / N  G / bandwidth

``compute`` is the step's arithmetic spread over the workers in proportion to their speed (the
gradient of the whole batch, then the update, itself split N ways as a ring would). The bound
leaves out everything a real step also pays (Dask's task overhead, hop latency, a GPU's host <->
device copies), so it is below any prediction; :class:`RingBound` also keeps the latency the
ring's rounds would add (``2 (N - 1)`` hops), for a fairer comparison.

>>> from pnngraph.nn import Dense, ReLU, SGD, Sequential
>>> from pnngraph.plan.cluster import simulated_cluster
>>> model = Sequential([Dense(100, 100), ReLU(), Dense(100, 10)], input_shape=(100,))
>>> bound = ring_bound(model, 1000, simulated_cluster(4, 0), SGD(0.1))
>>> bound.gradient_bytes, round(bound.allreduce_seconds * 1e6, 1)  # 2 * 3/4 * 88,880 B / 1.5 GB/s
(88880, 88.9)

References
----------
Patarasuk, Yuan. Bandwidth optimal all-reduce algorithms for clusters of workstations. Journal of
Parallel and Distributed Computing 69(2), 2009.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from pnngraph.compile.cost import stage_costs
from pnngraph.exceptions import ConfigError
from pnngraph.nn.model import Sequential
from pnngraph.nn.optimizers import Optimizer
from pnngraph.plan.cluster import ClusterModel


class RingBound(NamedTuple):
    """One step of ring all-reduce data parallelism on a cluster, in seconds."""

    workers: int
    gradient_bytes: int
    compute_seconds: float  # the step's FLOPs over the workers' summed speed
    allreduce_seconds: float  # 2 (N - 1) / N gradient bytes over the network bandwidth
    latency_seconds: float  # 2 (N - 1) hops of the cluster's hop latency

    @property
    def seconds(self) -> float:
        """The lower bound: compute plus the all-reduce's transfers."""
        return self.compute_seconds + self.allreduce_seconds


def ring_allreduce_seconds(gradient_bytes: float, workers: int, bytes_per_s: float) -> float:
    """``2 (N - 1) / N * gradient_bytes / bytes_per_s``: a ring all-reduce's transfer time.

    >>> ring_allreduce_seconds(1e9, 4, 1e9), ring_allreduce_seconds(1e9, 1, 1e9)
    (1.5, 0.0)
    """
    if workers < 1:
        raise ValueError(f"expected at least one worker, got {workers!r}")
    return 2.0 * (workers - 1) / workers * gradient_bytes / bytes_per_s


def ring_bound(model: Sequential, batch_size: int, cluster: ClusterModel, optimizer: Optimizer,
               *, addresses: Sequence[str] | None = None) -> RingBound:
    """The :class:`RingBound` of one step of ``batch_size`` samples on the workers
    ``addresses`` of ``cluster`` (by default all of them)."""
    if len(model.params) != len(model.layers):  # a skeleton's gradient would weigh nothing
        raise ConfigError("model", "a built model with its parameters", "a model without them")
    costs = stage_costs(model, [(0, len(model.layers))], optimizer)
    workers = [cluster.worker(a) for a in (cluster.addresses if addresses is None else addresses)]
    speed = sum(w.flops_per_s(model.dtype) for w in workers)
    n = len(workers)
    flops = costs.grad(0, batch_size)["flops"] + costs.update(0, 1)["flops"]
    return RingBound(
        workers=n,
        gradient_bytes=costs.param_bytes[0],
        compute_seconds=flops / speed,
        allreduce_seconds=ring_allreduce_seconds(costs.param_bytes[0], n,
                                                 cluster.network_bytes_per_s),
        latency_seconds=2.0 * (n - 1) * cluster.hop_latency_seconds,
    )
