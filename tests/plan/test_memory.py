"""The predicted peak memory of every worker, on simulated clusters: what it grows and shrinks
with, the guard that keeps a plan inside the workers' limits, and the memory figures of a
cluster model (files, JSON)."""

from __future__ import annotations

import dask
import numpy as np
import pytest

import pnngraph
from pnngraph import DataParallel, Pipeline
from pnngraph.exceptions import MemoryPlanError
from pnngraph.nn import Dense, ReLU, Sequential
from pnngraph.plan.cluster import ClusterModel, cluster_from_spec, simulated_cluster
from pnngraph.plan.memory import BASELINE_BYTES, PAUSE_FRACTION, remedies, shortfall
from tests.graph.conftest import max_rel_diff

X = np.random.default_rng(0).standard_normal((4096, 64))
Y = np.random.default_rng(1).integers(0, 10, 4096)


def wide(width: int = 256, depth: int = 4) -> Sequential:
    layers: list = [Dense(64, width), ReLU()]
    for _ in range(depth - 1):
        layers += [Dense(width, width), ReLU()]
    return Sequential([*layers, Dense(width, 10)], input_shape=(64,), seed=0)


def peaks(strategy, *, batch: int = 256, memory_gb: float | None = 1000.0, model=None,
          optimizer: str = "adam", workers: int = 2) -> dict[str, float]:
    cluster = simulated_cluster(cpus=workers, gpus=0, memory_gb=memory_gb)
    graph = pnngraph.build(model or wide(), (X, Y), strategy=strategy, steps=2,
                           batch_size=batch, optimizer=optimizer, cluster=cluster)
    return graph.plan.peak_bytes


def test_the_peak_grows_with_the_batch():
    model = wide(64, depth=2)
    small, medium, large = (max(peaks(DataParallel(2), batch=b, model=model, optimizer="sgd")
                                .values()) for b in (64, 256, 512))
    assert BASELINE_BYTES < small < medium < large


def test_pipeline_stages_split_the_parameters():
    model = wide(512)
    state = 3 * model.n_params * 8  # parameters and Adam's two moments
    whole = max(peaks(DataParallel(1), model=model, batch=16).values())
    split = peaks(Pipeline(2, 1), model=model, batch=16)
    assert len(split) == 2 and whole > BASELINE_BYTES + 2 * state  # old and new state at once
    assert max(split.values()) - BASELINE_BYTES < 0.7 * (whole - BASELINE_BYTES)


def test_micro_batches_shrink_the_activations_kept_for_backward():
    model = wide(1024, depth=1)  # few parameters: activations dominate
    one, many = (max(peaks(Pipeline(2, m), model=model, batch=4096, optimizer="sgd").values())
                 for m in (1, 8))
    assert many - BASELINE_BYTES < 0.5 * (one - BASELINE_BYTES)


def test_a_plan_that_does_not_fit_gets_more_micro_batches():
    model = wide(1024, depth=1)
    fits = peaks(Pipeline(2, 8), model=model, batch=4096, optimizer="sgd")
    limit = max(fits.values()) * 1.05 / PAUSE_FRACTION / 1e9
    cluster = simulated_cluster(cpus=2, gpus=0, memory_gb=limit)
    graph = pnngraph.build(model, (X, Y), strategy=Pipeline(2, 1), steps=2, batch_size=4096,
                           optimizer="sgd", cluster=cluster)
    assert graph.strategy.layout[2] > 1  # more micro-batches than asked for
    assert shortfall(graph.plan.peak_bytes, graph.plan.limit_bytes) is None
    result, = dask.compute(graph, scheduler="sync")
    reference = pnngraph.train_serial(model, X, Y, steps=2, batch_size=4096, optimizer="sgd")
    for got, want in zip(result.params, reference.params, strict=True):
        for k in got:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14)


def large_layers() -> Sequential:  # 6.7 M parameters: 152 MiB of state with Adam's moments
    layers: list = [Dense(64, 1280), ReLU()]
    for _ in range(4):
        layers += [Dense(1280, 1280), ReLU()]
    return Sequential([*layers, Dense(1280, 10)], input_shape=(64,), seed=0)


def two_workers(memory_gb: float) -> ClusterModel:
    return cluster_from_spec({"workers": [{"name": "cpu", "gflops": 50, "count": 2,
                                           "memory_gb": memory_gb}]})


def test_a_pipeline_heft_keeps_on_one_worker_gets_its_stages_one_per_worker(caplog):
    run = {"steps": 2, "batch_size": 128, "optimizer": "adam", "lr": 1e-3}
    with caplog.at_level("INFO", logger="pnngraph"):
        graph = pnngraph.build(large_layers(), (X, Y), strategy=Pipeline(2, 4),
                               cluster=two_workers(0.75), **run)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "pnngraph"]
    assert "does not fit in the workers' memory as planned" in line  # HEFT's plan missed
    assert "its stages one per worker (scheduler 'static', not 'heft')" in line
    assert graph.strategy == Pipeline(2, 4) and graph.plan.algorithm == "static"
    assert set(graph.plan.placement.values()) == {"cpu-0", "cpu-1"}
    assert shortfall(graph.plan.peak_bytes, graph.plan.limit_bytes) is None
    result, = dask.compute(graph, scheduler="sync")
    reference = pnngraph.train_serial(large_layers(), X, Y, **run)
    assert max_rel_diff(result.params, reference.params) <= 1e-12


def test_auto_names_a_candidate_that_fits_only_with_its_stages_one_per_worker():
    graph = pnngraph.build(large_layers(), (X, Y), strategy="auto", steps=2, batch_size=128,
                           optimizer="adam", cluster=two_workers(0.75))
    name, seconds = graph.plan.alternatives[0]
    assert isinstance(graph.strategy, Pipeline) and graph.plan.algorithm == "static"
    assert name == f"{graph.strategy!r} (stages one per worker)" and seconds < float("inf")
    assert shortfall(graph.plan.peak_bytes, graph.plan.limit_bytes) is None


def test_fewer_micro_batches_where_each_keeps_a_gradient_too_many():
    # large layers, a small batch: four micro-batches' gradients of a stage weigh more than
    # the activations they save; two fit where four do not
    graph = pnngraph.build(large_layers(), (X, Y), strategy=Pipeline(2, 4), steps=2,
                           batch_size=128, optimizer="adam", cluster=two_workers(0.6))
    assert graph.strategy == Pipeline(2, 2)
    assert shortfall(graph.plan.peak_bytes, graph.plan.limit_bytes) is None


def test_auto_trains_a_model_too_large_for_one_worker_as_a_pipeline():
    model = wide(512)
    whole = max(peaks(DataParallel(1), model=model, batch=16).values())
    cluster = simulated_cluster(cpus=2, gpus=0, memory_gb=0.8 * whole / PAUSE_FRACTION / 1e9)
    graph = pnngraph.build(model, (X, Y), strategy="auto", steps=2, batch_size=16,
                           optimizer="adam", cluster=cluster)
    assert isinstance(graph.strategy, Pipeline)
    dropped = [name for name, seconds in graph.plan.alternatives if seconds == float("inf")]
    assert any(name.startswith("DataParallel(weights=(1.0,))") and "does not fit" in name
               for name in dropped)
    assert "peak" in graph.plan.summary()


def test_no_plan_fits_a_tiny_limit():
    cluster = simulated_cluster(cpus=2, gpus=0, memory_gb=0.05)
    with pytest.raises(MemoryPlanError) as err:
        pnngraph.build(wide(), (X, Y), strategy=DataParallel(2), steps=2, batch_size=256,
                       cluster=cluster)
    assert err.value.need_bytes > err.value.has_bytes == pytest.approx(0.04e9)
    assert len(err.value.tried) > 1 and "\n" not in str(err.value)


def test_unknown_limits_are_not_checked():
    assert set(peaks(DataParallel(2), memory_gb=100)) == {"sim-cpu-0", "sim-cpu-1"}
    cluster = simulated_cluster(cpus=2, gpus=0)
    graph = pnngraph.build(wide(), (X, Y), strategy=DataParallel(2), steps=2, batch_size=256,
                           cluster=cluster)
    assert graph.plan.limit_bytes == {} == graph.plan.peak_bytes
    assert graph.strategy == DataParallel(2)


def test_remedies_stay_within_the_batch_and_the_workers():
    assert remedies(Pipeline(2, 4), workers=2, n_layers=5, batch=8) == \
        [Pipeline(2, 8), Pipeline(2, 2), Pipeline(2, 1)]
    assert [s.layout for s in remedies(Pipeline(2, 1), workers=3, n_layers=3, batch=2)] == \
        [(1, 2, 2), (1, 3, 1), (1, 3, 2)]
    assert remedies(DataParallel(4), workers=2, n_layers=1, batch=7) == []


def test_memory_figures_in_files_and_json():
    cluster = cluster_from_spec({"workers": [
        {"name": "cpu", "gflops": 100, "count": 2, "memory_gb": 4},
        {"name": "gpu", "backend": "cupy", "gflops": 1000, "memory_gb": 16,
         "device_memory_gb": 80}]})
    assert cluster.worker("cpu-1").memory_limit_bytes == 4e9
    assert cluster.worker("gpu").device_memory_bytes == 80e9
    assert ClusterModel.from_json(cluster.to_json()) == cluster
    sim = simulated_cluster(cpus=1, gpus=1, memory_gb=2, gpu_memory_gb=24)
    assert [w.memory_limit_bytes for w in sim.workers] == [2e9, 2e9]
    assert sim.worker("sim-gpu-0").device_memory_bytes == 24e9
    from pnngraph.plan.memory import usable_bytes

    assert usable_bytes(sim) == {"sim-cpu-0": 1.6e9, "sim-gpu-0": 0.9 * 24e9}


def test_a_long_chunks_peaks_are_computed_when_read_and_pickle_as_a_dict():
    import pickle

    from pnngraph.plan.memory import LazyPeaks, peak_bytes

    cluster = simulated_cluster(cpus=2, gpus=0, memory_gb=4.0)
    graph = pnngraph.build(wide(64, depth=2), (X, Y), strategy=DataParallel(2), steps=40,
                           batch_size=64, optimizer="sgd", cluster=cluster)
    lazy = graph.plan.peak_bytes
    assert isinstance(lazy, LazyPeaks) and graph.plan.tiling == "periodic"
    assert not graph.plan.predicted.slots.ready  # nothing read the whole timeline yet
    expected = peak_bytes(graph.to_networkx(), graph.plan, cluster)
    assert dict(lazy) == expected and set(expected) == set(cluster.addresses)
    assert pickle.loads(pickle.dumps(lazy)) == expected
