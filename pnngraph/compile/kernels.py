"""Kernels: the plain functions that the training graph's tasks run.

Every function here is module-level and pure (its result depends only on its arguments), so a task
survives a pickle round trip and a rerun gives the same bits. Stage state flows from one step's
update to the next step's tasks as a :class:`StageState`::

    StageState(params, opt_state, losses, buffers)
                                              params: one dict per layer of the stage
                                              losses: global loss of every step so far
                                                      (kept by the last stage only)
                                              buffers: one dict per layer (BatchNorm's
                                                       running statistics), never optimised

What one task of each kind computes (K = 1 fuses forward, loss and backward into ``grad``)::

    grad(spec, state, X, Y, index)        -> Partial(grads, loss)     one shard, whole model
                                             (X, Y: host arrays, or the blocks holding the
                                             rows ``index``: :func:`rows_in`)
    segment(spec, state, X, Y, index, ..., prev, *new)                  one shard, BatchNorm
                                          -> Round, up to its next sync point, else Partial
    stats_of(round)                       -> the round's partial statistics (a few arrays)
    combine_stats(backend, *parts)        -> their global statistics         fixed order
    update_norms(spec, state, step, n, *stats_and_parts) -> StageState   update, and running
                                                                         statistics from stats
    forward(spec, state, x_in, X, index)  -> (y, caches)              one stage, one micro-batch
    loss_backward(spec, state, x_in, ...) -> (dx, grads, loss)        last stage
    backward(spec, state, fwd, upstream)  -> (dx, grads, 0.0)         earlier stages
                                             (dx is None on the first stage: nothing needs it)
    aggregate(backend, *parts)            -> Partial(sum of grads, sum of losses)   fixed order
    update(spec, state, step, *parts)     -> StageState               sum, then optimizer step
    grad_squares(total)                   -> squared norm of every gradient array of a stage
    clipped_update(spec, state, step, total, *squares) -> StageState  step clipped by the norm
                                                                       of every stage's gradient
    params_of(state)                      -> StageState               parameters only
    train_steps(spec, state, X, Y, batches, first) -> StageState      several whole steps, S = K = 1
    local_steps(spec, params, state, ...) -> StageState               model averaging, one replica
    average(backend, weights, *states)    -> StageState               weighted parameter mean
    to_host(value)                        -> value with every array copied to host numpy

``spec.backend`` (or ``backend``) names the array library of the worker that runs the task: the
lowering sets it from the plan. Host inputs are moved to it; device inputs are never moved off a
device implicitly (the lowering inserts ``to_host`` tasks where a device output meets a CPU task).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from pnngraph.exceptions import TrainingError
from pnngraph.nn.backend import Backend, get_backend, to_numpy, tree_map
from pnngraph.nn.batchnorm import (
    BatchSync,
    Pending,
    Stats,
    combine,
    norm_layers,
    serial_sync,
    update_running,
)
from pnngraph.nn.layers import Context, Layer, Params
from pnngraph.nn.losses import Loss
from pnngraph.nn.model import ParamList, backward_layers, forward_layers
from pnngraph.nn.optimizers import Optimizer, State, global_norm, squared_norms
from pnngraph.nn.train import batch_indices, check_update


class StageState(NamedTuple):
    """Parameters, optimizer state and the losses of all steps so far, of one stage, and the
    buffers of its layers (:attr:`pnngraph.nn.model.Sequential.buffers`)."""

    params: ParamList
    opt_state: State
    losses: tuple[float, ...]
    buffers: ParamList | tuple[()] = ()


class Partial(NamedTuple):
    """Gradient contribution of one shard or micro-batch (already scaled by 1 / N_global)."""

    grads: ParamList
    loss: float


@dataclass(frozen=True)
class StageSpec:
    """What every task of one stage needs besides its data: layers, loss, optimizer, seed.

    ``loss`` is set on the last stage only. ``backend`` names the array library the task runs on;
    ``stage`` is the stage's index (errors name it).
    """

    layers: tuple[Layer, ...]
    start: int
    loss: Loss | None
    optimizer: Optimizer
    seed: int
    backend: str = "numpy"
    stage: int = 0

    @property
    def stop(self) -> int:
        return self.start + len(self.layers)

    @property
    def norms(self) -> int:
        """How many BatchNorm layers the stage has (blocks included)."""
        return len(norm_layers(self.layers))

    def serial_sync(self) -> BatchSync | None:
        """The sync of one serial step: ``None`` without BatchNorm layers."""
        return serial_sync(self.layers)


def _backend(spec: StageSpec) -> Backend:
    return get_backend(spec.backend)


def _adopt(be: Backend, tree: Any) -> Any:
    """``tree`` with host numpy arrays moved to device backend ``be``.

    Nothing is ever moved off a device here: a device array reaching a numpy task is a missing
    device-to-host step in the graph, and must fail loudly (the emulated device makes it fail).
    """
    if be.name == "numpy":
        # arrays that arrive over the network may sit at addresses that are not 8-byte aligned;
        # numpy then skips BLAS for matmul and rounds differently: align them, so results do
        # not depend on where an input came from
        return tree_map(
            lambda v: np.require(v, requirements="A") if isinstance(v, np.ndarray) else v, tree
        )
    return tree_map(lambda v: be.asarray(v) if isinstance(v, np.ndarray) else v, tree)


def _check_loss(value: float, step: int, shard: int) -> float:
    if not math.isfinite(value):
        raise TrainingError(f"the loss became {value}", step=step, shard=shard)
    return value


def _inputs(be: Backend, X: Any, index: np.ndarray) -> Any:
    """Rows ``index`` of ``X``, on backend ``be``: ``X`` is a host array, or :func:`rows_in`
    blocks of chunked data."""
    return be.asarray(rows_in(X, index) if isinstance(X, list | tuple) else np.asarray(X)[index])


def rows_in(blocks: Sequence[Sequence[Any]], index: np.ndarray) -> np.ndarray:
    """Rows ``index`` (counted in the whole data set) of the data whose blocks holding them
    are ``blocks``, ``(first row, block)`` pairs (lists, as a task receives them): a task of
    chunked data is given only the blocks its rows are in.

    >>> a, b = np.arange(3.0), np.arange(3.0, 5.0)
    >>> rows_in(((0, a), (3, b)), np.array([4, 0, 3])).tolist()
    [4.0, 0.0, 3.0]
    """
    first = np.asarray(blocks[0][1])
    out = np.empty((len(index), *first.shape[1:]), dtype=first.dtype)
    for lo, block in blocks:
        block = np.asarray(block)
        inside = (index >= lo) & (index < lo + len(block))
        out[inside] = block[index[inside] - lo]
    return out


def grad(
    spec: StageSpec,
    state: StageState,
    X: Any,
    Y: Any,
    index: np.ndarray,
    n_global: int,
    step: int,
    shard: int,
) -> Partial:
    """Forward, loss and backward of the whole model on the rows ``index`` of ``(X, Y)``."""
    _, grads, loss = loss_backward(spec, state, None, X, Y, index, n_global, step, shard)
    return Partial(grads, loss)


def forward(
    spec: StageSpec,
    state: StageState,
    x_in: Any,
    X: Any,
    index: np.ndarray,
    step: int,
) -> tuple[Any, list[Any]]:
    """Forward of one non-last stage on one micro-batch; ``x_in`` is the previous stage's output
    (or ``None`` for the first stage, which reads rows ``index`` of ``X``)."""
    be = _backend(spec)
    x = _inputs(be, X, index) if x_in is None else _adopt(be, x_in[0])
    ctx = Context(training=True, step=step, index=index, seed=spec.seed)
    return forward_layers(be.xp, spec.layers, _adopt(be, state.params), x, ctx, spec.start)


def loss_backward(
    spec: StageSpec,
    state: StageState,
    x_in: Any,
    X: Any,
    Y: Any,
    index: np.ndarray,
    n_global: int,
    step: int,
    shard: int,
    sync: BatchSync | None = None,
) -> tuple[Any, ParamList, float]:
    """Forward, loss and backward of the last stage on one micro-batch (``sync``: the step's
    BatchNorm statistics, :mod:`pnngraph.nn.batchnorm`)."""
    assert spec.loss is not None
    be = _backend(spec)
    params = _adopt(be, state.params)
    x = _inputs(be, X, index) if x_in is None else _adopt(be, x_in[0])
    ctx = Context(training=True, step=step, index=index, seed=spec.seed, sync=sync)
    out, caches = forward_layers(be.xp, spec.layers, params, x, ctx, spec.start)
    value, dout = spec.loss.value_and_grad(be.xp, out, _inputs(be, Y, index), n_global)
    dx, grads = backward_layers(be.xp, spec.layers, params, caches, dout, spec.start > 0, sync)
    return dx, grads, _check_loss(float(value), step, shard)


class Round(NamedTuple):
    """A shard's step stopped at a BatchNorm sync point: the global statistics known, every
    finished layer's result (:class:`~pnngraph.nn.batchnorm.BatchSync`), and the shard's partial
    statistics of the point it waits at."""

    known: tuple[Stats, ...]
    forward_memo: list[Any]
    backward_memo: list[Any]
    partial: Stats


def segment(
    spec: StageSpec,
    state: StageState,
    X: Any,
    Y: Any,
    index: np.ndarray,
    n_global: int,
    step: int,
    shard: int,
    prev: Any,
    *new: Stats,
) -> Round | Partial:
    """One shard's step of a model with BatchNorm, from the round ``prev`` (``None``: the first)
    and the global statistics ``new`` of the point it stopped at, up to its next sync point (a
    :class:`Round`) or to the end (the shard's :class:`Partial`, as :func:`grad` gives)."""
    be = _backend(spec)
    known: tuple[Stats, ...] = ()
    memo: tuple[list[Any], list[Any]] = ([], [])
    if prev is not None:
        prev = Round(*_adopt(be, list(prev)))
        known, memo = prev.known, (prev.forward_memo, prev.backward_memo)
    known = (*known, *_adopt(be, list(new)))
    sync = BatchSync(known, *memo)
    try:
        _, grads, loss = loss_backward(spec, state, None, X, Y, index, n_global, step, shard, sync)
    except Pending as pending:
        return Round(known, sync.forward_memo, sync.backward_memo, pending.partial)
    return Partial(grads, loss)


def stats_of(round_: Any) -> Stats:
    """The partial statistics of a :class:`Round` (so that only they travel to the sum)."""
    return tuple(Round(*round_).partial)


def combine_stats(backend: str, *parts: Stats) -> Stats:
    """The statistics of the union of the shards ``parts``, combined in the order given."""
    be = get_backend(backend)
    return combine(*(tuple(_adopt(be, list(p))) for p in parts))


def backward(
    spec: StageSpec, state: StageState, fwd: tuple[Any, list[Any]], upstream: tuple[Any, ...]
) -> tuple[Any, ParamList, float]:
    """Backward of a non-last stage, from its forward caches and the next stage's input grad."""
    be = _backend(spec)
    dx, grads = backward_layers(
        be.xp, spec.layers, _adopt(be, state.params), _adopt(be, fwd[1]), _adopt(be, upstream[0]),
        spec.start > 0,
    )
    return dx, grads, 0.0


def to_host(value: Any) -> Any:
    """``value`` (an output of any kernel) with every array copied to a host numpy array."""
    if isinstance(value, StageState):
        return StageState(tree_map(to_numpy, value.params), _host_state(value.opt_state),
                          value.losses, tree_map(to_numpy, value.buffers))
    if isinstance(value, Partial):
        return Partial(tree_map(to_numpy, value.grads), value.loss)
    return tree_map(lambda v: to_numpy(v) if hasattr(v, "shape") else v, value)


def _host_state(state: State) -> State:
    return {k: (v if v is None or isinstance(v, int | float) else tree_map(to_numpy, v))
            for k, v in state.items()}


def _parts(parts: tuple[Any, ...]) -> list[Partial]:
    out = []
    for p in parts:
        out.append(p if isinstance(p, Partial) else Partial(p[1], p[2]))
    return out


def aggregate(backend: str, *parts: Any) -> Partial:
    """Sum gradient contributions in the order given: the graph fixes it, so sums repeat exactly.

    ``backend`` is the array library of the worker running the sum; host inputs move there.
    """
    be = get_backend(backend)
    ps = [Partial(_adopt(be, p.grads), p.loss) for p in _parts(parts)]
    grads = ps[0].grads
    for p in ps[1:]:
        grads = [{k: g[k] + h[k] for k in g} for g, h in zip(grads, p.grads, strict=True)]
    loss = ps[0].loss
    for p in ps[1:]:
        loss += p.loss
    return Partial(grads, loss)


def update(spec: StageSpec, state: StageState, step: int, *parts: Any) -> StageState:
    """Sum step ``step``'s contributions (in order) and apply one optimizer step to the stage;
    a NaN or inf in the sum or in the updated parameters is a TrainingError naming the stage
    (:func:`pnngraph.nn.train.check_update`)."""
    return _apply(spec, state, aggregate(spec.backend, *parts), step, stage=spec.stage)


def update_norms(spec: StageSpec, state: StageState, step: int, n_stats: int,
                 *stats_and_parts: Any) -> StageState:
    """:func:`update` of a stage with BatchNorm layers: the first ``n_stats`` arguments are the
    step's global statistics (forward first), which update the running statistics; the rest are
    the contributions to sum."""
    stats, parts = stats_and_parts[:n_stats], stats_and_parts[n_stats:]
    new = update(spec, state, step, *parts)
    be = _backend(spec)
    buffers = update_running(spec.layers, _adopt(be, state.buffers), _adopt(be, list(stats)))
    return new._replace(buffers=buffers)


def grad_squares(total: Any) -> tuple[float, ...]:
    """The squared norm of every array of one stage's summed gradient (a few floats), for a
    gradient clipped by the norm over all stages."""
    return squared_norms(_parts((total,))[0].grads)


def clipped_update(spec: StageSpec, state: StageState, step: int, total: Any,
                   *squares: tuple[float, ...]) -> StageState:
    """One optimizer step of a pipeline stage with gradient clipping: ``total`` is the stage's
    summed gradient, ``squares`` every stage's :func:`grad_squares`, so the stage clips by the
    norm of the whole model's gradient, as one serial step does."""
    return _apply(spec, state, aggregate(spec.backend, total), step,
                  norm=global_norm(*squares), stage=spec.stage)


def _apply(spec: StageSpec, state: StageState, total: Partial, step: int,
           norm: float | None = None, **where: int) -> StageState:
    be = _backend(spec)
    grads = _adopt(be, total.grads)
    # an Optimizer subclass of its own may override update without grad_norm: pass it only
    # where a clipped pipeline stage needs it
    extra = {} if norm is None else {"grad_norm": norm}
    params, opt_state = spec.optimizer.update(
        _adopt(be, state.params), grads, _adopt(be, state.opt_state), **extra
    )
    check_update(be.xp, spec.layers, spec.start, grads, params, step, **where)
    losses = (*state.losses, total.loss) if spec.loss is not None else state.losses
    return StageState(params, opt_state, losses, state.buffers)


def params_of(state: StageState) -> StageState:
    """Only the parameters of ``state``: what the next step's tasks need (cheap to move)."""
    return StageState(state.params, {}, ())


@dataclass(frozen=True)
class Batches:
    """Steps ``first, ..., first + count - 1`` of a run's batch order, drawn where the task
    runs (:func:`pnngraph.nn.train.batch_indices`), so a task of many fused steps carries a few
    integers instead of every index array."""

    n_samples: int
    batch_size: int
    seed: int
    shuffle: bool
    first: int
    count: int
    block_rows: tuple[int, ...] | None = None
    window: int = 2

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[np.ndarray]:
        for s in range(self.first, self.first + self.count):
            yield batch_indices(self.n_samples, self.batch_size, self.seed, s,
                                shuffle=self.shuffle, block_rows=self.block_rows,
                                window=self.window)


def train_steps(
    spec: StageSpec,
    state: StageState,
    X: Any,
    Y: Any,
    indices: Iterable[np.ndarray],
    first_step: int,
) -> StageState:
    """Several whole training steps in one task (one shard, one stage): the serial loop.

    The same arithmetic as ``grad`` then ``update`` per step (one part: no sum), with the
    inputs moved to the backend once and the losses collected in a list. ``indices`` gives
    each step's rows (a :class:`Batches` or the arrays themselves).
    """
    be = _backend(spec)
    assert spec.loss is not None
    params, opt_state = _adopt(be, state.params), _adopt(be, state.opt_state)
    buffers = _adopt(be, state.buffers)
    losses = list(state.losses)
    for i, index in enumerate(indices):
        step = first_step + i
        sync = spec.serial_sync()
        ctx = Context(training=True, step=step, index=index, seed=spec.seed, sync=sync)
        out, caches = forward_layers(be.xp, spec.layers, params, _inputs(be, X, index), ctx)
        value, dout = spec.loss.value_and_grad(be.xp, out, _inputs(be, Y, index), len(index))
        _, grads = backward_layers(be.xp, spec.layers, params, caches, dout, False, sync)
        params, opt_state = spec.optimizer.update(params, grads, opt_state)
        losses.append(_check_loss(float(value), step, 0))
        check_update(be.xp, spec.layers, spec.start, grads, params, step, stage=0)
        if sync is not None:
            buffers = update_running(spec.layers, buffers, sync.known)
    return StageState(params, opt_state, tuple(losses), buffers)


def local_steps(
    spec: StageSpec,
    params_from: StageState,
    state: StageState,
    X: Any,
    Y: Any,
    indices: tuple[np.ndarray, ...],
    weights: tuple[float, ...],
    first_step: int,
    replica: int,
) -> StageState:
    """Model averaging: one replica's local steps between two averages.

    Starts from ``params_from``'s parameters (the last average, or its own state) and its own
    optimizer state; each step's loss is a local mean, recorded times ``weights[i]``
    (= shard size / global batch), so summing replicas' records gives the global loss.
    """
    be = _backend(spec)
    current = StageState(params_from.params, state.opt_state, state.losses,
                         _adopt(be, params_from.buffers))
    for i, index in enumerate(indices):
        sync = spec.serial_sync()
        _, grads, loss = loss_backward(spec, current, None, X, Y, index, len(index),
                                       first_step + i, replica, sync)
        new = _apply(spec, current, Partial(grads, loss), first_step + i, shard=replica)
        losses = (*current.losses, loss * weights[i])
        buffers = current.buffers if sync is None else \
            update_running(spec.layers, current.buffers, sync.known)
        current = StageState(new.params, new.opt_state, losses, buffers)
    return current


def average(backend: str, weights: tuple[float, ...], *states: StageState) -> StageState:
    """Weighted mean of the replicas' parameters; losses summed step by step.

    The optimizer state returned is the first replica's (each replica keeps its own).
    """
    be = get_backend(backend)
    states = tuple(StageState(_adopt(be, s.params), s.opt_state, s.losses,
                              _adopt(be, s.buffers)) for s in states)
    losses = tuple(math.fsum(v) for v in zip(*(s.losses for s in states), strict=True))
    return StageState(_weighted(weights, [s.params for s in states]), states[0].opt_state,
                      losses, _weighted(weights, [s.buffers for s in states]))


def _weighted(weights: tuple[float, ...], trees: list[Any]) -> list[Params]:
    """Per layer and name, the weighted sum of the replicas' arrays ``trees``."""
    out = []
    for i, layer in enumerate(trees[0]):
        mean = {}
        for k in layer:
            acc = weights[0] * trees[0][i][k]
            for w, t in zip(weights[1:], trees[1:], strict=True):
                acc = acc + w * t[i][k]
            mean[k] = acc
        out.append(mean)
    return out
