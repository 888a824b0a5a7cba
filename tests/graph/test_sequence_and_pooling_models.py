"""Recurrent and average-pooling models under the strategies equal the serial trainer, 1e-12."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from pnngraph import DataParallel, Hybrid, Pipeline, build, train_serial
from pnngraph.nn import (
    GRU,
    LSTM,
    AvgPool2D,
    Conv2D,
    Dense,
    GlobalAvgPool2D,
    ReLU,
    Sequential,
    Tanh,
)
from tests.graph.conftest import max_rel_diff

T = 4
BATCH = 20  # 46 samples: batches of 20, 20, 6
KW = {"steps": T, "batch_size": BATCH, "optimizer": "adam", "lr": 0.01}


def make_lstm():
    return Sequential([LSTM(6), Dense(6, 3)], input_shape=(4, 3), seed=0)


def make_stacked():
    return Sequential([LSTM(5, return_sequences=True), GRU(4), Tanh(), Dense(4, 3)],
                      input_shape=(4, 3), seed=0)


def make_pooling_cnn():
    return Sequential(
        [Conv2D(1, 3, 3, padding=1), ReLU(), AvgPool2D(2), Conv2D(3, 4, 2), GlobalAvgPool2D(),
         Dense(4, 3)],
        input_shape=(1, 6, 6), seed=0,
    )


MODELS = {"lstm": make_lstm, "stacked": make_stacked, "pooling": make_pooling_cnn}
STRATEGIES = {  # every pipeline cuts right after the first recurrent layer (or the first pool)
    "lstm": [DataParallel([1, 2, 4]), Pipeline([1, 1], 2),
             Hybrid(DataParallel([1, 3]), Pipeline([1, 1], 2))],
    "stacked": [DataParallel([1, 2, 4]), Pipeline([1, 1, 2], 3)],
    "pooling": [DataParallel([1, 2, 4]), Pipeline([3, 3], 2)],
}
CASES = [(kind, i) for kind in sorted(STRATEGIES) for i in range(len(STRATEGIES[kind]))]


def make_data(kind: str, n: int = 46):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 1, 6, 6) if kind == "pooling" else (n, 4, 3))
    flat = X.reshape(n, -1)
    y = (flat[:, 0] > 0).astype(int) + (flat[:, -1] > 0.5).astype(int)
    return X, y


@pytest.mark.parametrize(("kind", "which"), CASES)
def test_strategy_equals_serial_on_sync_scheduler(kind, which):
    X, y = make_data(kind)
    graph = build(MODELS[kind](), (X, y), strategy=STRATEGIES[kind][which], **KW)
    (result,) = dask.compute(graph, scheduler="sync")
    reference = train_serial(MODELS[kind](), X, y, **KW)
    assert max_rel_diff(result.params, reference.params) <= 1e-12
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-12)
    assert max_rel_diff(result.params, MODELS[kind]().params) > 1e-6  # it trained


@pytest.mark.cluster
def test_lstm_pipeline_equals_serial_on_a_local_cluster(cluster_client):
    X, y = make_data("lstm")
    graph = build(make_lstm(), (X, y), strategy=Hybrid(DataParallel([1, 3]), Pipeline([1, 1], 2)),
                  client=cluster_client, **KW)
    result = cluster_client.compute(graph).result()
    assert max_rel_diff(result.params, train_serial(make_lstm(), X, y, **KW).params) <= 1e-12
