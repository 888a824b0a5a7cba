"""The cluster model, the cost model and the planner, without a cluster."""

from __future__ import annotations

import pytest

import pnngraph
from pnngraph import DataParallel, Hybrid, ModelAveraging, Pipeline
from pnngraph.exceptions import ConfigError, UnknownNameError
from pnngraph.nn.presets import mlp
from pnngraph.plan.cluster import ClusterModel, WorkerModel, refine, simulated_cluster
from pnngraph.plan.placement import step_terms
from pnngraph.plan.planner import make_plan, scheduling_graph
from pnngraph.run.pipeline import prepare_inputs
from tests.graph.conftest import make_data, make_mlp

KW = {"steps": 3, "batch_size": 20, "optimizer": "adam", "lr": 0.01}


def graph_of(strategy, **kw):
    return pnngraph.build(make_mlp(), make_data("mlp"), strategy=strategy, **{**KW, **kw})


@pytest.mark.parametrize("scheduler", ["heft", "peft", "cpop", "best", "heft_lookahead",
                                       "static", "dask", "round_robin", "greedy_start"])
@pytest.mark.parametrize("strategy", [DataParallel(3), Pipeline(3, 2),
                                      Hybrid(DataParallel(2), Pipeline(2, 2)),
                                      ModelAveraging(2, 2)])
def test_every_plan_is_a_valid_schedule(scheduler, strategy):
    cluster = simulated_cluster(cpus=3, gpus=1)
    graph = graph_of(strategy)
    plan = make_plan(graph.to_networkx(), cluster, scheduler=scheduler)
    costed = scheduling_graph(graph.to_networkx(), cluster)
    plan.schedule.validate(costed)
    plan.predicted.validate(costed)
    assert set(plan.placement) == set(costed)
    assert set(plan.placement.values()) <= set(cluster.addresses)
    assert plan.makespan >= plan.schedule.makespan - 1e-12  # hop latency only adds
    assert sorted(plan.priorities.values()) == list(range(1, len(costed) + 1))
    assert all(plan.backends[k] == cluster.worker(w).backend for k, w in plan.placement.items())


def test_build_with_a_cluster_model_exposes_the_plan():
    cluster = simulated_cluster(cpus=2, gpus=0)
    graph = graph_of(DataParallel(2), cluster=cluster, scheduler="heft")
    assert graph.plan is not None and graph.plan.algorithm == "heft"
    assert graph.plan.makespan > 0 and set(graph.plan.step_makespans()) == {0, 1, 2}
    assert "predicted wall time" in graph.plan.summary()


def test_cost_model_is_roofline_plus_overhead_times_history():
    w = WorkerModel("a", 1, "numpy", {"float64": 1e9}, 1e9)
    cluster = ClusterModel((w,), task_overhead_seconds=1e-3, history={"grad|a": 2.0})
    graph = graph_of(DataParallel(1), fuse_steps=1)
    costed = scheduling_graph(graph.to_networkx(), cluster)
    for key, node in costed.nodes(data=True):
        raw = graph.to_networkx().nodes[key]
        factor = 2.0 if raw["kind"] == "grad" else 1.0
        expected = 1e-3 + factor * max(raw["flops"] / 1e9, raw["bytes"] / 1e9)
        assert node["costs"]["a"] == pytest.approx(expected)


def test_refine_moves_towards_measured_durations_and_ignores_outliers():
    cluster = simulated_cluster(cpus=1, gpus=0)
    samples = [("grad", "sim-cpu-0", 1.0, m) for m in (2.0, 2.1, 1.9, 2.0, 50.0)]
    once = refine(cluster, samples, weight=1.0)
    assert once.correction("grad", "sim-cpu-0") == pytest.approx(2.0, rel=0.03)
    assert once.correction("update", "sim-cpu-0") == 1.0
    # the next run is predicted with the correction (1.0 s raw -> 2.0 s); measuring the same
    # durations again leaves the factor where it is
    twice = refine(once, [(p, w, 2.0, m) for p, w, _, m in samples], weight=0.5)
    assert twice.correction("grad", "sim-cpu-0") == pytest.approx(2.0, rel=0.05)


def test_cluster_model_json_round_trip_and_bad_input():
    cluster = simulated_cluster(cpus=2, gpus=1).with_history({"grad|sim-cpu-0": 1.5})
    assert ClusterModel.from_json(cluster.to_json()) == cluster
    with pytest.raises(ConfigError, match="cluster model"):
        ClusterModel.from_json('{"workers": 3}')
    with pytest.raises(ConfigError, match="at least one worker"):
        ClusterModel(())
    with pytest.raises(ConfigError, match="speed"):
        ClusterModel((WorkerModel("a", 1, "numpy", {"float64": -1.0}, 1e9),))


def test_unknown_scheduler_and_gpu_plan_without_gpu():
    graph = graph_of(DataParallel(2))
    with pytest.raises(UnknownNameError, match="scheduler: expected one of"):
        make_plan(graph.to_networkx(), simulated_cluster(2, 0), scheduler="magic")
    with pytest.raises(UnknownNameError, match="scheduler"):
        graph_of(DataParallel(2), scheduler="magic")
    with pytest.raises(ConfigError, match="devices: expected a cluster with GPU workers"):
        graph_of(DataParallel(2), cluster=simulated_cluster(2, 0), devices="gpu")
    with pytest.raises(ConfigError, match="shards='auto'"):
        graph_of(DataParallel("auto"))


def test_devices_restrict_the_plan():
    cluster = simulated_cluster(cpus=2, gpus=1)
    gpu_only = graph_of(DataParallel(2), cluster=cluster, devices="gpu").plan
    cpu_only = graph_of(DataParallel(2), cluster=cluster, devices="cpu").plan
    assert set(gpu_only.placement.values()) == {"sim-gpu-0"}
    assert "sim-gpu-0" not in set(cpu_only.placement.values())


def test_auto_shards_end_every_worker_s_step_together():
    # free transfers, no Dask hop or task cost: a worker's step is its shard's gradient and
    # its own copy's update (3 gradients summed), and every worker ends it at the same time
    cluster = simulated_cluster(cpus=2, gpus=1, gpu_speedup=10.0, hop_latency_seconds=0.0,
                                task_overhead_seconds=0.0, network_gb_per_s=1e9,
                                pcie_gb_per_s=1e9)
    kw = {**KW, "batch_size": 2400}
    data = make_data("mlp", n=2400)
    graph = pnngraph.build(make_mlp(), data, strategy=DataParallel("auto"), cluster=cluster,
                           **kw)
    sizes = {}
    for key, node in graph.to_networkx().nodes(data=True):
        if node["kind"] == "grad" and node["step"] == 0:
            sizes[graph.plan.placement[key]] = len(node["args"][4])
    assert sum(sizes.values()) == 2400 and set(sizes) == set(cluster.addresses)
    spec = prepare_inputs(make_mlp(), data, **kw).spec
    per_sample, fixed = step_terms(cluster, make_mlp(), spec, cluster.addresses, rows=800,
                                   parts=3)
    ends = [per_sample[a] * n + fixed[a] for a, n in sizes.items()]
    assert max(ends) - min(ends) <= max(per_sample.values())  # one sample of the slowest
    # the GPU is 10x faster at gradients, and a CPU's update also costs it samples
    assert sizes["sim-gpu-0"] > 10 * sizes["sim-cpu-0"]
    equal = pnngraph.build(make_mlp(), data, strategy=DataParallel(3), cluster=cluster, **kw)
    assert graph.plan.makespan < equal.plan.makespan
    # a tiny batch: every worker's update costs more than its share of the gradients saves,
    # so the sizing keeps one worker, the fastest
    tiny = graph_of(DataParallel("auto"), cluster=cluster, batch_size=24)
    assert tiny.strategy.shards == 1 and set(tiny.plan.placement.values()) == {"sim-gpu-0"}
    # with Dask's 6 ms per hop, a shard of this tiny model is not worth sending anywhere
    slow_hops = graph_of(DataParallel("auto"), cluster=simulated_cluster(cpus=2, gpus=1),
                         batch_size=24)
    assert set(slow_hops.plan.placement.values()) == {"sim-gpu-0"}


def test_mixed_cluster_beats_gpu_only_on_the_large_mlp():
    """The acceptance setting (1 GPU 20x a CPU worker, 4 CPU workers, PCIe-like link)."""
    import numpy as np

    cluster = simulated_cluster(cpus=4, gpus=1, cpu_gflops=50.0, gpu_speedup=20.0)
    model = mlp((784,), 10, hidden=(2048, 2048), dtype="float32")
    X = np.zeros((8192, 784), np.float32)
    y = np.zeros(8192, int)
    kw = {"steps": 2, "batch_size": 8192, "optimizer": "sgd", "lr": 0.01, "cluster": cluster}
    gpu = pnngraph.build(model, (X, y), strategy=DataParallel(1), devices="gpu", fuse_steps=1,
                         **kw).plan
    mixed = pnngraph.build(model, (X, y), strategy=DataParallel("auto"), scheduler="best",
                           **kw).plan
    assert mixed.makespan < gpu.makespan
