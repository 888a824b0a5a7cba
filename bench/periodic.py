"""Periodic plans against whole-graph plans, and build + plan + lower of a 100k-task graph.

    python bench/periodic.py [--rounds 3] [--steps 6250] [--quick]

Part 1: for DataParallel(4), DataParallel(8), Pipeline(2, 4), Pipeline(4, 8), Hybrid(2 x
Pipeline(2, 4)) and ModelAveraging(4, 5) graphs of 10, 100 and 1000 steps (``--quick``: 10 and
100) of a small MLP on a simulated cluster of 8 CPU workers (DataParallel(4): 4 workers), HEFT
planning time of the whole graph and of a periodic plan (median of the rounds, which alternate
which runs first; no window schedule is reused from an earlier round), their ratio, the makespan
of the periodic plan over the whole plan's, and how the periodic plan was made
(``Plan.tiling``). Both plans pass ``Schedule.validate``, and the simulator replays both exactly.

Part 2: a DataParallel(8) graph of about 100,000 tasks (``--steps`` 6,250; ``--quick``: at
most 625) on 8 simulated workers, through ``build`` (compile), planning and lowering to Dask
tasks, with a whole-graph plan and with a periodic one, alternating, medians.

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
    from pnngraph.plan.planner import make_plan, scheduling_graph

    rng = np.random.default_rng(0)
    X = rng.standard_normal((1024, 32))
    y = (X[:, 0] > 0).astype(int)
    model = Sequential([Dense(32, 64), ReLU(), Dense(64, 64), ReLU(), Dense(64, 2)],
                       input_shape=(32,))
    steps_list = (10, 100) if args.quick else (10, 100, 1000)
    cases: list[tuple[str, Any, int]] = [
        ("DataParallel(4)", DataParallel(4), 4), ("DataParallel(8)", DataParallel(8), 8),
        ("Pipeline(2, 4)", Pipeline(2, 4), 8), ("Pipeline(4, 8)", Pipeline(4, 8), 8),
        ("Hybrid(2, Pipeline(2, 4))", Hybrid(DataParallel(2), Pipeline(2, 4)), 8),
        ("ModelAveraging(4, 5)", ModelAveraging(4, 5), 8),
    ]
    print("#### Part 1: periodic vs whole-graph HEFT plans (median of "
          f"{args.rounds} rounds, alternating)\n")
    print("| strategy | steps | tasks | whole plan (CPU) | periodic plan (CPU) | time ratio | "
          "makespan periodic / whole | tiling |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, strategy, cpus in cases:
        cluster = simulated_cluster(cpus=cpus, gpus=0)
        for steps in steps_list:
            abstract = pnngraph.build(model, (X, y), strategy=strategy, steps=steps,
                                      batch_size=64).to_networkx()
            times: dict[bool, list[float]] = {True: [], False: []}
            plans: dict[bool, Any] = {}
            for r in range(args.rounds):
                for periodic in ((True, False) if r % 2 == 0 else (False, True)):
                    clear_windows()  # every round schedules its window
                    t0 = time.process_time()
                    plans[periodic] = make_plan(abstract, cluster, periodic=periodic)
                    times[periodic].append(time.process_time() - t0)
            costed = scheduling_graph(abstract, cluster)
            for plan in plans.values():
                plan.schedule.validate(costed)
                replay = schedulers.simulate(costed, plan.placement, plan.schedule.order,
                                             processors=plan.schedule.processors)
                assert replay.makespan == plan.schedule.makespan
            whole, tiled = (statistics.median(times[p]) for p in (False, True))
            ratio = plans[True].schedule.makespan / plans[False].schedule.makespan
            print(f"| {name} | {steps:,} | {len(costed):,} | {whole:.3f} s | {tiled:.3f} s | "
                  f"{whole / tiled:.1f}x | {ratio:.4f} | {plans[True].tiling} |", flush=True)

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

    rows: dict[bool, list[tuple[float, float, float, int]]] = {True: [], False: []}
    try:
        for r in range(args.rounds):
            for periodic in ((True, False) if r % 2 == 0 else (False, True)):
                placement_module.make_plan = timed(  # type: ignore[assignment]
                    functools.partial(real_make_plan, periodic=periodic))
                clear_windows()
                t0 = time.process_time()
                graph = pnngraph.build(model, (X, y), strategy=DataParallel(8), steps=steps,
                                       batch_size=64, cluster=cluster)
                t1 = time.process_time()
                graph.__dask_graph__()
                t2 = time.process_time()
                rows[periodic].append((t1 - t0 - spent["plan"], spent["plan"], t2 - t1,
                                       len(graph.abstract)))
                del graph
    finally:
        placement_module.make_plan = real_make_plan  # type: ignore[assignment]
    print("| plan | tasks | build (CPU) | plan (CPU) | lower (CPU) | total (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for periodic in (False, True):
        build, plan, lower = (statistics.median(row[i] for row in rows[periodic])
                              for i in range(3))
        print(f"| {'periodic' if periodic else 'whole'} | {rows[periodic][0][3]:,} | "
              f"{build:.2f} s | {plan:.2f} s | {lower:.2f} s | {build + plan + lower:.2f} s |")


if __name__ == "__main__":
    main()
