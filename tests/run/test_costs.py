"""What plans are priced with: measured kernels and Dask costs, predictions of wall time,
strategy="auto", copies of a data-parallel state, hops learned from a run."""

from __future__ import annotations

from dataclasses import replace

import pytest

import pnngraph
from pnngraph import DataParallel, build
from pnngraph.plan.cluster import ClusterModel, simulated_cluster
from pnngraph.run import history
from pnngraph.run.profile import wanted
from tests.graph.conftest import make_data, make_mlp, max_rel_diff

KW = {"batch_size": 20, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9}


def test_a_plan_predicts_the_wall_time_term_by_term():
    X, y = make_data("mlp")
    cluster = simulated_cluster(cpus=2, gpus=0)
    graph = build(make_mlp(), (X, y), strategy=DataParallel(2), steps=3, cluster=cluster, **KW)
    plan = graph.plan
    assert set(plan.terms) == {"submit", "steps", "gather"}
    assert plan.wall_seconds == pytest.approx(sum(plan.terms.values()))
    assert plan.terms["steps"] == plan.makespan and plan.terms["submit"] > cluster.graph_seconds
    # without a client the data travels inside the graph too: it costs submission time
    slow = ClusterModel(cluster.workers, send_bytes_per_s=1e3)
    again = build(make_mlp(), (X, y), strategy=DataParallel(2), steps=3, cluster=slow, **KW)
    assert again.plan.terms["submit"] > plan.terms["submit"] + X.nbytes / 1e3 * 0.99


def test_measured_kernel_times_price_the_nodes_that_run_them():
    X, y = make_data("mlp")
    cluster = simulated_cluster(cpus=2, gpus=0)
    graph = build(make_mlp(), (X, y), strategy=DataParallel(2), steps=2, cluster=cluster, **KW)
    todo = wanted(graph.to_networkx(), cluster)
    assert {sig.split(":")[0] for sig in todo} == {"grad", "update"}
    grad = next(sig for sig in todo if sig.startswith("grad:"))
    lines = {f"{sig}|{a}": (0.5, 0.0) if sig == grad else (0.1, 0.0)
             for sig in todo for a in cluster.addresses}
    measured = cluster.with_kernels(lines)
    assert wanted(graph.to_networkx(), measured) == {}
    priced = build(make_mlp(), (X, y), strategy=DataParallel(2), steps=2, cluster=measured, **KW)
    # two steps of a 0.5 s gradient and a 0.1 s update, side by side on two workers
    assert 1.2 <= priced.plan.makespan <= 1.2 + 0.2
    assert ClusterModel.from_json(measured.to_json()) == measured


def test_auto_plans_every_candidate_and_keeps_the_fastest():
    X, y = make_data("mlp")
    cluster = simulated_cluster(cpus=3, gpus=0)
    graph = build(make_mlp(), (X, y), strategy="auto", steps=4, cluster=cluster, **KW)
    alternatives = graph.plan.alternatives
    names = [name for name, _ in alternatives]
    assert len(names) == len(set(names)) >= 4 and "DataParallel(weights=(1.0,))" in names
    assert not any(name.startswith("ModelAveraging") for name in names)  # another algorithm
    seconds = [s for _, s in alternatives]
    assert seconds == sorted(seconds)
    assert names[0].split(" (")[0] == repr(graph.strategy)
    import dask

    (result,) = dask.compute(graph, scheduler="sync")
    reference = pnngraph.train_serial(make_mlp(), X, y, steps=4, **KW)
    assert max_rel_diff(result.params, reference.params) <= 1e-12


def test_auto_without_a_cluster_is_the_serial_loop():
    X, y = make_data("mlp")
    graph = build(make_mlp(), (X, y), strategy="auto", steps=4, **KW)
    assert graph.strategy == DataParallel(1) and graph.plan is None


def test_hops_are_learned_from_a_task_stream():
    X, y = make_data("mlp")
    cluster = simulated_cluster(cpus=1, gpus=0, hop_latency_seconds=0.001)
    graph = build(make_mlp(), (X, y), strategy=DataParallel(1), steps=3, fuse_steps=1,
                  cluster=cluster, **KW)
    order = sorted(graph.plan.predicted.slots, key=lambda k: graph.plan.predicted.slots[k].start)
    stream, t = [], 100.0
    for key in order:  # each task starts 20 ms after the one before ends, on one worker
        stream.append({"key": key, "worker": "sim-cpu-0",
                       "startstops": [{"action": "compute", "start": t, "stop": t + 0.01}]})
        t += 0.03
    assert history.hop_samples(graph, stream) == pytest.approx([0.02] * (len(order) - 1))
    learned = history.learn(cluster, graph, stream, weight=1.0)
    assert learned.hop_latency_seconds == pytest.approx(0.02)


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    from pnngraph.run.cluster import local_cluster

    with local_cluster(2, dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


@pytest.mark.cluster
def test_calibration_measures_dask_costs_and_their_spread(client, tmp_path):
    from pnngraph.run.calibrate import calibrate

    cluster = calibrate(client, cache_dir=tmp_path, budget_seconds=5.0)
    for name in ("graph_seconds", "task_overhead_seconds", "hop_latency_seconds"):
        assert 0 < getattr(cluster, name) < 1.0, name
    for name in ("send_bytes_per_s", "result_bytes_per_s", "network_bytes_per_s"):
        assert getattr(cluster, name) > 1e6, name
    assert set(cluster.spread) >= {"graph_seconds", "hop_latency_seconds", "network_bytes_per_s"}


@pytest.mark.cluster
def test_profiles_are_measured_once_and_copies_have_homes(client, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    X, y = make_data("mlp", n=200)
    graph = build(make_mlp(), (X, y), strategy=DataParallel(2), steps=3, client=client, **KW)
    kernels = graph.cluster.kernels
    workers = sorted(graph.cluster.addresses)
    for kernel in ("grad", "update"):
        for w in workers:
            (a, b), = [v for k, v in kernels.items() if k.startswith(kernel) and k.endswith(w)]
            assert a >= 0 and b >= 0 and a + b > 0
    # the next build of the same model on the same cluster measures nothing again
    again = build(make_mlp(), (X, y), strategy=DataParallel(2), steps=3, client=client, **KW)
    assert wanted(again.to_networkx(), again.cluster) == {}
    # each copy of the state lives on its own worker, with the gradients that read it
    homes: dict[int, set[str]] = {}
    for key, node in graph.to_networkx().nodes(data=True):
        if node.get("copy") is not None and node["kind"] in ("grad", "update"):
            homes.setdefault(node["copy"], set()).add(graph.placement[key])
    assert sorted(len(h) for h in homes.values()) == [1, 1]
    assert homes[0] != homes[1]
    result = client.compute(graph).result()
    reference = pnngraph.train_serial(make_mlp(), X, y, steps=3, **KW)
    assert max_rel_diff(result.params, reference.params) <= 1e-12


@pytest.mark.cluster
def test_the_first_auto_sizing_reads_kernels_measured_on_the_workers(client, tmp_path,
                                                                     monkeypatch):
    """A fresh cache: the shards of DataParallel("auto") are sized after the gradient and
    update kernels were measured on every worker (an equal split profiled first), so the
    sizes are those the measured cluster model gives, not the roofline's."""
    import numpy as np

    from pnngraph.compile.spec import prepare
    from pnngraph.nn import Dense, ReLU, Sequential
    from pnngraph.plan.placement import size_shards

    def model():
        return Sequential([Dense(32, 512), ReLU(), Dense(512, 512), ReLU(), Dense(512, 4)],
                          input_shape=(32,), seed=0)

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    X = np.random.default_rng(0).standard_normal((600, 32))
    y = (X[:, 0] > 0).astype(int)
    kw = {"batch_size": 600, "steps": 2, "lr": 0.05}
    graph = build(model(), (X, y), strategy=DataParallel("auto"), client=client, **kw)
    measured = graph.cluster
    for kernel in ("grad", "update"):
        for w in measured.addresses:
            assert any(k.startswith(kernel + ":") and k.endswith("|" + w)
                       for k in measured.kernels), (kernel, w)
    spec, _, _ = prepare(model(), X, y, strategy=DataParallel("auto"), **kw)
    sized, _ = size_shards(DataParallel("auto"), measured, model(), spec)
    unmeasured = replace(measured, kernels={})  # the same cluster, no kernel times
    roofline, _ = size_shards(DataParallel("auto"), unmeasured, model(), spec)
    assert graph.strategy == sized != roofline


@pytest.mark.cluster
def test_embedded_workers_keep_freed_memory(client):
    from pnngraph.run.cluster import KeepFreedMemory

    def plugins(dask_worker):
        return sorted(dask_worker.plugins)

    assert all(KeepFreedMemory.name in p for p in client.run(plugins).values())


@pytest.mark.cluster
def test_the_embedded_scheduler_steals_no_pinned_task(client):
    def extensions(dask_scheduler):
        return sorted(dask_scheduler.extensions)

    found = client.run_on_scheduler(extensions)
    assert "stealing" not in found and "amm" in found  # only stealing is left out


def test_fit_submits_each_chunk_before_the_one_before_ends():
    X, y = make_data("mlp")
    calls = []
    pnngraph.fit(make_mlp(), (X, y), strategy=DataParallel(2), steps=6, chunk_steps=2,
                 progress=False, on_graph=lambda g: calls.append(("graph", g.token)),
                 on_chunk=lambda r: calls.append(("chunk", r.step)), **KW)
    kinds = [kind for kind, _ in calls]
    # chunk n+1 is built and submitted, then chunk n is waited for and reported
    assert kinds == ["graph", "graph", "chunk", "graph", "chunk", "chunk"]
    assert [s for kind, s in calls if kind == "chunk"] == [2, 4, 6]


def test_a_checkpoint_that_cannot_be_written_fails_the_run(tmp_path, monkeypatch):
    from pnngraph.run import checkpoint

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    X, y = make_data("mlp")
    monkeypatch.setattr(checkpoint, "save_checkpoint", full_disk)  # in the writer thread
    with pytest.raises(OSError, match="No space left"):
        pnngraph.fit(make_mlp(), (X, y), strategy=DataParallel(2), steps=4, chunk_steps=2,
                     progress=False, checkpoint_dir=tmp_path / "ckpt", **KW)


def test_workers_log_everything_but_transfers_cut_off_by_a_lost_peer():
    import logging
    import sys

    from distributed.comm.core import CommClosedError

    from pnngraph.run.cluster import _not_a_lost_peer

    def record(exc):
        info = None
        if exc is not None:
            try:
                raise exc
            except BaseException:
                info = sys.exc_info()
        return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, "msg", (),
                                 info)

    assert not _not_a_lost_peer(record(CommClosedError("in <TCP (closed)>: Stream is closed")))
    assert _not_a_lost_peer(record(ValueError("a task's own error")))
    assert _not_a_lost_peer(record(None))
