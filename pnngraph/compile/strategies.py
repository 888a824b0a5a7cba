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

Each strategy answers the questions the compiler and the run layer ask of it, so nothing else
tells strategies apart: ``algorithm`` ("sgd" or "averaging"), ``layout`` (S, K, M),
``shard_sizes(batch)``, ``stage_bounds(layer_flops)``, ``fusable`` (whole steps may run in one
task) and, for the states a run hands from one graph to the next, ``slots`` / ``unslot``::

    large-batch SGD     slots = one state per stage
    model averaging     slots = [the last average, replica 1, ..., replica R]
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from pnngraph.exceptions import ConfigError, UnknownNameError, check_int, is_number


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
        return (1.0,) * check_int(name, shards)
    if isinstance(shards, Sequence) and not isinstance(shards, str) and len(shards) > 0:
        out = []
        for w in shards:
            if not is_number(w) or not w > 0:
                raise ConfigError(name, "a count or a list of positive weights", list(shards))
            out.append(float(w))
        return tuple(out)
    raise ConfigError(name, "a count or a list of positive weights", shards)


T = TypeVar("T")
Bounds = list[tuple[int, int]]


class _LargeBatchSGD:
    """What DataParallel, Pipeline and Hybrid share: one state per stage, the SGD of the whole
    batch."""

    algorithm: ClassVar[Literal["sgd", "averaging"]] = "sgd"
    auto: ClassVar[bool] = False
    chooses: ClassVar[bool] = False
    """Whether this strategy is a choice the plan makes among :meth:`candidates`."""

    @property
    def layout(self) -> tuple[int, int, int]:
        raise NotImplementedError

    @property
    def fusable(self) -> bool:
        """Whether several whole steps may run as one task (one shard of one stage)."""
        return self.layout == (1, 1, 1)

    def shard_sizes(self, batch: int) -> list[int]:
        """Samples per shard (a pipeline is one shard) of a batch of ``batch``."""
        return [batch]

    def stage_bounds(self, layer_flops: Sequence[float]) -> Bounds:
        """Layer ranges ``[(start, stop), ...]`` of the stages."""
        return [(0, len(layer_flops))]

    def slots(self, stages: Sequence[T], replicas: Sequence[T] = ()) -> list[T]:
        """The states a graph starts from: one per stage."""
        return list(stages)

    def unslot(self, slots: Sequence[T]) -> tuple[list[T], tuple[T, ...]]:
        """A graph's outputs as (one state per stage, replicas): no replicas."""
        return list(slots), ()

    def candidates(self, workers: int, n_layers: int, large: bool) -> list[Strategy]:
        """The strategies a run with this one may use: this one (only :class:`Auto` picks)."""
        return [self]  # type: ignore[list-item]


@dataclass(frozen=True, init=False)
class DataParallel(_LargeBatchSGD):
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
    def auto(self) -> bool:  # type: ignore[override]
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

    def shard_sizes(self, batch: int) -> list[int]:
        return self.split(batch)


@dataclass(frozen=True, init=False)
class Pipeline(_LargeBatchSGD):
    """K stages of contiguous layers, M micro-batches in flight, stage gradients accumulated.

    ``stages`` is a count (layers split to balance FLOPs) or a list of layer counts per stage.
    """

    stages: int
    layer_counts: tuple[int, ...] | None
    microbatches: int

    def __init__(self, stages: int | Sequence[int] = 2, microbatches: int = 1) -> None:
        if isinstance(stages, Sequence) and not isinstance(stages, str):
            counts = tuple(check_int("stages (layers per stage)", c) for c in stages)
            if not counts:
                raise ConfigError("stages", "a count or a non-empty list of layer counts", stages)
            object.__setattr__(self, "stages", len(counts))
            object.__setattr__(self, "layer_counts", counts)
        else:
            object.__setattr__(self, "stages", check_int("stages", stages))
            object.__setattr__(self, "layer_counts", None)
        object.__setattr__(self, "microbatches", check_int("microbatches", microbatches))

    @property
    def layout(self) -> tuple[int, int, int]:
        return (1, self.stages, self.microbatches)

    def stage_bounds(self, layer_flops: Sequence[float]) -> Bounds:
        """A count of stages is balanced by FLOPs (:func:`balanced_bounds`); layer counts are
        taken as they are.

        >>> Pipeline(3).stage_bounds([10, 1, 10, 1, 10])
        [(0, 1), (1, 3), (3, 5)]
        >>> Pipeline([2, 3]).stage_bounds([10, 1, 10, 1, 10])
        [(0, 2), (2, 5)]
        """
        n = len(layer_flops)
        if self.layer_counts is None:
            if self.stages > n:
                raise ConfigError("stages", f"at most the model's {n} layers", self.stages)
            return balanced_bounds(layer_flops, self.stages)
        if sum(self.layer_counts) != n:
            raise ConfigError("stages", f"layer counts that add up to the model's {n} layers",
                              list(self.layer_counts))
        ends = np.cumsum([0, *self.layer_counts]).tolist()
        return [(int(a), int(z)) for a, z in itertools.pairwise(ends)]


@dataclass(frozen=True)
class Hybrid(_LargeBatchSGD):
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

    def shard_sizes(self, batch: int) -> list[int]:
        return self.data.split(batch)

    def stage_bounds(self, layer_flops: Sequence[float]) -> Bounds:
        return self.pipeline.stage_bounds(layer_flops)


@dataclass(frozen=True, init=False)
class ModelAveraging:
    """R replicas, each ``local_steps`` steps on its own shard of every batch, then averaged.

    Replica r trains on shard r of each global batch with its own optimizer state; every
    ``local_steps`` steps (and at the end of every graph) parameters are replaced by their
    average, weighted by each replica's share of the period's last batch (:meth:`shares`).
    Optimizer states stay with their replica. An average at the end of a graph that stops
    mid-period changes nothing that follows: replicas go on from their own states until the
    period ends.
    """

    weights: tuple[float, ...]
    local_steps: int

    algorithm: ClassVar[Literal["sgd", "averaging"]] = "averaging"
    auto: ClassVar[bool] = False
    chooses: ClassVar[bool] = False
    fusable: ClassVar[bool] = False

    def __init__(self, replicas: int | Sequence[float] = 2, local_steps: int = 1) -> None:
        object.__setattr__(self, "weights", _weights("replicas", replicas))
        object.__setattr__(self, "local_steps", check_int("local_steps", local_steps))

    @property
    def replicas(self) -> int:
        return len(self.weights)

    @property
    def layout(self) -> tuple[int, int, int]:
        return (self.replicas, 1, 1)

    def split(self, batch: int) -> list[int]:
        return proportional_split(batch, self.weights)

    def shard_sizes(self, batch: int) -> list[int]:
        return self.split(batch)

    def shares(self, batch: int) -> tuple[float, ...]:
        """Each replica's weight in an average after a batch of ``batch`` samples.

        >>> ModelAveraging(2).shares(5)
        (0.6, 0.4)
        """
        return tuple(n / batch for n in self.split(batch))

    def stage_bounds(self, layer_flops: Sequence[float]) -> Bounds:
        return [(0, len(layer_flops))]

    def slots(self, stages: Sequence[T], replicas: Sequence[T] = ()) -> list[T]:
        """The states a graph starts from: the last average (``stages[0]``, the whole model),
        then each replica's own state (copies of the average when a run starts)."""
        if len(stages) != 1:
            raise ConfigError("stages", "one state of the whole model", len(stages))
        if replicas and len(replicas) != self.replicas:
            raise ConfigError("strategy", f"{len(replicas)} replicas, as in the saved state",
                              self.replicas)
        return [stages[0], *(replicas or [stages[0]] * self.replicas)]

    def unslot(self, slots: Sequence[T]) -> tuple[list[T], tuple[T, ...]]:
        """A graph's outputs as ([the average], the replicas)."""
        return [slots[0]], tuple(slots[1:])

    def candidates(self, workers: int, n_layers: int, large: bool) -> list[Strategy]:
        return [self]


@dataclass(frozen=True)
class Auto(_LargeBatchSGD):
    """Large-batch SGD, split whichever way is predicted fastest on the cluster the run is
    planned for: one shard (fused steps where a step is tiny), data parallelism over 1..W
    workers (shards sized to their speed), a pipeline or a hybrid where the model is large.
    Model averaging is never chosen (it is another algorithm). Resolved by ``build`` and
    ``fit`` (:mod:`pnngraph.run.auto`), which need a client or a cluster model."""

    auto: ClassVar[bool] = True
    chooses: ClassVar[bool] = True

    @property
    def layout(self) -> tuple[int, int, int]:
        raise ConfigError("strategy", "a cluster to choose a strategy for (build with a client)",
                          "auto")

    def candidates(self, workers: int, n_layers: int, large: bool) -> list[Strategy]:
        """What is compared: DataParallel(1) (fused steps where a step is tiny), DataParallel(S)
        for S = 2..8, then the powers of two up to W, and W, and with shards sized to the
        workers, and where the model is ``large``, pipelines of 2..min(W, layers) stages with 4
        or 8 micro-batches and a hybrid of W // 2 pipelines of two stages.

        >>> [s.weights for s in Auto().candidates(2, 3, False)]
        [(1.0,), (1.0, 1.0), ()]
        >>> [s.shards for s in Auto().candidates(100, 3, False)[:-1]]
        [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 100]
        """
        sizes = sorted({*range(1, min(workers, 8) + 1), workers,
                        *(2**k for k in range(4, workers.bit_length()))})
        out: list[Strategy] = [DataParallel(s) for s in sizes]
        if workers > 1:
            out.append(DataParallel("auto"))
        if large:
            out += [Pipeline(k, m) for k in range(2, min(workers, n_layers) + 1) for m in (4, 8)]
            if workers >= 4 and n_layers >= 2:
                out.append(Hybrid(DataParallel(workers // 2), Pipeline(2, 4)))
        return out


Strategy = DataParallel | Pipeline | Hybrid | ModelAveraging | Auto
STRATEGIES = ("auto", "data", "pipeline", "hybrid", "averaging")


def as_strategy(strategy: Any) -> Strategy:
    """A strategy object from an object or a short name ("auto", "data", "pipeline", ...)."""
    if isinstance(strategy, DataParallel | Pipeline | Hybrid | ModelAveraging | Auto):
        return strategy
    if isinstance(strategy, str):
        if strategy == "auto":
            return Auto()
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
        "strategy", "DataParallel, Pipeline, Hybrid, ModelAveraging, Auto or a name", strategy
    )


def strategy_from_repr(text: str) -> Strategy:
    """The strategy whose ``repr`` is ``text`` (as a checkpoint records it), read without
    evaluating anything: only the strategy classes and literal arguments are accepted.

    >>> s = Hybrid(DataParallel([2, 1]), Pipeline(2, 4))
    >>> strategy_from_repr(repr(s)) == s
    True
    >>> strategy_from_repr("DataParallel(weights=(1.0,))")
    DataParallel(weights=(1.0,))
    """
    try:
        return _strategy_node(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, TypeError, KeyError, ConfigError) as err:
        why = {KeyError: f"no field {err}", SyntaxError: "not Python syntax"}.get(
            type(err), str(err))
        raise ConfigError("strategy", "the repr of a strategy", f"{text[:80]} ({why})") from None


def _strategy_node(node: ast.expr) -> Any:
    if not isinstance(node, ast.Call):
        try:
            return ast.literal_eval(node)
        except ValueError:
            raise ValueError("not a literal") from None
    if not isinstance(node.func, ast.Name) or node.args:
        raise ValueError("unknown call: expected Strategy(field=value, ...)")
    kw = {k.arg: _strategy_node(k.value) for k in node.keywords}
    name = node.func.id
    if name == "DataParallel":
        return DataParallel(list(kw["weights"]) or "auto")
    if name == "Pipeline":
        counts = kw.get("layer_counts")
        return Pipeline(list(counts) if counts else kw["stages"], kw["microbatches"])
    if name == "Hybrid":
        return Hybrid(kw["data"], kw["pipeline"])
    if name == "ModelAveraging":
        return ModelAveraging(list(kw["weights"]), kw["local_steps"])
    if name == "Auto":
        return Auto()
    raise ValueError(f"unknown strategy {name}")


def balanced_bounds(layer_flops: Sequence[float], k: int) -> Bounds:
    """``k`` contiguous groups of layers whose largest FLOPs is as small as it can be.

    Exact, by dynamic programming over contiguous groups; parameter-free layers cost their
    elementwise work, so no stage is empty.

    >>> balanced_bounds([10, 1, 10, 1, 10], 3)
    [(0, 1), (1, 3), (3, 5)]
    """
    n = len(layer_flops)
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
