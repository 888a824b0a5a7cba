"""Transformer layers: Embedding's gradient, stability properties, causality, dropout masks
under sharding, per-position cross-entropy, build-time shape errors, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from pnngraph.exceptions import DataError, ShapeError
from pnngraph.nn import (
    Context,
    Dense,
    Embedding,
    LayerNorm,
    MultiHeadSelfAttention,
    PositionalEmbedding,
    Sequential,
    SoftmaxCrossEntropy,
)
from tests.nn.test_gradients import CTX, numeric_grad, rel_error

V, T, D = 7, 5, 6


def language_model(dropout=0.0, seed=0):
    return Sequential([Embedding(V, D), PositionalEmbedding(T),
                       MultiHeadSelfAttention(2, causal=True, dropout=dropout), LayerNorm(),
                       Dense(D, V)], input_shape=(T,), seed=seed)


def tokens(rng, n):
    return rng.integers(0, V, (n, T)).astype(np.float64)


def run(backend, layer, params, x, ctx=CTX):
    p = {k: backend.asarray(v) for k, v in params.items()}
    y, cache = layer.forward(backend.xp, p, backend.asarray(x), ctx)
    return p, backend.to_numpy(y), cache


def test_embedding_gradient_matches_finite_differences(backend, rng):
    layer = Embedding(V, 3)
    params = layer.init_params((T,), rng, np.float64)
    x = tokens(rng, 4)
    x[0, :3] = 2.0  # a token repeated: its rows' gradients add up
    r = rng.standard_normal((4, T, 3))

    def loss() -> float:
        return float(np.sum(run(backend, layer, params, x)[1] * r))

    p, y, cache = run(backend, layer, params, x)
    np.testing.assert_array_equal(y, params["W"][x.astype(int)])
    dx, grads = layer.backward(backend.xp, p, cache, backend.asarray(r))
    assert not np.any(backend.to_numpy(dx)) and tuple(dx.shape) == x.shape
    assert rel_error(backend.to_numpy(grads["W"]), numeric_grad(loss, params["W"])) < 1e-6
    only = layer.param_grads(backend.xp, p, cache, backend.asarray(r))
    np.testing.assert_array_equal(backend.to_numpy(only["W"]), backend.to_numpy(grads["W"]))


def test_attention_param_grads_equal_backward(backend, rng):
    layer = MultiHeadSelfAttention(3, causal=True, dropout=0.3)
    params = layer.init_params((T, D), rng, np.float64)
    p, _, cache = run(backend, layer, params, rng.standard_normal((5, T, D)))  # CTX: 5 rows
    dy = backend.asarray(rng.standard_normal((5, T, D)))
    _, full = layer.backward(backend.xp, p, cache, dy)
    only = layer.param_grads(backend.xp, p, cache, dy)
    assert sorted(only) == sorted(full) == sorted(params)
    for k in full:
        np.testing.assert_array_equal(backend.to_numpy(only[k]), backend.to_numpy(full[k]))


@pytest.mark.parametrize("shape", [(T, D), (D,)])
def test_layer_norm_is_unchanged_by_a_large_shift_or_scale(backend, rng, shape):
    layer = LayerNorm()
    params = layer.init_params(shape, rng, np.float64)
    x = rng.standard_normal((4, *shape))
    _, y, _ = run(backend, layer, params, x)
    _, shifted, _ = run(backend, layer, params, x + 1e6)
    np.testing.assert_allclose(shifted, y, rtol=0, atol=1e-9)
    # scaled by 1e6, eps is 1e-17 of the variance: the output is the eps-free normalisation
    _, scaled, _ = run(backend, layer, params, x * 1e6)
    exact = (x - x.mean(axis=-1, keepdims=True)) / x.std(axis=-1, keepdims=True)
    np.testing.assert_allclose(scaled, exact, rtol=0, atol=1e-12)


def test_attention_is_exact_for_large_logits(backend, rng):
    """Scores of about 1e4 (where exp overflows without the max shift) make the softmax one-hot:
    each position attends to its highest-scoring key alone (hard attention, computed here)."""
    layer = MultiHeadSelfAttention(2, causal=True)
    params = layer.init_params((T, D), rng, np.float64)
    params["Wq"] = params["Wq"] * 1e4
    x = rng.standard_normal((3, T, D))
    _, y, cache = run(backend, layer, params, x)
    q, k, v = (backend.to_numpy(a) for a in cache[1:4])
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(D // 2)
    s = np.where(np.tril(np.ones((T, T), dtype=bool)), s, -np.inf)
    top = np.sort(s, axis=-1)
    assert np.abs(s[np.isfinite(s)]).max() > 1e3
    assert np.all((top[..., -1] - top[..., -2])[..., 1:] > 40)  # rows with two keys and more
    hard = np.take_along_axis(v, np.argmax(s, axis=-1)[..., None], axis=-2)  # (N, h, T, dh)
    c = np.swapaxes(hard, 1, 2).reshape(3, T, D)
    np.testing.assert_allclose(y, c @ params["Wo"] + params["bo"], rtol=0, atol=1e-12)


def test_causal_attention_does_not_look_ahead(rng):
    layer = MultiHeadSelfAttention(2, causal=True)
    params = layer.init_params((T, D), rng, np.float64)
    x = rng.standard_normal((2, T, D))
    later = x.copy()
    later[:, 3:] += rng.standard_normal((2, T - 3, D))
    y, _ = layer.forward(np, params, x, Context())
    y_later, _ = layer.forward(np, params, later, Context())
    np.testing.assert_array_equal(y[:, :3], y_later[:, :3])
    assert not np.allclose(y[:, 3:], y_later[:, 3:])


def test_attention_dropout_mask_follows_the_sample_not_the_shard(rng):
    layer = MultiHeadSelfAttention(2, dropout=0.5)
    params = layer.init_params((T, D), rng, np.float64)
    x = rng.standard_normal((6, T, D))
    index = np.arange(6) + 100
    ctx = Context(training=True, step=2, index=index, seed=3, layer=4)
    whole, cache = layer.forward(np, params, x, ctx)
    assert 0 < np.mean(cache[5] == 0) < 1  # some weights dropped, not all
    part, _ = layer.forward(np, params, x[2:5], Context(training=True, step=2, index=index[2:5],
                                                        seed=3, layer=4))
    np.testing.assert_array_equal(part, whole[2:5])
    other, _ = layer.forward(np, params, x, Context(training=True, step=3, index=index, seed=3,
                                                    layer=4))
    assert not np.array_equal(other, whole)
    evaluation, _ = layer.forward(np, params, x, Context())
    no_dropout, _ = MultiHeadSelfAttention(2).forward(np, params, x, Context(training=True))
    np.testing.assert_array_equal(evaluation, no_dropout)


def test_per_position_cross_entropy_matches_finite_differences_and_sums_over_shards(backend,
                                                                                     rng):
    n, n_global, c = 4, 10, 5
    out = rng.standard_normal((n, T, c)) * 3
    t = rng.integers(0, c, (n, T))
    loss_fn = SoftmaxCrossEntropy(label_smoothing=0.1)

    def value(o, labels, n_all) -> float:
        v, _ = loss_fn.value_and_grad(backend.xp, backend.asarray(o), backend.asarray(labels),
                                      n_all)
        return float(backend.to_numpy(v))

    _, g = loss_fn.value_and_grad(backend.xp, backend.asarray(out), backend.asarray(t), n_global)
    assert tuple(g.shape) == out.shape
    assert rel_error(backend.to_numpy(g), numeric_grad(lambda: value(out, t, n_global), out)) \
        < 1e-6
    # the same loss as one (sample, position) per row, averaged over n_global * T rows
    flat = value(out.reshape(-1, c), t.reshape(-1), n_global * T)
    assert value(out, t, n_global) == pytest.approx(flat, rel=1e-14)
    shards = value(out[:1], t[:1], n) + value(out[1:], t[1:], n)
    assert shards == pytest.approx(value(out, t, n), rel=1e-14)


def test_sequence_labels_are_checked_naming_sample_and_position():
    loss_fn = SoftmaxCrossEntropy()
    y = np.zeros((3, T), dtype=int)
    assert loss_fn.check_targets(y, (T, V)).shape == (3, T)
    y[2, 4] = V
    with pytest.raises(DataError, match=rf"label {V} at sample 12, position 4 is outside"):
        loss_fn.check_targets(y, (T, V), first=10)
    with pytest.raises(DataError, match=r"got 0.5 at sample 1, position 0"):
        loss_fn.check_targets(np.where(np.arange(3)[:, None] == 1, 0.5, y * 0.0), (T, V))
    with pytest.raises(DataError, match=rf"expected class labels of shape \(n_samples, {T}\)"):
        loss_fn.check_targets(np.zeros(3, dtype=int), (T, V))


def test_embedding_refuses_bad_token_ids_before_training():
    model = language_model()
    X = np.zeros((4, T))
    for bad, shown in ((V, f"{float(V)!r}"), (-1, "-1.0"), (2.5, "2.5")):
        X[3, 2] = bad
        with pytest.raises(DataError, match=rf"got {shown} in sample 3 at position 2"):
            model.check_inputs(X)


def test_build_time_shape_errors_name_both_numbers():
    with pytest.raises(ShapeError, match=r"T <= max_len 4, got \(5, 6\)"):
        Sequential([Embedding(V, D), PositionalEmbedding(4)], input_shape=(T,))
    with pytest.raises(ShapeError, match=r"d a multiple of heads 4, got \(5, 6\)"):
        Sequential([Embedding(V, D), MultiHeadSelfAttention(4)], input_shape=(T,))
    with pytest.raises(ShapeError, match=r"expected input \(\.\.\., 5\), got \(5, 6\)"):
        Sequential([Embedding(V, D), Dense(5, 2)], input_shape=(T,))


def test_language_model_round_trips_through_a_file_bitwise(tmp_path, rng):
    model = language_model(dropout=0.1, seed=3)
    model.params = [{k: v + rng.uniform(-0.1, 0.1, v.shape) for k, v in p.items()}
                    for p in model.params]
    model.save(tmp_path / "lm.npz")
    loaded = Sequential.load(tmp_path / "lm.npz")
    assert loaded.config() == model.config()
    X = tokens(rng, 9)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.predict(X).shape == (9, T, V)


def test_evaluate_reports_per_token_accuracy(rng):
    model = language_model()
    X = tokens(rng, 8)
    y = np.argmax(model.predict(X), axis=-1)
    y[0, :2] = (y[0, :2] + 1) % V  # two of 8 * T tokens wrong
    result = model.evaluate(X, y)
    assert result["accuracy"] == pytest.approx(1 - 2 / (8 * T))
    assert np.isfinite(result["loss"])
