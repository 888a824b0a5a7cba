"""Periodic plans against whole-graph plans, and build + plan + lower of a 100k-task graph.

    python bench/periodic.py [--rounds 3] [--steps 6250] [--quick]

Part 1: for DataParallel(4), DataParallel(8), Pipeline(2, 4), Pipeline(4, 8), Hybrid(2 x
Pipeline(2, 4)) and ModelAveraging(4, 5) graphs of 100, 1,000 and 10,000 steps (``--quick``: 10
and 100) of a small MLP on a simulated cluster of 8 CPU workers (DataParallel(4): 4 workers),
HEFT planning time of the whole graph, of a periodic plan checked by the whole graph's
simulation (``verify="full"``) and of a periodic plan checked on a short graph and extended
(``verify="periodic"``, the default), medians of the rounds, which alternate which runs first
(no window schedule is reused from an earlier round). The whole graph and ``verify="full"`` are
planned only where the previous size, scaled to this one, took under 30 s. Then the makespan of
the periodic plan over the whole plan's, and how the periodic plan was made (``Plan.tiling``).
Where the graph has at most 100,000 tasks every plan passes ``Schedule.validate``, the
simulator replays it exactly, and the periodic plan's makespan before its slots were read (the
extension's) equals the simulation's to 1e-9. A last table gives each plan's CPU microseconds
per added step between the two largest sizes.

Part 2: a DataParallel(8) graph of about 100,000 tasks (``--steps`` 6,250; ``--quick``: at
most 625) on 8 simulated workers, through ``build`` (compile), planning and lowering to Dask
tasks, with a whole-graph plan and with periodic ones, alternating, medians.

Times are CPU seconds of this process (``time.process_time``): on a shared machine they are
steadier than wall time, and every step here runs on one thread.
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Any

import _setup


def main() -> None:
    args = _setup.arguments(__doc__, steps=6250, more=lambda p: p.add_argument(
        "--quick", action="store_true"))
    _setup.settle(args)
    import numpy as np

    import pnngraph
    import schedulers
    from pnngraph import DataParallel, Hybrid, ModelAveraging, Pipeline
    from pnngraph.nn import Dense, ReLU, Sequential
    from pnngraph.plan import placement as placement_module
    from pnngraph.plan.cluster import simulated_cluster
    from pnngraph.plan.periodic import clear_windows
    from pnngraph.plan.planner import computing_nodes, make_plan, scheduling_graph

    rng = np.random.default_rng(0)
    X = rng.standard_normal((1024, 32))
    y = (X[:, 0] > 0).astype(int)
    model = Sequential([Dense(32, 64), ReLU(), Dense(64, 64), ReLU(), Dense(64, 2)],
                       input_shape=(32,))
    steps_list = (10, 100) if args.quick else (100, 1000, 10000)
    cases: list[tuple[str, Any, int]] = [
        ("DataParallel(4)", DataParallel(4), 4), ("DataParallel(8)", DataParallel(8), 8),
        ("Pipeline(2, 4)", Pipeline(2, 4), 8), ("Pipeline(4, 8)", Pipeline(4, 8), 8),
        ("Hybrid(2, Pipeline(2, 4))", Hybrid(DataParallel(2), Pipeline(2, 4)), 8),
        ("ModelAveraging(4, 5)", ModelAveraging(4, 5), 8),
    ]
    variants = {"whole": {"periodic": False}, "full": {"verify": "full"},
                "periodic": {"verify": "periodic"}}
    print("#### Part 1: periodic vs whole-graph HEFT plans (median of "
          f"{args.rounds} rounds, alternating)\n")
    print("| strategy | steps | tasks | whole plan (CPU) | periodic, verify='full' (CPU) | "
          "periodic (CPU) | whole / periodic | makespan periodic / whole | tiling |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    growth: list[tuple[str, dict[str, float]]] = []
    for name, strategy, cpus in cases:
        cluster = simulated_cluster(cpus=cpus, gpus=0)
        last: dict[str, tuple[int, float]] = {}
        for steps in steps_list:
            abstract = pnngraph.build(model, (X, y), strategy=strategy, steps=steps,
                                      batch_size=64).to_networkx()
            run = [v for v in variants if v == "periodic" or v not in last
                   or last[v][1] * steps / last[v][0] < 30.0]
            times: dict[str, list[float]] = {v: [] for v in run}
            plans: dict[str, Any] = {}
            for r in range(args.rounds):
                for v in (run if r % 2 == 0 else run[::-1]):
                    clear_windows()  # every round schedules its window
                    t0 = time.process_time()
                    plans[v] = make_plan(abstract, cluster, **variants[v])
                    times[v].append(time.process_time() - t0)
            median = {v: statistics.median(times[v]) for v in run}
            tiled = plans["periodic"]
            if len(abstract) <= 100_010:
                extended = tiled.schedule.makespan  # before its slots are read
                costed = scheduling_graph(abstract, cluster)
                for plan in plans.values():
                    plan.schedule.validate(costed)
                    replay = schedulers.simulate(costed, plan.placement, plan.schedule.order,
                                                 processors=plan.schedule.processors)
                    assert replay.makespan == plan.schedule.makespan
                assert abs(extended - tiled.schedule.makespan) <= 1e-9 * extended
            whole = plans.get("whole")
            ratio = f"{tiled.schedule.makespan / whole.schedule.makespan:.4f}" if whole else "-"
            cells = {v: f"{median[v]:.3f} s" if v in median else "-" for v in variants}
            speedup = f"{median['whole'] / median['periodic']:.1f}x" if whole else "-"
            tasks = len(computing_nodes(abstract, cluster))
            print(f"| {name} | {steps:,} | {tasks:,} | {cells['whole']} | "
                  f"{cells['full']} | {cells['periodic']} | {speedup} | {ratio} | "
                  f"{tiled.tiling} |", flush=True)
            per_step = {v: (median[v] - last[v][1]) / (steps - last[v][0]) * 1e6
                        for v in run if v in last}
            last.update({v: (steps, median[v]) for v in run})
            del abstract, plans
        growth.append((name, per_step))
    low, high = steps_list[-2:]
    print(f"\nCPU microseconds per added step, from {low:,} to {high:,} steps:\n")
    print("| strategy | whole | periodic, verify='full' | periodic |")
    print("|---|---:|---:|---:|")
    for name, per_step in growth:
        cells = {v: f"{per_step[v]:.1f} us" if v in per_step else "-" for v in variants}
        print(f"| {name} | {cells['whole']} | {cells['full']} | {cells['periodic']} |")

    steps = min(args.steps, 625) if args.quick else args.steps
    cluster = simulated_cluster(cpus=8, gpus=0)
    print(f"\n#### Part 2: build + plan + lower, DataParallel(8), {steps:,} steps, 8 workers "
          f"(median of {args.rounds} rounds, alternating)\n")
    real_make_plan = placement_module.make_plan
    spent: dict[str, float] = {}

    def timed(fn: Any) -> Any:
        def call(*a: Any, **kw: Any) -> Any:
            t0 = time.process_time()
            out = fn(*a, **kw)
            spent["plan"] = time.process_time() - t0
            return out
        return call

    rows: dict[str, list[tuple[float, float, float, int]]] = {v: [] for v in variants}
    try:
        for r in range(args.rounds):
            for v in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
                placement_module.make_plan = timed(  # type: ignore[assignment]
                    functools.partial(real_make_plan, **variants[v]))
                clear_windows()
                t0 = time.process_time()
                graph = pnngraph.build(model, (X, y), strategy=DataParallel(8), steps=steps,
                                       batch_size=64, cluster=cluster)
                t1 = time.process_time()
                graph.__dask_graph__()
                t2 = time.process_time()
                rows[v].append((t1 - t0 - spent["plan"], spent["plan"], t2 - t1,
                                len(graph.abstract)))
                del graph
    finally:
        placement_module.make_plan = real_make_plan  # type: ignore[assignment]
    print("| plan | tasks | build (CPU) | plan (CPU) | lower (CPU) | total (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    labels = {"whole": "whole", "full": "periodic, verify='full'", "periodic": "periodic"}
    for v in variants:
        build, plan, lower = (statistics.median(row[i] for row in rows[v]) for i in range(3))
        print(f"| {labels[v]} | {rows[v][0][3]:,} | {build:.2f} s | {plan:.2f} s | "
              f"{lower:.2f} s | {build + plan + lower:.2f} s |")


if __name__ == "__main__":
    main()
