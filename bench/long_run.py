"""Memory over a long ``fit``: does anything grow with the number of steps?

DataParallel(3) on three worker processes, one ``fit`` of ``--steps`` steps in chunks of one
epoch (10 steps); every ``--every`` steps the table shows the scheduler's and this process's
resident memory and the tasks the scheduler holds, then the same once ``fit`` has returned.
Before the chain of chunks was restarted from gathered states, the scheduler kept every
chunk's tasks (and memory grew with them); now it keeps at most the newest ~2000.

    python bench/long_run.py                  # 6000 steps
    python bench/long_run.py --steps 1000 --every 250
"""

from __future__ import annotations

import os
import time
from typing import Any

import _setup


def rss_mb() -> float:
    import psutil

    return float(psutil.Process(os.getpid()).memory_info().rss) / 2**20


def scheduler_figures(dask_scheduler: Any) -> tuple[float, int]:
    return rss_mb(), len(dask_scheduler.tasks)


def main() -> None:
    def more(parser: Any) -> None:
        parser.add_argument("--every", type=int, default=1000)

    args = _setup.arguments(__doc__, steps=6000, rounds=1, more=more)
    env = _setup.settle(args)
    import distributed
    import numpy as np

    import pnngraph
    from pnngraph.nn import Dense, ReLU, Sequential

    print(f"OPENBLAS variables: {env}")
    X = np.random.default_rng(0).standard_normal((300, 8))
    y = (X[:, 0] > 0).astype(int)
    model = Sequential([Dense(8, 32), ReLU(), Dense(32, 2)], input_shape=(8,), seed=0)
    with distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        print(f"{'steps':>6} {'scheduler MB':>13} {'client MB':>10} {'scheduler tasks':>16}")
        done = [0]
        start = time.perf_counter()

        def row(label: str) -> None:
            sched, tasks = client.run_on_scheduler(scheduler_figures)
            print(f"{label:>6} {sched:>13.1f} {rss_mb():>10.1f} {tasks:>16}", flush=True)

        def on_steps(n: int) -> None:
            before, done[0] = done[0], done[0] + n
            if done[0] // args.every > before // args.every or before == 0:
                row(str(done[0]))

        pnngraph.fit(model, (X, y), client=client, strategy=pnngraph.DataParallel(3),
                     steps=args.steps, batch_size=30, lr=0.05, progress=False,
                     on_steps=on_steps)
        seconds = time.perf_counter() - start
        time.sleep(1.0)  # the client's releases reach the scheduler
        row("after")
        print(f"{args.steps} steps in {seconds:.1f} s")


if __name__ == "__main__":
    main()
