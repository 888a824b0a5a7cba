"""Models with BatchNorm: data parallelism on any shards, fused steps, chunks and resumed runs
equal the serial trainer (statistics over the global batch), model averaging its serial
definition (statistics over each replica's shard), running statistics included; pipelines and
shards of one sample are refused when the run is built."""

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
from pnngraph.compile import kernels
from pnngraph.compile.graph import stage_label
from pnngraph.exceptions import ConfigError
from pnngraph.nn import BatchNorm, Conv2D, Dense, Flatten, ReLU, Residual, Sequential
from tests.graph.conftest import bitwise_equal, max_rel_diff

T, BATCH = 5, 20
OPT = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}


def make_bn(seed=0):
    return Sequential([Conv2D(3, 3, padding=1), BatchNorm(), ReLU(),
                       Residual([Conv2D(3, 3, padding=1), BatchNorm(), ReLU(),
                                 Conv2D(3, 3, padding=1), BatchNorm()]),
                       ReLU(), Flatten(), Dense(3)], input_shape=(1, 6, 6), seed=seed)


def make_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 1, 6, 6)) * 2.0 + 0.5
    return X, (X[:, 0, 2:4, 2:4].sum(axis=(1, 2)) > 2.0).astype(int) + (X[:, 0, 0, 0] > 1.0)


def rel_diff(a, b):
    """Largest |a - b| over every array, relative to the largest |b| over all of them (a conv
    bias before BatchNorm has no gradient: it stays at rounding noise, whose relative error
    means nothing)."""
    scale = max(float(np.max(np.abs(v))) for layer in b for v in layer.values())
    return max(float(np.max(np.abs(pa[k] - pb[k]))) for pa, pb in zip(a, b, strict=True)
               for k in pb) / scale


@pytest.fixture(scope="module")
def serial():
    X, y = make_data()
    return train_serial(make_bn(), X, y, steps=T, batch_size=BATCH, **OPT)


def run(strategy, **kw):
    X, y = make_data()
    graph = build(make_bn(), (X, y), strategy=strategy, steps=T, batch_size=BATCH, **OPT, **kw)
    (result,) = dask.compute(graph, scheduler="sync")
    return result


@pytest.mark.parametrize("strategy", [DataParallel(1), DataParallel(2), DataParallel(3),
                                      DataParallel([1, 2, 4])], ids=repr)
def test_data_parallel_equals_serial(serial, strategy):
    result = run(strategy)
    assert rel_diff(result.params, serial.params) <= 1e-12
    assert rel_diff(result.model.buffers, serial.model.buffers) <= 1e-12
    np.testing.assert_allclose(result.losses, serial.losses, rtol=1e-12)
    X, _ = make_data()
    np.testing.assert_allclose(result.model.predict(X), serial.model.predict(X), rtol=1e-10,
                               atol=1e-12)


def test_running_statistics_moved_and_predict_reads_them(serial):
    fresh = make_bn().buffers[1]
    trained = serial.model.buffers[1]
    assert not np.allclose(trained["running_mean"], fresh["running_mean"])
    X, _ = make_data()
    moved = serial.model.copy()
    moved.buffers[1] = {k: v + 1.0 for k, v in trained.items()}
    assert not np.allclose(moved.predict(X), serial.model.predict(X))


def test_one_shard_and_fused_steps_equal_serial_bitwise(serial):
    for fuse in (1, 5):
        result = run(DataParallel(1), fuse_steps=fuse)
        assert bitwise_equal(result.params, serial.params)
        assert bitwise_equal(result.model.buffers, serial.model.buffers)


@pytest.mark.parametrize("strategy", [ModelAveraging(2, 2), ModelAveraging([2.0, 1.0], 3)],
                         ids=repr)
def test_model_averaging_equals_its_serial_definition(strategy):
    X, y = make_data()
    reference = train_averaging_serial(make_bn(), X, y, replicas=list(strategy.weights),
                                       local_steps=strategy.local_steps, steps=T,
                                       batch_size=BATCH, **OPT)
    result = run(strategy)
    assert rel_diff(result.params, reference.params) <= 1e-12
    assert rel_diff(result.model.buffers, reference.model.buffers) <= 1e-12
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-12)


@pytest.mark.parametrize("strategy", [DataParallel(3), ModelAveraging(2, 2)], ids=repr)
def test_fit_in_chunks_equals_one_graph_bitwise(strategy):
    whole = run(strategy)
    chunked = fit(make_bn(), make_data(), strategy=strategy, steps=T, batch_size=BATCH,
                  chunk_steps=2, progress=False, **OPT)
    assert bitwise_equal(whole.params, chunked.params)
    assert bitwise_equal(whole.model.buffers, chunked.model.buffers)
    np.testing.assert_array_equal(whole.losses, chunked.losses)


@pytest.mark.parametrize("strategy", [DataParallel(2), ModelAveraging(2, 2)], ids=repr)
def test_resumed_fit_equals_one_run_bitwise(tmp_path, strategy):
    kw = {"strategy": strategy, "batch_size": BATCH, "progress": False, **OPT}
    whole = fit(make_bn(), make_data(), steps=T, **kw)
    fit(make_bn(), make_data(), steps=3, checkpoint_dir=tmp_path, **kw)
    resumed = fit(make_bn(seed=5), make_data(), steps=T, checkpoint_dir=tmp_path, resume=True,
                  **kw)
    assert bitwise_equal(resumed.params, whole.params)
    assert bitwise_equal(resumed.model.buffers, whole.model.buffers)
    np.testing.assert_array_equal(resumed.losses, whole.losses)


def test_a_step_syncs_every_batchnorm_forward_and_backward():
    X, y = make_data()
    graph = build(make_bn(), (X, y), strategy=DataParallel(2), steps=1, batch_size=BATCH, **OPT)
    g = graph.abstract
    kinds = [node["kind"] for node in g.nodes.values()]
    assert kinds.count("segment") == 2 * 6  # 3 BatchNorm layers: 6 sync points per shard
    assert kinds.count("grad") == 2
    assert kinds.count("stats") == 2 * 6 + 6  # each shard's partials, one sum per point
    update = next(k for k, node in g.nodes.items() if node["kind"] == "update")
    assert g.nodes[update]["fn"] is kernels.update_norms
    assert all(g.nodes[k]["flops"] > 0 for k in g if g.nodes[k]["kind"] in ("segment", "stats"))
    assert stage_label(make_bn().layers) == "conv-batchnorm-residual-dense"


@pytest.mark.parametrize("strategy", [Pipeline(2, 2), Pipeline(1, 2),
                                      Hybrid(DataParallel(2), Pipeline(2, 2))], ids=repr)
def test_pipelines_are_refused(strategy):
    X, y = make_data()
    with pytest.raises(ConfigError, match="BatchNorm 'batchnorm1'.*DataParallel"):
        build(make_bn(), (X, y), strategy=strategy, steps=T, batch_size=BATCH)


def test_a_shard_of_one_sample_is_refused():
    X, y = make_data()
    with pytest.raises(ConfigError, match="BatchNorm 'batchnorm1' shard size.*got 1"):
        build(make_bn(), (X, y), strategy=DataParallel(2), steps=T, batch_size=3)
    with pytest.raises(ConfigError, match="shard size.*got 1"):
        train_serial(make_bn(), X, y, steps=T, batch_size=1)
    nested = Sequential([Dense(3), Residual([Dense(3), BatchNorm()])], input_shape=(2,))
    with pytest.raises(ConfigError, match="'residual1/batchnorm1' shard size"):
        train_serial(nested, X[:, 0, 0, :2], y, steps=T, batch_size=1)


@pytest.mark.cluster
def test_data_parallel_on_a_local_cluster_equals_serial(cluster_client, serial):
    X, y = make_data()
    graph = build(make_bn(), (X, y), strategy=DataParallel([1, 2]), steps=T, batch_size=BATCH,
                  client=cluster_client, **OPT)
    result = cluster_client.compute(graph).result()
    assert rel_diff(result.params, serial.params) <= 1e-12
    assert rel_diff(result.model.buffers, serial.model.buffers) <= 1e-12


@pytest.mark.cluster
def test_data_parallel_on_emulated_gpu_and_cpu_workers(serial):
    """Rounds, statistics and updates spread over both kinds of device: the memo of a round and
    the statistics move only where the plan moves them (the emulated device refuses silent
    mixing with numpy)."""
    from distributed import Client

    from pnngraph.run.calibrate import calibrate
    from pnngraph.run.cluster import local_cluster

    X, y = make_data()
    with local_cluster(2, 1, dashboard_address=None) as cluster, Client(cluster) as client:
        model = calibrate(client, gpu_backend="emulated", emulated_speedup=1.0, cache=False)
        graph = build(make_bn(), (X, y), strategy=DataParallel(3), steps=T, batch_size=BATCH,
                      client=client, cluster=model, scheduler="round_robin", **OPT)
        assert set(graph.plan.backends.values()) == {"numpy", "emulated"}
        result = client.compute(graph).result()
    assert rel_diff(result.params, serial.params) <= 1e-12
    assert rel_diff(result.model.buffers, serial.model.buffers) <= 1e-12


def test_the_optimizer_never_sees_the_running_statistics():
    """Weight decay and clipping act on the parameters only: the optimizer state holds no
    running statistics, and data parallelism with them still equals serial training. (SGD:
    Adam would blow the rounding noise of the conv biases before BatchNorm, whose gradient is
    zero, up to steps of its own, different in every summation order.)"""
    X, y = make_data()
    options = {**OPT, "weight_decay": 0.1, "clip_norm": 0.5}
    reference = train_serial(make_bn(), X, y, steps=T, batch_size=BATCH, **options)
    graph = build(make_bn(), (X, y), strategy=DataParallel(3), steps=T, batch_size=BATCH,
                  **options)
    (result,) = dask.compute(graph, scheduler="sync")
    assert rel_diff(result.params, reference.params) <= 1e-12
    assert rel_diff(result.model.buffers, reference.model.buffers) <= 1e-12
    arrays = [v for v in result.opt_state.values() if isinstance(v, list)]
    assert arrays
    for value in arrays:
        assert [sorted(layer) for layer in value] == [sorted(layer) for layer in result.params]


def test_rounds_on_the_emulated_device_resume_from_host_copies():
    """Each round reads the round before and the statistics after a trip to the host (as from
    a worker of the other kind): one shard's rounds give the serial gradient bitwise."""
    from pnngraph.nn.losses import get_loss
    from pnngraph.nn.optimizers import SGD

    model, (X, y) = make_bn(), make_data()
    index = np.arange(10)
    grads = {}
    for backend in ("numpy", "emulated"):
        spec = kernels.StageSpec(tuple(model.layers), 0, get_loss("cross_entropy"), SGD(0.1), 0,
                                 backend=backend)
        state = kernels.StageState(model.params, {}, (), model.buffers)
        out, new = None, ()
        for point in range(2 * spec.norms + 1):
            out = kernels.segment(spec, state, X, y, index, 10, 0, 0,
                                  None if out is None else kernels.to_host(out), *new)
            if point < 2 * spec.norms:
                assert isinstance(out, kernels.Round)
                new = (kernels.to_host(kernels.stats_of(out)),)
        assert isinstance(out, kernels.Partial)
        grads[backend] = kernels.to_host(out).grads
    serial = kernels.loss_backward(spec, state, None, X, y, index, 10, 0, 0, spec.serial_sync())
    assert bitwise_equal(grads["numpy"], grads["emulated"])
    assert bitwise_equal(grads["numpy"], kernels.to_host(serial[1]))


def test_without_biases_before_batchnorm_adam_equals_serial():
    """Convolutions without a bias before their BatchNorm (``bias=False``, as the resnet preset
    with ``batchnorm=True`` builds them) leave nothing at rounding noise for Adam to amplify:
    AdamW with data parallelism equals serial training array by array, relative to each
    array's own size."""
    from pnngraph.nn.presets import resnet

    def model():
        return resnet((1, 6, 6), 3, channels=(3, 4), batchnorm=True)

    X, y = make_data()
    options = {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.01}
    reference = train_serial(model(), X, y, steps=T, batch_size=BATCH, **options)
    graph = build(model(), (X, y), strategy=DataParallel([1, 2, 4]), steps=T, batch_size=BATCH,
                  **options)
    (result,) = dask.compute(graph, scheduler="sync")
    assert "b" not in result.params[0] and "1.0.b" not in result.params[6]
    assert max_rel_diff(result.params, reference.params) <= 1e-12
