"""Placement on real LocalClusters: calibration, pins applied, emulated GPUs, lost workers."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster, get_task_stream

import pnngraph
from pnngraph import DataParallel, Hybrid, ModelAveraging, Pipeline
from pnngraph.compile import kernels
from pnngraph.exceptions import ConfigError
from pnngraph.run.calibrate import calibrate
from pnngraph.run.cluster import local_cluster
from pnngraph.run.collection import PlacementWarning
from pnngraph.run.session import live_workers
from tests.graph.conftest import make_cnn, make_data, make_mlp, max_rel_diff

pytestmark = pytest.mark.cluster
KW = {"steps": 5, "batch_size": 20, "optimizer": "adam", "lr": 0.01}


@pytest.fixture(scope="module")
def mixed():
    """Two CPU worker processes and one emulated-GPU worker process."""
    with local_cluster(2, 1, dashboard_address=None) as cluster, Client(cluster) as client:
        # an emulated GPU as fast as a CPU worker, so plans of these tiny models spread over
        # both kinds of device (a 20x GPU would rightly take every task)
        model = calibrate(client, gpu_backend="emulated", emulated_speedup=1.0, cache=False)
        yield client, model


def test_calibration_measures_every_worker_and_is_cached(tmp_path):
    with local_cluster(2, 0, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        model = calibrate(client, cache_dir=tmp_path, budget_seconds=5)
        assert sorted(model.addresses) == list(live_workers(client))
        for w in model.workers:
            assert w.backend == "numpy" and w.flops_per_s("float64") > 1e8
        assert 0 < model.task_overhead_seconds < 0.1 and 0 < model.hop_latency_seconds < 0.5
        assert model.network_bytes_per_s > 1e6
        assert list(tmp_path.glob("cluster-*.json"))
        assert calibrate(client, cache_dir=tmp_path) == model  # read back from the cache


def test_calibration_without_workers_is_an_error():
    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=None,
                     scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster,
        Client(cluster) as client,
        pytest.raises(ConfigError, match="at least one worker to calibrate"),
    ):
        calibrate(client, cache=False)


@pytest.mark.parametrize("scheduler", ["heft", "peft"])
def test_every_node_runs_where_the_plan_says(mixed, scheduler):
    client, cluster = mixed
    X, y = make_data("mlp")
    graph = pnngraph.build(make_mlp(), (X, y), strategy=Hybrid(DataParallel(2), Pipeline(2, 2)),
                           client=client, cluster=cluster, scheduler=scheduler, **KW)
    with get_task_stream(client=client) as stream:
        client.compute(graph).result()
    ran = {r["key"]: r["worker"] for r in stream.data}
    plan = graph.placement  # the computing nodes, and the data and initial states in the graph
    assert set(graph.plan.placement) < set(plan) <= set(ran)
    assert all(ran[k] == w for k, w in plan.items())
    assert len(set(plan.values())) >= 2


@pytest.mark.parametrize(
    ("kind", "strategy"),
    [("mlp", DataParallel(3)), ("cnn", DataParallel([1, 2, 3])), ("mlp", Pipeline(3, 2)),
     ("cnn", Hybrid(DataParallel(2), Pipeline(2, 2))), ("mlp", ModelAveraging(2, 2))],
)
def test_emulated_gpu_cluster_trains_like_the_cpu(mixed, kind, strategy):
    client, cluster = mixed
    make = make_mlp if kind == "mlp" else make_cnn
    X, y = make_data(kind)
    # round robin deals tasks to every worker in turn: both kinds of device surely get some
    # (which device a cost-model plan prefers depends on the measured speeds)
    graph = pnngraph.build(make(), (X, y), strategy=strategy, client=client, cluster=cluster,
                           scheduler="round_robin", **KW)
    backends = set(graph.plan.backends.values())
    assert backends == {"numpy", "emulated"}  # the plan really mixes devices
    result = client.compute(graph).result()
    cpu = pnngraph.build(make(), (X, y), strategy=strategy, **KW)
    (reference,) = dask.compute(cpu, scheduler="sync")
    assert max_rel_diff(result.params, reference.params) <= 1e-12
    lowered = graph.__dask_graph__().to_dict()
    assert any(isinstance(k, tuple) and k[0].startswith("tohost-") for k in lowered)


def test_a_missing_device_to_host_step_fails_loudly():
    """Device arrays reaching a numpy task are refused, as CuPy arrays on a CPU worker would be."""
    model = make_mlp()
    X, y = make_data("mlp")
    device = pnngraph.get_backend("emulated")
    spec = kernels.StageSpec(tuple(model.layers), 0, pnngraph.nn.get_loss("cross_entropy"),
                             pnngraph.nn.get_optimizer("sgd"), 0, "numpy")
    state = kernels.StageState(device.tree_asarray(model.params), {"step": 0}, ())
    with pytest.raises((TypeError, RuntimeError)):
        kernels.grad(spec, state, X, y, np.arange(4), 4, 0, 0)
    host = kernels.to_host(state)
    part = kernels.grad(spec, host, X, y, np.arange(4), 4, 0, 0)
    assert np.isfinite(part.loss)


def test_a_worker_leaving_after_planning_warns_and_the_run_completes():
    X, y = make_data("mlp")
    with local_cluster(3, 0, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        graph = pnngraph.build(make_mlp(), (X, y), strategy=DataParallel(3), client=client,
                               scheduler="static", **KW)
        victim = sorted(set(graph.placement.values()))[-1]
        client.retire_workers([victim], close_workers=True)
        with pytest.warns(PlacementWarning, match="left the cluster after planning"):
            result = client.compute(graph).result()
    (reference,) = dask.compute(pnngraph.build(make_mlp(), (X, y), strategy=DataParallel(3),
                                               **KW), scheduler="sync")
    assert max_rel_diff(result.params, reference.params) == 0.0
