"""A tiny causal Transformer language model, with attention dropout on, trains under every
strategy exactly as the serial reference does (float64 parameters to 1e-12), from numpy or
dask arrays."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from pnngraph import (
    DataParallel,
    Dense,
    Embedding,
    Hybrid,
    LayerNorm,
    MultiHeadSelfAttention,
    Pipeline,
    PositionalEmbedding,
    Sequential,
    build,
    train_serial,
)
from pnngraph.exceptions import DataError
from tests.graph.conftest import max_rel_diff

V, T, D = 11, 6, 8
RUN = {"steps": 5, "batch_size": 20, "optimizer": "adam", "lr": 0.01}
STRATEGIES = {
    "dp-unequal": DataParallel([1, 2, 4]),
    "pipe3x2": Pipeline(3, 2),
    "hybrid2x2": Hybrid(DataParallel(2), Pipeline(2, 2)),
}


def language_model():
    return Sequential([Embedding(V, D), PositionalEmbedding(T),
                       MultiHeadSelfAttention(2, causal=True, dropout=0.2), LayerNorm(),
                       Dense(D, V)], input_shape=(T,), seed=0)


def next_token_data(n=46):
    X = np.random.default_rng(0).integers(0, V, (n, T)).astype(np.float64)
    return X, np.roll(X, -1, axis=1).astype(np.int64)


def serial(**order):
    X, y = next_token_data()
    return train_serial(language_model(), X, y, **RUN, **order)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_language_model_strategy_equals_serial(name):
    graph = build(language_model(), next_token_data(), strategy=STRATEGIES[name], **RUN)
    (result,) = dask.compute(graph, scheduler="sync")
    reference = serial()
    assert max_rel_diff(result.params, reference.params) <= 1e-12
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-12)


def test_language_model_from_dask_arrays_equals_serial():
    import dask.array as da

    X, y = next_token_data()
    data = da.from_array(X, chunks=(10, T)), da.from_array(y, chunks=(10, T))
    graph = build(language_model(), data, strategy=DataParallel([1, 2]), **RUN)
    (result,) = dask.compute(graph, scheduler="sync")
    assert max_rel_diff(result.params, serial(block_rows=data[0].chunks[0]).params) <= 1e-12


def test_bad_token_id_in_a_dask_block_is_named_before_training():
    import dask.array as da

    X, y = next_token_data()
    X[13, 4] = V
    data = da.from_array(X, chunks=(10, T)), da.from_array(y, chunks=(10, T))
    with pytest.raises(DataError, match=rf"got {float(V)!r} in sample 13 at position 4, in "
                                        r"block 1 \(rows 10:20\)"):
        build(language_model(), data, **RUN)


@pytest.mark.cluster
def test_language_model_pipeline_equals_serial_on_a_local_cluster(cluster_client):
    graph = build(language_model(), next_token_data(), strategy=Hybrid(DataParallel([1, 2]),
                  Pipeline(2, 2)), client=cluster_client, **RUN)
    result = cluster_client.compute(graph).result()
    assert max_rel_diff(result.params, serial().params) <= 1e-12
