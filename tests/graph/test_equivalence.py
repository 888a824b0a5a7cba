"""Every strategy equals its serial definition: float64 parameters after T steps, 1e-12."""

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
    fit,
    train_averaging_serial,
    train_serial,
)
from tests.graph.conftest import (
    LAYOUTS,
    bitwise_equal,
    make_cnn,
    make_data,
    make_mlp,
    max_rel_diff,
)

T = 5
BATCH = 20  # 46 samples: batches of 20, 20, 6, so the last batch of the epoch is short
OPTIMIZERS = {
    "sgd-momentum": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
    "adam": {"optimizer": "adam", "lr": 0.01},
}
STRATEGIES = LAYOUTS
MODELS = {"mlp": make_mlp, "cnn": make_cnn}


def serial(kind, opt, steps=T):
    X, y = make_data(kind)
    return train_serial(MODELS[kind](), X, y, steps=steps, batch_size=BATCH, **OPTIMIZERS[opt])


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_equals_serial_on_sync_scheduler(name, kind, opt):
    X, y = make_data(kind)
    graph = build(MODELS[kind](), (X, y), strategy=STRATEGIES[name], steps=T,
                  batch_size=BATCH, **OPTIMIZERS[opt])
    (result,) = dask.compute(graph, scheduler="sync")
    reference = serial(kind, opt)
    assert max_rel_diff(result.params, reference.params) <= 1e-12
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-12)
    assert result.opt_state["step"] == T


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("name", "kind", "opt"),
    [
        ("dp2", "mlp", "sgd-momentum"),
        ("dp-unequal", "mlp", "adam"),
        ("dp5", "cnn", "adam"),
        ("pipe3x4", "mlp", "adam"),
        ("pipe2x2", "cnn", "sgd-momentum"),
        ("hybrid2x2", "mlp", "adam"),
        ("hybrid2x2", "cnn", "adam"),
    ],
)
def test_strategy_equals_serial_on_a_local_cluster(cluster_client, name, kind, opt):
    X, y = make_data(kind)
    graph = build(MODELS[kind](), (X, y), strategy=STRATEGIES[name], steps=T,
                  batch_size=BATCH, client=cluster_client, **OPTIMIZERS[opt])
    result = cluster_client.compute(graph).result()
    assert max_rel_diff(result.params, serial(kind, opt).params) <= 1e-12


def test_threaded_scheduler_and_fused_steps_equal_serial_bitwise():
    X, y = make_data("mlp")
    graph = build(make_mlp(), (X, y), strategy=DataParallel(1), steps=T, batch_size=BATCH,
                  **OPTIMIZERS["adam"])
    kinds = {kind for _, kind in graph.to_networkx().nodes(data="kind")}
    assert "steps" in kinds  # a tiny one-shard run is fused into whole-step tasks
    (result,) = dask.compute(graph, scheduler="threads")
    assert bitwise_equal(result.params, serial("mlp", "adam").params)


@pytest.mark.parametrize("replicas", [2, 3, (1.0, 3.0)])
def test_averaging_with_one_local_step_equals_data_parallel(replicas):
    X, y = make_data("mlp")
    kw = {"steps": T, "batch_size": BATCH, "optimizer": "sgd", "lr": 0.1}
    averaged = build(make_mlp(), (X, y), strategy=ModelAveraging(replicas, 1), **kw)
    n = replicas if isinstance(replicas, int) else list(replicas)
    data_parallel = build(make_mlp(), (X, y), strategy=DataParallel(n), **kw)
    a, d = dask.compute(averaged, data_parallel, scheduler="sync")
    assert max_rel_diff(a.params, d.params) <= 1e-12
    np.testing.assert_allclose(a.losses, d.losses, rtol=1e-12)


@pytest.mark.parametrize(("replicas", "local_steps"), [(2, 2), (3, 4), ((2.0, 1.0), 3)])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_averaging_equals_its_serial_definition(replicas, local_steps, opt):
    X, y = make_data("mlp")
    kw = {"steps": 7, "batch_size": BATCH, **OPTIMIZERS[opt]}
    graph = build(make_mlp(), (X, y), strategy=ModelAveraging(replicas, local_steps), **kw)
    (result,) = dask.compute(graph, scheduler="sync")
    reference = train_averaging_serial(make_mlp(), X, y, replicas=replicas,
                                       local_steps=local_steps, **kw)
    assert max_rel_diff(result.params, reference.params) <= 1e-12
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-12)
    # and it really is a different algorithm from large-batch SGD
    assert max_rel_diff(result.params, train_serial(make_mlp(), X, y, **kw).params) > 1e-6


@pytest.mark.cluster
def test_averaging_on_a_local_cluster(cluster_client):
    X, y = make_data("cnn")
    kw = {"steps": 6, "batch_size": BATCH, **OPTIMIZERS["adam"]}
    graph = build(make_cnn(), (X, y), strategy=ModelAveraging(2, 3), client=cluster_client, **kw)
    result = cluster_client.compute(graph).result()
    reference = train_averaging_serial(make_cnn(), X, y, replicas=2, local_steps=3, **kw)
    assert max_rel_diff(result.params, reference.params) <= 1e-12


def test_reruns_are_bitwise_identical():
    X, y = make_data("mlp")
    kw = {"strategy": Hybrid(DataParallel(3), Pipeline(2, 2)), "steps": T, "batch_size": BATCH,
          **OPTIMIZERS["adam"]}
    first = build(make_mlp(), (X, y), **kw)
    second = build(make_mlp(), (X, y), **kw)
    assert first.token == second.token
    a, b, c = dask.compute(first, first, second, scheduler="threads")
    assert bitwise_equal(a.params, b.params) and bitwise_equal(a.params, c.params)
    np.testing.assert_array_equal(a.losses, c.losses)


@pytest.mark.cluster
def test_reruns_on_a_cluster_are_bitwise_identical(cluster_client):
    X, y = make_data("mlp")
    graph = build(make_mlp(), (X, y), strategy=DataParallel(3), steps=T, batch_size=BATCH,
                  client=cluster_client, **OPTIMIZERS["sgd-momentum"])
    a = cluster_client.compute(graph).result()
    b = cluster_client.compute(graph).result()
    assert bitwise_equal(a.params, b.params)


@pytest.mark.parametrize("strategy", [DataParallel(2), Pipeline(2, 2), ModelAveraging(2, 2)])
def test_fit_in_chunks_equals_one_graph_bitwise(strategy):
    X, y = make_data("mlp")
    kw = {"strategy": strategy, "steps": 7, "batch_size": BATCH, **OPTIMIZERS["adam"]}
    (whole,) = dask.compute(build(make_mlp(), (X, y), **kw), scheduler="sync")
    chunked = fit(make_mlp(), (X, y), chunk_steps=3, progress=False, **kw)
    assert bitwise_equal(whole.params, chunked.params)
    np.testing.assert_array_equal(whole.losses, chunked.losses)
    assert chunked.step_seconds.shape == (7,) and np.all(chunked.step_seconds > 0)


@pytest.mark.cluster
def test_fit_on_a_cluster_keeps_state_on_workers(cluster_client):
    X, y = make_data("mlp")
    kw = {"strategy": DataParallel(2), "steps": 6, "batch_size": BATCH, **OPTIMIZERS["adam"]}
    result = fit(make_mlp(), (X, y), chunk_steps=2, client=cluster_client, progress=False, **kw)
    assert max_rel_diff(result.params, serial("mlp", "adam", steps=6).params) <= 1e-12


def test_build_can_continue_a_run():
    X, y = make_data("mlp")
    kw = {"strategy": DataParallel(2), "batch_size": BATCH, **OPTIMIZERS["adam"]}
    (first,) = dask.compute(build(make_mlp(), (X, y), steps=3, **kw), scheduler="sync")
    (rest,) = dask.compute(build(first.model, (X, y), steps=4, start_step=3,
                                 opt_state=first.opt_state, **kw), scheduler="sync")
    (whole,) = dask.compute(build(make_mlp(), (X, y), steps=7, **kw), scheduler="sync")
    assert bitwise_equal(rest.params, whole.params)


def test_dask_arrays_as_data():
    da = pytest.importorskip("dask.array")
    X, y = make_data("mlp")
    graph = build(make_mlp(), (da.from_array(X, chunks=10), da.from_array(y, chunks=10)),
                  strategy=DataParallel(2), steps=T, batch_size=BATCH, **OPTIMIZERS["adam"])
    (result,) = dask.compute(graph, scheduler="sync")
    reference = train_serial(make_mlp(), X, y, steps=T, batch_size=BATCH,
                             block_rows=(10, 10, 10, 10, 6), **OPTIMIZERS["adam"])
    assert max_rel_diff(result.params, reference.params) <= 1e-12
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-12)
