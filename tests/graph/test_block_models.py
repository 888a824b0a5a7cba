"""Models with blocks (Residual, Parallel), and the resnet and transformer presets (attention
with dropout, LayerNorm), under every strategy equal the serial trainers (float64, 1e-12): a
pipeline's stage boundaries fall between blocks."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from pnngraph import (
    DataParallel,
    Hybrid,
    ModelAveraging,
    Pipeline,
    build,
    train_averaging_serial,
    train_serial,
)
from pnngraph.nn import (
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    Parallel,
    ReLU,
    Residual,
    Sequential,
    Tanh,
)
from pnngraph.nn.presets import resnet, transformer
from tests.graph.conftest import max_rel_diff

# ------------------------------------------------------------------------- every strategy


def resnet_mlp(seed=0):
    return Sequential([Dense(8), Residual([Dense(8), Tanh(), Dropout(0.25), Dense(8)]), ReLU(),
                       Residual([Dense(12), Tanh()], shortcut=[Dense(12)]),
                       Parallel([[Dense(3)], [Tanh(), Dense(3)]]), Dense(3)],
                      input_shape=(6,), seed=seed)


def resnet_cnn(seed=0):
    return Sequential([Conv2D(3, 3, padding=1),
                       Residual([Conv2D(3, 3, padding=1), ReLU(), Conv2D(3, 3, padding=1)]),
                       ReLU(), MaxPool2D(2), Flatten(), Dense(3)],
                      input_shape=(1, 4, 4), seed=seed)


def block_data(kind):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((46, 6) if kind == "mlp" else (46, 1, 4, 4))
    return X, rng.integers(0, 3, 46)


MODELS = {"mlp": resnet_mlp, "cnn": resnet_cnn}
STRATEGIES = {
    "dp-unequal": DataParallel([1, 2, 4]),
    "pipe3x2": Pipeline(3, 2),
    "hybrid2x2": Hybrid(DataParallel(2), Pipeline(2, 2)),
}
KW = {"steps": 5, "batch_size": 20, "optimizer": "adam", "lr": 0.01}


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_block_models_equal_serial_under_every_strategy(name, kind):
    X, y = block_data(kind)
    graph = build(MODELS[kind](), (X, y), strategy=STRATEGIES[name], **KW)
    (result,) = dask.compute(graph, scheduler="sync")
    reference = train_serial(MODELS[kind](), X, y, **KW)
    assert max_rel_diff(result.params, reference.params) <= 1e-12
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-12)


def test_block_models_average_as_their_serial_definition():
    X, y = block_data("mlp")
    kw = {"steps": 4, "batch_size": 20, "optimizer": "sgd", "lr": 0.05}
    graph = build(resnet_mlp(), (X, y), strategy=ModelAveraging(2, 1), **kw)
    (result,) = dask.compute(graph, scheduler="sync")
    reference = train_averaging_serial(resnet_mlp(), X, y, replicas=2, local_steps=1, **kw)
    assert max_rel_diff(result.params, reference.params) <= 1e-12


@pytest.mark.cluster
def test_block_models_on_a_local_cluster(cluster_client):
    X, y = block_data("cnn")
    graph = build(resnet_cnn(), (X, y), strategy=Hybrid(DataParallel(2), Pipeline(2, 2)),
                  client=cluster_client, **KW)
    result = cluster_client.compute(graph).result()
    reference = train_serial(resnet_cnn(), X, y, **KW)
    assert max_rel_diff(result.params, reference.params) <= 1e-12


def family(name):
    rng = np.random.default_rng(5)
    if name == "resnet":
        model = resnet((1, 4, 4), 3, channels=(2, 3))
        X, y = rng.standard_normal((46, 1, 4, 4)), rng.integers(0, 3, 46)
    else:
        model = transformer((6,), 11, width=8, heads=2, blocks=2, dropout=0.2)
        X = rng.integers(0, 11, (46, 6)).astype(np.float64)
        y = np.roll(X, -1, axis=1).astype(np.int64)
    return model, X, y


@pytest.mark.cluster
@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("kind", ["resnet", "transformer"])
def test_family_equals_serial_on_a_local_cluster(cluster_client, kind, name):
    model, X, y = family(kind)
    graph = build(model, (X, y), strategy=STRATEGIES[name], client=cluster_client, **KW)
    result = cluster_client.compute(graph).result()
    reference = train_serial(family(kind)[0], X, y, **KW)
    assert max_rel_diff(result.params, reference.params) <= 1e-12


@pytest.mark.cluster
@pytest.mark.parametrize("kind", ["resnet", "transformer"])
def test_family_averages_as_its_serial_definition_on_a_local_cluster(cluster_client, kind):
    model, X, y = family(kind)
    run = {"steps": 4, "batch_size": 20, "optimizer": "sgd", "lr": 0.05}
    graph = build(model, (X, y), strategy=ModelAveraging(2, 1), client=cluster_client, **run)
    result = cluster_client.compute(graph).result()
    reference = train_averaging_serial(family(kind)[0], X, y, replicas=2, local_steps=1, **run)
    assert max_rel_diff(result.params, reference.params) <= 1e-12
