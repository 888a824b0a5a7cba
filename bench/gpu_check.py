"""The GPU check: CuPy against numpy, and throughput of GPU-only, CPU-only and mixed plans.

    python bench/gpu_check.py [--steps 5] [--cpu-workers 4]

Run by ``bench/gpu_check.sh`` on a machine with an NVIDIA GPU. Prints (1) the largest relative
difference between an MLP 784-2048-2048-10 trained 5 steps in float32 on CuPy and on numpy
(target <= 1e-4), and (2) for a local cluster of CPU workers plus one GPU worker, samples/s of
the GPU-only, CPU-only and mixed (HEFT, shards sized by speed) plans with their predictions.
"""

from __future__ import annotations

import argparse
import time

import _setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--cpu-workers", type=int, default=4)
    parser.add_argument("--unset-openblas", action="store_true")
    args = parser.parse_args()
    print("OPENBLAS variables:", _setup.settle(args))
    import numpy as np
    from distributed import Client

    import pnngraph
    from pnngraph.nn.presets import mlp
    from pnngraph.run.calibrate import calibrate
    from pnngraph.run.cluster import local_cluster

    B = args.batch
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2 * B, 784)).astype(np.float32)
    y = rng.integers(0, 10, 2 * B)
    model = mlp((784,), 10, hidden=(2048, 2048), dtype="float32")
    kw = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "batch_size": B}

    cpu = pnngraph.train_serial(model, X, y, steps=5, **kw)
    gpu = pnngraph.train_serial(model, X, y, steps=5, backend="cupy", **kw)
    worst = max(float(np.max(np.abs(a[k] - b[k])) / max(np.max(np.abs(a[k])), 1e-30))
                for a, b in zip(cpu.params, gpu.params, strict=True) for k in a)
    print(f"equivalence: float32, 5 steps, max relative difference CuPy vs numpy = {worst:.2e} "
          f"({'ok' if worst <= 1e-4 else 'FAILED'}, target <= 1e-4)")

    with local_cluster(args.cpu_workers, 1, dashboard_address=None) as lc, Client(lc) as client:
        t0 = time.perf_counter()
        cluster = calibrate(client, gpu_backend="cupy", cache=False)
        print(f"calibration {time.perf_counter() - t0:.1f} s:")
        for w in cluster.workers:
            print(f"  {w.address} {w.backend}: GEMM float32 "
                  f"{w.flops_per_s('float32') / 1e9:,.0f} GFLOP/s, memory "
                  f"{w.memory_bytes_per_s / 1e9:,.0f} GB/s"
                  + (f", host<->device {w.host_device_bytes_per_s / 1e9:.1f} GB/s"
                     if w.host_device_bytes_per_s else ""))
        plans = {
            "GPU only": (pnngraph.DataParallel(1), "gpu"),
            "CPU only": (pnngraph.DataParallel(args.cpu_workers), "cpu"),
            "mixed (HEFT, shards='auto')": (pnngraph.DataParallel("auto"), "any"),
        }
        print(f"{'plan':<30}{'samples/s':>12}{'predicted s':>13}{'measured s':>12}")
        for label, (strategy, devices) in plans.items():
            for _ in range(2):  # the first run warms up the code paths
                graph = pnngraph.build(model, (X, y), strategy=strategy, client=client,
                                       cluster=cluster, devices=devices, steps=args.steps,
                                       fuse_steps=1, **kw)
                t = time.perf_counter()
                client.compute(graph).result()
                wall = time.perf_counter() - t
            print(f"{label:<30}{args.steps * B / wall:>12,.0f}{graph.plan.makespan:>13.3f}"
                  f"{wall:>12.3f}")


if __name__ == "__main__":
    main()
