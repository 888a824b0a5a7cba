"""Workers killed during training: does every run still end with the clean run's bits?

For each strategy, as one graph (``client.compute``) and as ``fit`` in chunks, a run on three
worker processes (one thread each, no work stealing) is hit once a third of its steps is done by
a SIGKILL of: the worker that ran the newest update (it holds the newest state), a worker
holding the training data, or two of the three workers. The nannies start new workers, Dask
recomputes what was lost, and the table says, per case, how many runs ended bitwise equal to
the same run on the threaded scheduler, and the median extra wall time over a run without a
fault (recovery time) measured in the same rounds.

    python bench/faults.py                 # 5 runs per case
    python bench/faults.py --rounds 1      # a quick look
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import _setup

FAULTS = ("state", "data", "two")


def make_model() -> Any:
    from pnngraph.nn import Dense, ReLU, Sequential, Tanh

    return Sequential([Dense(8, 32), ReLU(), Dense(32, 32), Tanh(), Dense(32, 3)],
                      input_shape=(8,), seed=0)


def make_data(n: int = 300) -> tuple[Any, Any]:
    import numpy as np

    X = np.random.default_rng(0).standard_normal((n, 8))
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)


def strategies() -> dict[str, tuple[Any, dict[str, Any]]]:
    """Name -> (strategy, extra options): fused DataParallel(1) is what a small model gets."""
    from pnngraph import DataParallel, Hybrid, ModelAveraging, Pipeline

    return {
        "DataParallel(1), fused": (DataParallel(1), {"fuse_steps": 10}),
        "DataParallel(3)": (DataParallel(3), {}),
        "ModelAveraging(3, 2)": (ModelAveraging(3, 2), {}),
        "Pipeline(2, 4)": (Pipeline(2, 4), {}),
        "Hybrid(2 x 2)": (Hybrid(DataParallel(2), Pipeline(2, 2)), {}),
    }


def victims(client: Any, newest: str, fault: str) -> list[str]:
    """The workers to kill: the newest state's holder, a holder of the data (another worker
    where there is one), or two of three (the state's holder and one more)."""
    from pnngraph.run.session import live_workers

    workers = sorted(live_workers(client))
    if fault == "state":
        return [newest]
    if fault == "data":
        holders = sorted({w for key, where in client.who_has().items()
                          if str(key).startswith(("data-X", "('data-X")) for w in where})
        others = [w for w in holders if w != newest]
        return (others or holders or [newest])[:1]
    return [newest, next(w for w in workers if w != newest)]


class Killer(threading.Thread):
    """Watches the task stream from ``since``; once an update of step ``step`` or later has
    finished, kills the victims of ``fault`` (SIGKILL of each worker process)."""

    def __init__(self, client: Any, since: float, step: int, fault: str,
                 running: Callable[[], bool]) -> None:
        super().__init__(daemon=True)
        self.client, self.since, self.step, self.fault = client, since, step, fault
        self.running = running
        self.killed: list[str] = []
        self.hit = False  # whether the run was still going at the kill

    def run(self) -> None:
        from pnngraph.compile.keys import phase_of, step_of

        while self.running():
            done = [(step_of(r["key"]), r["worker"]) for r in
                    self.client.get_task_stream(start=self.since)
                    if phase_of(r["key"]) in ("update", "local", "steps")]
            done = sorted(d for d in done if d[0] is not None)
            if done and done[-1][0] >= self.step:
                try:
                    pids = self.client.run(os.getpid)
                except OSError:  # a worker is starting or stopping: look again
                    continue
                self.killed = victims(self.client, done[-1][1], self.fault)
                self.hit = self.running()
                for worker in self.killed:
                    os.kill(pids[worker], signal.SIGKILL)
                return
            time.sleep(0.01)


def three_workers(cluster: Any, client: Any) -> None:
    """Wait until the cluster has its three workers again (the nannies restart killed ones;
    where one did not within a minute, every worker is replaced)."""
    try:
        client.wait_for_workers(3, timeout=60)
    except TimeoutError:
        print("  (a nanny did not restart its worker: the workers were replaced)")
        cluster.scale(0)
        while client.scheduler_info()["workers"]:
            time.sleep(0.1)
        cluster.scale(3)
        client.wait_for_workers(3, timeout=120)


def one_run(client: Any, mode: str, strategy: Any, extra: dict[str, Any], fault: str | None,
            steps: int) -> tuple[Any, float, bool]:
    """(result, wall seconds, whether a fault hit a running computation)."""
    from concurrent.futures import ThreadPoolExecutor

    from pnngraph import build, fit

    X, y = make_data()
    kw = {"strategy": strategy, "steps": steps, "batch_size": 30, "optimizer": "adam",
          "lr": 0.01, **extra}
    three_workers(client.cluster, client)
    client.get_task_stream()  # the scheduler records from now
    since = time.time()
    with ThreadPoolExecutor(1) as pool:
        if mode == "compute":
            future = client.compute(build(make_model(), (X, y), client=client, **kw))
            done: Callable[[], bool] = future.done
            get: Callable[[], Any] = lambda: future.result(timeout=600)  # noqa: E731
        else:
            running = pool.submit(fit, make_model(), (X, y), client=client,
                                  chunk_steps=steps // 6, progress=False, **kw)
            done, get = running.done, lambda: running.result(timeout=600)
        killer = Killer(client, since, steps // 3, fault or "", lambda: not done())
        if fault is not None:
            killer.start()
        result = get()
        wall = time.time() - since
        if fault is not None:
            killer.join()
    return result, wall, killer.hit


def main() -> None:
    args = _setup.arguments(__doc__, steps=60, rounds=5)
    env = _setup.settle(args)
    import dask
    import distributed
    import numpy as np

    from pnngraph import build

    print(f"OPENBLAS variables: {env}")
    print(f"{'strategy':<24} {'mode':<8} {'fault':<6} {'bitwise':>8} {'recovery s':>11}")
    with dask.config.set({"distributed.scheduler.work-stealing": False}), \
            distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True,
                                     dashboard_address=None, host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        for name, (strategy, extra) in strategies().items():
            X, y = make_data()
            kw = {"strategy": strategy, "steps": args.steps, "batch_size": 30,
                  "optimizer": "adam", "lr": 0.01, **extra}
            (expected,) = dask.compute(build(make_model(), (X, y), **kw), scheduler="threads")
            for mode in ("compute", "fit"):
                for fault in FAULTS:
                    same, extra_s, misses = 0, [], 0
                    for _ in range(args.rounds):
                        _, clean, _ = one_run(client, mode, strategy, extra, None, args.steps)
                        try:
                            result, wall, hit = one_run(client, mode, strategy, extra, fault,
                                                        args.steps)
                        except Exception as err:  # a lost run is a row of the table
                            print(f"  {type(err).__name__}: {str(err)[:120]}")
                            continue
                        misses += not hit
                        same += all(np.array_equal(a[k], b[k]) for a, b in
                                    zip(result.params, expected.params, strict=True) for k in a)
                        extra_s.append(wall - clean)
                    recovery = statistics.median(extra_s) if extra_s else float("nan")
                    note = f"  ({misses} ended before the kill)" if misses else ""
                    print(f"{name:<24} {mode:<8} {fault:<6} {same:>4}/{args.rounds:<3} "
                          f"{recovery:>11.2f}{note}", flush=True)


if __name__ == "__main__":
    main()
