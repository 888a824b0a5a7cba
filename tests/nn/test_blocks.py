"""Blocks (Residual, Parallel), Keras-style shape inference and layers of one's own: gradients
against finite differences, files, and every strategy against the serial trainer."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from pnngraph import DataParallel, build, register_layer, train_serial
from pnngraph.exceptions import ConfigError, ShapeError, UnknownNameError
from pnngraph.nn import (
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    MaxPool2D,
    Parallel,
    ReLU,
    Residual,
    Sequential,
    Tanh,
)
from pnngraph.testing import check_gradients, check_layer
from tests.graph.conftest import max_rel_diff

BLOCKS = {
    "residual": (lambda: Residual([Dense(4), Tanh(), Dense(4)]), (4,)),
    "residual-dropout": (lambda: Residual([Dense(4), Dropout(0.3), Dense(4)]), (4,)),
    "residual-projection": (lambda: Residual([Dense(6), Tanh()], shortcut=[Dense(6)]), (4,)),
    "parallel-add-3": (lambda: Parallel([[Dense(3)], [Tanh(), Dense(3)], [Dense(3)]]), (3,)),
    "parallel-concat": (lambda: Parallel([[Dense(2)], [], [Tanh(), Dense(3)]], merge="concat"),
                        (3,)),
    "nested": (lambda: Residual([Residual([Dense(3), Tanh()]), Dropout(0.2), Dense(3)]), (3,)),
    "conv-residual": (lambda: Residual([Conv2D(2, 3, padding=1), ReLU(), Conv2D(2, 3, padding=1)]),
                      (2, 4, 4)),
    "conv-concat-channels": (lambda: Parallel([[Conv2D(1, 1)], [Conv2D(2, 3, padding=1)]],
                                              merge="concat"), (2, 3, 3)),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_gradients_match_finite_differences(name, backend):
    make, shape = BLOCKS[name]
    check_gradients(make(), shape, backend=backend.name)


def test_stochastic_layers_in_blocks_draw_their_own_masks():
    block = Parallel([[Dropout(0.5)], [Dropout(0.5)]], merge="concat")
    model = Sequential([block], input_shape=(64,))
    from pnngraph.nn import Context

    y, _ = model.forward(np, model.params, np.ones((4, 64)),
                         Context(training=True, index=np.arange(4)))
    left, right = y[:, :64], y[:, 64:]
    assert block.stochastic
    assert not np.array_equal(left, right)  # the two branches' masks differ
    # a row's mask depends on its global index only: a shard of rows 2..3 draws the same
    part, _ = model.forward(np, model.params, np.ones((2, 64)),
                            Context(training=True, index=np.arange(2, 4)))
    assert np.array_equal(part, y[2:])


def test_blocks_save_load_and_rebuild_identically(tmp_path):
    model = resnet_mlp()
    model.save(tmp_path / "m.npz")
    again = Sequential.load(tmp_path / "m.npz")
    assert again.config() == model.config()
    X = np.random.default_rng(0).standard_normal((7, 6))
    assert np.array_equal(again.predict(X), model.predict(X))
    assert "Residual([Dense(" in repr(again)


def resnet_mlp():
    return Sequential([Dense(8), Residual([Dense(8), Tanh(), Dropout(0.25), Dense(8)]),
                       Residual([Dense(12), Tanh()], shortcut=[Dense(12)]),
                       Parallel([[Dense(3)], [Tanh(), Dense(3)]], merge="concat")],
                      input_shape=(6,))


def test_bad_blocks_are_refused_by_name():
    with pytest.raises(ShapeError, match=r"layer 0 \(parallel0\).*branch 1 of parallel0 must "
                                         r"give the shape of branch 0"):
        Sequential([Parallel([[Dense(3)], [Dense(2)]])], input_shape=(4,))
    with pytest.raises(ShapeError, match=r"in branch 0, layer 0 \(dense0\) of residual0"):
        Sequential([Residual([Dense(3, 3)])], input_shape=(4,))
    with pytest.raises(ShapeError, match="must match branch 0 on every axis but 0"):
        Sequential([Parallel([[Conv2D(2, 1)], [Conv2D(2, 3)]], merge="concat")],
                   input_shape=(1, 5, 5))
    with pytest.raises(UnknownNameError, match="merge"):
        Parallel([[Dense(2)]], merge="mul")
    with pytest.raises(ConfigError, match=r"Residual layers: expected a list of layers"):
        Residual(Dense(2))
    with pytest.raises(ConfigError, match=r"Parallel branches\[0\]\[1\]: expected a pnngraph"):
        Parallel([[Dense(2), "relu"]])


# ------------------------------------------------------------------------- shape inference


def test_dense_and_conv_infer_their_input_size():
    inferred = Sequential([Conv2D(4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(16),
                           ReLU(), Dense(3)], input_shape=(2, 6, 6), seed=5)
    explicit = Sequential([Conv2D(2, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(),
                           Dense(36, 16), ReLU(), Dense(16, 3)], input_shape=(2, 6, 6), seed=5)
    assert inferred.config() == explicit.config()
    for a, b in zip(inferred.params, explicit.params, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in b)
    assert Dense(n_out=4).n_out == 4 and Dense(n_in=3, n_out=4).n_in == 3
    unbiased = Sequential([Conv2D(2, 3, bias=False), Flatten(), Dense(2, bias=False)],
                          input_shape=(1, 3, 3))
    assert [sorted(p) for p in unbiased.params] == [["W"], [], ["W"]]
    assert Sequential.from_config(unbiased.config()).config() == unbiased.config()
    with pytest.raises(ConfigError, match="Dense bias: expected True or False, got 0"):
        Dense(2, bias=0)
    assert Conv2D(in_channels=1, out_channels=2, kernel_size=3).in_channels == 1
    with pytest.raises(ShapeError, match=r"layer 1 \(dense1\): expected input \(5,\), got \(4,\)"):
        Sequential([Dense(4), Dense(5, 2)], input_shape=(3,))
    assert Sequential([Dense(4)], input_shape=(2, 3)).output_shape == (2, 4)  # per position
    with pytest.raises(ConfigError, match=r"Conv2D sizes: expected \(out_channels, kernel_size\)"):
        Conv2D(3)
    with pytest.raises(ConfigError, match="Dense n_out"):
        Dense()


# ------------------------------------------------------------------------- layers of one's own


@register_layer
class Scale(Layer):
    """``y = x * s`` with a learned per-feature ``s`` (a layer of a user's own)."""

    kind = "test-scale"

    def init_params(self, shape, rng, dtype):
        return {"s": rng.uniform(0.5, 1.5, shape[-1:]).astype(dtype)}

    def forward(self, xp, params, x, ctx):
        return x * params["s"], x

    def backward(self, xp, params, cache, dy):
        return dy * params["s"], {"s": xp.sum(dy * cache, axis=0)}


class Unregistered(Scale):
    kind = "test-unregistered"


class WrongGradient(Scale):
    kind = "test-wrong"

    def backward(self, xp, params, cache, dy):
        return dy[:, :1], {"s": xp.sum(dy * cache, axis=0)}


def test_a_registered_layer_trains_saves_and_loads(tmp_path):
    check_gradients(Scale(), (3,))
    model = Sequential([Dense(3), Scale(), Dense(2)], input_shape=(3,))
    X = np.random.default_rng(1).standard_normal((20, 3))
    y = (X[:, 0] > 0).astype(int)
    result = train_serial(model, X, y, steps=3, batch_size=10, lr=0.1)
    graph = build(model, (X, y), strategy=DataParallel([1, 2]), steps=3, batch_size=10, lr=0.1)
    (parallel,) = dask.compute(graph, scheduler="sync")
    assert max_rel_diff(parallel.params, result.params) <= 1e-12
    trained = result.model
    trained.save(tmp_path / "m.npz")
    assert np.array_equal(Sequential.load(tmp_path / "m.npz").predict(X), trained.predict(X))


def test_an_unregistered_layer_is_refused_before_a_file_is_written(tmp_path):
    model = Sequential([Residual([Unregistered()]), Dense(2)], input_shape=(3,))
    with pytest.raises(ConfigError, match=r"layer 0 \(residual0\) branch 0 layer 0 "
                                          r"\(test-unregistered0\): Unregistered.kind: "
                                          r"expected a kind registered with "
                                          r"pnngraph.register_layer"):
        model.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
    config = model.config()
    config["layers"][0]["layers"][0]["kind"] = "test-unknown"
    with pytest.raises(ConfigError, match="register it with pnngraph.register_layer"):
        Sequential.from_config(config)


def test_a_registered_layer_with_wrong_backward_shapes_is_refused_at_build():
    register_layer(WrongGradient)
    with pytest.raises(ConfigError, match=r"layer 1 \(test-wrong1\) backward: expected an input "
                                          r"gradient of the input's shape \(2, 3\), got \(2, 1\)"):
        Sequential([Dense(3), WrongGradient()], input_shape=(2,))


class OffByOnePercent(Scale):
    kind = "test-off"

    def backward(self, xp, params, cache, dy):
        return dy * params["s"] * 1.01, {"s": xp.sum(dy * cache, axis=0)}


def test_check_gradients_names_the_arrays_that_differ():
    with pytest.raises(AssertionError, match=r"OffByOnePercent 'test-off': gradients differ "
                                             r"from finite differences by more than 1e-06: "
                                             r"x 9\.90e-03$"):
        check_gradients(OffByOnePercent(), (3,))
    errors = check_gradients(OffByOnePercent(), (3,), tol=None)
    assert errors["x"] > 1e-3 and errors["s"] < 1e-6


def test_registering_is_checked():
    with pytest.raises(ConfigError, match="register_layer: expected a subclass"):
        register_layer(int)

    class NoKind(Layer):
        pass

    with pytest.raises(ConfigError, match="NoKind.kind: expected a class attribute"):
        register_layer(NoKind)

    class Clash(Layer):
        kind = "dense"

    with pytest.raises(ConfigError, match=r"Clash.kind: expected a kind no other layer has "
                                          r"\('dense' is pnngraph.nn.layers.Dense\)"):
        register_layer(Clash)
    check_layer(Scale(), (4,))
