"""Sequential, losses, optimizers, the serial trainer, files and bad input."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import pnngraph
from pnngraph.exceptions import (
    ConfigError,
    DataError,
    ModelFileError,
    ShapeError,
    TrainingError,
    UnknownNameError,
)
from pnngraph.nn import (
    SGD,
    Adam,
    Context,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Sequential,
    activation,
    batch_indices,
    get_loss,
    get_optimizer,
    train_serial,
)
from pnngraph.nn.losses import softmax_cross_entropy


def mlp(seed=0, dtype="float64"):
    return Sequential(
        [Dense(4, 16), ReLU(), Dense(16, 3)], input_shape=(4,), seed=seed, dtype=dtype
    )


def toy(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)
    return X, y


# ------------------------------------------------------------------------------- losses


def test_cross_entropy_is_shift_invariant_and_finite(backend):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, 5)
    xp = backend.xp
    v0, g0 = softmax_cross_entropy(xp, backend.asarray(logits), backend.asarray(labels), 5)
    v1, g1 = softmax_cross_entropy(xp, backend.asarray(logits + 1e4), backend.asarray(labels), 5)
    assert abs(float(backend.to_numpy(v0)) - float(backend.to_numpy(v1))) < 1e-9
    assert np.max(np.abs(backend.to_numpy(g0) - backend.to_numpy(g1))) < 1e-9
    big = np.full((2, 3), 1e4)
    big[0, 1] = -1e4
    v, g = softmax_cross_entropy(xp, backend.asarray(big), backend.asarray(np.array([1, 0])), 2)
    assert np.isfinite(backend.to_numpy(v)) and np.all(np.isfinite(backend.to_numpy(g)))
    assert float(backend.to_numpy(v)) > 1e3  # sample 0 is confidently wrong


def test_shard_losses_sum_to_global_mean():
    rng = np.random.default_rng(1)
    logits, labels = rng.standard_normal((10, 3)), rng.integers(0, 3, 10)
    whole, g_whole = softmax_cross_entropy(np, logits, labels, 10)
    parts = [
        softmax_cross_entropy(np, logits[s], labels[s], 10) for s in (slice(0, 3), slice(3, 10))
    ]
    assert np.isclose(sum(float(v) for v, _ in parts), float(whole), rtol=1e-14)
    np.testing.assert_allclose(np.concatenate([g for _, g in parts]), g_whole, rtol=1e-14)


# --------------------------------------------------------------------------- optimizers


def test_sgd_momentum_nesterov_and_weight_decay_by_hand():
    p = [{"w": np.array([1.0])}]
    g = [{"w": np.array([0.5])}]
    opt = SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.1)
    state = opt.init(p)
    p1, state = opt.update(p, g, state)
    # g' = 0.5 + 0.1 * 1 = 0.6; v = 0.6; step = g' + 0.9 v = 1.14; p = 1 - 0.114
    assert p1[0]["w"][0] == pytest.approx(0.886, abs=1e-15)
    p2, state = opt.update(p1, g, state)
    gp = 0.5 + 0.1 * 0.886
    v = 0.9 * 0.6 + gp
    assert p2[0]["w"][0] == pytest.approx(0.886 - 0.1 * (gp + 0.9 * v), abs=1e-15)
    assert state["step"] == 2


def test_adam_first_steps_by_hand():
    p = [{"w": np.array([1.0, -1.0])}]
    opt = Adam(0.01)
    state = opt.init(p)
    p1, state = opt.update(p, [{"w": np.array([0.3, -2.0])}], state)
    # the first bias-corrected step is lr * g / (|g| + eps): -lr * sign(g)
    np.testing.assert_allclose(p1[0]["w"], [0.99, -0.99], atol=1e-9)
    assert state["step"] == 1


def test_optimizer_state_pickles_and_splits():
    from pnngraph.nn.optimizers import join_states, split_state

    params = mlp().params
    state = Adam().init(params)
    back = pickle.loads(pickle.dumps(state))
    assert back["step"] == 0 and len(back["m"]) == 3
    parts = [split_state(state, 0, 1), split_state(state, 1, 3)]
    joined = join_states(parts)
    assert len(joined["m"]) == 3 and joined["step"] == 0


# ------------------------------------------------------------------------------ model


def test_build_checks_shapes_and_names_the_layer():
    with pytest.raises(ShapeError) as info:
        Sequential([Dense(4, 8), ReLU(), Dense(7, 2)], input_shape=(4,))
    err = info.value
    assert err.layer_index == 2 and err.layer_name == "dense2"
    assert err.expected == (7,) and err.got == (8,)
    assert "layer 2 (dense2)" in str(err) and "(7,)" in str(err) and "(8,)" in str(err)


def test_wrong_input_rank_is_a_shape_error():
    with pytest.raises(ShapeError, match="layer 0 \\(conv0\\)"):
        Sequential([Conv2D(1, 2, 3)], input_shape=(16,))
    model = mlp()
    with pytest.raises(ShapeError, match="expected input \\(4,\\), got \\(5,\\)"):
        model.predict(np.zeros((3, 5)))


def test_cnn_shapes_params_and_flops():
    model = Sequential(
        [Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(64, 10)],
        input_shape=(1, 8, 8),
    )
    assert model.shapes[-1] == (10,) and model.shapes[3] == (4, 4, 4)
    assert model.n_params == 4 * 9 + 4 + 64 * 10 + 10
    flops = model.layer_flops()
    assert flops[0] == 2 * 4 * 8 * 8 * 9 and flops[4] == 2 * 64 * 10
    # flat (N, 64) input is accepted for a (1, 8, 8) model
    assert model.predict(np.zeros((2, 64))).shape == (2, 10)


def test_same_seed_same_init_and_layer_names_unique():
    a, b = mlp(seed=5), mlp(seed=5)
    for pa, pb in zip(a.params, b.params, strict=True):
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])
    assert not np.array_equal(mlp(seed=6).params[0]["W"], a.params[0]["W"])
    with pytest.raises(ConfigError, match="unique"):
        Sequential([Dense(2, 2, name="a"), Dense(2, 2, name="a")])


def test_save_load_round_trip_is_bitwise(tmp_path):
    model = Sequential(
        [Conv2D(1, 2, 3), ReLU(), Flatten(), Dropout(0.2), Dense(2 * 4 * 4, 3)],
        input_shape=(1, 6, 6),
        seed=11,
        dtype="float32",
    )
    path = tmp_path / "m.npz"
    model.save(path)
    back = Sequential.load(path)
    assert back.config() == model.config()
    for pa, pb in zip(model.params, back.params, strict=True):
        for k in pa:
            assert pa[k].dtype == pb[k].dtype
            np.testing.assert_array_equal(pa[k], pb[k])


def test_a_failed_save_leaves_the_old_model_file_whole(tmp_path, monkeypatch):
    model = Sequential([Dense(3, 2)], input_shape=(3,), seed=1)
    path = tmp_path / "model.npz"
    model.save(path)
    before = path.read_bytes()

    def fail_midway(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        Sequential([Dense(3, 2)], input_shape=(3,), seed=2).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary file left


def test_loading_a_foreign_file_is_a_clear_error(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(ModelFileError, match="no pnngraph metadata"):
        Sequential.load(other)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="not an .npz"):
        Sequential.load(text)
    with pytest.raises(ModelFileError, match="no such file"):
        Sequential.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    meta = json.dumps(
        {
            "format": "pnngraph-model",
            "layers": [{"kind": "dense", "n_in": 2, "n_out": 2}],
            "input_shape": [2],
        }
    ).encode()
    np.savez(bad, __pnngraph__=np.frombuffer(meta, np.uint8), **{"param/0/W": np.zeros((3, 3))})
    with pytest.raises(ModelFileError, match="do not match"):
        Sequential.load(bad)


def test_models_layers_and_optimizers_pickle():
    for obj in (mlp(), Adam(0.1), SGD(0.1, momentum=0.5), get_loss("mse")):
        assert repr(pickle.loads(pickle.dumps(obj))) == repr(obj)


# --------------------------------------------------------------------------- dropout


def test_dropout_mask_is_independent_of_sharding():
    layer = Dropout(0.5)
    x = np.ones((10, 6))
    idx = np.arange(100, 110)
    whole, _ = layer.forward(np, {}, x, Context(True, 4, idx, seed=9, layer=2))
    parts = [
        layer.forward(np, {}, x[s], Context(True, 4, idx[s], seed=9, layer=2))[0]
        for s in (slice(0, 3), slice(3, 4), slice(4, 10))
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert set(np.unique(whole)) == {0.0, 2.0}
    assert 0.3 < np.mean(whole == 0) < 0.7
    other_step, _ = layer.forward(np, {}, x, Context(True, 5, idx, seed=9, layer=2))
    assert not np.array_equal(other_step, whole)
    other_layer, _ = layer.forward(np, {}, x, Context(True, 4, idx, seed=9, layer=3))
    assert not np.array_equal(other_layer, whole)
    evaluated, _ = layer.forward(np, {}, x, Context(False, 4, idx, seed=9))
    np.testing.assert_array_equal(evaluated, x)



def test_one_dropout_layer_serves_two_models_at_different_indices():
    shared = Dropout(0.5)
    first = Sequential([shared, Dense(6, 2)], input_shape=(6,))
    second = Sequential([Dense(6, 6), ReLU(), shared, Dense(6, 2)], input_shape=(6,))
    x, idx = np.ones((8, 6)), np.arange(8)
    alone = Sequential([Dropout(0.5), Dense(6, 2)], input_shape=(6,))
    ctx = Context(True, 1, idx, seed=3)
    # the mask is salted by the layer's index in the model that runs it, not by who built it last
    mask_first = first.forward(np, first.params[:1], x, ctx, 0, 1)[0]
    mask_alone = alone.forward(np, alone.params[:1], x, ctx, 0, 1)[0]
    np.testing.assert_array_equal(mask_first, mask_alone)
    mask_second = second.forward(np, second.params[2:3], x, ctx, 2, 3)[0]
    assert not np.array_equal(mask_first, mask_second)


# ------------------------------------------------------------------------------ trainer


def test_serial_trainer_is_deterministic_and_learns():
    X, y = toy()
    a = train_serial(mlp(), X, y, steps=40, batch_size=16, optimizer="sgd", lr=0.1, momentum=0.9)
    b = train_serial(mlp(), X, y, steps=40, batch_size=16, optimizer="sgd", lr=0.1, momentum=0.9)
    for pa, pb in zip(a.params, b.params, strict=True):
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])
    np.testing.assert_array_equal(a.losses, b.losses)
    assert a.losses[-5:].mean() < a.losses[:5].mean()
    assert a.opt_state["step"] == 40


def test_training_in_pieces_equals_one_run_bitwise():
    X, y = toy()
    kw = {"batch_size": 16, "optimizer": "adam", "lr": 0.01}
    whole = train_serial(mlp(), X, y, steps=9, **kw)
    first = train_serial(mlp(), X, y, steps=4, **kw)
    rest = train_serial(first.model, X, y, steps=5, start_step=4, opt_state=first.opt_state, **kw)
    for pa, pb in zip(whole.params, rest.params, strict=True):
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])
    np.testing.assert_array_equal(whole.losses, np.concatenate([first.losses, rest.losses]))


def test_serial_trainer_leaves_the_model_untouched():
    X, y = toy()
    model = mlp()
    before = model.params[0]["W"].copy()
    train_serial(model, X, y, steps=3, batch_size=8, lr=0.1)
    np.testing.assert_array_equal(model.params[0]["W"], before)


def test_emulated_backend_trains_like_numpy():
    X, y = toy()
    model = Sequential(
        [Dense(4, 8), Tanh := activation("tanh"), Dropout(0.3), Dense(8, 3)], input_shape=(4,)
    )
    assert Tanh.kind == "tanh"
    a = train_serial(model, X, y, steps=6, batch_size=20, optimizer="adam", lr=0.01)
    b = train_serial(
        model, X, y, steps=6, batch_size=20, optimizer="adam", lr=0.01, backend="emulated"
    )
    for pa, pb in zip(a.params, b.params, strict=True):
        for k in pa:
            np.testing.assert_allclose(pa[k], pb[k], rtol=1e-13, atol=1e-15)


def test_batches_cover_each_epoch_once():
    seen = np.concatenate([batch_indices(10, 4, 3, s) for s in range(3)])
    assert sorted(seen) == list(range(10))
    assert not np.array_equal(batch_indices(10, 4, 3, 0), batch_indices(10, 4, 3, 3))


@pytest.mark.slow
def test_digits_mlp_reaches_95_percent():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = d.data / 16.0, d.target
    order = np.random.default_rng(0).permutation(len(X))
    train, test = order[:1400], order[1400:]
    model = Sequential([Dense(64, 64), ReLU(), Dense(64, 10)], input_shape=(64,))
    result = train_serial(
        model, X[train], y[train], epochs=20, batch_size=32, optimizer="sgd", lr=0.1, momentum=0.9
    )
    assert result.model.evaluate(X[test], y[test])["accuracy"] >= 0.95


# ---------------------------------------------------------------------------- bad input


def test_error_labels_out_of_range():
    X, _ = toy(8)
    with pytest.raises(DataError, match="label 3 at index 2 is outside \\[0, 3\\)"):
        train_serial(mlp(), X, [0, 1, 3, 0, 1, 2, 0, 1], steps=1)


def test_error_labels_not_integer():
    X, _ = toy(4)
    with pytest.raises(DataError, match="integer class labels, got 1.5"):
        train_serial(mlp(), X, [0, 1.5, 1, 0], steps=1)
    with pytest.raises(DataError, match="integer class labels"):
        train_serial(mlp(), X, ["a", "b", "c", "d"], steps=1)


def test_error_nan_or_inf_in_inputs():
    X, y = toy(8)
    X[5, 2] = np.nan
    X[6, 0] = np.inf
    with pytest.raises(DataError, match="2 values are NaN or inf \\(first in sample 5\\)"):
        train_serial(mlp(), X, y, steps=1)


def test_error_empty_data():
    with pytest.raises(DataError, match="at least one sample"):
        train_serial(mlp(), np.zeros((0, 4)), np.zeros(0, int), steps=1)


def test_error_length_mismatch():
    X, y = toy(8)
    with pytest.raises(DataError, match="X has 8 samples but y has 7"):
        train_serial(mlp(), X, y[:7], steps=1)


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan")])
def test_error_non_positive_learning_rate(lr):
    X, y = toy(8)
    with pytest.raises(ConfigError, match="learning rate: expected a finite number > 0"):
        train_serial(mlp(), X, y, steps=1, lr=lr)


@pytest.mark.parametrize("bs", [0, -3, 2.5])
def test_error_non_positive_batch_size(bs):
    X, y = toy(8)
    with pytest.raises(ConfigError, match="batch_size: expected a positive integer"):
        train_serial(mlp(), X, y, steps=1, batch_size=bs)


def test_error_unknown_names():
    with pytest.raises(UnknownNameError, match="activation: expected one of 'gelu', 'relu'"):
        activation("swish")
    with pytest.raises(UnknownNameError, match="loss"):
        get_loss("hinge")
    with pytest.raises(UnknownNameError, match="optimizer: expected one of 'adam', 'adamw', 'sgd'"):
        get_optimizer("rmsprop")
    with pytest.raises(UnknownNameError, match="backend"):
        pnngraph.get_backend("tpu")


def test_error_steps_and_epochs():
    X, y = toy(8)
    with pytest.raises(ConfigError, match="exactly one of steps and epochs"):
        train_serial(mlp(), X, y)
    with pytest.raises(ConfigError, match="steps: expected a positive integer, got 0"):
        train_serial(mlp(), X, y, steps=0)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_error_nan_loss_names_the_step():
    X, y = toy(16)
    with pytest.raises(TrainingError, match="step \\d+: the loss became"):
        train_serial(mlp(), X * 1e200, y, steps=5, batch_size=8, lr=1e10)


def test_errors_are_value_errors_and_typed():
    with pytest.raises(ValueError):
        Dense(0, 3)
    with pytest.raises(ConfigError, match="Dropout rate"):
        Dropout(1.0)
    with pytest.raises(ConfigError, match="nesterov"):
        SGD(0.1, nesterov=True)
