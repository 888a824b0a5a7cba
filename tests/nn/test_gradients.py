"""Every layer and loss against float64 central finite differences, numpy and emulated device."""

from __future__ import annotations

import numpy as np
import pytest

from pnngraph.nn import (
    GELU,
    Context,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LayerNorm,
    MaxPool2D,
    MultiHeadSelfAttention,
    PositionalEmbedding,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from pnngraph.nn.losses import mean_squared_error, softmax_cross_entropy
from pnngraph.testing import check_gradients, numeric_gradient
from pnngraph.testing import relative_error as rel_error

H = 1e-6
CTX = Context(training=True, step=3, index=np.arange(5) + 40, seed=7)


def numeric_grad(f, x: np.ndarray) -> np.ndarray:
    """Central differences of scalar ``f`` at every element of ``x`` (float64)."""
    return numeric_gradient(f, x, H)


def away_from_kinks(rng, shape):
    """Values with |v| >= 0.1 so ReLU's kink is never crossed by a step of H."""
    v = rng.uniform(0.1, 1.0, shape)
    return v * rng.choice([-1.0, 1.0], shape)


LAYERS = {
    "dense": (lambda: Dense(4, 3), (4,)),
    "dense-glorot": (lambda: Dense(3, 5, init="glorot"), (3,)),
    "relu": (ReLU, (6,)),
    "tanh": (Tanh, (6,)),
    "sigmoid": (Sigmoid, (6,)),
    "gelu": (GELU, (6,)),
    "flatten": (Flatten, (2, 3, 2)),
    "dropout": (lambda: Dropout(0.4), (7,)),
    "conv": (lambda: Conv2D(2, 3, 3), (2, 5, 5)),
    "conv-stride-pad": (lambda: Conv2D(2, 2, (3, 2), stride=2, padding=1), (2, 6, 5)),
    "conv-1x1": (lambda: Conv2D(3, 2, 1), (3, 3, 3)),
    "conv-no-bias": (lambda: Conv2D(2, 3, padding=1, bias=False), (2, 4, 4)),
    "dense-no-bias": (lambda: Dense(3, bias=False), (4,)),
    "maxpool": (lambda: MaxPool2D(2), (2, 4, 4)),
    "maxpool-stride-overlap": (lambda: MaxPool2D(3, stride=2), (1, 7, 6)),
    "dense-per-position": (lambda: Dense(4, 3), (5, 4)),
    "layernorm": (LayerNorm, (6,)),
    "layernorm-per-position": (LayerNorm, (3, 4)),
    "positional": (lambda: PositionalEmbedding(6), (4, 3)),
    "attention": (lambda: MultiHeadSelfAttention(2), (4, 6)),
    "attention-causal-dropout": (lambda: MultiHeadSelfAttention(3, causal=True, dropout=0.3),
                                 (5, 6)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_gradients_match_finite_differences(name, backend, rng):
    """pnngraph.testing.check_gradients, the check users run on layers of their own."""
    make, in_shape = LAYERS[name]
    inputs = None
    if name.startswith("maxpool"):
        # distinct values, spaced far more than H apart, so every window has a strict maximum
        inputs = rng.permutation(5 * int(np.prod(in_shape))).reshape((5, *in_shape)) * 0.01
    errors = check_gradients(make(), in_shape, backend=backend.name, batch=5, inputs=inputs,
                             ctx=CTX, h=H, tol=1e-6)
    assert "x" in errors and len(errors) == 1 + len(make().init_params(in_shape, rng, np.float64))


@pytest.mark.parametrize("which", ["cross_entropy", "mse"])
def test_loss_gradients_match_finite_differences(which, backend, rng):
    n, c, n_global = 6, 4, 10  # a shard of 6 samples of a global batch of 10
    out = rng.standard_normal((n, c)) * 3
    if which == "cross_entropy":
        fn, t = softmax_cross_entropy, rng.integers(0, c, n)
    else:
        fn, t = mean_squared_error, rng.standard_normal((n, c))

    def loss() -> float:
        v, _ = fn(backend.xp, backend.asarray(out), backend.asarray(t), n_global)
        return float(backend.to_numpy(v))

    _, g = fn(backend.xp, backend.asarray(out), backend.asarray(t), n_global)
    assert rel_error(backend.to_numpy(g), numeric_grad(loss, out)) < 1e-6


def check_model_gradients(model, x, labels, backend) -> None:
    """The chain rule across ``model``'s layers, through Sequential.backward and a softmax
    cross-entropy, against finite differences: the input and every parameter."""
    xp = backend.xp

    def loss() -> float:
        out, _ = model.forward(xp, backend.tree_asarray(model.params), backend.asarray(x),
                               Context())
        v, _ = softmax_cross_entropy(xp, out, backend.asarray(labels), len(labels))
        return float(backend.to_numpy(v))

    params = backend.tree_asarray(model.params)
    out, caches = model.forward(xp, params, backend.asarray(x), Context())
    _, dout = softmax_cross_entropy(xp, out, backend.asarray(labels), len(labels))
    dx, grads = model.backward(xp, params, caches, dout)
    assert rel_error(backend.to_numpy(dx), numeric_grad(loss, x)) < 1e-6
    for layer_params, layer_grads in zip(model.params, grads, strict=True):
        for k, v in layer_params.items():
            assert rel_error(backend.to_numpy(layer_grads[k]), numeric_grad(loss, v)) < 1e-6


def test_whole_cnn_gradient_matches_finite_differences(backend, rng):
    """The chain rule across layers, through Sequential.backward, on a small CNN."""
    model = Sequential(
        [Conv2D(1, 2, 3, padding=1), Tanh(), MaxPool2D(2), Flatten(), Dense(8, 3)],
        input_shape=(1, 4, 4),
        seed=3,
    )
    check_model_gradients(model, rng.standard_normal((3, 1, 4, 4)), np.array([0, 2, 1]), backend)
