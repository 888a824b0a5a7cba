"""Layers of a Transformer language model, over per-sample sequences of shape ``(T, d)``.

A batch is ``(N, T, d)``: N samples of T positions of d features (token ids ``(N, T)`` before the
:class:`Embedding`). Each layer is a forward/backward pair of pure functions over the array
namespace ``xp``, as in :mod:`pnngraph.nn.layers`::

    tokens (N, T) --Embedding--> (N, T, d) --PositionalEmbedding--> (N, T, d)
        --MultiHeadSelfAttention--> (N, T, d) --LayerNorm--> (N, T, d) --Dense--> (N, T, vocab)

Token ids travel as floats (a model's inputs have the model's dtype) and are cast to integers
inside :class:`Embedding`, which checks them at the boundary (:meth:`Embedding.check_input`).
Softmaxes subtract their row's maximum first and LayerNorm subtracts the mean before squaring,
so both stay exact for large activations. Attention dropout draws its mask like
:class:`~pnngraph.nn.layers.Dropout`: a pure function of seed, step, layer index and global
sample index, so any sharding of a batch reproduces the serial mask.

>>> import numpy as np
>>> from pnngraph.nn.layers import Dense
>>> from pnngraph.nn.model import Sequential
>>> model = Sequential([Embedding(10, 8), PositionalEmbedding(6), MultiHeadSelfAttention(2,
...                     causal=True), LayerNorm(), Dense(8, 10)], input_shape=(6,))
>>> model.shapes
[(6,), (6, 8), (6, 8), (6, 8), (6, 8), (6, 10)]
>>> model.predict(np.zeros((3, 6))).shape
(3, 6, 10)

References
----------
Vaswani et al. Attention is all you need. NeurIPS 2017.
Ba, Kiros, Hinton. Layer normalization. arXiv:1607.06450, 2016.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pnngraph.exceptions import ConfigError, DataError, ShapeError, check_int, check_number
from pnngraph.nn.backend import Array, device_of
from pnngraph.nn.layers import Context, Layer, Params, Shape, dropout_uniforms


def _rows(xp: Any, a: Array) -> Array:
    """``a`` as a matrix of its last axis: (prod(leading axes), last)."""
    return xp.reshape(a, (-1, a.shape[-1]))


# ------------------------------------------------------------------------------------ layer norm


def layer_norm_forward(xp: Any, params: Params, x: Array, eps: float) -> tuple[Array, Any]:
    xc = x - xp.mean(x, axis=-1, keepdims=True)  # mean first: exact under a large shift
    inv = 1.0 / xp.sqrt(xp.mean(xc * xc, axis=-1, keepdims=True) + eps)
    xhat = xc * inv
    return xhat * params["gamma"] + params["beta"], (xhat, inv)


def layer_norm_backward(xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
    xhat, inv = cache
    g = dy * params["gamma"]
    dx = inv * (g - xp.mean(g, axis=-1, keepdims=True)
                - xhat * xp.mean(g * xhat, axis=-1, keepdims=True))
    grads = {"gamma": xp.sum(_rows(xp, dy * xhat), axis=0), "beta": xp.sum(_rows(xp, dy), axis=0)}
    return dx, grads


class LayerNorm(Layer):
    """``y = gamma * (x - mean(x)) / sqrt(var(x) + eps) + beta`` over the last axis of each sample.

    ``gamma`` starts at 1 and ``beta`` at 0, one of each per feature of the last axis.
    """

    kind = "layernorm"

    def __init__(self, eps: float = 1e-5, *, name: str | None = None) -> None:
        super().__init__(name)
        self.eps = check_number("LayerNorm eps", eps, "a finite number > 0",
                                lambda e: 0.0 < e < math.inf)

    def init_params(self, shape: Shape, rng: np.random.Generator, dtype: Any) -> Params:
        return {"gamma": np.ones(shape[-1], dtype=dtype), "beta": np.zeros(shape[-1], dtype=dtype)}

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        return layer_norm_forward(xp, params, x, self.eps)

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        return layer_norm_backward(xp, params, cache, dy)

    def flops(self, shape: Shape) -> float:
        return 8.0 * math.prod(shape)

    def config(self) -> dict[str, Any]:
        return {"eps": self.eps, "name": self.name}


# ------------------------------------------------------------------------------------ embeddings


def embedding_forward(xp: Any, params: Params, x: Array) -> tuple[Array, Array]:
    ids = xp.reshape(xp.astype(x, xp.int64), (-1,))
    W = params["W"]
    return xp.reshape(xp.take(W, ids, axis=0), (*x.shape, W.shape[1])), ids


def embedding_param_grads(xp: Any, W: Array, ids: Array, dy: Array) -> Params:
    # scatter-add as a one-hot product: exact (every term is dy * 1.0 or dy * 0.0), array-API
    vocab = W.shape[0]
    onehot = xp.astype(xp.reshape(ids, (-1, 1)) == xp.arange(vocab, device=device_of(ids)),
                       dy.dtype)
    return {"W": xp.matrix_transpose(onehot) @ _rows(xp, dy)}


class Embedding(Layer):
    """``y[t] = W[x[t]]``: each token id of a sample ``(T,)`` picks a row of ``W (vocab, width)``.

    Ids come as numbers of the model's dtype and must be integers in ``[0, vocab)``
    (:meth:`check_input`). ``W`` starts N(0, 1). The input gradient is zero (ids are not
    differentiable); as a model's first layer only ``W``'s gradient is computed.
    """

    kind = "embedding"
    integer_input = True
    """Its input is token ids: no input gradient (``pnngraph.testing`` checks none)."""

    def __init__(self, vocab: int, width: int, *, name: str | None = None) -> None:
        super().__init__(name)
        self.vocab = check_int("Embedding vocab", vocab)
        self.width = check_int("Embedding width", width)

    def check_input(self, X: np.ndarray, what: str = "X", first: int = 0) -> None:
        """DataError naming the first token id of host ``X`` (samples counted from ``first``)
        that is not an integer in ``[0, vocab)``."""
        bad = (np.round(X) != X) | (X < 0) | (self.vocab <= X)
        if np.any(bad):
            at = np.unravel_index(int(np.argmax(bad)), X.shape)
            place = ", ".join(str(int(i)) for i in at[1:])
            raise DataError(what, f"expected token ids (integers in [0, {self.vocab})), got "
                                  f"{X[at].item()!r} in sample {first + int(at[0])} at "
                                  f"position {place}")

    def output_shape(self, shape: Shape) -> Shape:
        return (*shape, self.width)

    def init_params(self, shape: Shape, rng: np.random.Generator, dtype: Any) -> Params:
        return {"W": rng.standard_normal((self.vocab, self.width)).astype(dtype)}

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        y, ids = embedding_forward(xp, params, x)
        return y, (ids, tuple(x.shape), x.dtype)

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        _, shape, dtype = cache
        dx = xp.zeros(shape, dtype=dtype, device=device_of(dy))
        return dx, self.param_grads(xp, params, cache, dy)

    def param_grads(self, xp: Any, params: Params, cache: Any, dy: Array) -> Params:
        return embedding_param_grads(xp, params["W"], cache[0], dy)

    def flops(self, shape: Shape) -> float:
        return float(math.prod(shape) * self.width)

    def config(self) -> dict[str, Any]:
        return {"vocab": self.vocab, "width": self.width, "name": self.name}


class PositionalEmbedding(Layer):
    """``y[t] = x[t] + P[t]`` for a sample ``(T, width)``, with a learned ``P (max_len, width)``.

    ``P`` starts N(0, 0.02^2); sequences longer than ``max_len`` are refused at build time.
    """

    kind = "positional"

    def __init__(self, max_len: int, *, name: str | None = None) -> None:
        super().__init__(name)
        self.max_len = check_int("PositionalEmbedding max_len", max_len)

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 2 or shape[0] > self.max_len:
            raise ShapeError(f"(T, width) with T <= max_len {self.max_len}", shape)
        return shape

    def init_params(self, shape: Shape, rng: np.random.Generator, dtype: Any) -> Params:
        return {"P": (0.02 * rng.standard_normal((self.max_len, shape[-1]))).astype(dtype)}

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        return x + params["P"][: x.shape[1], :], None

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        return dy, self.param_grads(xp, params, cache, dy)

    def param_grads(self, xp: Any, params: Params, cache: Any, dy: Array) -> Params:
        t, width = dy.shape[1], dy.shape[2]
        rest = xp.zeros((self.max_len - t, width), dtype=dy.dtype, device=device_of(dy))
        return {"P": xp.concat([xp.sum(dy, axis=0), rest], axis=0)}

    def flops(self, shape: Shape) -> float:
        return float(math.prod(shape))

    def config(self) -> dict[str, Any]:
        return {"max_len": self.max_len, "name": self.name}


# ----------------------------------------------------------------------------------- attention


def _heads(xp: Any, a: Array, h: int) -> Array:
    """(N, T, d) -> (N, h, T, d / h)."""
    n, t, d = a.shape
    return xp.permute_dims(xp.reshape(a, (n, t, h, d // h)), (0, 2, 1, 3))


def _merge(xp: Any, a: Array) -> Array:
    """(N, h, T, dh) -> (N, T, h * dh), the inverse of :func:`_heads`."""
    n, h, t, dh = a.shape
    return xp.reshape(xp.permute_dims(a, (0, 2, 1, 3)), (n, t, h * dh))


def _project(xp: Any, params: Params, x: Array, name: str) -> Array:
    y = x @ params[f"W{name}"]
    if f"b{name}" in params:
        y += params[f"b{name}"]
    return y


def attention_forward(xp: Any, params: Params, x: Array, heads: int, causal: bool,
                      keep: Array | None) -> tuple[Array, Any]:
    """Scaled dot-product attention of ``heads`` heads; ``keep`` scales the attention weights
    (dropout's mask, ``None``: no dropout)."""
    q, k, v = (_heads(xp, _project(xp, params, x, name), heads) for name in "qkv")
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = (q @ xp.matrix_transpose(k)) * scale  # (N, h, T, T)
    if causal:
        t = s.shape[-1]
        allowed = xp.reshape(xp.arange(t, device=device_of(x)), (t, 1)) >= \
            xp.arange(t, device=device_of(x))
        s = xp.where(allowed, s, -math.inf)  # the diagonal stays: every row has a finite max
    e = xp.exp(s - xp.max(s, axis=-1, keepdims=True))
    a = e / xp.sum(e, axis=-1, keepdims=True)
    ad = a if keep is None else a * keep
    c = _merge(xp, ad @ v)
    return _project(xp, params, c, "o"), (x, q, k, v, a, keep, ad, c, scale)


def attention_backward(xp: Any, params: Params, cache: Any, dy: Array,
                       input_grad: bool = True) -> tuple[Array | None, Params]:
    x, q, k, v, a, keep, ad, c, scale = cache
    heads = q.shape[1]
    grads = {"Wo": xp.matrix_transpose(_rows(xp, c)) @ _rows(xp, dy),
             "bo": xp.sum(_rows(xp, dy), axis=0)}
    do = _heads(xp, dy @ xp.matrix_transpose(params["Wo"]), heads)
    dad = do @ xp.matrix_transpose(v)
    dv = xp.matrix_transpose(ad) @ do
    da = dad if keep is None else dad * keep
    ds = a * (da - xp.sum(a * da, axis=-1, keepdims=True)) * scale
    dq, dk = ds @ k, xp.matrix_transpose(ds) @ q
    x2 = xp.matrix_transpose(_rows(xp, x))
    dx = None
    for name, d in (("q", dq), ("k", dk), ("v", dv)):
        d = _merge(xp, d)
        grads[f"W{name}"] = x2 @ _rows(xp, d)
        if name != "k":
            grads[f"b{name}"] = xp.sum(_rows(xp, d), axis=0)
        if input_grad:
            part = d @ xp.matrix_transpose(params[f"W{name}"])
            dx = part if dx is None else dx + part
    return dx, grads


class MultiHeadSelfAttention(Layer):
    """``y = concat_h(softmax(Q_h K_h^T / sqrt(d/h) [+ causal mask]) V_h) Wo + bo`` on ``(T, d)``,
    with ``Q, K, V = x Wq + bq, x Wk, x Wv + bv`` split into ``heads`` heads of ``d/heads``.

    The key projection has no bias: a key bias adds ``q_i . bk`` to every score of row i, which
    the softmax cancels, so its gradient is zero but for rounding, noise that an adaptive
    optimizer would blow up into steps (and that differs between shardings).

    ``causal=True`` lets position t attend to positions <= t only. ``dropout`` zeroes each
    attention weight with that probability in training and scales the rest (the mask as
    :class:`~pnngraph.nn.layers.Dropout` draws it). Weights start U(-a, a), a = sqrt(3 / d)
    (Glorot), biases at zero.
    """

    kind = "attention"
    stochastic = True

    def __init__(self, heads: int, *, causal: bool = False, dropout: float = 0.0,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.heads = check_int("MultiHeadSelfAttention heads", heads)
        if not isinstance(causal, bool):
            raise ConfigError("MultiHeadSelfAttention causal", "True or False", causal)
        self.causal = causal
        self.dropout = check_number("MultiHeadSelfAttention dropout", dropout,
                                    "a number in [0, 1)", lambda r: 0.0 <= r < 1.0)

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 2 or shape[1] % self.heads:
            raise ShapeError(f"(T, d) with d a multiple of heads {self.heads}", shape)
        return shape

    def init_params(self, shape: Shape, rng: np.random.Generator, dtype: Any) -> Params:
        d = shape[-1]
        a = math.sqrt(3.0 / d)
        params = {}
        for name in "qkvo":
            params[f"W{name}"] = rng.uniform(-a, a, (d, d)).astype(dtype)
            if name != "k":
                params[f"b{name}"] = np.zeros(d, dtype=dtype)
        return params

    def _keep(self, xp: Any, x: Array, ctx: Context) -> Array | None:
        if not ctx.training or self.dropout == 0.0:
            return None
        n, t = x.shape[0], x.shape[1]
        index = np.arange(n) if ctx.index is None else np.asarray(ctx.index)
        u = dropout_uniforms(ctx.seed, ctx.step, ctx.layer, index, self.heads * t * t)
        keep = np.where(u >= self.dropout, 1.0 / (1.0 - self.dropout), 0.0)
        keep = keep.reshape((n, self.heads, t, t))
        return xp.astype(xp.asarray(keep, device=device_of(x)), x.dtype)

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        return attention_forward(xp, params, x, self.heads, self.causal, self._keep(xp, x, ctx))

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        dx, grads = attention_backward(xp, params, cache, dy)
        assert dx is not None
        return dx, grads

    def param_grads(self, xp: Any, params: Params, cache: Any, dy: Array) -> Params:
        return attention_backward(xp, params, cache, dy, input_grad=False)[1]

    def flops(self, shape: Shape) -> float:
        t, d = shape
        return 8.0 * t * d * d + 4.0 * t * t * d + 5.0 * self.heads * t * t

    def config(self) -> dict[str, Any]:
        return {"heads": self.heads, "causal": self.causal, "dropout": self.dropout,
                "name": self.name}
