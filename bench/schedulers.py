"""Benchmark of the `schedulers` package: schedule quality on random DAGs, and scaling.

Prints Markdown tables:

1. a grid per suite (random DAGs on 4 near-homogeneous processors; CPU+GPU mixes), per algorithm:
   mean SLR, mean speedup, % best (makespan within 1e-9 of the shortest of all algorithms on that
   graph), failure rate (speedup < 1) and mean scheduler wall time;
2. scheduler wall time for 1k and 10k nodes (and 100k with ``--large``) on 4/16/64 processors.

Usage::

    python bench/schedulers.py            # a few minutes on 2 cores
    python bench/schedulers.py --quick    # smaller grid, no 10k row: under a minute
    python bench/schedulers.py --large    # adds the 100k-node rows (several more minutes)
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import networkx as nx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import schedulers

GRID_ALGORITHMS = [
    "heft", "cpop", "peft", "heft_lookahead", "best",
    "greedy_start", "round_robin", "fastest_single", "random",
]  # fmt: skip
SCALING_ALGORITHMS = ["heft", "peft", "cpop", "greedy_start", "heft_lookahead"]
LOOKAHEAD_MAX_NODES = 1_000  # O(p^2 * children) slot searches per node: too slow beyond


def homogeneous_suite(quick: bool) -> Iterable[tuple[nx.DiGraph, list]]:
    """Random DAGs on 4 processors whose speeds differ by beta (Topcuoglu et al.'s grid)."""
    processors = ["p0", "p1", "p2", "p3"]
    sizes = [30] if quick else [30, 100]
    grid = itertools.product(sizes, [0.1, 1.0, 5.0], [0.5, 1.0, 2.0], [0.1, 1.0], [2, 4])
    for seed, (n, ccr, alpha, beta, degree) in enumerate(grid):
        graph = schedulers.random_dag(
            n, processors, alpha=alpha, out_degree=degree, ccr=ccr, beta=beta, seed=seed
        )
        yield graph, processors


def cpu_gpu_suite(quick: bool) -> Iterable[tuple[nx.DiGraph, list]]:
    """4 CPUs and 1 or 2 GPUs; GPU 2-50x faster per node; transfers touching a GPU cost 3x."""
    sizes = [30] if quick else [30, 100]
    grid = itertools.product(sizes, [0.1, 0.5, 2.0], [0.5, 1.0, 2.0], [1, 2], [0, 1])
    for seed, (n, ccr, alpha, gpus, _) in enumerate(grid):
        graph = schedulers.random_cpu_gpu_dag(
            n, cpus=4, gpus=gpus, ccr=ccr, alpha=alpha, seed=1000 + seed
        )
        yield graph, graph.graph["processors"]


def timed(scheduler: Callable, graph: nx.DiGraph, processors: list) -> tuple:
    start = time.perf_counter()
    schedule = scheduler(graph, processors)
    return schedule, time.perf_counter() - start


def grid_table(title: str, suite: Iterable[tuple[nx.DiGraph, list]]) -> None:
    rows: dict[str, dict[str, list]] = {
        name: {"slr": [], "speedup": [], "best": [], "failed": [], "seconds": []}
        for name in GRID_ALGORITHMS
    }
    count = 0
    for graph, processors in suite:
        count += 1
        makespans = {}
        for name in GRID_ALGORITHMS:
            schedule, seconds = timed(schedulers.SCHEDULERS[name], graph, processors)
            schedule.validate(graph)
            metrics = schedulers.evaluate(schedule, graph)
            makespans[name] = metrics.makespan
            row = rows[name]
            row["slr"].append(metrics.slr)
            row["speedup"].append(metrics.speedup)
            row["failed"].append(metrics.failed)
            row["seconds"].append(seconds)
        shortest = min(makespans.values())
        for name, makespan in makespans.items():
            rows[name]["best"].append(makespan <= shortest * (1 + 1e-9))
    print(f"\n### {title} ({count} graphs)\n")
    print("| algorithm | mean SLR | mean speedup | % best | failure rate | mean wall time |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in sorted(rows.items(), key=lambda item: np.mean(item[1]["slr"])):
        print(
            f"| {name} | {np.mean(row['slr']):.3f} | {np.mean(row['speedup']):.3f} "
            f"| {100 * np.mean(row['best']):.0f}% | {100 * np.mean(row['failed']):.0f}% "
            f"| {1000 * np.mean(row['seconds']):.2f} ms |"
        )


def scaling_table(sizes: list[int], processor_counts: list[int]) -> None:
    print("\n### Scheduler wall time (random DAGs, alpha 1, out-degree 3, CCR 1, beta 0.5)\n")
    print("| nodes | processors | " + " | ".join(SCALING_ALGORITHMS) + " |")
    print("|---:|---:|" + "---:|" * len(SCALING_ALGORITHMS))
    for n in sizes:
        for p in processor_counts:
            processors = list(range(p))
            graph = schedulers.random_dag(n, processors, seed=n + p)
            cells = []
            for name in SCALING_ALGORITHMS:
                if name == "heft_lookahead" and n > LOOKAHEAD_MAX_NODES:
                    cells.append("-")
                    continue
                schedule, seconds = timed(schedulers.SCHEDULERS[name], graph, processors)
                schedule.validate(graph)
                cells.append(f"{seconds:.2f} s")
            print(f"| {n:,} | {p} | " + " | ".join(cells) + " |", flush=True)
            del graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grid, no 10k row")
    parser.add_argument("--large", action="store_true", help="add 100k-node rows")
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, networkx {nx.__version__}, "
        f"{platform.machine()}"
    )
    started = time.perf_counter()
    grid_table("Near-homogeneous processors: 4, beta in {0.1, 1}", homogeneous_suite(args.quick))
    grid_table("CPU+GPU: 4 CPUs + 1 or 2 GPUs", cpu_gpu_suite(args.quick))
    sizes = [1_000] if args.quick else [1_000, 10_000]
    if args.large:
        sizes.append(100_000)
    scaling_table(sizes, [4, 16, 64])
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
