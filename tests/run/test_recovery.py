"""A worker killed in the middle of a run does not stop it, nor change a bit of its result.

Pins are loose, so Dask reruns a dead worker's tasks elsewhere and recomputes lost results from
their lineage; the lineage starts at the initial states, which travel inside the graph (so the
scheduler holds them), and at the data, scattered to every worker. In each test the scheduler,
as it takes the report of an update a third of the way in, kills (SIGKILL) the worker that ran
it (a scheduler plugin: no later step has been handed out, so the kill always hits a running
computation, however loaded the machine). The test checks that the worker left, that tasks
finished after the kill, and that the result equals, bit for bit, the same run on the threaded
scheduler.
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
    earlier chunks back to the scattered initial states (which must still be alive, and on a
    surviving worker). A chunk planned while the scheduler still lists the dead worker warns
    (PlacementWarning) and runs without those pins."""
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
