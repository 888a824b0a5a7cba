"""A worker killed in the middle of a run does not stop it, nor change a bit of its result.

Pins are loose, so Dask reruns a dead worker's tasks elsewhere and recomputes lost results from
their lineage; the lineage starts at the initial states, which travel inside the graph (so the
scheduler holds them), and at the data, two tasks whose definition the scheduler holds too. In
the first tests the scheduler, as it takes the report of an update a third of the way in, kills
(SIGKILL) the worker that ran it (a scheduler plugin: no later step has been handed out, so the
kill always hits a running computation, however loaded the machine). They check that the worker
left, that tasks finished after the kill, and that the result equals, bit for bit, the same run
on the threaded scheduler. The others kill every holder of the data, bound the lineage, and give
up on a task that keeps killing its workers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import dask
import numpy as np
import pytest
from distributed.diagnostics.plugin import SchedulerPlugin

from pnngraph import DataParallel, build, fit
from pnngraph.nn import Dense, ReLU, Sequential, Tanh
from pnngraph.run.session import live_workers
from tests.graph.conftest import bitwise_equal
from tests.run.clusters import client_of, local_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

RUN = {"batch_size": 30, "optimizer": "adam", "lr": 0.01}


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("distributed")
    with local_cluster() as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    with client_of(cluster) as client:
        yield client


def make_model():
    return Sequential([Dense(8, 32), ReLU(), Dense(32, 32), Tanh(), Dense(32, 3)],
                      input_shape=(8,), seed=0)


def make_data(seed):
    X = np.random.default_rng(seed).standard_normal((300, 8))
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)


class KillWorker(SchedulerPlugin):
    """SIGKILL the worker that reports a task ``(f"{kind}-...", step, part, ...)`` of ``step``
    or later (``part``: the stage of an update, the replica of a local-steps task), in the
    scheduler's own handling of that report: nothing that depends on the task has been given to
    a worker yet, so the run is still going, however fast or slow the machine is."""

    name = "pnngraph-test-kill-worker"

    def __init__(self, scheduler, *, step, kind, part):
        self.scheduler, self.step, self.kind, self.part = scheduler, step, kind, part
        self.victim: str | None = None
        self.killed_at = 0.0
        self.killed = threading.Event()

    def transition(self, key, start, finish, *args, stimulus_id, **kwargs):
        if self.killed.is_set() or finish != "memory" or not isinstance(key, tuple):
            return
        if key[0].startswith(f"{self.kind}-") and key[2] == self.part and key[1] >= self.step:
            worker = self.scheduler.workers[kwargs["worker"]]
            os.kill(worker.pid, signal.SIGKILL)
            self.victim, self.killed_at = worker.address, time.time()
            self.killed.set()


@contextlib.contextmanager
def kill_worker(cluster, **when) -> Iterator[KillWorker]:
    plugin = KillWorker(cluster.scheduler, **when)
    cluster.scheduler.add_plugin(plugin)
    try:
        yield plugin
    finally:
        cluster.scheduler.remove_plugin(name=plugin.name)
    assert plugin.killed.is_set(), f"no task matched {when}: nothing was killed"


def check_recovered(client, since, victim, killed_at):
    """The victim is gone, and the run went on after the kill. Returns the task records."""
    assert victim not in live_workers(client)
    records = client.get_task_stream(start=since)
    survivors_after_kill = [
        r for r in records
        if r["worker"] != victim
        and max(s["stop"] for s in r["startstops"] if s["action"] == "compute") > killed_at
    ]
    assert survivors_after_kill, "no task ran after the kill"
    return records


def test_compute_survives_a_killed_worker(cluster, client):
    """DataParallel(3) as one graph: the newest state's holder dies a third of the way in."""
    X, y = make_data(0)
    kw = {"strategy": DataParallel(3), "steps": 90, **RUN}
    (expected,) = dask.compute(build(make_model(), (X, y), **kw), scheduler="threads")
    client.get_task_stream()  # starts the scheduler's task-stream record
    since = time.time()
    graph = build(make_model(), (X, y), client=client, scheduler="static", **kw)
    with kill_worker(cluster, step=30, kind="update", part=0) as kill:
        result = client.compute(graph).result(timeout=120)
    check_recovered(client, since, kill.victim, kill.killed_at)
    assert bitwise_equal(result.params, expected.params)
    np.testing.assert_array_equal(result.losses, expected.losses)


@pytest.mark.filterwarnings("ignore::pnngraph.run.collection.PlacementWarning")
def test_fit_survives_a_killed_worker(cluster, client):
    """One shard, one step per task, in chunks of 50 steps: the state lives on one worker only
    (the worst case), so killing it makes Dask recompute the state from its lineage, through
    earlier chunks back to the initial states, which the first chunk's graph holds. A chunk
    planned while the scheduler still lists the dead worker warns (PlacementWarning) and runs
    without those pins."""
    X, y = make_data(1)
    kw = {"strategy": DataParallel(1), "fuse_steps": 1, "steps": 150, "chunk_steps": 50,
          "progress": False, **RUN}
    expected = fit(make_model(), (X, y), **kw)
    client.get_task_stream()
    since = time.time()
    with kill_worker(cluster, step=60, kind="update", part=0) as kill:
        result = fit(make_model(), (X, y), client=client, scheduler="static", **kw)
    records = check_recovered(client, since, kill.victim, kill.killed_at)
    runs = Counter(r["key"] for r in records)
    assert any(n > 1 and k[1] == 0 for k, n in runs.items()), (
        "step 0 did not run again: the lineage was not replayed from the initial states"
    )
    assert bitwise_equal(result.params, expected.params)
    np.testing.assert_array_equal(result.losses, expected.losses)


def _holders(client, prefix):
    """Workers holding a key whose name starts with ``prefix``."""
    return {w for key, where in client.who_has().items() if str(key).startswith(prefix)
            for w in where}


STRATEGIES = {
    "DataParallel(1) fused": (DataParallel(1), {"fuse_steps": 10}),
    "DataParallel(3)": (DataParallel(3), {}),
    "ModelAveraging(3, 2)": ("averaging", {}),
    "Pipeline(2, 4)": ("pipeline", {}),
}


@pytest.mark.filterwarnings("ignore::pnngraph.run.collection.PlacementWarning")
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_fit_survives_losing_every_worker_that_holds_the_data(client, name):
    """The training data is two tasks whose definition the scheduler holds: when the workers
    holding it die in the middle of a chunk, Dask computes it again and the run ends bitwise.
    (At most two of the three die: with all three gone the run would wait on the nannies,
    which on a loaded machine were seen not to start a worker again.)"""
    from pnngraph import ModelAveraging, Pipeline

    strategy, extra = STRATEGIES[name]
    strategy = {"averaging": ModelAveraging(3, 2), "pipeline": Pipeline(2, 4)}.get(
        strategy, strategy)
    X, y = make_data(2)
    kw = {"strategy": strategy, "steps": 60, "chunk_steps": 10, "progress": False, **RUN,
          **extra}
    expected = fit(make_model(), (X, y), **kw)
    killed: list[str] = []

    def kill_data_holders(done):
        if killed or done < 20:
            return
        pids = client.run(os.getpid)
        killed.extend(sorted(_holders(client, "data-X") | _holders(client, "data-y"))[:2])
        for worker in killed:
            os.kill(pids[worker], signal.SIGKILL)

    result = fit(make_model(), (X, y), client=client, on_steps=_counter(kill_data_holders), **kw)
    assert killed, "no worker held the data at the kill: nothing was tested"
    assert bitwise_equal(result.params, expected.params)
    np.testing.assert_array_equal(result.losses, expected.losses)


def _counter(then):
    """An ``on_steps`` hook that calls ``then`` with the steps done so far."""
    done = [0]

    def hook(n):
        done[0] += n
        then(done[0])

    return hook


def test_long_fits_keep_the_scheduler_small_and_leave_nothing_behind(client, monkeypatch):
    """Every ``_Lineage.TASKS`` tasks a chunk's states come back and the next chunk starts
    from them, so the scheduler forgets the chunks before: the tasks it holds stay bounded
    over a run however long, the result is unchanged, and nothing is held once fit returns."""
    from pnngraph.run.fit import _Lineage

    monkeypatch.setattr(_Lineage, "TASKS", 60)
    X, y = make_data(3)
    kw = {"strategy": DataParallel(2), "steps": 200, "chunk_steps": 10, "progress": False,
          **RUN}
    expected = fit(make_model(), (X, y), **kw)
    held: list[int] = []

    def count(_):
        held.append(client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)))

    result = fit(make_model(), (X, y), client=client, on_steps=_counter(count), **kw)
    assert bitwise_equal(result.params, expected.params)
    per_chunk = len(build(make_model(), (X, y), strategy=DataParallel(2), steps=10, **RUN))
    # the chain since the newest restart (< TASKS + one chunk), the chunk in flight, the data
    assert max(held) <= 60 + 3 * per_chunk, (max(held), per_chunk)
    assert max(held) < 200 // 10 * per_chunk / 2, "the scheduler kept the whole run"
    deadline = time.monotonic() + 60  # a deadlock guard: releases reach the scheduler async
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
        assert time.monotonic() < deadline, "fit left tasks on the scheduler"
        time.sleep(0.05)


class _KillOnStep:
    """A worker plugin: the worker dies (SIGKILL) whenever it starts a task of step 5."""

    name = "kill-on-step-5"

    def setup(self, worker):
        self.worker = worker

    def transition(self, key, start, finish, **kwargs):
        from pnngraph.compile.keys import step_of

        if finish == "executing" and step_of(key) == 5:
            os.kill(os.getpid(), signal.SIGKILL)


def test_a_task_that_keeps_killing_its_workers_stops_fit_with_cluster_lost_error():
    """What Dask gives up on (a task whose every attempt kills its worker: KilledWorker) ends
    the run with one ClusterLostError that names the chunk and the way on."""
    import distributed
    from distributed.diagnostics.plugin import WorkerPlugin

    from pnngraph.exceptions import ClusterLostError

    plugin = type("KillOnStep", (_KillOnStep, WorkerPlugin), {})()
    X, y = make_data(4)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                     dashboard_address=None, host="127.0.0.1",
                                     scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}
                                     ) as cluster, \
            distributed.Client(cluster) as client:
        client.register_plugin(plugin)
        with pytest.raises(ClusterLostError) as caught:
            fit(make_model(), (X, y), client=client, strategy=DataParallel(1), fuse_steps=1,
                steps=20, chunk_steps=10, progress=False, **RUN)
    message = str(caught.value)
    assert message.startswith("the run lost workers that died running one task (KilledWorker:")
    assert message.endswith("during steps 0-10; no checkpoint was written (a checkpoint_dir "
                            "makes a run resumable)"), message
    assert caught.value.steps == (0, 10) and caught.value.checkpoint is None


@pytest.mark.parametrize("name", ["ModelAveraging(3, 2)", "Pipeline(2, 4)", "Hybrid"])
def test_chunks_restarted_from_gathered_states_change_no_bit(client, monkeypatch, name):
    """With the chain restarted after every chunk, every strategy's run is the same run."""
    from pnngraph import Hybrid, ModelAveraging, Pipeline
    from pnngraph.run.collection import TrainingGraph
    from pnngraph.run.fit import _Lineage

    monkeypatch.setattr(_Lineage, "TASKS", 1)
    rebased = TrainingGraph.rebased
    starts: list[int] = []  # chunks that started from gathered states

    def counted(graph, states):
        starts.append(1)
        return rebased(graph, states)

    monkeypatch.setattr(TrainingGraph, "rebased", counted)
    strategy = {"ModelAveraging(3, 2)": ModelAveraging(3, 2), "Pipeline(2, 4)": Pipeline(2, 4),
                "Hybrid": Hybrid(DataParallel(2), Pipeline(2, 2))}[name]
    X, y = make_data(5)
    kw = {"strategy": strategy, "steps": 30, "chunk_steps": 7, "progress": False, **RUN}
    expected = fit(make_model(), (X, y), **kw)
    result = fit(make_model(), (X, y), client=client, **kw)
    assert len(starts) == 4, "chunks 2-5 of 30 steps in 7s must start from gathered states"
    assert bitwise_equal(result.params, expected.params)
    np.testing.assert_array_equal(result.losses, expected.losses)
