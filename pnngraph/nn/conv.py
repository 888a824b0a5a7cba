"""Convolution and pooling over NCHW batches, by im2col built from strided slices.

The array API has no ``as_strided`` and no ``pad``, so the column matrix is assembled from the
``kh * kw`` strided slices of the (zero-padded) input, one per kernel offset::

    x      (N, C, H, W)         --pad-->  (N, C, H + 2p, W + 2p)
    slice for offset (i, j):  xpad[:, :, i : i + s*(OH-1) + 1 : s, j : j + s*(OW-1) + 1 : s]
    stack over offsets    ->  (N, C, K, OH, OW)          K = kh * kw, offset k = i * kw + j
    cols                  ->  (N * OH * OW, C * K)       rows are output pixels
    y = cols @ W.reshape(F, C * K).T + b  ->  (N, F, OH, OW)

The backward pass scatters the column gradient back through the same slices (col2im). Pooling
stacks the same windows (no padding) and takes their max or mean over the offset axis.

>>> import numpy as np
>>> from pnngraph.nn.backend import get_backend
>>> from pnngraph.nn.layers import Context
>>> xp = get_backend("numpy").xp
>>> conv = Conv2D(1, 4, 3, padding=1)
>>> p = conv.init_params((1, 8, 8), np.random.default_rng(0), np.float64)
>>> conv.forward(xp, p, np.ones((2, 1, 8, 8)), Context())[0].shape
(2, 4, 8, 8)
>>> MaxPool2D(2).output_shape((4, 8, 8)), AvgPool2D(3, stride=1).output_shape((4, 8, 8))
((4, 4, 4), (4, 6, 6))
>>> GlobalAvgPool2D().output_shape((4, 8, 8))
(4,)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pnngraph.exceptions import ConfigError, ShapeError, check_bool, check_int
from pnngraph.nn.backend import Array, device_of
from pnngraph.nn.layers import Context, Layer, Params, Shape


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _windows(xp: Any, xpad: Array, kh: int, kw: int, stride: int, oh: int, ow: int) -> Array:
    """Stack the kernel-offset slices of ``xpad``: (N, C, kh * kw, OH, OW)."""
    hs, ws = stride * (oh - 1) + 1, stride * (ow - 1) + 1
    slices = [
        xpad[:, :, i : i + hs : stride, j : j + ws : stride] for i in range(kh) for j in range(kw)
    ]
    return xp.stack(slices, axis=2)


def _scatter(
    xp: Any, dwin: Array, shape: Shape, kh: int, kw: int, stride: int, dtype: Any
) -> Array:
    """Adjoint of :func:`_windows`: add each offset's slice gradient into an array of ``shape``."""
    oh, ow = dwin.shape[3], dwin.shape[4]
    hs, ws = stride * (oh - 1) + 1, stride * (ow - 1) + 1
    dx = xp.zeros(shape, dtype=dtype, device=device_of(dwin))
    for i in range(kh):
        for j in range(kw):
            region = (slice(None), slice(None), slice(i, i + hs, stride), slice(j, j + ws, stride))
            dx[region] = dx[region] + dwin[:, :, i * kw + j, ...]
    return dx


def _pad(xp: Any, x: Array, p: int) -> Array:
    if p == 0:
        return x
    n, c, h, w = x.shape
    out = xp.zeros((n, c, h + 2 * p, w + 2 * p), dtype=x.dtype, device=device_of(x))
    out[:, :, p : p + h, p : p + w] = x
    return out


def conv2d_forward(
    xp: Any, params: Params, x: Array, stride: int, padding: int
) -> tuple[Array, Any]:
    W = params["W"]
    f, c, kh, kw = W.shape
    n, _, h, w = x.shape
    oh, ow = _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding)
    win = _windows(xp, _pad(xp, x, padding), kh, kw, stride, oh, ow)  # (N, C, K, OH, OW)
    cols = xp.reshape(xp.permute_dims(win, (0, 3, 4, 1, 2)), (n * oh * ow, c * kh * kw))
    wmat = xp.reshape(W, (f, c * kh * kw))
    y = cols @ xp.matrix_transpose(wmat)  # (N*OH*OW, F)
    if "b" in params:
        y += params["b"]
    y = xp.permute_dims(xp.reshape(y, (n, oh, ow, f)), (0, 3, 1, 2))
    return y, (cols, tuple(x.shape))


def conv2d_backward(
    xp: Any, params: Params, cache: Any, dy: Array, stride: int, padding: int
) -> tuple[Array, Params]:
    cols, (n, c, h, w) = cache
    W = params["W"]
    f, _, kh, kw = W.shape
    oh, ow = dy.shape[2], dy.shape[3]
    dyr, grads = _conv2d_grads(xp, W, cols, dy, "b" in params)
    wmat = xp.reshape(W, (f, c * kh * kw))
    dcols = xp.reshape(dyr @ wmat, (n, oh, ow, c, kh * kw))
    dwin = xp.permute_dims(dcols, (0, 3, 4, 1, 2))  # (N, C, K, OH, OW)
    padded = (n, c, h + 2 * padding, w + 2 * padding)
    dxpad = _scatter(xp, dwin, padded, kh, kw, stride, dy.dtype)
    dx = dxpad[:, :, padding : padding + h, padding : padding + w] if padding else dxpad
    return dx, grads


def _conv2d_grads(xp: Any, W: Array, cols: Array, dy: Array,
                  bias: bool = True) -> tuple[Array, Params]:
    """``dy`` as rows (N*OH*OW, F), and the gradients of the weights and the bias."""
    n, f, oh, ow = dy.shape
    dyr = xp.reshape(xp.permute_dims(dy, (0, 2, 3, 1)), (n * oh * ow, f))
    grads = {"W": xp.reshape(xp.matrix_transpose(dyr) @ cols, W.shape)}
    if bias:
        grads["b"] = xp.sum(dyr, axis=0)
    return dyr, grads


def maxpool2d_forward(xp: Any, x: Array, size: int, stride: int) -> tuple[Array, Any]:
    h, w = x.shape[2], x.shape[3]
    oh, ow = _out_size(h, size, stride, 0), _out_size(w, size, stride, 0)
    win = _windows(xp, x, size, size, stride, oh, ow)
    arg = xp.argmax(win, axis=2)  # first maximum: the one gradient goes to
    return xp.max(win, axis=2), (arg, tuple(x.shape))


def maxpool2d_backward(xp: Any, cache: Any, dy: Array, size: int, stride: int) -> Array:
    arg, shape = cache
    dwin = xp.stack([xp.where(arg == k, dy, 0.0) for k in range(size * size)], axis=2)
    return _scatter(xp, dwin, shape, size, size, stride, dy.dtype)


def avgpool2d_forward(xp: Any, x: Array, size: int, stride: int) -> tuple[Array, Any]:
    h, w = x.shape[2], x.shape[3]
    oh, ow = _out_size(h, size, stride, 0), _out_size(w, size, stride, 0)
    return xp.mean(_windows(xp, x, size, size, stride, oh, ow), axis=2), tuple(x.shape)


def avgpool2d_backward(xp: Any, shape: Shape, dy: Array, size: int, stride: int) -> Array:
    n, c, oh, ow = dy.shape
    share = xp.reshape(dy * (1.0 / (size * size)), (n, c, 1, oh, ow))
    dwin = xp.broadcast_to(share, (n, c, size * size, oh, ow))
    return _scatter(xp, dwin, shape, size, size, stride, dy.dtype)


def _pair(label: str, v: Any) -> tuple[int, int]:
    if isinstance(v, tuple | list) and len(v) == 2:
        return check_int(label, v[0]), check_int(label, v[1])
    k = check_int(label, v)
    return k, k


class Conv2D(Layer):
    """2-D convolution over NCHW input: ``in_channels`` -> ``out_channels``.

    ``Conv2D(out_channels, kernel_size)`` takes ``in_channels`` from the shape it receives when
    the model is built; ``Conv2D(in_channels, out_channels, kernel_size)`` states it (and the build
    checks it). ``kernel_size`` is an int or (kh, kw); ``stride`` and zero ``padding`` are ints.
    Weights are He normal with fan-in ``in_channels * kh * kw``; biases start at zero, and
    ``bias=False`` leaves them out (before a BatchNorm, which subtracts the mean).
    """

    kind = "conv"

    def __init__(
        self,
        *sizes: Any,
        in_channels: int | None = None,
        out_channels: int | None = None,
        kernel_size: int | tuple[int, int] | None = None,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        self.bias = check_bool("Conv2D bias", bias)
        if sizes:
            if len(sizes) not in (2, 3) or out_channels is not None or kernel_size is not None:
                raise ConfigError("Conv2D sizes", "(out_channels, kernel_size) or (in_channels, "
                                  "out_channels, kernel_size)", sizes)
            in_channels = sizes[0] if len(sizes) == 3 else in_channels
            out_channels, kernel_size = sizes[-2:]
        if out_channels is None or kernel_size is None:
            raise ConfigError("Conv2D", "out_channels and kernel_size",
                              {"out_channels": out_channels, "kernel_size": kernel_size})
        self.in_channels = None if in_channels is None else check_int("Conv2D in_channels",
                                                                      in_channels)
        self.out_channels = check_int("Conv2D out_channels", out_channels)
        self.kernel_size = _pair("Conv2D kernel_size", kernel_size)
        self.stride = check_int("Conv2D stride", stride)
        self.padding = check_int("Conv2D padding", padding, low=0)

    def output_shape(self, shape: Shape) -> Shape:
        kh, kw = self.kernel_size
        if self.in_channels is None and len(shape) == 3:
            self.in_channels = shape[0]
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise ShapeError(f"(C={self.in_channels or '?'}, H, W)", shape)
        _, h, w = shape
        p = self.padding
        if h + 2 * p < kh or w + 2 * p < kw:
            raise ShapeError(f"H, W >= kernel {kh}x{kw} after padding {p}", shape)
        return (
            self.out_channels,
            _out_size(h, kh, self.stride, p),
            _out_size(w, kw, self.stride, p),
        )

    def init_params(self, shape: Shape, rng: np.random.Generator, dtype: Any) -> Params:
        kh, kw = self.kernel_size
        fan_in = shape[0] * kh * kw
        W = rng.standard_normal((self.out_channels, shape[0], kh, kw))
        params = {"W": (W * math.sqrt(2.0 / fan_in)).astype(dtype)}
        if self.bias:
            params["b"] = np.zeros(self.out_channels, dtype=dtype)
        return params

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        return conv2d_forward(xp, params, x, self.stride, self.padding)

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        return conv2d_backward(xp, params, cache, dy, self.stride, self.padding)

    def param_grads(self, xp: Any, params: Params, cache: Any, dy: Array) -> Params:
        return _conv2d_grads(xp, params["W"], cache[0], dy, self.bias)[1]

    def flops(self, shape: Shape) -> float:
        f, oh, ow = self.output_shape(shape)
        kh, kw = self.kernel_size
        return 2.0 * f * oh * ow * shape[0] * kh * kw

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": self.stride,
            "padding": self.padding,
            "name": self.name,
        } | ({} if self.bias else {"bias": False})


class _Pool2D(Layer):
    """Pooling over ``size`` x ``size`` windows of NCHW input, step ``stride`` (or size)."""

    def __init__(self, size: int = 2, *, stride: int | None = None, name: str | None = None):
        super().__init__(name)
        label = type(self).__name__
        self.size = check_int(f"{label} size", size)
        self.stride = self.size if stride is None else check_int(f"{label} stride", stride)

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 3 or shape[1] < self.size or shape[2] < self.size:
            raise ShapeError(f"(C, H, W) with H, W >= {self.size}", shape)
        c, h, w = shape
        return (c, _out_size(h, self.size, self.stride, 0), _out_size(w, self.size, self.stride, 0))

    def flops(self, shape: Shape) -> float:
        return float(math.prod(self.output_shape(shape))) * self.size * self.size

    def config(self) -> dict[str, Any]:
        return {"size": self.size, "stride": self.stride, "name": self.name}


class MaxPool2D(_Pool2D):
    """Max pooling: ``y = max`` over each ``size`` x ``size`` window (step ``stride``, default
    ``size``) of each channel; the gradient goes to the window's first maximum."""

    kind = "maxpool"

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        return maxpool2d_forward(xp, x, self.size, self.stride)

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        return maxpool2d_backward(xp, cache, dy, self.size, self.stride), {}


class AvgPool2D(_Pool2D):
    """Average pooling: ``y = mean`` over each ``size`` x ``size`` window (step ``stride``,
    default ``size``) of each channel; (C, H, W) -> (C, H', W')."""

    kind = "avgpool"

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        return avgpool2d_forward(xp, x, self.size, self.stride)

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        return avgpool2d_backward(xp, cache, dy, self.size, self.stride), {}


class GlobalAvgPool2D(Layer):
    """Global average pooling: ``y[c] = mean(x[c, :, :])``; (C, H, W) -> (C,)."""

    kind = "globalavgpool"

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 3:
            raise ShapeError("(C, H, W)", shape)
        return (shape[0],)

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        return xp.mean(x, axis=(2, 3)), tuple(x.shape)

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        n, c, h, w = cache
        scaled = xp.reshape(dy * (1.0 / (h * w)), (n, c, 1, 1))
        return xp.broadcast_to(scaled, cache) + 0.0, {}  # a new array, not a view
