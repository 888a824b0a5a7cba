"""LSTM, GRU, AvgPool2D and GlobalAvgPool2D: finite differences on numpy and the emulated
device, an independent per-sample reference for the cells, and a save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest

from pnngraph.nn import (
    GRU,
    LSTM,
    AvgPool2D,
    Context,
    Conv2D,
    Dense,
    GlobalAvgPool2D,
    ReLU,
    Sequential,
)
from tests.nn.test_gradients import CTX, check_model_gradients, numeric_grad, rel_error

LAYERS = {
    "lstm-last-t1": (lambda: LSTM(3), (1, 2)),
    "lstm-last-t4": (lambda: LSTM(3), (4, 2)),
    "lstm-sequences-t1": (lambda: LSTM(3, return_sequences=True), (1, 2)),
    "lstm-sequences-t4": (lambda: LSTM(3, return_sequences=True), (4, 2)),
    "gru-last-t1": (lambda: GRU(3), (1, 2)),
    "gru-last-t4": (lambda: GRU(3), (4, 2)),
    "gru-sequences-t4": (lambda: GRU(2, return_sequences=True), (4, 3)),
    "avgpool": (lambda: AvgPool2D(2), (2, 4, 4)),
    "avgpool-stride-overlap": (lambda: AvgPool2D(3, stride=2), (1, 7, 6)),
    "globalavgpool": (GlobalAvgPool2D, (2, 3, 5)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_gradients_match_finite_differences(name, backend, rng):
    make, in_shape = LAYERS[name]
    layer = make()
    out_shape = layer.output_shape(in_shape)
    params = layer.init_params(in_shape, rng, np.float64)
    params = {k: v + rng.uniform(-0.5, 0.5, v.shape) for k, v in params.items()}
    n = 5
    x = rng.standard_normal((n, *in_shape))
    r = rng.standard_normal((n, *out_shape))
    xp = backend.xp

    def loss() -> float:
        p = {k: backend.asarray(v) for k, v in params.items()}
        y, _ = layer.forward(xp, p, backend.asarray(x), CTX)
        return float(np.sum(backend.to_numpy(y) * r))

    p = {k: backend.asarray(v) for k, v in params.items()}
    y, cache = layer.forward(xp, p, backend.asarray(x), CTX)
    assert tuple(y.shape) == (n, *out_shape)
    dx, grads = layer.backward(xp, p, cache, backend.asarray(r))
    assert sorted(grads) == sorted(params)
    assert rel_error(backend.to_numpy(dx), numeric_grad(loss, x)) < 1e-6
    only = layer.param_grads(xp, p, cache, backend.asarray(r))
    for k in params:
        assert rel_error(backend.to_numpy(grads[k]), numeric_grad(loss, params[k])) < 1e-6
        assert np.array_equal(backend.to_numpy(only[k]), backend.to_numpy(grads[k]))


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def lstm_reference(p, x):
    """One sample at a time, one gate at a time, as the papers write it."""
    hidden = p["Wh"].shape[0]
    Wx, Wh, b = (np.split(p[k], 4, axis=-1) for k in ("Wx", "Wh", "b"))
    out = []
    for seq in x:
        h, c, hs = np.zeros(hidden), np.zeros(hidden), []
        for xt in seq:
            i, f, o, g = (xt @ Wx[k] + h @ Wh[k] + b[k] for k in range(4))
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            hs.append(h)
        out.append(hs)
    return np.array(out)


def gru_reference(p, x):
    hidden = p["Wh"].shape[0]
    Wx, Wh, b = (np.split(p[k], 3, axis=-1) for k in ("Wx", "Wh", "b"))
    out = []
    for seq in x:
        h, hs = np.zeros(hidden), []
        for xt in seq:
            z = sigmoid(xt @ Wx[0] + b[0] + h @ Wh[0])
            r = sigmoid(xt @ Wx[1] + b[1] + h @ Wh[1])
            n = np.tanh(xt @ Wx[2] + b[2] + r * (h @ Wh[2]))
            h = z * h + (1 - z) * n
            hs.append(h)
        out.append(hs)
    return np.array(out)


@pytest.mark.parametrize(("cls", "reference"), [(LSTM, lstm_reference), (GRU, gru_reference)])
def test_cells_equal_a_per_sample_reference(cls, reference, backend, rng):
    x = rng.standard_normal((3, 5, 2)) * 2
    layer = cls(4, return_sequences=True)
    params = layer.init_params((5, 2), rng, np.float64)
    params["b"] = params["b"] + rng.standard_normal(params["b"].shape)
    y, _ = layer.forward(backend.xp, backend.tree_asarray(params), backend.asarray(x), Context())
    expected = reference(params, x)
    np.testing.assert_allclose(backend.to_numpy(y), expected, rtol=1e-12, atol=1e-14)
    last, _ = cls(4).forward(backend.xp, backend.tree_asarray(params), backend.asarray(x),
                             Context())
    np.testing.assert_array_equal(backend.to_numpy(last), backend.to_numpy(y)[:, -1])


def test_lstm_initialisation_is_glorot_with_forget_bias_one(rng):
    p = LSTM(64).init_params((10, 32), rng, np.float32)
    assert {k: v.shape for k, v in p.items()} == {"Wx": (32, 256), "Wh": (64, 256), "b": (256,)}
    assert all(v.dtype == np.float32 for v in p.values())
    assert np.all(p["b"][64:128] == 1.0) and not np.any(np.delete(p["b"], np.s_[64:128]))
    assert np.max(np.abs(p["Wx"])) <= np.sqrt(6 / (32 + 256))
    assert np.max(np.abs(p["Wh"])) <= np.sqrt(6 / (64 + 256))
    assert np.std(p["Wx"]) > 0.5 * np.sqrt(6 / (32 + 256)) / np.sqrt(3)


def test_a_whole_recurrent_model_gradient_matches_finite_differences(backend, rng):
    """The chain rule through stacked cells: sequences out of one, last state out of the other."""
    model = Sequential([LSTM(3, return_sequences=True), GRU(3), Dense(3, 2)],
                       input_shape=(3, 2), seed=5)
    check_model_gradients(model, rng.standard_normal((4, 3, 2)), np.array([0, 1, 1, 0]), backend)


MODELS = {
    "recurrent": (lambda: Sequential(
        [LSTM(6, return_sequences=True), GRU(5, return_sequences=True), LSTM(4), Dense(4, 3)],
        input_shape=(7, 2), seed=1), (7, 2)),
    "pooling": (lambda: Sequential(
        [Conv2D(1, 3, 3, padding=1), ReLU(), AvgPool2D(2), AvgPool2D(2, stride=1),
         GlobalAvgPool2D(), Dense(3, 2)], input_shape=(1, 6, 6), seed=1), (1, 6, 6)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_load_round_trip_is_bitwise(name, tmp_path, rng):
    make, shape = MODELS[name]
    model = make()
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz")
    assert [layer.config() for layer in loaded.layers] == [
        layer.config() for layer in model.layers
    ]
    assert repr(loaded.layers) == repr(model.layers)
    x = rng.standard_normal((5, *shape))
    assert np.array_equal(loaded.predict(x), model.predict(x))
