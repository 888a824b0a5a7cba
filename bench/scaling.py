"""Simulated clusters at scale: predicted data-parallel step times against the ring bound.

    python bench/scaling.py [--sizes 16,64,256,1024] [--gbit 10,100] [--models mlp,digits,lm]
                            [--kinds cpu,gpu,mixed] [--hop-ms 1] [--auto 10]

Predictions only: nothing here runs on a cluster. For each model, cluster kind, network speed and
worker count N, a cluster file is made (worker groups with a count) and ``pnngraph.build`` plans
one step of data parallelism on it (HEFT; the gradient tree's fan-in chosen by the planner,
``fan_in="auto"``). Printed per row: the predicted step (ms), the ring all-reduce lower bound
(compute + 2 (N-1)/N gradient bytes / bandwidth; :mod:`pnngraph.plan.scaling`), the ideal step
(the step's arithmetic spread over all N workers' speed, no communication), the scaling
efficiency ideal / predicted, the ring bound's own efficiency ideal / bound, the fan-in chosen and
the seconds the plan took to make (this machine, one process).

Models: (mlp) bench/throughput.py's 784-2048-2048-10 float32, batch 8192, SGD with momentum;
(digits) the digits MLP 64-64-10 float64, batch 1024 (its usual batch of 32 cannot be cut into
1024 shards); (lm) the ``transformer`` preset ((64,), 97: width 64, 4 heads, 2 blocks, float64),
batch 1024 sequences, AdamW. Clusters: ``cpu`` N one-thread CPU workers at 100 GFLOP/s float32
(half in float64), ``gpu`` N GPU workers at 2,000 GFLOP/s behind a 12 GB/s host link, ``mixed``
7/8 CPU and 1/8 GPU workers with shards sized to their speed (``DataParallel("auto")``, which
leaves out workers too slow to help). Task overhead 0.7 ms, hop latency ``--hop-ms``.

``--auto G`` (a network speed in Gbit/s, default 10; 0: none) also plans ``strategy="auto"`` for a
run of 100 steps on every size and kind at that speed and prints the strategy it picks and the
runner-up, with their predicted seconds per step (the run's predicted wall time over 100: the
graph's submission, the data inside it reaching every worker that reads it, included).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

AUTO_STEPS = 100


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="16,64,256,1024")
    parser.add_argument("--gbit", default="10,100")
    parser.add_argument("--models", default="mlp,digits,lm")
    parser.add_argument("--kinds", default="cpu,gpu,mixed")
    parser.add_argument("--hop-ms", type=float, default=1.0)
    parser.add_argument("--auto", type=float, default=10.0)
    return parser.parse_args()


def cluster_file(kind: str, n: int, gbit: float, hop_ms: float) -> dict:
    """The cluster description ``pnngraph plan --cluster-file`` reads, as a dict."""
    cpu = {"name": "cpu", "gflops": 100}
    gpu = {"name": "gpu", "backend": "cupy", "gflops": 2000, "host_device_gb_per_s": 12}
    groups = {"cpu": [{**cpu, "count": n}], "gpu": [{**gpu, "count": n}],
              "mixed": [{**cpu, "count": n - max(1, n // 8)}, {**gpu, "count": max(1, n // 8)}]}
    return {"network_gbit_per_s": gbit, "hop_latency_ms": hop_ms, "task_overhead_ms": 0.7,
            "workers": groups[kind]}


def models() -> dict:
    import numpy as np

    from pnngraph.nn.presets import mlp, transformer

    rng = np.random.default_rng(0)
    return {
        "mlp": (lambda: mlp((784,), 10, hidden=(2048, 2048), dtype="float32"),
                rng.standard_normal((8192, 784)).astype(np.float32),
                rng.integers(0, 10, 8192), 8192,
                {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9}),
        "digits": (lambda: mlp((64,), 10, hidden=(64,)), rng.standard_normal((1797, 64)),
                   rng.integers(0, 10, 1797), 1024, {"optimizer": "sgd", "lr": 0.1}),
        "lm": (lambda: transformer((64,), 97),
               rng.integers(0, 97, (1024, 64)).astype(np.float64),
               rng.integers(0, 97, (1024, 64)), 1024, {"optimizer": "adamw", "lr": 1e-3}),
    }


def short(name: str) -> str:
    """A strategy's repr with its list of shard weights cut to their number:
    ``DataParallel(weights=(1.0, 1.0))`` -> ``DataParallel(2 shards)``."""
    return re.sub(r"weights=\(([^()]*)\)",
                  lambda m: f"{len([w for w in m.group(1).split(',') if w.strip()])} shards",
                  name)


def main() -> None:
    args = arguments()
    import pnngraph
    from pnngraph.nn import get_optimizer
    from pnngraph.plan.cluster import cluster_from_spec
    from pnngraph.plan.scaling import ring_bound

    sizes = [int(s) for s in args.sizes.split(",")]
    speeds = [float(g) for g in args.gbit.split(",")]
    kinds = args.kinds.split(",")
    table = models()
    print("predictions only (simulated clusters); hop latency "
          f"{args.hop_ms} ms, task overhead 0.7 ms; efficiency = ideal / step")
    print(f"{'model':7}{'kind':7}{'Gbit/s':>7}{'N':>6}{'step ms':>10}{'ring ms':>10}"
          f"{'ideal ms':>10}{'eff':>8}{'ring eff':>9}{'fan-in':>7}{'shards':>7}{'plan s':>8}")
    for name in args.models.split(","):
        make, X, y, batch, opt = table[name]
        for kind in kinds:
            for gbit in speeds:
                for n in sizes:
                    cluster = cluster_from_spec(cluster_file(kind, n, gbit, args.hop_ms))
                    model = make()
                    strategy = pnngraph.DataParallel("auto" if kind == "mixed" else n)
                    t0 = time.perf_counter()
                    graph = pnngraph.build(model, (X, y), strategy=strategy, steps=1,
                                           batch_size=batch, cluster=cluster, fan_in="auto",
                                           **opt)
                    seconds = time.perf_counter() - t0
                    plan = graph.plan
                    step = plan.terms["steps"]
                    optimizer = get_optimizer(
                        opt["optimizer"], **{k: v for k, v in opt.items() if k != "optimizer"})
                    bound = ring_bound(model, batch, cluster, optimizer)
                    fan_in = plan.fan_ins[0][0] if plan.fan_ins else "-"
                    shards = len(graph.strategy.weights)
                    print(f"{name:7}{kind:7}{gbit:7g}{n:6d}{step * 1e3:10.3g}"
                          f"{bound.seconds * 1e3:10.3g}{bound.compute_seconds * 1e3:10.3g}"
                          f"{bound.compute_seconds / step:8.2g}"
                          f"{bound.compute_seconds / bound.seconds:9.2g}{fan_in!s:>7}"
                          f"{shards:7d}{seconds:8.2f}", flush=True)
    print("\nseconds to make one plan (mlp, 10 Gbit/s, fan_in=8 given: one plan, no fan-in "
          "trials; build = compile + cost + HEFT + simulation)")
    make, X, y, batch, opt = table["mlp"]
    for kind in kinds:
        row = []
        for n in sizes:
            cluster = cluster_from_spec(cluster_file(kind, n, 10.0, args.hop_ms))
            strategy = pnngraph.DataParallel("auto" if kind == "mixed" else n)
            t0 = time.perf_counter()
            graph = pnngraph.build(make(), (X, y), strategy=strategy, steps=1, batch_size=batch,
                                   cluster=cluster, fan_in=8, **opt)
            row.append(f"N={n}: {time.perf_counter() - t0:.2f} s "
                       f"({graph.to_networkx().number_of_nodes()} nodes)")
        print(f"{kind:7}" + ", ".join(row), flush=True)
    if not args.auto:
        return
    print(f"\nstrategy='auto' at {args.auto:g} Gbit/s, 100 steps: the pick and the runner-up, "
          "predicted seconds per step")
    for name in args.models.split(","):
        make, X, y, batch, opt = table[name]
        for kind in kinds:
            for n in sizes:
                cluster = cluster_from_spec(cluster_file(kind, n, args.auto, args.hop_ms))
                t0 = time.perf_counter()
                graph = pnngraph.build(make(), (X, y), strategy="auto", steps=AUTO_STEPS,
                                       batch_size=batch, cluster=cluster, **opt)
                seconds = time.perf_counter() - t0
                ranked = [(s, t / AUTO_STEPS) for s, t in graph.plan.alternatives]
                runner = f"; runner-up {short(ranked[1][0])} {ranked[1][1]:.4f}" \
                    if len(ranked) > 1 else ""
                print(f"{name:7}{kind:7}{n:6d}  {short(ranked[0][0])} {ranked[0][1]:.4f}"
                      f"{runner} ({len(ranked)} candidates, {seconds:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
