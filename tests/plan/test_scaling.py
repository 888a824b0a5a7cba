"""Planning for large simulated clusters: cluster files with worker groups, the fan-in the
planner chooses, the ring all-reduce bound, transfers that share a worker's link."""

from __future__ import annotations

import dask
import networkx as nx
import numpy as np
import pytest

import pnngraph
import schedulers
from pnngraph import DataParallel
from pnngraph.exceptions import ConfigError
from pnngraph.nn import SGD, Dense, Sequential
from pnngraph.nn.presets import mlp
from pnngraph.plan.cluster import cluster_from_spec, simulated_cluster
from pnngraph.plan.scaling import ring_allreduce_seconds, ring_bound
from pnngraph.run.auto import fan_in_candidates


def groups(cpus: int, gpus: int, **top) -> dict:
    workers = [{"name": "cpu", "gflops": 100, "count": cpus}]
    if gpus:
        workers.append({"name": "gpu", "backend": "cupy", "gflops": 2000, "count": gpus,
                        "host_device_gb_per_s": 12})
    return {"network_gbit_per_s": 10, "hop_latency_ms": 0.5, **top, "workers": workers}


def test_a_cluster_file_of_worker_groups():
    cluster = cluster_from_spec(groups(960, 64))
    assert len(cluster.workers) == 1024
    assert cluster.addresses[0] == "cpu-0" and cluster.addresses[-1] == "gpu-63"
    assert [w.gpu for w in cluster.workers].count(True) == 64
    assert cluster.worker("gpu-5").host_device_bytes_per_s == 12e9
    assert cluster.worker("cpu-9").flops_per_s("float64") == 50e9
    assert cluster.network_bytes_per_s == 1.25e9  # 10 Gbit/s
    assert cluster.hop_latency_seconds == 0.5e-3 and cluster.shared_links
    one = cluster_from_spec({"network_gb_per_s": 2, "shared_links": False,
                             "workers": [{"name": "solo", "gflops": 10}]})
    assert one.addresses == ["solo"] and one.network_bytes_per_s == 2e9
    assert not one.shared_links


@pytest.mark.parametrize("change, message", [
    ({"workers": [{"gflops": 1, "count": 0}]}, "workers[0].count: expected a positive integer"),
    ({"workers": [{"gflops": 1, "count": 2.5}]}, "workers[0].count: expected a positive integer"),
    ({"workers": [{"gflops": -1}]}, "workers[0].gflops: expected a positive number"),
    ({"workers": [{"gflops": 1, "colour": "red"}]}, "workers[0]: expected keys among"),
    ({"network_gb_per_s": 1, "network_gbit_per_s": 10}, "expected one of network_gb_per_s"),
    ({"hop_latency_ms": "fast"}, "hop_latency_ms: expected a number >= 0"),
    ({"shared_links": "yes"}, "shared_links: expected true or false"),
    ({"workers": [{"gflops": 1, "count": 200_000}]}, "expected at most 100000 workers"),
])
def test_bad_cluster_files_name_the_bad_value(change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        cluster_from_spec({**groups(4, 0), **change})


def test_ring_bound_of_a_known_case():
    model = Sequential([Dense(100, 100)], input_shape=(100,))  # 10,100 float64 parameters
    cluster = simulated_cluster(cpus=4, gpus=0, cpu_gflops=100.0, network_gb_per_s=1.0,
                                hop_latency_seconds=1e-3)
    bound = ring_bound(model, 1000, cluster, SGD(0.1))
    assert bound.workers == 4 and bound.gradient_bytes == 80_800
    assert bound.allreduce_seconds == pytest.approx(2 * 3 / 4 * 80_800 / 1e9, rel=1e-12)
    # grad: (3 F - F_1) n = 2 F n with F = 2 * 100 * 100 FLOPs per sample; update: 3 P
    assert model.layer_flops() == [20_000]
    flops = 2 * 20_000 * 1000 + 3 * 10_100
    assert bound.compute_seconds == pytest.approx(flops / (4 * 50e9), rel=1e-12)
    assert bound.latency_seconds == pytest.approx(6e-3)
    assert bound.seconds == bound.compute_seconds + bound.allreduce_seconds
    assert ring_allreduce_seconds(8.0, 2, 1.0) == 8.0


def test_fan_in_candidates_one_per_distinct_tree():
    assert fan_in_candidates(2) == [8]
    assert fan_in_candidates(6) == [8, 2, 4]
    assert fan_in_candidates(64, 64) == [8, 2, 4, 16, 64]
    assert fan_in_candidates(1024, 1024) == [8, 2, 4, 16]  # no flat sum of a million edges


X = np.random.default_rng(0).standard_normal((256, 64))
Y = (X[:, 0] > 0).astype(int)
KW = {"steps": 1, "batch_size": 256, "optimizer": "sgd", "lr": 0.1}


def slow_network(n: int) -> object:
    """n CPU workers behind a slow, shared network: each worker that must receive many
    gradients waits for every one, so a narrow tree is strictly faster than a flat sum."""
    return cluster_from_spec({"network_gb_per_s": 0.05, "hop_latency_ms": 0.1,
                              "workers": [{"name": "cpu", "gflops": 100, "count": n}]})


def test_the_planner_chooses_a_strictly_better_fan_in_and_always_the_same():
    model = mlp((64,), 2, hidden=(256,))
    plans = [pnngraph.build(model, (X, Y), strategy=DataParallel(16), cluster=slow_network(16),
                            fan_in="auto", **KW).plan for _ in range(2)]
    tried = dict(plans[0].fan_ins)
    chosen = plans[0].fan_ins[0][0]
    assert set(tried) == {8, 2, 4, 16}
    assert chosen != 8 and tried[chosen] < tried[8]  # strictly better than the fixed default
    assert tried[chosen] == min(tried.values())
    assert plans[1].fan_ins == plans[0].fan_ins  # a pure function of the inputs
    assert f"fan-in {chosen}, predicted fastest" in plans[0].summary()
    kept = pnngraph.build(model, (X, Y), strategy=DataParallel(16), cluster=slow_network(16),
                          fan_in=8, **KW).plan
    assert kept.fan_ins == ()  # a fan-in given is kept: it decides the summation order


def test_the_chosen_fan_in_trains_as_that_fan_in_does():
    model = mlp((64,), 2, hidden=(256,))
    auto = pnngraph.build(model, (X, Y), strategy=DataParallel(16), cluster=slow_network(16),
                          scheduler="dask", fan_in="auto", **KW)
    chosen = auto.plan.fan_ins[0][0]
    given = pnngraph.build(model, (X, Y), strategy=DataParallel(16), fan_in=chosen, **KW)
    a, = dask.compute(auto, scheduler="sync")
    b, = dask.compute(given, scheduler="sync")
    for pa, pb in zip(a.model.params, b.model.params, strict=True):
        for name in pa:
            np.testing.assert_array_equal(pa[name], pb[name])


def test_the_default_fan_in_is_eight_with_a_cluster_model_too():
    """Training sums in the same tree whatever the (measured) cluster model says."""
    plan = pnngraph.build(mlp((64,), 2, hidden=(256,)), (X, Y), strategy=DataParallel(16),
                          cluster=slow_network(16), **KW).plan
    assert plan.fan_ins == ()


def test_without_a_cluster_the_fan_in_is_eight():
    g = pnngraph.build(mlp((64,), 2, hidden=(8,)), (X, Y), strategy=DataParallel(16),
                       **KW).to_networkx()
    assert sum(kind == "aggregate" for _, kind in g.nodes(data="kind")) == 2  # 16 -> 2 -> update


def test_shared_links_send_one_output_at_a_time():
    """One output read on three other processors: at once without contention, one after
    another over the sender's link with it; a second reader on a processor gets it free."""
    g = nx.DiGraph()
    g.add_node("src", costs=dict.fromkeys("abcd", 1.0))
    for reader in ("b1", "b2", "c", "d"):
        g.add_node(reader, costs=dict.fromkeys("abcd", 1.0))
        g.add_edge("src", reader, comm=2.0)
    placement = {"src": "a", "b1": "b", "b2": "b", "c": "c", "d": "d"}
    free = schedulers.simulate(g, placement, processors=list("abcd"))
    shared = schedulers.simulate(g, placement, processors=list("abcd"), contention=True)
    assert free.makespan == 1.0 + 2.0 + 1.0 + 1.0  # b runs its two readers one after another
    assert [shared.slots[n].start for n in ("b1", "c", "d")] == [3.0, 5.0, 7.0]
    assert shared.slots["b2"].start == 4.0  # the output is on b already
    shared.validate(g)


def test_planning_a_thousand_workers_makes_no_table_per_pair():
    cluster = cluster_from_spec(groups(896, 128))
    machine = pnngraph.plan.planner.machine_for(cluster, "float32")
    g = nx.DiGraph()
    g.add_node("a", flops=1e6, bytes=1e3)
    g.add_node("b", flops=1e6, bytes=1e3)
    g.add_edge("a", "b", bytes=1e6)
    comm = schedulers.annotate_costs(g, machine).edges["a", "b"]["comm"]
    assert isinstance(comm, schedulers.PairSum)
    cpu_cpu = 1e6 / 1.25e9
    assert comm[("cpu-0", "cpu-1")] == pytest.approx(cpu_cpu, rel=1e-12)
    assert comm[("cpu-0", "gpu-0")] == pytest.approx(cpu_cpu + 1e6 / 12e9, rel=1e-12)
    assert comm[("gpu-1", "gpu-0")] == pytest.approx(cpu_cpu + 2e6 / 12e9, rel=1e-12)


def test_the_sum_relayed_to_many_copies_has_the_bits_of_one_update():
    """Eight copies of the state and fan-in 2: the sum reaches the copies along a relay tree,
    and every copy ends bitwise equal to the one state of a run without copies."""
    model = mlp((64,), 2, hidden=(16,))
    kw = {**KW, "steps": 2, "batch_size": 64, "fan_in": 2}
    relayed = pnngraph.build(model, (X, Y), strategy=DataParallel(8),
                             cluster=simulated_cluster(cpus=8, gpus=0), **kw)
    g = relayed.to_networkx()
    relays = [k for k in g if g.nodes[k]["kind"] == "aggregate" and k[3] == -1]
    assert len(relays) == 2 * 8 and max(g.out_degree(k) for k in relays) <= 1 + 2
    plain = pnngraph.build(model, (X, Y), strategy=DataParallel(8), **kw)
    a, = dask.compute(relayed, scheduler="sync")
    b, = dask.compute(plain, scheduler="sync")
    np.testing.assert_array_equal(a.losses, b.losses)
    for pa, pb in zip(a.model.params, b.model.params, strict=True):
        for name in pa:
            np.testing.assert_array_equal(pa[name], pb[name])
