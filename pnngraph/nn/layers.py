"""Layers: pairs of pure functions over an array namespace, with thin classes around them.

Every layer is two functions, written side by side so each derivative sits next to its forward
computation::

    forward(xp, params, x)          -> (y, cache)
    backward(xp, params, cache, dy) -> (dx, grads)

``params`` and ``grads`` are dicts name -> array (empty for layers without parameters); ``cache`` is
whatever backward needs. A class such as :class:`Dense` holds the shapes, the initialisation and a
name, checks shapes when a model is built, and calls the functions. Shapes given to and returned by
``output_shape`` are per sample (no batch dimension).

>>> import numpy as np
>>> from pnngraph.nn.backend import get_backend
>>> xp = get_backend("numpy").xp
>>> layer = Dense(3, 2)
>>> params = layer.init_params((3,), np.random.default_rng(0), np.float64)
>>> y, cache = layer.forward(xp, params, np.ones((4, 3)), Context())
>>> y.shape
(4, 2)
>>> dx, grads = layer.backward(xp, params, cache, np.ones((4, 2)))
>>> dx.shape, grads["W"].shape, grads["b"].shape
((4, 3), (3, 2), (2,))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pnngraph.exceptions import (
    ConfigError,
    ShapeError,
    UnknownNameError,
    check_bool,
    check_int,
    check_name,
    check_number,
)
from pnngraph.nn.backend import Array, device_of

Shape = tuple[int, ...]
Params = dict[str, Array]


@dataclass(frozen=True)
class Context:
    """What a forward pass may depend on besides its input.

    ``index`` holds the global sample index of each row of the batch; with ``step``, ``seed``
    and ``layer`` (the layer's index in its model, which the model sets as it runs a layer) it
    fixes the dropout mask, so splitting a batch into shards never changes the mask.
    ``sync`` (a :class:`pnngraph.nn.batchnorm.BatchSync`, training only) gives BatchNorm layers
    the statistics of the global batch.
    """

    training: bool = False
    step: int = 0
    index: np.ndarray | None = None
    seed: int = 0
    layer: int = 0
    sync: Any = None


class Layer:
    """Base of all layers: a name, shape checking, initialisation, forward and backward."""

    kind: ClassVar[str] = "layer"
    stochastic: bool = False
    """Whether training draws random numbers (then ``ctx.layer`` salts them)."""
    composite: ClassVar[bool] = False
    """Whether the layer runs layers of its own (a block)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.kind

    def output_shape(self, shape: Shape) -> Shape:
        """Per-sample output shape for a per-sample input ``shape``; raise ShapeError if unfit."""
        return shape

    def init_params(self, shape: Shape, rng: np.random.Generator, dtype: Any) -> Params:
        """Fresh parameters (host numpy arrays) for per-sample input ``shape``."""
        return {}

    def init_buffers(self, shape: Shape, dtype: Any) -> Params:
        """Arrays the layer keeps besides its parameters (host numpy; BatchNorm's running
        statistics): training updates them outside the optimizer, evaluation reads them."""
        return {}

    def check_input(self, X: np.ndarray, what: str = "X", first: int = 0) -> None:
        """Check the values of host inputs ``X`` (samples along axis 0, counted from ``first``)
        when this layer is a model's first: a DataError naming a value it cannot take."""

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        raise NotImplementedError

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        raise NotImplementedError

    def param_grads(self, xp: Any, params: Params, cache: Any, dy: Array) -> Params:
        """The gradients of ``backward`` without the input gradient (the first layer of a model
        needs none); layers whose input gradient costs work override it to skip that work."""
        return self.backward(xp, params, cache, dy)[1] if params else {}

    def flops(self, shape: Shape) -> float:
        """Forward floating-point operations per sample (backward costs about twice that)."""
        return float(math.prod(shape))

    def config(self) -> dict[str, Any]:
        """JSON-able arguments that rebuild this layer with :meth:`from_config`."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        """The layer :meth:`config` describes (``cls(**config)`` unless a layer says otherwise)."""
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


# ----------------------------------------------------------------------------------------- dense


def dense_forward(xp: Any, params: Params, x: Array) -> tuple[Array, Array]:
    y = x @ params["W"]
    if "b" in params:  # the product is a new array: add the bias in place, one array not two
        y += params["b"]
    return y, x


def dense_param_grads(xp: Any, x: Array, dy: Array, bias: bool = True) -> Params:
    if x.ndim > 2:  # applied at every position: sum over every leading axis
        x, dy = xp.reshape(x, (-1, x.shape[-1])), xp.reshape(dy, (-1, dy.shape[-1]))
    grads = {"W": xp.matrix_transpose(x) @ dy}
    if bias:
        grads["b"] = xp.sum(dy, axis=0)
    return grads


def dense_backward(xp: Any, params: Params, x: Array, dy: Array) -> tuple[Array, Params]:
    return (dy @ xp.matrix_transpose(params["W"]),
            dense_param_grads(xp, x, dy, "b" in params))


INITS = ("he", "glorot")


class Dense(Layer):
    """Affine layer ``y = x @ W + b`` from ``n_in`` to ``n_out`` features (the last axis of a
    sample of any shape: ``(T, n_in)`` gives ``(T, n_out)``, the same W at every position).

    ``Dense(n_out)`` takes ``n_in`` from the shape it receives when the model is built;
    ``Dense(n_in, n_out)`` states both (and the build checks them). ``init="he"`` draws W from
    N(0, 2 / n_in) (for ReLU-like activations); ``"glorot"`` from
    U(-a, a) with a = sqrt(6 / (n_in + n_out)). Biases start at zero; ``bias=False`` leaves
    ``b`` out (before a normalisation that subtracts the mean, whose true gradient for a bias is
    zero: an adaptive optimizer would turn its rounding noise into steps).
    """

    kind = "dense"

    def __init__(self, n_in: int | None = None, n_out: int | None = None, *, init: str = "he",
                 bias: bool = True, name: str | None = None):
        super().__init__(name)
        if n_out is None:  # Dense(16): the one size given is the output's
            n_in, n_out = None, n_in
        if n_out is None:
            raise ConfigError("Dense n_out", "a positive int", None)
        self.n_out = check_int("Dense n_out", n_out)
        self.n_in = None if n_in is None else check_int("Dense n_in", n_in)
        if init not in INITS:
            raise UnknownNameError("init", init, INITS)
        self.init = init
        self.bias = check_bool("Dense bias", bias)

    def output_shape(self, shape: Shape) -> Shape:
        if self.n_in is None and shape:
            self.n_in = shape[-1]
        if shape[-1:] != (self.n_in,):
            raise ShapeError((self.n_in,) if len(shape) < 2 else f"(..., {self.n_in})", shape)
        return (*shape[:-1], self.n_out)

    def init_params(self, shape: Shape, rng: np.random.Generator, dtype: Any) -> Params:
        n_in = shape[-1]
        if self.init == "he":
            W = rng.standard_normal((n_in, self.n_out)) * math.sqrt(2.0 / n_in)
        else:
            a = math.sqrt(6.0 / (n_in + self.n_out))
            W = rng.uniform(-a, a, (n_in, self.n_out))
        params = {"W": W.astype(dtype)}
        if self.bias:
            params["b"] = np.zeros(self.n_out, dtype=dtype)
        return params

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        return dense_forward(xp, params, x)

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        return dense_backward(xp, params, cache, dy)

    def param_grads(self, xp: Any, params: Params, cache: Any, dy: Array) -> Params:
        return dense_param_grads(xp, cache, dy, self.bias)

    def flops(self, shape: Shape) -> float:
        return 2.0 * math.prod(shape) * self.n_out

    def config(self) -> dict[str, Any]:
        config = {"n_in": self.n_in, "n_out": self.n_out, "init": self.init, "name": self.name}
        return config if self.bias else {**config, "bias": False}


# ----------------------------------------------------------------------------------- activations


def relu_forward(xp: Any, x: Array) -> tuple[Array, Array]:
    # max(x, 0) + 0.0 is where(x > 0, x, 0.0) for every finite x (-0.0 becomes +0.0), in a
    # fifth of the time; a NaN stays NaN (so the loss check sees it)
    y = xp.maximum(x, 0.0)
    y += 0.0
    return y, y


def relu_backward(xp: Any, y: Array, dy: Array) -> Array:
    # dy where y > 0, else +0.0 (the product gives -0.0 for a negative dy: adding 0.0 clears it)
    dx = dy * xp.astype(y > 0, dy.dtype)
    dx += 0.0
    return dx


def tanh_forward(xp: Any, x: Array) -> tuple[Array, Array]:
    y = xp.tanh(x)
    return y, y


def tanh_backward(xp: Any, y: Array, dy: Array) -> Array:
    return dy * (1.0 - y * y)


def sigmoid_forward(xp: Any, x: Array) -> tuple[Array, Array]:
    # exp of -|x| never overflows; both branches share it
    e = xp.exp(-xp.abs(x))
    y = xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return y, y


def sigmoid_backward(xp: Any, y: Array, dy: Array) -> Array:
    return dy * y * (1.0 - y)


_GELU_C = math.sqrt(2.0 / math.pi)


def gelu_forward(xp: Any, x: Array) -> tuple[Array, tuple[Array, Array]]:
    # tanh approximation (Hendrycks & Gimpel 2016): 0.5 x (1 + tanh(c (x + 0.044715 x^3)))
    t = xp.tanh(_GELU_C * (x + 0.044715 * x * x * x))
    return 0.5 * x * (1.0 + t), (x, t)


def gelu_backward(xp: Any, cache: tuple[Array, Array], dy: Array) -> Array:
    x, t = cache
    dinner = _GELU_C * (1.0 + 3 * 0.044715 * x * x)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner)


class _Activation(Layer):
    fns: ClassVar[tuple[Any, Any]]

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        return type(self).fns[0](xp, x)

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        return type(self).fns[1](xp, cache, dy), {}


class ReLU(_Activation):
    """``max(x, 0)`` elementwise."""

    kind = "relu"
    fns = (relu_forward, relu_backward)


class Tanh(_Activation):
    """Hyperbolic tangent elementwise."""

    kind = "tanh"
    fns = (tanh_forward, tanh_backward)


class Sigmoid(_Activation):
    """Logistic function elementwise, computed without overflow."""

    kind = "sigmoid"
    fns = (sigmoid_forward, sigmoid_backward)


class GELU(_Activation):
    """Gaussian error linear unit, tanh approximation."""

    kind = "gelu"
    fns = (gelu_forward, gelu_backward)

    def flops(self, shape: Shape) -> float:
        return 10.0 * math.prod(shape)


ACTIVATIONS: dict[str, type[Layer]] = {c.kind: c for c in (ReLU, Tanh, Sigmoid, GELU)}


def activation(name: str) -> Layer:
    """The activation layer called ``name``: "relu", "tanh", "sigmoid" or "gelu", in any case."""
    return ACTIVATIONS[check_name("activation", name, ACTIVATIONS)]()


# --------------------------------------------------------------------------------------- flatten


class Flatten(Layer):
    """Reshape each sample to a vector: (N, d1, d2, ...) -> (N, d1 * d2 * ...)."""

    kind = "flatten"

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        return xp.reshape(x, (x.shape[0], -1)), tuple(x.shape)

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        return xp.reshape(dy, cache), {}

    def flops(self, shape: Shape) -> float:
        return 0.0


# --------------------------------------------------------------------------------------- dropout

_MASK64 = (1 << 64) - 1


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dropout_uniforms(seed: int, step: int, salt: int, index: np.ndarray, width: int) -> np.ndarray:
    """Uniforms in [0, 1), shape (len(index), width), a pure function of every argument.

    Row r depends only on ``index[r]`` (a global sample index), never on the other rows, so any
    split of a batch into shards draws the same numbers for the same sample.
    """
    key = seed * 0x9E3779B97F4A7C15 + step * 0xD1B54A32D192ED03 + salt * 0x8CB92BA72F3D8DD7
    key &= _MASK64
    cells = index.astype(np.uint64)[:, None] * np.uint64(width) + np.arange(width, dtype=np.uint64)
    salted: np.ndarray = np.bitwise_xor(cells, np.uint64(key))
    bits = _mix64(_mix64(salted) + np.uint64(key))
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def dropout_forward(xp: Any, x: Array, keep: Array) -> tuple[Array, Array]:
    return x * keep, keep


def dropout_backward(xp: Any, keep: Array, dy: Array) -> Array:
    return dy * keep


class Dropout(Layer):
    """Inverted dropout: zero each value with probability ``rate`` in training, scale the rest.

    The mask depends only on the run's seed, the step, the layer's index in its model and each
    sample's global index (:class:`Context`), so data-parallel shards reproduce the serial mask
    exactly, and one layer object may serve in two models.
    At evaluation (``ctx.training`` false) the layer is the identity.
    """

    kind = "dropout"
    stochastic = True

    def __init__(self, rate: float = 0.5, *, name: str | None = None) -> None:
        super().__init__(name)
        self.rate = check_number("Dropout rate", rate, "a number in [0, 1)",
                                 lambda r: 0.0 <= r < 1.0)

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        if not ctx.training or self.rate == 0.0:
            return x, None
        n = x.shape[0]
        index = np.arange(n) if ctx.index is None else np.asarray(ctx.index)
        width = math.prod(x.shape[1:])
        u = dropout_uniforms(ctx.seed, ctx.step, ctx.layer, index, width)
        keep_host = np.where(u >= self.rate, 1.0 / (1.0 - self.rate), 0.0).reshape(x.shape)
        keep = xp.astype(xp.asarray(keep_host, device=device_of(x)), x.dtype)
        return dropout_forward(xp, x, keep)

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        return (dy if cache is None else dropout_backward(xp, cache, dy)), {}

    def config(self) -> dict[str, Any]:
        return {"rate": self.rate, "name": self.name}
