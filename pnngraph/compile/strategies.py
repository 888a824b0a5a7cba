"""Parallel training strategies: small public objects that say how a step is split.

Every strategy except model averaging is the same computation, large-batch SGD, cut three ways::

    global batch (B samples)
        -> S shards           (data parallelism; sizes proportional to ``weights``)
        -> M micro-batches    per shard (pipelining)
    model (L layers)
        -> K stages           contiguous layer groups (model partitioning)

=================================  ===  ===  ===
strategy                            S    K    M
=================================  ===  ===  ===
``DataParallel(shards=S)``          S    1    1
``Pipeline(stages=K, micro=M)``     1    K    M
``Hybrid(DataParallel(S), Pipeline(K, M))``  S  K  M
=================================  ===  ===  ===

``ModelAveraging(replicas=R, local_steps=H)`` is a different algorithm: R copies of the model train
on their shard of each batch for H steps, then their parameters are averaged (weighted by shard
size, so with H = 1 and plain SGD it is exactly ``DataParallel(R)``).

>>> DataParallel(3).split(10)
[4, 3, 3]
>>> DataParallel([1, 3]).split(8)
[2, 6]
>>> Pipeline(stages=[2, 1], microbatches=2).layout
(1, 2, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pnngraph.exceptions import ConfigError, UnknownNameError


def _positive_int(name: str, v: Any) -> int:
    if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
        raise ConfigError(name, "a positive integer", v)
    return int(v)


def proportional_split(n: int, weights: Sequence[float]) -> list[int]:
    """Split ``n`` items into ``len(weights)`` sizes proportional to ``weights``.

    Largest remainders, ties to the earlier part; every part gets at least one item (``n`` must be
    at least the number of parts).

    >>> proportional_split(10, [1, 1, 1])
    [4, 3, 3]
    >>> proportional_split(5, [10, 1])
    [4, 1]
    """
    k = len(weights)
    w = np.asarray(weights, dtype=float)
    ideal = n * w / w.sum()
    sizes = np.floor(ideal).astype(int)
    order = sorted(range(k), key=lambda i: (-(ideal[i] - sizes[i]), i))
    for i in order[: n - int(sizes.sum())]:
        sizes[i] += 1
    # every part non-empty: take from the largest parts, latest first on ties
    for i in range(k):
        while sizes[i] == 0:
            j = max(range(k), key=lambda q: (sizes[q], q))
            sizes[j] -= 1
            sizes[i] += 1
    return [int(s) for s in sizes]


def _weights(name: str, shards: int | Sequence[float]) -> tuple[float, ...]:
    if isinstance(shards, int | np.integer) and not isinstance(shards, bool):
        return (1.0,) * _positive_int(name, shards)
    if isinstance(shards, Sequence) and not isinstance(shards, str) and len(shards) > 0:
        out = []
        for w in shards:
            if not isinstance(w, int | float) or isinstance(w, bool) or not w > 0:
                raise ConfigError(name, "a count or a list of positive weights", list(shards))
            out.append(float(w))
        return tuple(out)
    raise ConfigError(name, "a count or a list of positive weights", shards)


@dataclass(frozen=True, init=False)
class DataParallel:
    """S shards of every batch, gradients summed by a fixed tree, one update.

    ``shards`` is a count (equal shards), a list of relative weights (unequal shards, e.g. in
    proportion to each device's speed), or "auto": one shard per worker of the cluster the run
    is planned for, weighted by the worker's measured speed (resolved by ``build``).
    """

    weights: tuple[float, ...]

    def __init__(self, shards: int | Sequence[float] | str = 1) -> None:
        weights = () if shards == "auto" else _weights("shards", shards)  # type: ignore[arg-type]
        object.__setattr__(self, "weights", weights)

    @property
    def auto(self) -> bool:
        """Whether the shards are still to be sized from a cluster model."""
        return not self.weights

    @property
    def shards(self) -> int:
        if self.auto:
            raise ConfigError("shards", "a cluster to size shards='auto' (build with a client)",
                              "auto")
        return len(self.weights)

    @property
    def layout(self) -> tuple[int, int, int]:
        """(S, K, M): shards, stages, micro-batches per shard."""
        return (self.shards, 1, 1)

    def split(self, batch: int) -> list[int]:
        """Shard sizes of a batch of ``batch`` samples."""
        return proportional_split(batch, self.weights)


@dataclass(frozen=True, init=False)
class Pipeline:
    """K stages of contiguous layers, M micro-batches in flight, stage gradients accumulated.

    ``stages`` is a count (layers split to balance FLOPs) or a list of layer counts per stage.
    """

    stages: int
    layer_counts: tuple[int, ...] | None
    microbatches: int

    def __init__(self, stages: int | Sequence[int] = 2, microbatches: int = 1) -> None:
        if isinstance(stages, Sequence) and not isinstance(stages, str):
            counts = tuple(_positive_int("stages (layers per stage)", c) for c in stages)
            if not counts:
                raise ConfigError("stages", "a count or a non-empty list of layer counts", stages)
            object.__setattr__(self, "stages", len(counts))
            object.__setattr__(self, "layer_counts", counts)
        else:
            object.__setattr__(self, "stages", _positive_int("stages", stages))
            object.__setattr__(self, "layer_counts", None)
        object.__setattr__(self, "microbatches", _positive_int("microbatches", microbatches))

    @property
    def layout(self) -> tuple[int, int, int]:
        return (1, self.stages, self.microbatches)


@dataclass(frozen=True)
class Hybrid:
    """S pipelines of K stages each (data parallelism over pipelines)."""

    data: DataParallel
    pipeline: Pipeline

    def __post_init__(self) -> None:
        if not isinstance(self.data, DataParallel):
            raise ConfigError("Hybrid data", "a DataParallel", self.data)
        if not isinstance(self.pipeline, Pipeline):
            raise ConfigError("Hybrid pipeline", "a Pipeline", self.pipeline)

    @property
    def layout(self) -> tuple[int, int, int]:
        return (self.data.shards, self.pipeline.stages, self.pipeline.microbatches)


@dataclass(frozen=True, init=False)
class ModelAveraging:
    """R replicas, each ``local_steps`` steps on its own shard of every batch, then averaged.

    Replica r trains on shard r of each global batch with its own optimizer state; every
    ``local_steps`` steps (and after the last step) parameters are replaced by their average,
    weighted by each replica's share of the period's last batch. Optimizer states stay with
    their replica.
    """

    weights: tuple[float, ...]
    local_steps: int

    def __init__(self, replicas: int | Sequence[float] = 2, local_steps: int = 1) -> None:
        object.__setattr__(self, "weights", _weights("replicas", replicas))
        object.__setattr__(self, "local_steps", _positive_int("local_steps", local_steps))

    @property
    def replicas(self) -> int:
        return len(self.weights)

    @property
    def layout(self) -> tuple[int, int, int]:
        return (self.replicas, 1, 1)

    def split(self, batch: int) -> list[int]:
        return proportional_split(batch, self.weights)


Strategy = DataParallel | Pipeline | Hybrid | ModelAveraging
STRATEGIES = ("data", "pipeline", "hybrid", "averaging")


def as_strategy(strategy: Any) -> Strategy:
    """A strategy object from an object or a short name ("data", "pipeline", ...)."""
    if isinstance(strategy, DataParallel | Pipeline | Hybrid | ModelAveraging):
        return strategy
    if isinstance(strategy, str):
        if strategy == "data":
            return DataParallel(2)
        if strategy == "pipeline":
            return Pipeline(2, 2)
        if strategy == "hybrid":
            return Hybrid(DataParallel(2), Pipeline(2, 2))
        if strategy == "averaging":
            return ModelAveraging(2, 1)
        raise UnknownNameError("strategy", strategy, STRATEGIES)
    raise ConfigError(
        "strategy", "DataParallel, Pipeline, Hybrid, ModelAveraging or a name", strategy
    )


def shard_sizes(strategy: Strategy, batch: int) -> list[int]:
    """Samples per shard (pipelines count as one shard) for a batch of ``batch``."""
    if isinstance(strategy, DataParallel | ModelAveraging):
        return strategy.split(batch)
    if isinstance(strategy, Hybrid):
        return strategy.data.split(batch)
    return [batch]


def stage_bounds(layer_flops: Sequence[float], strategy: Strategy) -> list[tuple[int, int]]:
    """Layer ranges ``[(start, stop), ...]`` of each pipeline stage.

    A count of stages is balanced by FLOPs: the split points minimise the largest stage's FLOPs
    (exact, by dynamic programming over contiguous groups; parameter-free layers cost their
    elementwise work, so no stage is empty).

    >>> stage_bounds([10, 1, 10, 1, 10], Pipeline(3))
    [(0, 1), (1, 3), (3, 5)]
    """
    n = len(layer_flops)
    pipe = strategy.pipeline if isinstance(strategy, Hybrid) else strategy
    if not isinstance(pipe, Pipeline):
        return [(0, n)]
    if pipe.layer_counts is not None:
        if sum(pipe.layer_counts) != n:
            raise ConfigError(
                "stages", f"layer counts that add up to the model's {n} layers",
                list(pipe.layer_counts),
            )
        bounds, start = [], 0
        for c in pipe.layer_counts:
            bounds.append((start, start + c))
            start += c
        return bounds
    k = pipe.stages
    if k > n:
        raise ConfigError("stages", f"at most the model's {n} layers", k)
    cost = [max(float(f), 1.0) for f in layer_flops]
    prefix = np.concatenate([[0.0], np.cumsum(cost)])
    # best[j][i]: smallest max-stage cost splitting the first i layers into j stages
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0.0
    for j in range(1, k + 1):
        for i in range(j, n + 1):
            for p in range(j - 1, i):
                c = max(best[j - 1][p], prefix[i] - prefix[p])
                if c < best[j][i]:
                    best[j][i], cut[j][i] = c, p
    bounds_rev, i = [], n
    for j in range(k, 0, -1):
        p = cut[j][i]
        bounds_rev.append((p, i))
        i = p
    return bounds_rev[::-1]
