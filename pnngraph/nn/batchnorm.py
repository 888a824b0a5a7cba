"""Batch normalisation whose statistics are over the global batch, however it is sharded.

A :class:`BatchNorm` layer in training normalises with the mean and variance of the whole
batch, and its backward needs two sums over the whole batch (of ``dy`` and of ``dy * xhat``).
Under data parallelism no shard holds the whole batch, so a training step stops at every such
*sync point* for the shards' partial statistics to be summed, exactly like gradients, in a fixed
tree order. The partials are plain tuples::

    ("moments", n, mean, m2)      forward: count, mean and sum of squared deviations per channel
    ("sums", sum_dy, sum_dy_xhat) backward: the two sums per channel

Moments combine pairwise by Chan et al.'s update (no cancellation of large sums), sums by
addition (:func:`combine`). A :class:`BatchSync` is the channel between the layers and whoever
runs the step: it hands out the global results known so far, in sync-point order (every
BatchNorm's forward in forward order, then every BatchNorm's backward in backward order), and
either raises :class:`Pending` with the partial of the first unknown one (a data-parallel round,
which the graph resumes once the global result is known) or, serially, takes the partial as the
global result and records it. A round keeps every finished leaf layer's result (``memo``), so
the next round only recomputes the BatchNorm layers and what follows the sync point.

>>> import numpy as np
>>> from pnngraph.nn import Dense, Sequential
>>> model = Sequential([Dense(3), BatchNorm(), Dense(2)], input_shape=(4,))
>>> sorted(model.params[1]), sorted(model.buffers[1])
(['beta', 'gamma'], ['running_mean', 'running_var'])
>>> len(norm_layers(model.layers))
1
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pnngraph.exceptions import ShapeError, check_number
from pnngraph.nn.backend import Array
from pnngraph.nn.layers import Context, Layer, Params, Shape

Stats = tuple[Any, ...]
"""A partial or global statistic: ``("moments", n, mean, m2)`` or ``("sums", dy, dy_xhat)``."""


class Pending(Exception):
    """Raised through the layers when a sync point's global result is not known yet."""

    def __init__(self, partial: Stats) -> None:
        super().__init__("a BatchNorm sync point waits for the global statistics")
        self.partial = partial


def moments(xp: Any, x: Array, axes: tuple[int, ...]) -> Stats:
    """``("moments", n, mean, m2)`` of ``x`` over ``axes`` (two passes: the mean first)."""
    n = math.prod(x.shape[a] for a in axes)
    mean = xp.sum(x, axis=axes, keepdims=True) / n
    d = x - mean
    return ("moments", n, xp.reshape(mean, (-1,)), xp.sum(d * d, axis=axes))


def combine(*parts: Stats) -> Stats:
    """The statistic of the union of ``parts``' samples, combined left to right."""
    total = parts[0]
    for p in parts[1:]:
        if total[0] == "moments":
            _, na, ma, m2a = total
            _, nb, mb, m2b = p
            n = na + nb
            delta = mb - ma
            total = ("moments", n, ma + delta * (nb / n), m2a + m2b + delta * delta * (na * nb / n))
        else:
            total = ("sums", total[1] + p[1], total[2] + p[2])
    return total


class BatchSync:
    """Global results of the sync points of one step, and the leaf results kept so far.

    ``known`` holds the global statistics in sync-point order; ``forward_memo`` and
    ``backward_memo`` each finished leaf layer's result in call order. ``serial``: a point not
    known takes its own partial as the global one (one shard is the whole batch) instead of
    raising :class:`Pending`; nothing is memoised then.
    """

    def __init__(self, known: Sequence[Stats] = (), forward_memo: Sequence[Any] = (),
                 backward_memo: Sequence[Any] = (), *, serial: bool = False) -> None:
        self.known = list(known)
        self.forward_memo = list(forward_memo)
        self.backward_memo = list(backward_memo)
        self.serial = serial
        self._point = self._forward = self._backward = 0

    def point(self, partial: Stats) -> Stats:
        """The global result of the next sync point, whose local partial is ``partial``."""
        i = self._point
        self._point += 1
        if i < len(self.known):
            return self.known[i]
        if not self.serial:
            raise Pending(partial)
        self.known.append(partial)
        return partial

    def forward(self, layer: Layer, xp: Any, p: Params, x: Array, ctx: Context) -> Any:
        """``layer.forward``, or its result kept from an earlier round."""
        if layer.composite or isinstance(layer, BatchNorm):
            return layer.forward(xp, p, x, ctx)
        return self._memo(self.forward_memo, "_forward", layer.forward, xp, p, x, ctx)

    def backward(self, layer: Layer, xp: Any, p: Params, cache: Any, dy: Array,
                 grads_only: bool) -> Any:
        """``layer.backward`` (``param_grads`` with ``grads_only``), or its kept result."""
        if isinstance(layer, BatchNorm):
            out = layer.synced_backward(xp, p, cache, dy, self)
            return out[1] if grads_only else out
        fn = layer.param_grads if grads_only else layer.backward
        if layer.composite:
            return fn(xp, p, cache, dy)
        return self._memo(self.backward_memo, "_backward", fn, xp, p, cache, dy)

    def _memo(self, memo: list[Any], counter: str, fn: Any, *args: Any) -> Any:
        i = getattr(self, counter)
        setattr(self, counter, i + 1)
        if i < len(memo):
            return memo[i]
        out = fn(*args)
        if not self.serial:
            memo.append(out)
        return out


class BatchNorm(Layer):
    """Batch normalisation per feature ((F,) samples) or per channel ((C, H, W) samples, over
    the batch, H and W), statistics over the global batch (Ioffe & Szegedy, 2015).

    Training: ``y = gamma * (x - mean) / sqrt(var + eps) + beta``, mean and biased variance of
    the batch. Evaluation: the running statistics instead, updated once per training step:
    ``running_mean <- (1 - momentum) running_mean + momentum mean``,
    ``running_var <- (1 - momentum) running_var + momentum sum((x - mean)^2) / (n - 1)``
    (unbiased). They are buffers (:attr:`Sequential.buffers`), not parameters: the optimizer,
    weight decay and clipping never see them.
    """

    kind = "batchnorm"

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5, *,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.momentum = check_number("BatchNorm momentum", momentum, "a number in (0, 1]",
                                     lambda m: 0.0 < m <= 1.0)
        self.eps = check_number("BatchNorm eps", eps, "a positive number", lambda e: e > 0.0)

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) not in (1, 3):
            raise ShapeError("(features,) or (channels, height, width)", shape)
        return shape

    def init_params(self, shape: Shape, rng: np.random.Generator, dtype: Any) -> Params:
        return {"gamma": np.ones(shape[0], dtype=dtype), "beta": np.zeros(shape[0], dtype=dtype)}

    def init_buffers(self, shape: Shape, dtype: Any) -> Params:
        return {"running_mean": np.zeros(shape[0], dtype=dtype),
                "running_var": np.ones(shape[0], dtype=dtype)}

    def flops(self, shape: Shape) -> float:
        return 6.0 * math.prod(shape)

    @staticmethod
    def _axes(x: Array) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Axes the statistics run over, and the shape a per-channel vector broadcasts as."""
        if x.ndim == 2:
            return (0,), (1, x.shape[1])
        return (0, 2, 3), (1, x.shape[1], 1, 1)

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        axes, bshape = self._axes(x)
        gamma = xp.reshape(params["gamma"], bshape)
        beta = xp.reshape(params["beta"], bshape)
        if not ctx.training:
            mean = xp.reshape(params["running_mean"], bshape)
            var = xp.reshape(params["running_var"], bshape)
            return gamma * ((x - mean) / xp.sqrt(var + self.eps)) + beta, None
        stats = moments(xp, x, axes)
        if ctx.sync is not None:
            stats = ctx.sync.point(stats)
        _, n, mean, m2 = stats
        inv = 1.0 / xp.sqrt(xp.reshape(m2, bshape) / n + self.eps)
        xhat = (x - xp.reshape(mean, bshape)) * inv
        return gamma * xhat + beta, (xhat, inv, n)

    def synced_backward(self, xp: Any, params: Params, cache: Any, dy: Array,
                        sync: BatchSync | None) -> tuple[Array, Params]:
        """Backward with the batch's sums from ``sync`` (``None``: this batch is the whole)."""
        xhat, inv, n = cache
        axes, bshape = self._axes(dy)
        local = ("sums", xp.sum(dy, axis=axes), xp.sum(dy * xhat, axis=axes))
        _, s_dy, s_dyx = local if sync is None else sync.point(local)
        gamma = xp.reshape(params["gamma"], bshape)
        dx = (gamma * inv) * (dy - xp.reshape(s_dy, bshape) / n
                              - xhat * (xp.reshape(s_dyx, bshape) / n))
        return dx, {"gamma": local[2], "beta": local[1]}

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        return self.synced_backward(xp, params, cache, dy, None)

    def config(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "eps": self.eps, "name": self.name}


def norm_layers(layers: Sequence[Layer]) -> list[tuple[int, str, BatchNorm]]:
    """Every BatchNorm in ``layers`` (blocks included), in forward order, as (index of its
    top-level layer, prefix of its buffers' names there, layer)."""
    out: list[tuple[int, str, BatchNorm]] = []

    def visit(layer: Layer, i: int, prefix: str) -> None:
        if isinstance(layer, BatchNorm):
            out.append((i, prefix, layer))
        for b, branch in enumerate(getattr(layer, "branches", ()) if layer.composite else ()):
            for j, inner in enumerate(branch):
                visit(inner, i, f"{prefix}{b}.{j}.")

    for i, layer in enumerate(layers):
        visit(layer, i, "")
    return out


def serial_sync(layers: Sequence[Layer]) -> BatchSync | None:
    """The sync of one serial step of ``layers``: ``None`` where none is a BatchNorm."""
    return BatchSync(serial=True) if norm_layers(layers) else None


def update_running(layers: Sequence[Layer], buffers: Sequence[Params],
                   known: Sequence[Stats]) -> list[Params]:
    """``buffers`` after one training step whose global statistics are ``known`` (sync-point
    order: the forward moments come first, one per BatchNorm in forward order; arrays on the
    buffers' device)."""
    out = [dict(b) for b in buffers]
    norms = norm_layers(layers)
    for (i, prefix, layer), (_, n, mean, m2) in zip(norms, known[:len(norms)], strict=True):
        m = layer.momentum
        rm, rv = f"{prefix}running_mean", f"{prefix}running_var"
        out[i][rm] = (1.0 - m) * out[i][rm] + m * mean
        out[i][rv] = (1.0 - m) * out[i][rv] + m * (m2 / (n - 1))
    return out
