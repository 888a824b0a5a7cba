"""Predicted against measured peak memory of every worker, on a LocalCluster of processes.

For each configuration a fresh cluster of two worker processes (one thread each, a
``memory_limit``) is started, warmed up with a tiny run, and its workers' idle RSS read; then
the run is built on it (``graph.plan.peak_bytes``, :mod:`pnngraph.plan.memory`; the plan may
be placed otherwise, or changed, to fit: :func:`pnngraph.run.auto.fit_in_memory`), each worker's
peak RSS counter is reset (``/proc/self/clear_refs``), the graph runs, and its peak RSS
(``VmHWM``) is read back. The table prints both per worker and their ratio (target: within
20 %), and the idle RSS beside the model's ``BASELINE_BYTES``.

    python bench/memory.py            # the configurations of docs/adaptive.md
    python bench/memory.py --quick    # tiny sizes: a smoke run

The OPENBLAS variables are left as set (``--unset-openblas`` removes them for this process
and its workers); they change speeds, not sizes.
"""

from __future__ import annotations

from typing import Any

import _setup


def reset_peak() -> int:
    """Run on a worker: reset its peak RSS to its RSS now; returns that RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")


def read_peak() -> int:
    """Run on a worker: its peak RSS since the last reset, in bytes."""
    return _status("VmHWM")


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def mlp(features: int, hidden: int, layers: int, classes: int = 10) -> Any:
    from pnngraph.nn import Dense, ReLU, Sequential

    stack: list[Any] = []
    width = features
    for _ in range(layers):
        stack += [Dense(width, hidden), ReLU()]
        width = hidden
    return Sequential([*stack, Dense(width, classes)], input_shape=(features,), seed=0)


def configurations(quick: bool) -> list[dict[str, Any]]:
    import pnngraph

    s = 8 if quick else 1  # --quick: everything 8 times smaller
    big_batch = {"model": (256, 1024 // s, 2), "strategy": pnngraph.DataParallel(2),
                 "batch": 16384 // s, "optimizer": "sgd", "limit": "1500MiB"}
    wide = {"model": (512, 2048 // s, 2), "batch": 4096 // s, "optimizer": "adam",
            "limit": "1500MiB"}
    return [
        {"name": "DataParallel(2), MLP 256-1024x2, batch 16384", **big_batch},
        {"name": "Pipeline(2, 1), MLP 512-2048x2, Adam, batch 4096", **wide,
         "strategy": pnngraph.Pipeline(2, 1)},
        {"name": "Pipeline(2, 4), MLP 512-2048x2, Adam, batch 4096", **wide,
         "strategy": pnngraph.Pipeline(2, 4)},
        {"name": "Pipeline(2, 4), MLP 64-1280x5, Adam, batch 128, 660 MiB",
         "model": (64, 1280 // s, 5), "batch": 128, "optimizer": "adam",
         "strategy": pnngraph.Pipeline(2, 4), "limit": "660MiB"},
        {"name": "auto near the limit: MLP 512-2560x2, Adam, 1000 MiB",
         "model": (512, 2560 // s, 2), "batch": 2048 // s, "optimizer": "adam",
         "strategy": "auto", "limit": "1000MiB"},
    ]


Row = tuple[str, str, float, float, float]


def measure(config: dict[str, Any], steps: int, stealing: bool = False) -> list[Row]:
    """``(configuration, worker, idle RSS, predicted peak, measured peak)`` per worker
    (``stealing``: with Dask's work stealing, off by default here, as a plan's pins are kept)."""
    import dask
    import distributed
    import numpy as np

    import pnngraph

    model = mlp(*config["model"])
    rng = np.random.default_rng(0)
    X = rng.standard_normal((config["batch"], config["model"][0]))
    y = rng.integers(0, 10, len(X))
    run = {"steps": steps, "batch_size": config["batch"], "optimizer": config["optimizer"],
           "lr": 1e-3}
    rows = []
    with dask.config.set({"distributed.scheduler.work-stealing": stealing}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit=config["limit"], dashboard_address=None,
                                  host="127.0.0.1",
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}
                                  ) as cluster, \
            distributed.Client(cluster) as client:
        warm = mlp(8, 8, 1)
        pnngraph.fit(warm, (X[:64, :8], y[:64]), strategy=pnngraph.DataParallel(2), steps=2,
                     batch_size=32, client=client, progress=False)
        idle = client.run(reset_peak)
        graph = pnngraph.build(model, (X, y), strategy=config["strategy"], client=client, **run)
        client.run(reset_peak)
        # as fit runs a graph: a future per output, gathered by the client (client.compute
        # would add a task that pulls every output onto one worker)
        futures = client.get(graph.__dask_graph__(), graph.__dask_keys__(), sync=False)
        client.gather(futures)
        measured = client.run(read_peak)
        plan = graph.plan
        name = config["name"]
        if plan.alternatives:
            name += f" -> {plan.alternatives[0][0]}"
        elif graph.strategy != config["strategy"]:  # changed so that it fits
            name += f" -> {graph.strategy!r}"
        name += f", placed by {plan.algorithm}"
        for worker in sorted(measured):
            rows.append((name, worker, idle[worker], plan.peak_bytes.get(worker, 0.0),
                         measured[worker]))
    return rows


def main() -> None:
    def more(parser: Any) -> None:
        parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")

    args = _setup.arguments(__doc__, steps=3, rounds=1, more=more)
    env = _setup.settle(args)
    import logging

    guard = logging.StreamHandler()  # what the guard changed so that a plan fits
    guard.setFormatter(logging.Formatter("  (%(message)s)"))
    log = logging.getLogger("pnngraph")
    log.addHandler(guard)
    log.setLevel(logging.INFO)
    from pnngraph.plan.memory import BASELINE_BYTES

    mib = 2**20
    print(f"OPENBLAS variables: {env}; BASELINE_BYTES {BASELINE_BYTES / mib:.0f} MiB")
    print("| configuration | worker | idle RSS MiB | predicted peak MiB | measured peak MiB "
          "| predicted / measured |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for config in configurations(args.quick):
        for name, worker, idle, predicted, measured in measure(config, args.steps):
            ratios.append(predicted / measured)
            print(f"| {name} | {worker.rsplit(':', 1)[-1]} | {idle / mib:.0f} | "
                  f"{predicted / mib:.0f} | {measured / mib:.0f} | {ratios[-1]:.2f} |",
                  flush=True)
    inside = sum(abs(r - 1) <= 0.2 for r in ratios)
    print(f"within 20 %: {inside} of {len(ratios)} workers; ratio range "
          f"{min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    main()
