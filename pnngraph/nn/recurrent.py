"""Recurrent layers over (N, T, features) batches, with backpropagation through time.

A sample is a sequence of ``T`` feature vectors. :class:`LSTM` and :class:`GRU` run a cell over
the steps ``t = 0 .. T-1`` from a zero state and return the last hidden state, (N, hidden), or,
with ``return_sequences=True``, every step's, (N, T, hidden). Each layer keeps two weight
matrices (two matmuls rather than one fused ``[x, h] @ W``), so the input projection of all
``T`` steps is one matmul before the loop, and its weight and input gradients one each after
the backward loop; only ``h @ Wh`` runs per step::

    x (N, T, F)  --reshape-->  (N*T, F) @ Wx + b  ->  zx (N, T, G*H)   one matmul, all steps
    for t:  z_t = zx[:, t] + h_{t-1} @ Wh          ->  gates, new state (cell math, per layer)
    backward, t = T-1 .. 0: dz_t, dh_{t-1} = dz_t @ Wh.T, dc_{t-1}
    dWx = X.T @ dZ,  dWh = H_prev.T @ dZ,  db = sum dZ,  dx = dZ @ Wx.T       one matmul each

G is 4 for an LSTM (gates i, f, o, g side by side in that order) and 3 for a GRU (z, r, n).

>>> import numpy as np
>>> from pnngraph.nn.backend import get_backend
>>> from pnngraph.nn.layers import Context
>>> xp = get_backend("numpy").xp
>>> lstm = LSTM(5)
>>> lstm.output_shape((4, 3)), LSTM(5, return_sequences=True).output_shape((4, 3))
((5,), (4, 5))
>>> p = lstm.init_params((4, 3), np.random.default_rng(0), np.float64)
>>> sorted((k, v.shape) for k, v in p.items())
[('Wh', (5, 20)), ('Wx', (3, 20)), ('b', (20,))]
>>> p["b"][5:10].tolist()  # the forget gate's bias starts at 1
[1.0, 1.0, 1.0, 1.0, 1.0]
>>> lstm.forward(xp, p, np.ones((2, 4, 3)), Context())[0].shape
(2, 5)

References
----------
Hochreiter & Schmidhuber, Long short-term memory, Neural Computation 9(8), 1997; the forget
gate of Gers, Schmidhuber & Cummins (2000) and its bias of 1 from Jozefowicz, Zaremba &
Sutskever, An empirical exploration of recurrent network architectures (ICML 2015).
Cho et al., Learning phrase representations using RNN encoder-decoder (EMNLP 2014), the GRU.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from pnngraph.exceptions import ShapeError, check_bool, check_int
from pnngraph.nn.backend import Array, device_of
from pnngraph.nn.layers import Context, Layer, Params, Shape, sigmoid_forward


def _project_inputs(xp: Any, params: Params, x: Array) -> Array:
    """``x @ Wx + b`` for every step at once: (N, T, F) -> (N, T, G*H)."""
    n, t, f = x.shape
    z = xp.reshape(x, (n * t, f)) @ params["Wx"]
    z += params["b"]
    return xp.reshape(z, (n, t, z.shape[1]))


def _weight_grads(
    xp: Any, params: Params, x: Array, h_prev: Array, dzx: list[Array], dzh: list[Array],
    input_grad: bool,
) -> tuple[Array | None, Params]:
    """The gradients of the parameters and (if ``input_grad``) of the input, from each step's
    gradient of ``x_t @ Wx + b`` (``dzx``) and of ``h_{t-1} @ Wh`` (``dzh``), both (N, G*H) in
    step order, and the previous states ``h_prev`` (N, T, H)."""
    n, t, f = x.shape
    rows = n * t
    dzx_r = xp.reshape(xp.stack(dzx, axis=1), (rows, dzx[0].shape[1]))
    dzh_r = dzx_r if dzh is dzx else xp.reshape(xp.stack(dzh, axis=1), (rows, dzh[0].shape[1]))
    grads = {
        "Wx": xp.matrix_transpose(xp.reshape(x, (rows, f))) @ dzx_r,
        "Wh": xp.matrix_transpose(xp.reshape(h_prev, (rows, h_prev.shape[2]))) @ dzh_r,
        "b": xp.sum(dzx_r, axis=0),
    }
    if not input_grad:
        return None, grads
    return xp.reshape(dzx_r @ xp.matrix_transpose(params["Wx"]), (n, t, f)), grads


def _output_grad_at(xp: Any, dy: Array, t: int, steps: int, sequences: bool) -> Array | None:
    """The part of ``dy`` that reaches the hidden state of step ``t`` from the output."""
    if sequences:
        return dy[:, t, :]
    return dy if t == steps - 1 else None


def _outputs(xp: Any, hs: list[Array], sequences: bool) -> Array:
    return xp.stack(hs, axis=1) if sequences else hs[-1]


# ------------------------------------------------------------------------------------------ lstm


def lstm_forward(xp: Any, params: Params, x: Array, sequences: bool) -> tuple[Array, Any]:
    n, steps, _ = x.shape
    hidden = params["Wh"].shape[0]
    zx = _project_inputs(xp, params, x)
    h = xp.zeros((n, hidden), dtype=x.dtype, device=device_of(x))
    c = h
    hs, cs, gates, tanh_cs = [h], [c], [], []
    for t in range(steps):
        z = zx[:, t, :] + h @ params["Wh"]
        sig, _ = sigmoid_forward(xp, z[:, : 3 * hidden])  # i, f, o
        g = xp.tanh(z[:, 3 * hidden :])
        i, f, o = sig[:, :hidden], sig[:, hidden : 2 * hidden], sig[:, 2 * hidden :]
        c = f * c + i * g
        tc = xp.tanh(c)
        h = o * tc
        hs.append(h)
        cs.append(c)
        gates.append(xp.concat([sig, g], axis=1))
        tanh_cs.append(tc)
    cache = (x, xp.stack(hs[:-1], axis=1), cs, gates, tanh_cs, sequences)
    return _outputs(xp, hs[1:], sequences), cache


def lstm_backward(
    xp: Any, params: Params, cache: Any, dy: Array, input_grad: bool = True
) -> tuple[Array | None, Params]:
    x, h_prev, cs, gates, tanh_cs, sequences = cache
    steps, hidden = len(gates), params["Wh"].shape[0]
    wh_t = xp.matrix_transpose(params["Wh"])
    dh = dc = None
    dzs: list[Array] = []
    for t in reversed(range(steps)):
        out = _output_grad_at(xp, dy, t, steps, sequences)
        dh = out if dh is None else (dh if out is None else dh + out)
        a, tc = gates[t], tanh_cs[t]
        i, f, o, g = (a[:, k * hidden : (k + 1) * hidden] for k in range(4))
        dct = dh * o * (1.0 - tc * tc)
        dc = dct if dc is None else dc + dct
        sig = a[:, : 3 * hidden]
        dsig = xp.concat([dc * g, dc * cs[t], dh * tc], axis=1) * sig * (1.0 - sig)
        dz = xp.concat([dsig, dc * i * (1.0 - g * g)], axis=1)
        dzs.append(dz)
        dc = dc * f
        dh = dz @ wh_t
    dzs.reverse()
    return _weight_grads(xp, params, x, h_prev, dzs, dzs, input_grad)


# ------------------------------------------------------------------------------------------- gru


def gru_forward(xp: Any, params: Params, x: Array, sequences: bool) -> tuple[Array, Any]:
    n, steps, _ = x.shape
    hidden = params["Wh"].shape[0]
    zx = _project_inputs(xp, params, x)
    h = xp.zeros((n, hidden), dtype=x.dtype, device=device_of(x))
    hs, gates, hh = [h], [], []
    for t in range(steps):
        zh = h @ params["Wh"]
        zt = zx[:, t, :]
        sig, _ = sigmoid_forward(xp, zt[:, : 2 * hidden] + zh[:, : 2 * hidden])  # z, r
        u, r = sig[:, :hidden], sig[:, hidden:]
        rh = r * zh[:, 2 * hidden :]
        cand = xp.tanh(zt[:, 2 * hidden :] + rh)
        h = u * h + (1.0 - u) * cand
        hs.append(h)
        gates.append(xp.concat([sig, cand], axis=1))
        hh.append(zh[:, 2 * hidden :])
    cache = (x, xp.stack(hs[:-1], axis=1), gates, hh, sequences)
    return _outputs(xp, hs[1:], sequences), cache


def gru_backward(
    xp: Any, params: Params, cache: Any, dy: Array, input_grad: bool = True
) -> tuple[Array | None, Params]:
    x, h_prev, gates, hh, sequences = cache
    steps, hidden = len(gates), params["Wh"].shape[0]
    wh_t = xp.matrix_transpose(params["Wh"])
    dh = None
    dzx: list[Array] = []
    dzh: list[Array] = []
    for t in reversed(range(steps)):
        out = _output_grad_at(xp, dy, t, steps, sequences)
        dh = out if dh is None else (dh if out is None else dh + out)
        a = gates[t]
        u, r, cand = a[:, :hidden], a[:, hidden : 2 * hidden], a[:, 2 * hidden :]
        dn = dh * (1.0 - u) * (1.0 - cand * cand)  # through the candidate's tanh
        du = dh * (h_prev[:, t, :] - cand) * u * (1.0 - u)
        dr = dn * hh[t] * r * (1.0 - r)
        dgates = xp.concat([du, dr], axis=1)
        dzx.append(xp.concat([dgates, dn], axis=1))  # of x_t @ Wx + b
        dzh.append(xp.concat([dgates, dn * r], axis=1))  # of h_{t-1} @ Wh
        dh = dh * u + dzh[-1] @ wh_t
    dzx.reverse()
    dzh.reverse()
    return _weight_grads(xp, params, x, h_prev, dzx, dzh, input_grad)


# ---------------------------------------------------------------------------------------- layers


class _Recurrent(Layer):
    """A cell of ``gate_count`` gates of width ``hidden`` run over the steps of each sample."""

    gate_count: ClassVar[int]
    label: ClassVar[str]
    fns: ClassVar[tuple[Any, Any]]
    """The layer's forward and backward functions."""

    def __init__(
        self, hidden: int, *, return_sequences: bool = False, name: str | None = None
    ) -> None:
        super().__init__(name)
        self.hidden = check_int(f"{self.label} hidden", hidden)
        self.return_sequences = check_bool(f"{self.label} return_sequences", return_sequences)

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 2:
            raise ShapeError("(T, features)", shape)
        return (shape[0], self.hidden) if self.return_sequences else (self.hidden,)

    def init_params(self, shape: Shape, rng: np.random.Generator, dtype: Any) -> Params:
        """Glorot uniform for each weight matrix, U(-a, a) with a = sqrt(6 / (fan_in +
        fan_out)) over its own (rows, gate_count * hidden); biases zero."""
        features, width = shape[1], self.gate_count * self.hidden

        def glorot(rows: int) -> np.ndarray:
            a = math.sqrt(6.0 / (rows + width))
            return rng.uniform(-a, a, (rows, width)).astype(dtype)

        return {"Wx": glorot(features), "Wh": glorot(self.hidden),
                "b": np.zeros(width, dtype=dtype)}

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        return type(self).fns[0](xp, params, x, self.return_sequences)

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        return type(self).fns[1](xp, params, cache, dy)

    def param_grads(self, xp: Any, params: Params, cache: Any, dy: Array) -> Params:
        return type(self).fns[1](xp, params, cache, dy, input_grad=False)[1]

    def flops(self, shape: Shape) -> float:
        steps, features = shape
        width = self.gate_count * self.hidden
        return steps * (2.0 * (features + self.hidden) * width + 10.0 * width)

    def config(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "return_sequences": self.return_sequences,
                "name": self.name}


class LSTM(_Recurrent):
    """Long short-term memory: ``i, f, o = sigmoid(.), g = tanh(.)`` of ``x_t @ Wx + h @ Wh + b``,
    ``c = f * c + i * g``, ``h = o * tanh(c)``; the forget gate's bias starts at 1.

    Input per sample (T, features); output the last ``h``, (hidden,), or every step's,
    (T, hidden), with ``return_sequences=True``. Parameters ``Wx`` (features, 4 * hidden),
    ``Wh`` (hidden, 4 * hidden) and ``b`` (4 * hidden,), gates in the order i, f, o, g.
    """

    kind = "lstm"
    label = "LSTM"
    gate_count = 4
    fns = (lstm_forward, lstm_backward)

    def init_params(self, shape: Shape, rng: np.random.Generator, dtype: Any) -> Params:
        params = super().init_params(shape, rng, dtype)
        params["b"][self.hidden : 2 * self.hidden] = 1.0
        return params


class GRU(_Recurrent):
    """Gated recurrent unit: ``z, r = sigmoid(x_t @ Wx + h @ Wh + b)`` (their parts),
    ``n = tanh(x_t @ Wx_n + b_n + r * (h @ Wh_n))``, ``h = z * h + (1 - z) * n``.

    The reset gate applies after the recurrent matmul (as in cuDNN and PyTorch). Input per
    sample (T, features); output (hidden,) or (T, hidden) as for :class:`LSTM`. Parameters
    ``Wx`` (features, 3 * hidden), ``Wh`` (hidden, 3 * hidden) and ``b`` (3 * hidden,), gates in
    the order z, r, n.
    """

    kind = "gru"
    label = "GRU"
    gate_count = 3
    fns = (gru_forward, gru_backward)
