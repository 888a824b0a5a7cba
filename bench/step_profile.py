"""Where the time of a data-parallel step goes: DataParallel(2) on 2 workers x 1 thread.

    python bench/step_profile.py [--hidden 1024] [--batch 4096] [--steps 6] [--rounds 2]

Runs the graph on an embedded cluster with the task stream recorded and splits the wall time of
``client.compute(graph).result()`` into what each worker did, per step (medians over rounds, the
first step and the last left out so that submission and gathering are separate rows):

    compute, by kernel      grad, update, params, aggregate, ... (each worker's own time)
    transfer                inputs arriving from the other worker
    waiting                 the rest of the step on that worker: Dask's hops, a slower peer
    submission, gathering   before the first task starts, after the last one ends

MLP 784-H-H-10 float32, ReLU, SGD with momentum, global batch B split in two shards.
``--unset-openblas`` removes OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for this process and its
workers.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections import defaultdict
from typing import Any

import _setup


def phase(key: Any) -> str:
    name = key[0] if isinstance(key, tuple) else str(key)
    return name.split("-", 1)[0]


def breakdown(stream: list[dict[str, Any]], wall: float, t_submit: float) -> dict[str, float]:
    """Seconds per step and worker of each part, and the run's submission and gathering."""
    steps: dict[int, list[float]] = defaultdict(list)
    for r in stream:
        if isinstance(r["key"], tuple) and len(r["key"]) > 1 and isinstance(r["key"][1], int):
            for s in r["startstops"]:
                steps[r["key"][1]] += [s["start"], s["stop"]]
    first = min(s["start"] for r in stream for s in r["startstops"])
    last = max(s["stop"] for r in stream for s in r["startstops"])
    inner = sorted(steps)[1:-1] or sorted(steps)
    lo, hi = min(min(steps[s]) for s in inner), max(max(steps[s]) for s in inner)
    span = hi - lo
    workers = sorted({r["worker"] for r in stream})
    parts: dict[str, float] = defaultdict(float)
    for r in stream:
        for s in r["startstops"]:
            a, b = max(s["start"], lo), min(s["stop"], hi)
            if b <= a:
                continue
            name = phase(r["key"]) if s["action"] == "compute" else s["action"]
            parts[name] += (b - a) / len(workers)
    n = len(inner)
    out = {f"compute: {k}" if k not in ("transfer",) else k: v / n for k, v in parts.items()}
    out["waiting (hops, a slower peer)"] = span / n - sum(out.values())
    out["step (wall, per step)"] = span / n
    out["submission (until the first task)"] = first - t_submit
    out["gathering (after the last task)"] = (t_submit + wall) - last
    return out


def main() -> None:
    args = _setup.arguments(__doc__, steps=6, rounds=2)
    _setup.settle(args)
    warnings.filterwarnings("ignore", message="Sending large graph")
    import numpy as np
    from distributed import Client, get_task_stream

    import pnngraph
    from pnngraph.nn.presets import mlp

    try:
        from pnngraph.run.cluster import local_cluster
        cluster_cm: Any = local_cluster(2, dashboard_address=None)
    except ImportError:  # pragma: no cover
        from distributed import LocalCluster
        cluster_cm = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    B, H = args.batch, args.hidden
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2 * B, 784)).astype(np.float32)
    y = rng.integers(0, 10, 2 * B)
    model = mlp((784,), 10, hidden=(H, H), dtype="float32")
    rows: dict[str, list[float]] = defaultdict(list)
    with cluster_cm as cluster, Client(cluster) as client:
        for r in range(args.rounds + 1):
            graph = pnngraph.build(model, (X, y), strategy=pnngraph.DataParallel(2),
                                   steps=args.steps, batch_size=B, client=client,
                                   optimizer="sgd", lr=0.01, momentum=0.9)
            with get_task_stream(client=client) as stream:
                t0 = time.time()
                client.compute(graph).result()
                wall = time.time() - t0
            if r:  # the first round warms up
                for k, v in breakdown(stream.data, wall, t0).items():
                    rows[k].append(v)
    print(f"DataParallel(2), MLP 784-{H}-{H}-10 float32, batch {B}, {args.steps} steps, "
          f"2 workers x 1 thread; medians of {args.rounds} rounds (ms)")
    for k in sorted(rows, key=lambda k: (k.startswith(("step", "submission", "gathering")), k)):
        print(f"  {k:<40}{statistics.median(rows[k]) * 1e3:9.1f}")


if __name__ == "__main__":
    main()
