"""Benchmark of the `schedulers` package: schedule quality on random DAGs, and scaling.

Prints Markdown tables:

1. a grid per suite (random DAGs on 4 near-homogeneous processors; CPU+GPU mixes), per algorithm:
   mean SLR, mean speedup, % best (makespan within 1e-9 of the shortest of all algorithms on that
   graph), failure rate (speedup < 1) and mean scheduler wall time;
2. scheduler wall time for 1k and 10k nodes (and 100k with ``--large``) on 4/16/64 processors;
3. with ``--planning``, only the planning time of HEFT, PEFT and CPOP on 10k nodes x 16 processors
   and 100k x 64 (``--million`` adds 1M x 16), against the package as it was at ``--baseline``
   (a git revision, loaded from the repository into this process beside the current one): the
   rounds alternate which runs first, the table gives medians of wall and CPU time, their ratio,
   whether the two schedules are identical slot for slot, and the peak resident memory (Linux);
   then the same before/after comparison on the small graphs of the grids (30 and 100 nodes).

Usage::

    python bench/schedulers.py            # a few minutes on 2 cores
    python bench/schedulers.py --quick    # smaller grid, no 10k row: under a minute
    python bench/schedulers.py --large    # adds the 100k-node rows (several more minutes)
    python bench/schedulers.py --planning             # about 10 minutes
    python bench/schedulers.py --planning --million   # about 30 more minutes and 5 GB
"""

from __future__ import annotations

import argparse
import importlib
import io
import itertools
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

import networkx as nx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import schedulers

ROOT = Path(__file__).resolve().parents[1]

GRID_ALGORITHMS = [
    "heft", "cpop", "peft", "heft_lookahead", "best",
    "greedy_start", "round_robin", "fastest_single", "random",
]  # fmt: skip
SCALING_ALGORITHMS = ["heft", "peft", "cpop", "greedy_start", "heft_lookahead"]
LOOKAHEAD_MAX_NODES = 1_000  # O(p^2 * children) slot searches per node: too slow beyond
PLANNING_ALGORITHMS = ["heft", "peft", "cpop"]
SMALL_ALGORITHMS = ["heft", "peft", "cpop", "heft_lookahead", "best"]
PLANNING_CASES = [(10_000, 16), (100_000, 64)]
MILLION_CASE = (1_000_000, 16)
BASELINE = "eaad8b4cd73ed8715600b14e1342e30d17a26058"  # the last revision before the array core


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


def load_baseline(revision: str) -> ModuleType:
    """The ``schedulers`` package as it was at ``revision``, imported beside the current one.

    Its files come from ``git archive`` into a temporary folder; while it imports,
    ``sys.modules`` holds no ``schedulers`` module, so its own absolute imports bind to its files
    (every import of the package is at module level); then the current package's modules are
    put back.
    """
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "schedulers"],
        check=True,
        capture_output=True,
    ).stdout

    def ours() -> dict[str, ModuleType]:
        return {
            name: module
            for name, module in sys.modules.items()
            if name == "schedulers" or name.startswith("schedulers.")
        }

    current = ours()
    with tempfile.TemporaryDirectory(prefix="schedulers-baseline-") as folder:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(folder, **safe)  # type: ignore[arg-type]
        for name in current:
            del sys.modules[name]
        sys.path.insert(0, folder)
        try:
            return importlib.import_module("schedulers")
        finally:
            sys.path.remove(folder)
            for name in ours():
                del sys.modules[name]
            sys.modules.update(current)


def _peak_rss_reset() -> bool:
    """Reset the peak resident set size of this process (Linux ``clear_refs``); False if unable."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _rss_mb(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process in MB; NaN where unknown."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return float("nan")
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def planning_run(scheduler: Callable, graph: nx.DiGraph, processors: list) -> tuple:
    """One run: the schedule, wall and CPU seconds, and the peak RSS in MB during it."""
    reset = _peak_rss_reset()
    wall, cpu = time.perf_counter(), time.process_time()
    schedule = scheduler(graph, processors)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return schedule, wall, cpu, _rss_mb("VmHWM") if reset else float("nan")


def planning_table(cases: list[tuple[int, int, int]], baseline: ModuleType, revision: str) -> None:
    print(
        f"\n### Planning time: before (revision {revision[:10]}) and after, same process\n\n"
        "random DAGs, alpha 1, out-degree 3, CCR 1, beta 0.5; medians over rounds that alternate\n"
        "which runs first; RSS: the graph alone, and the peak while each scheduler ran\n"
    )
    print(
        "| nodes | processors | algorithm | rounds | before wall | after wall | wall ratio "
        "| before CPU | after CPU | CPU ratio | identical | graph RSS | peak before | peak after |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for n, p, rounds in cases:
        processors = list(range(p))
        graph = schedulers.random_dag(n, processors, seed=n + p)
        graph_mb = _rss_mb("VmRSS")
        for name in PLANNING_ALGORITHMS:
            runs: dict[str, list] = {"before": [], "after": []}
            slots: dict[str, list] = {}
            for round_ in range(rounds):
                sides = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
                for side in sides:
                    package = baseline if side == "before" else schedulers
                    schedule, wall, cpu, peak = planning_run(
                        package.SCHEDULERS[name], graph, processors
                    )
                    runs[side].append((wall, cpu, peak))
                    slots[side] = list(schedule.slots.items())
                    del schedule
            same = "yes" if slots["before"] == slots["after"] else "NO"
            del slots
            wall = {side: statistics.median(r[0] for r in runs[side]) for side in runs}
            cpu = {side: statistics.median(r[1] for r in runs[side]) for side in runs}
            peak = {side: max(r[2] for r in runs[side]) for side in runs}
            print(
                f"| {n:,} | {p} | {name} | {rounds} | {wall['before']:.2f} s "
                f"| {wall['after']:.2f} s | {wall['before'] / wall['after']:.1f}x "
                f"| {cpu['before']:.2f} s | {cpu['after']:.2f} s "
                f"| {cpu['before'] / cpu['after']:.1f}x | {same} | {graph_mb:,.0f} MB "
                f"| {peak['before']:,.0f} MB | {peak['after']:,.0f} MB |",
                flush=True,
            )
        del graph


def small_table(baseline: ModuleType, rounds: int) -> None:
    """Before and after on the small graphs of the two grids: mean CPU ms per graph."""
    print(
        "\n### Planning time on small graphs (those of the quality grids: 30 and 100 nodes), "
        "before and after\n\n"
        "mean CPU time per graph; medians over rounds that alternate which runs first\n"
    )
    print("| suite | algorithm | before | after | after / before | identical |")
    print("|---|---|---:|---:|---:|---|")
    suites = {
        "near-homogeneous, 4 processors": list(homogeneous_suite(False)),
        "CPU+GPU, 5 or 6 processors": list(cpu_gpu_suite(False)),
    }
    for title, suite in suites.items():
        for name in SMALL_ALGORITHMS:
            seconds: dict[str, list[float]] = {"before": [], "after": []}
            slots: dict[str, list] = {}
            for round_ in range(rounds):
                for side in ["before", "after"] if round_ % 2 == 0 else ["after", "before"]:
                    scheduler = (baseline if side == "before" else schedulers).SCHEDULERS[name]
                    cpu = time.process_time()
                    made = [scheduler(graph, processors) for graph, processors in suite]
                    seconds[side].append((time.process_time() - cpu) / len(suite))
                    slots[side] = [list(schedule.slots.items()) for schedule in made]
            before, after = (1000 * statistics.median(seconds[side]) for side in seconds)
            same = "yes" if slots["before"] == slots["after"] else "NO"
            print(
                f"| {title} | {name} | {before:.2f} ms | {after:.2f} ms | {after / before:.2f} "
                f"| {same} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grid, no 10k row")
    parser.add_argument("--large", action="store_true", help="add 100k-node rows")
    parser.add_argument(
        "--planning", action="store_true", help="only the planning-time table, before and after"
    )
    parser.add_argument("--million", action="store_true", help="add 1M x 16 to --planning")
    parser.add_argument("--rounds", type=int, default=3, help="planning rounds per row")
    parser.add_argument("--million-rounds", type=int, default=1, help="rounds of the 1M row")
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the 'before'")
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, networkx {nx.__version__}, "
        f"{platform.machine()}"
    )
    started = time.perf_counter()
    if args.planning or args.million:
        cases = [(n, p, args.rounds) for n, p in PLANNING_CASES]
        if args.million:
            cases.append((*MILLION_CASE, args.million_rounds))
        baseline = load_baseline(args.baseline)
        planning_table(cases, baseline, args.baseline)
        small_table(baseline, args.rounds)
        print(f"\ntotal {time.perf_counter() - started:.0f} s")
        return
    grid_table("Near-homogeneous processors: 4, beta in {0.1, 1}", homogeneous_suite(args.quick))
    grid_table("CPU+GPU: 4 CPUs + 1 or 2 GPUs", cpu_gpu_suite(args.quick))
    sizes = [1_000] if args.quick else [1_000, 10_000]
    if args.large:
        sizes.append(100_000)
    scaling_table(sizes, [4, 16, 64])
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
