"""BatchNorm: finite differences of its training forward/backward, evaluation with the running
statistics, files, and the sync points that data parallelism resumes at."""

from __future__ import annotations

import numpy as np
import pytest

from pnngraph.exceptions import ConfigError, ShapeError
from pnngraph.nn import BatchNorm, Context, Conv2D, Dense, Flatten, ReLU, Residual, Sequential
from pnngraph.nn.batchnorm import BatchSync, Pending, combine, moments
from pnngraph.testing import check_gradients


@pytest.mark.parametrize("shape", [(5,), (3, 4, 4)], ids=["features", "channels"])
def test_training_gradients_match_finite_differences(backend, shape):
    errors = check_gradients(BatchNorm(), shape, backend=backend.name, batch=4)
    assert sorted(errors) == ["beta", "gamma", "x"]
    assert max(errors.values()) < 1e-6


@pytest.mark.parametrize("shape", [(5,), (3, 4, 4)], ids=["features", "channels"])
def test_training_output_is_normalised_per_feature_or_channel(rng, shape):
    layer = BatchNorm()
    x = rng.standard_normal((6, *shape)) * 3.0 + 2.0
    params = layer.init_params(shape, rng, np.float64)
    y, _ = layer.forward(np, params, x, Context(training=True))
    axes = (0,) if len(shape) == 1 else (0, 2, 3)
    np.testing.assert_allclose(np.mean(y, axis=axes), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.var(y, axis=axes), np.var(x, axis=axes) /
                               (np.var(x, axis=axes) + layer.eps), rtol=1e-12)


def test_moments_of_shards_combine_to_the_whole_batch(rng):
    x = rng.standard_normal((11, 3, 2, 2)) + 100.0
    whole = moments(np, x, (0, 2, 3))
    parts = combine(*(moments(np, x[lo:hi], (0, 2, 3)) for lo, hi in ((0, 2), (2, 7), (7, 11))))
    assert parts[1] == whole[1] == 44
    np.testing.assert_allclose(parts[2], whole[2], rtol=1e-14)
    np.testing.assert_allclose(parts[3], whole[3], rtol=1e-12)


def test_a_sync_point_waits_then_resumes_from_its_memo(rng):
    model = Sequential([Dense(4), BatchNorm(), ReLU(), Dense(2)], input_shape=(3,))
    x = rng.standard_normal((5, 3))
    sync = BatchSync()
    with pytest.raises(Pending) as pending:
        model.forward(np, model.params, x, Context(training=True, sync=sync))
    assert len(sync.forward_memo) == 1  # the first Dense finished; BatchNorm waits
    resumed = BatchSync([pending.value.partial], sync.forward_memo)
    out, _ = model.forward(np, model.params, x, Context(training=True, sync=resumed))
    plain, _ = model.forward(np, model.params, x, Context(training=True))
    np.testing.assert_array_equal(out, plain)


def test_evaluation_uses_the_running_statistics(rng):
    model = Sequential([Dense(3), BatchNorm(), Dense(2)], input_shape=(4,))
    x = rng.standard_normal((7, 4))
    model.buffers[1] = {"running_mean": np.array([1.0, -2.0, 0.5]),
                        "running_var": np.array([4.0, 0.25, 1.0])}
    h = x @ model.params[0]["W"] + model.params[0]["b"]
    normed = (h - model.buffers[1]["running_mean"]) / np.sqrt(model.buffers[1]["running_var"]
                                                               + 1e-5)
    expected = normed @ model.params[2]["W"] + model.params[2]["b"]
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-12)
    assert model.predict(x[:1]).shape == (1, 2)  # one sample is fine when evaluating


def test_predict_on_the_emulated_device_equals_numpy(rng):
    model = Sequential([Conv2D(2, 3, padding=1), BatchNorm(), ReLU(), Flatten(), Dense(2)],
                       input_shape=(1, 4, 4))
    model.buffers[1] = {"running_mean": np.array([0.1, -0.2]), "running_var": np.array([2.0, 3.0])}
    x = rng.standard_normal((3, 1, 4, 4))
    np.testing.assert_allclose(model.predict(x, backend="emulated"), model.predict(x),
                               rtol=1e-12)


def test_save_and_load_keep_parameters_and_running_statistics_bitwise(tmp_path, rng):
    model = Sequential([Conv2D(2, 3), BatchNorm(momentum=0.2, eps=1e-3),
                        Residual([Conv2D(2, 3, padding=1), BatchNorm()]), Flatten(), Dense(2)],
                       input_shape=(1, 5, 5))
    for layer in (1, 2):
        model.buffers[layer] = {k: rng.standard_normal(v.shape) ** 2
                                for k, v in model.buffers[layer].items()}
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz")
    assert sorted(loaded.buffers[2]) == ["0.1.running_mean", "0.1.running_var"]
    x = rng.standard_normal((4, 1, 5, 5))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.layers[1].config() == model.layers[1].config()
    for a, b in zip(loaded.buffers, model.buffers, strict=True):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("bad", [{"momentum": 0.0}, {"momentum": 1.5}, {"eps": 0.0},
                                 {"eps": -1.0}])
def test_bad_options_are_refused(bad):
    with pytest.raises(ConfigError, match="BatchNorm"):
        BatchNorm(**bad)


def test_a_sequence_input_is_refused():
    with pytest.raises(ShapeError, match="channels"):
        Sequential([BatchNorm()], input_shape=(3, 4))
