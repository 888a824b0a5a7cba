"""Placement: predicted vs measured run time, HEFT vs Dask's own placement, and mixed clusters.

    python bench/placement.py [--steps 3] [--rounds 3] [--hidden 2048] [--unset-openblas]

Part 1, on LocalCluster(2 workers x 1 thread), MLP 784-H-H-10 float32, batch 8192: for data
parallel (2 shards) and pipeline (2 stages, 8 micro-batches), the plan's predicted makespan next
to the measured wall time of the run, first with the calibrated model and then after one run of
history refinement; and the run time of the HEFT-placed graph over the Dask-placed one (medians
over rounds, alternating). Part 2, on paper: a cluster of 4 CPU workers and 1 GPU worker 20x
faster at GEMM, PCIe-like link; predicted step time of GPU-only, CPU-only and mixed plans.

``--unset-openblas`` removes OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for this process and its workers.
"""

from __future__ import annotations

import statistics
import time

import _setup


def main() -> None:
    args = _setup.arguments(__doc__, steps=3)
    openblas = _setup.settle(args)
    import numpy as np
    from distributed import Client, LocalCluster, get_task_stream

    import pnngraph
    from pnngraph.nn.presets import mlp
    from pnngraph.plan.cluster import simulated_cluster
    from pnngraph.run.calibrate import calibrate
    from pnngraph.run.history import learn

    B, H = args.batch, args.hidden
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2 * B, 784)).astype(np.float32)
    y = rng.integers(0, 10, 2 * B)
    model = mlp((784,), 10, hidden=(H, H), dtype="float32")
    opt = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "steps": args.steps, "batch_size": B}
    strategies = {"data parallel": pnngraph.DataParallel(2),
                  "pipeline": pnngraph.Pipeline(2, 8)}

    print(f"OPENBLAS variables: {openblas}; MLP 784-{H}-{H}-10 float32, batch {B}, "
          f"{args.steps} steps; LocalCluster 2 workers x 1 thread; medians of {args.rounds}")
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as lc, Client(lc) as client:
        t0 = time.perf_counter()
        cluster = calibrate(client, cache=False)
        print(f"calibration: {time.perf_counter() - t0:.1f} s; "
              f"GEMM float32 {[round(w.flops_per_s('float32') / 1e9) for w in cluster.workers]} "
              f"GFLOP/s; task {cluster.task_overhead_seconds * 1e3:.2f} ms, "
              f"hop {cluster.hop_latency_seconds * 1e3:.2f} ms, "
              f"network {cluster.network_bytes_per_s / 1e9:.2f} GB/s")

        def run(strategy, scheduler, model_cluster):
            graph = pnngraph.build(model, (X, y), strategy=strategy, client=client,
                                   cluster=model_cluster, scheduler=scheduler, **opt)
            with get_task_stream(client=client) as stream:
                t = time.perf_counter()
                client.compute(graph).result()
                wall = time.perf_counter() - t
            return graph, wall, stream.data

        # warm-up: imports and first use of every code path on the workers
        run(strategies["data parallel"], "static", None)
        rows = []
        for name, strategy in strategies.items():
            graph, wall, stream = run(strategy, "heft", cluster)
            first = (graph.plan.makespan, wall)
            learned = learn(cluster, graph, stream, weight=1.0)
            heft, dask_ = [], []
            predicted = []
            for _ in range(args.rounds):
                g, wall, _ = run(strategy, "heft", learned)
                heft.append(wall)
                predicted.append(g.plan.makespan)
                dask_.append(run(strategy, "dask", learned)[1])
            rows.append((name, first, statistics.median(predicted), statistics.median(heft),
                         statistics.median(dask_)))
    print()
    print(f"{'strategy':<15}{'calibrated: pred / meas':>26}{'refined: pred / meas':>24}"
          f"{'error':>8}{'HEFT s':>9}{'Dask s':>9}{'HEFT/Dask':>11}")
    for name, (p0, m0), p1, heft_s, dask_s in rows:
        error = (p1 - heft_s) / heft_s
        print(f"{name:<15}{p0:>12.2f} / {m0:<11.2f}{p1:>11.2f} / {heft_s:<10.2f}"
              f"{error:>+8.1%}{heft_s:>9.2f}{dask_s:>9.2f}{heft_s / dask_s:>11.2f}")

    print()
    print("mixed cluster on paper: 4 CPU workers at 50 GFLOP/s, 1 GPU worker 20x (1 TFLOP/s), "
          "PCIe 12 GB/s, network 1.5 GB/s; predicted seconds per step, MLP above, batch 8192")
    sim = simulated_cluster(cpus=4, gpus=1, cpu_gflops=50.0, gpu_speedup=20.0)
    Xs = np.zeros((B, 784), np.float32)
    ys = np.zeros(B, int)
    steps = 4
    plans = {
        "GPU only, DataParallel(1)": ("heft", pnngraph.DataParallel(1), "gpu"),
        "CPU only, DataParallel(4)": ("heft", pnngraph.DataParallel(4), "cpu"),
        "mixed, HEFT, DataParallel(5) equal": ("heft", pnngraph.DataParallel(5), "any"),
        "mixed, HEFT, shards='auto'": ("heft", pnngraph.DataParallel("auto"), "any"),
        "mixed, best, shards='auto'": ("best", pnngraph.DataParallel("auto"), "any"),
        "mixed, Dask-like, shards='auto'": ("dask", pnngraph.DataParallel("auto"), "any"),
    }
    results = {}
    for label, (scheduler, strategy, devices) in plans.items():
        g = pnngraph.build(model, (Xs, ys), strategy=strategy, cluster=sim, scheduler=scheduler,
                           devices=devices, optimizer="sgd", lr=0.01, momentum=0.9, steps=steps,
                           batch_size=B, fuse_steps=1)
        results[label] = g.plan.makespan / steps
    base = results["GPU only, DataParallel(1)"]
    print(f"{'plan':<38}{'s/step':>9}{'GPU-only / plan':>17}")
    for label, seconds in results.items():
        print(f"{label:<38}{seconds:>9.4f}{base / seconds:>17.2f}")


if __name__ == "__main__":
    main()
