"""Adaptive runs (``fit(adapt=True)``) on real local clusters: a straggler re-sizes the shards,
workers that join get work, workers that leave or die cost no restart; every result equals the
serial reference to 1e-12 whatever the shard sizes were. Nothing here reads a clock: the
straggler is an emulated slow device (:func:`pnngraph.testing.slow_down`, five times slower),
and the test checks that its sleeps ran (a counter in the worker) and what the run did."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import replace

import dask
import numpy as np
import pytest

from pnngraph import DataParallel, fit, train_serial
from pnngraph.exceptions import ConfigError
from pnngraph.nn import Dense, ReLU, Sequential
from pnngraph.plan.cluster import refine, simulated_cluster
from pnngraph.run.adapt import check_threshold
from pnngraph.run.session import live_workers
from pnngraph.testing import slow_down, slowed_calls

RUN = {"batch_size": 600, "lr": 0.05, "progress": False}


def make_model():
    return Sequential([Dense(32, 512), ReLU(), Dense(512, 512), ReLU(), Dense(512, 4)],
                      input_shape=(32,), seed=0)


def make_data():
    X = np.random.default_rng(0).standard_normal((1800, 32))
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)


def assert_serial(result, steps):
    X, y = make_data()
    ref = train_serial(make_model(), X, y, steps=steps, batch_size=RUN["batch_size"],
                       lr=RUN["lr"])
    for a, b in zip(result.params, ref.params, strict=True):
        for k in a:
            scale = max(float(np.max(np.abs(b[k]))), 1e-30)
            assert float(np.max(np.abs(a[k] - b[k]))) / scale < 1e-12
    np.testing.assert_allclose(result.losses, ref.losses, rtol=1e-12)


def cluster(n):
    import distributed

    return distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                    dashboard_address=None, host="127.0.0.1",
                                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})


@pytest.fixture
def no_stealing():
    with dask.config.set({"distributed.scheduler.work-stealing": False}):
        yield


# ------------------------------------------------------------------------ without a cluster
def test_a_threshold_is_a_positive_fraction():
    assert check_threshold(0.25) == 0.25
    with pytest.raises(ConfigError, match="adapt_threshold"):
        check_threshold(-1)


def test_corrections_by_kernel_shape_win_over_the_phase():
    c = simulated_cluster(cpus=2, gpus=0)
    samples = [("grad", "sim-cpu-0", 1.0, 3.0, "grad:abc")] * 2 + \
        [("update", "sim-cpu-0", 1.0, 1.0, "update:abc")] * 3
    refined = refine(c, samples, weight=1.0, by_shape=True)
    assert refined.correction("grad", "sim-cpu-0", "grad:abc") == pytest.approx(3.0)
    assert refined.correction("grad", "sim-cpu-0") == 1.0  # the phase learned nothing
    assert refined.correction("grad", "sim-cpu-1", "grad:abc") == 1.0
    assert refine(c, samples, weight=1.0).correction("grad", "sim-cpu-0") == 1.0  # < 3 samples
    assert refined.without(["sim-cpu-0"]).history == {}


def test_shard_sizes_name_the_worker_of_fused_steps():
    """A tiny model's one shard runs its steps fused (one task of kind "steps"): its samples
    are recorded under the worker the plan pinned it to; unpinned (no plan), under "?"."""
    from pnngraph import build
    from pnngraph.run.adapt import shard_sizes

    tiny = Sequential([Dense(4, 2)], input_shape=(4,), seed=0)
    X = np.random.default_rng(0).standard_normal((64, 4))
    y = (X[:, 0] > 0).astype(int)
    kw = {"strategy": DataParallel(1), "steps": 6, "batch_size": 16}
    planned = build(tiny, (X, y), cluster=simulated_cluster(cpus=2, gpus=0), **kw)
    assert {n.get("kind") for _, n in planned.abstract.nodes(data=True)} >= {"steps"}
    (worker,) = shard_sizes(planned, 16)
    assert worker in planned.cluster.addresses and shard_sizes(planned, 16)[worker] == 16
    assert shard_sizes(build(tiny, (X, y), **kw), 16) == {"?": 16}


def test_a_re_size_the_refined_model_prices_shorter_is_made_without_a_drift():
    """No worker drifted, but what the run learned says the shards as they are (a few samples
    on a worker whose own update is slow) make a step far longer than a re-size would: the
    re-size is made; one that would save less than the threshold of a step is not."""
    from pnngraph.compile.cost import stage_costs
    from pnngraph.compile.spec import prepare
    from pnngraph.plan.placement import PlacementOptions, exchange_seconds, predicted_step
    from pnngraph.run.adapt import DEFAULT_THRESHOLD, _gain, refit
    from pnngraph.run.pipeline import Run

    model, (X, y) = make_model(), make_data()
    spec, _, _ = prepare(model, X, y, batch_size=600, steps=4, strategy=DataParallel("auto"))
    sig = stage_costs(model, [(0, len(model.layers))], spec.optimizer, spec.loss).sigs[0]
    c = simulated_cluster(cpus=3, gpus=0)
    a, b, slow = c.addresses
    lines = {}  # seconds = calls * first + rows * second
    for w, grad, update in ((a, 1e-4, 0.01), (b, 1e-4, 0.01), (slow, 3e-4, 0.2)):
        lines[f"grad:{sig}|{w}"], lines[f"update:{sig}|{w}"] = (0.002, grad), (update, 0.0)
    c = c.with_kernels(lines)
    run = Run(model, replace(spec, strategy=DataParallel([298, 298, 4])), (None, None),
              PlacementOptions(), cluster=c, shard_workers=(a, b, slow))
    as_they_are = predicted_step(c, model, spec, {a: 298, b: 298, slow: 4})
    overhead = c.task_overhead_seconds  # a task's, twice a step: the gradient and the update
    assert as_they_are == pytest.approx(0.002 + 4 * 3e-4 + 0.2 + 2 * overhead +
                                        exchange_seconds(c, model, [a, b, slow]))
    fixed = refit(run, DataParallel("auto"))
    gain = _gain(run, fixed, None, DEFAULT_THRESHOLD)
    assert gain is not None
    (now, before), (then, after) = gain
    assert now == pytest.approx(as_they_are) and before == {a: 298, b: 298, slow: 4}
    assert set(after) == {a, b} and then < (1 - DEFAULT_THRESHOLD) * now  # the slow one left out
    assert _gain(fixed, refit(fixed, DataParallel("auto")), None, 0.01) is None  # no churn
    close = replace(run, spec=replace(spec, strategy=DataParallel([299, 301])),
                    shard_workers=(a, b))
    assert _gain(close, fixed, None, DEFAULT_THRESHOLD) is None  # too little saved


def test_a_worker_left_out_is_measured_again_ever_more_rarely():
    """DataParallel("auto") leaves a slow worker out, and then nothing measures it: after two
    chunks without it, it gets a small shard for one chunk, then after four, then after
    eight; back in the plan with more than a probe's share, it waits two again."""
    from types import SimpleNamespace

    from pnngraph.compile.spec import prepare
    from pnngraph.plan.placement import PlacementOptions
    from pnngraph.run.adapt import PROBE_AFTER, Adapter, _planned
    from pnngraph.run.pipeline import Run

    model, (X, y) = make_model(), make_data()
    spec, _, _ = prepare(model, X, y, batch_size=600, steps=4, strategy=DataParallel("auto"))
    c = simulated_cluster(cpus=3, gpus=0)
    a, b, slow = c.addresses
    out = Run(model, replace(spec, strategy=DataParallel([300, 300])), (None, None),
              PlacementOptions(), cluster=c, shard_workers=(a, b))
    adapter = Adapter(DataParallel("auto"), 0.25)
    chunk = SimpleNamespace(lo=0, hi=2)
    probed = [i for i in range(1, 16) if adapter._probed(out, chunk) is not out]
    assert PROBE_AFTER == 2 and probed == [2, 6, 14]
    adapter = Adapter(DataParallel("auto"), 0.25)
    adapter._probed(out, chunk)
    first = adapter._probed(out, chunk)
    assert _planned(first) == {a: 300, b: 275, slow: 25}  # 1/8 of an equal shard, off the largest
    assert [m["message"] for m in adapter.changes] == [
        f"chunk (steps 0-2): worker {slow} left out, measured again with 25 samples; "
        "shards 300/300 -> 300/275/25"]
    assert adapter._probed(first, chunk) is first  # probed: no wait reset, no second probe
    back = replace(out, spec=replace(spec, strategy=DataParallel([200, 200, 200])),
                   shard_workers=(a, b, slow))
    assert adapter._probed(back, chunk) is back and adapter.wait[slow] == PROBE_AFTER
    assert Adapter(DataParallel(2), 0.25)._probed(out, chunk) is out  # S shards: as asked


# ------------------------------------------------------------------------------ on clusters
@pytest.mark.slow
@pytest.mark.cluster
def test_a_straggler_gets_smaller_shards_and_the_result_stays_serial(no_stealing, tmp_path,
                                                                     caplog):
    import distributed

    with cluster(3) as lc, distributed.Client(lc) as client:
        slow = list(live_workers(client))[-1]

        def hook(report):
            if report.step == 2:
                slow_down(client, slow, 5.0)

        with caplog.at_level(logging.INFO, logger="pnngraph"):
            # S shards kept, on the live workers (j mod W), weighted by their speeds
            result = fit(make_model(), make_data(), strategy=DataParallel(3), steps=12,
                         chunk_steps=2, client=client, adapt=True, on_chunk=hook,
                         checkpoint_dir=tmp_path, **RUN)
        assert slowed_calls(client, slow) > 0  # the slow device's sleeps ran
        last = result.shards[-1]["sizes"]
        assert sum(last.values()) == 600 and set(last) == set(live_workers(client))
        assert last[slow] < min(n for w, n in last.items() if w != slow)
        assert any(slow in r.getMessage() and "re-sized" in r.getMessage()
                   for r in caplog.records)
        assert_serial(result, 12)
        # the checkpoint holds the adapted strategy; a resumed adaptive run takes it
        more = fit(make_model(), make_data(), strategy=DataParallel(3), steps=14,
                   chunk_steps=2, client=client, adapt=True, checkpoint_dir=tmp_path,
                   resume=True, **RUN)
        slow_down(client, slow, 1.0)
        assert_serial(more, 14)


@pytest.mark.slow
@pytest.mark.cluster
def test_a_straggler_left_out_gets_work_back_once_it_recovers(no_stealing, caplog):
    import distributed

    with cluster(3) as lc, distributed.Client(lc) as client:
        slow = list(live_workers(client))[-1]
        slow_down(client, slow, 5.0)

        def hook(report):
            if report.step == 8:
                slow_down(client, slow, 1.0)

        with caplog.at_level(logging.INFO, logger="pnngraph"):
            # 40 chunks: probes, each twice as late as the one before, reach it well after
            # step 8 even where a busy machine measured one of them too slow
            result = fit(make_model(), make_data(), strategy=DataParallel("auto"), steps=80,
                         chunk_steps=2, client=client, adapt=True, on_chunk=hook, **RUN)
        slow_down(client, slow, 1.0)
    sizes = [chunk["sizes"].get(slow, 0) for chunk in result.shards]
    why = f"samples of {slow} per chunk: {sizes}; the run's changes: " + \
        "; ".join(r.getMessage() for r in caplog.records if r.name == "pnngraph")
    assert 0 in sizes[:4], why  # left out while slow
    assert any(f"worker {slow} left out, measured again" in r.getMessage()
               for r in caplog.records), why
    # back in: a share of its own, not a probe's 25. Not every chunk to the end: on 2 cores,
    # what the workers measure moves by 30 % from chunk to chunk, and a re-size may leave any
    # one of them out for a while (the refined model once priced the batch on one worker
    # cheaper than on two)
    assert max(sizes[4:]) >= 100, why
    assert_serial(result, 80)


@pytest.mark.slow
@pytest.mark.cluster
def test_a_re_size_that_would_not_fit_in_memory_is_not_made(no_stealing, caplog):
    """The cluster model says each worker may use 104 MiB: the equal split's plan fits (its
    predicted peak: 101 MiB at most here), one giving the fast workers most of the batch does
    not (107 MiB and more), so the straggler is named but its shard is not cut down."""
    import distributed

    from pnngraph.plan.memory import PAUSE_FRACTION
    from pnngraph.run.calibrate import calibrate

    def wide():
        return Sequential([Dense(32, 2048), ReLU(), Dense(2048, 4)], input_shape=(32,), seed=0)

    X = np.random.default_rng(0).standard_normal((3600, 32))
    y = (X[:, 0] > 0).astype(int)
    kw = {"batch_size": 1200, "lr": 0.05, "progress": False}
    with cluster(3) as lc, distributed.Client(lc) as client:
        slow = list(live_workers(client))[-1]
        measured = calibrate(client)
        limited = replace(measured, workers=tuple(
            replace(w, memory_limit_bytes=104 * 2**20 / PAUSE_FRACTION)
            for w in measured.workers))

        def hook(report):
            if report.step == 2:
                slow_down(client, slow, 5.0)

        with caplog.at_level(logging.INFO, logger="pnngraph"):
            result = fit(wide(), (X, y), strategy=DataParallel(3), steps=10,
                         chunk_steps=2, client=client, cluster=limited, adapt=True,
                         on_chunk=hook, **kw)
        slow_down(client, slow, 1.0)
    kept = [r.getMessage() for r in caplog.records if "would not fit" in r.getMessage()]
    assert any(slow in line and "shards kept as they are" in line for line in kept)
    # re-sized to its speed (a fifth of the others'), the slowed worker would hold far fewer; the
    # plans that fit leave it more than 200 (the fast workers' shards fit up to about 470
    # samples: a small re-size that fits, from the first chunks, may leave it 260-300)
    assert sorted(result.shards[0]["sizes"].values()) == [400, 400, 400]
    assert min(chunk["sizes"][slow] for chunk in result.shards) > 200
    ref = train_serial(wide(), X, y, steps=10, batch_size=1200, lr=0.05)
    for a, b in zip(result.params, ref.params, strict=True):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-14)


@pytest.mark.slow
@pytest.mark.cluster
def test_a_worker_that_joins_gets_work_from_a_later_chunk(no_stealing):
    import distributed

    with cluster(2) as lc, distributed.Client(lc) as client:
        before = set(live_workers(client))

        def hook(report):
            if report.step == 2:
                lc.scale(3)
                client.wait_for_workers(3, timeout=60)

        # S shards kept, on the live workers (j mod W), weighted by their speeds
        result = fit(make_model(), make_data(), strategy=DataParallel(3), steps=10,
                     chunk_steps=2, client=client, adapt=True, on_chunk=hook, **RUN)
        joined = set(live_workers(client)) - before
        assert len(joined) == 1
        assert not joined & set(result.shards[0]["sizes"])
        assert joined <= set(result.shards[-1]["sizes"])
        assert_serial(result, 10)


@pytest.mark.slow  # up to Dask's 30 s connect timeout where the dead worker is still listed
@pytest.mark.cluster
def test_kernels_are_measured_on_the_workers_alive_only():
    """The cluster model still names a worker just killed (a run's next chunk is planned
    before the membership is looked at again): its kernels are not measured and nothing
    fails; the live worker's are measured. Whether the scheduler has noticed the death yet or
    not, both ways end alike."""
    import distributed

    from pnngraph import build
    from pnngraph.run.calibrate import calibrate
    from pnngraph.run.profile import profile, wanted

    with cluster(2) as lc, distributed.Client(lc) as client:
        measured = replace(calibrate(client), kernels={})  # none cached: all to measure
        graph = build(make_model(), make_data(), strategy=DataParallel(2), steps=2,
                      cluster=measured, batch_size=600, lr=0.05)
        todo = wanted(graph.to_networkx(), measured)
        assert todo
        dead, alive = measured.addresses
        os.kill(client.run(os.getpid)[dead], signal.SIGKILL)
        profiled = profile(client, measured, graph.to_networkx(), make_model())
    for sig in todo:
        assert f"{sig}|{alive}" in profiled.kernels
        assert f"{sig}|{dead}" not in profiled.kernels


@pytest.mark.slow
@pytest.mark.cluster
def test_workers_that_leave_or_die_cost_no_restart(no_stealing):
    import distributed

    with cluster(3) as lc, distributed.Client(lc) as client:
        workers = list(live_workers(client))
        pids = client.run(os.getpid)
        gone: list[str] = []

        def hook(report):
            if report.step == 2:  # one retired
                client.retire_workers([workers[0]])
                gone.append(workers[0])
            if report.step == 6:  # one killed (its nanny starts another, at a new address)
                os.kill(pids[workers[1]], signal.SIGKILL)
                gone.append(workers[1])

        result = fit(make_model(), make_data(), strategy=DataParallel("auto"), steps=12,
                     chunk_steps=2, client=client, adapt=True, on_chunk=hook, **RUN)
        assert len(gone) == 2
        assert not set(gone) & set(result.shards[-1]["sizes"])
        assert len(result.losses) == 12
        assert_serial(result, 12)
