"""List scheduling of DAGs on heterogeneous processors, and a simulator to predict the run.

Standalone: imports only the standard library, networkx and numpy.

The data
--------
A `networkx.DiGraph` whose nodes (any hashables) carry ``costs``, a dict processor -> seconds (a
processor absent from the dict cannot run the node), and whose edges carry ``comm``, the seconds to
move the data when the two ends run on different processors (a number, or a dict
``(src, dst) -> seconds``; absent means 0). `annotate_costs` builds both from per-node FLOPs and
bytes and a `Machine`.

Every scheduler is ``f(graph, processors, **options) -> Schedule``; `SCHEDULERS` maps names to them.

>>> import schedulers
>>> graph, processors = schedulers.examples.topcuoglu2002()
>>> {name: f(graph, processors).makespan for name, f in schedulers.SCHEDULERS.items()}
... # doctest: +NORMALIZE_WHITESPACE
{'heft': 80.0, 'cpop': 86.0, 'peft': 85.0, 'heft_lookahead': 76.0, 'best': 76.0,
 'greedy_start': 94.0, 'round_robin': 131.0, 'fastest_single': 127.0, 'random': 141.0}
>>> plan = schedulers.heft(graph, processors)
>>> plan.validate(graph)
>>> schedulers.simulate(graph, plan.placement, plan.order).makespan
80.0
"""

from __future__ import annotations

from collections.abc import Callable

from schedulers import examples
from schedulers.baselines import fastest_single, greedy_start, random_placement, round_robin
from schedulers.cpop import cpop
from schedulers.exceptions import (
    CycleError,
    DeadlockError,
    InvalidCostError,
    InvalidScheduleError,
    MissingCostError,
    NoProcessorsError,
    SchedulingError,
    UnschedulableNodeError,
)
from schedulers.gantt import gantt_svg
from schedulers.heft import heft
from schedulers.lookahead import heft_lookahead
from schedulers.machine import Link, Machine, ProcessorSpec, annotate_costs, cpu_gpu_machine
from schedulers.metrics import Metrics, critical_path_lower_bound, evaluate, sequential_time
from schedulers.peft import peft
from schedulers.portfolio import PORTFOLIO, best
from schedulers.random_dag import random_cpu_gpu_dag, random_dag
from schedulers.schedule import Key, PairSum, Schedule, Slot
from schedulers.simulate import simulate, simulate_latencies

random = random_placement
"""`random_placement` by its short name: ``schedulers.random(graph, processors, seed=0)``."""

SCHEDULERS: dict[str, Callable[..., Schedule]] = {
    "heft": heft,
    "cpop": cpop,
    "peft": peft,
    "heft_lookahead": heft_lookahead,
    "best": best,
    "greedy_start": greedy_start,
    "round_robin": round_robin,
    "fastest_single": fastest_single,
    "random": random_placement,
}
"""Every scheduler by name; each is ``f(graph, processors, **options) -> Schedule``."""


__all__ = [
    "PORTFOLIO",
    "SCHEDULERS",
    "CycleError",
    "DeadlockError",
    "InvalidCostError",
    "InvalidScheduleError",
    "Key",
    "Link",
    "Machine",
    "Metrics",
    "MissingCostError",
    "NoProcessorsError",
    "PairSum",
    "ProcessorSpec",
    "Schedule",
    "SchedulingError",
    "Slot",
    "UnschedulableNodeError",
    "annotate_costs",
    "best",
    "cpop",
    "cpu_gpu_machine",
    "critical_path_lower_bound",
    "evaluate",
    "examples",
    "fastest_single",
    "gantt_svg",
    "greedy_start",
    "heft",
    "heft_lookahead",
    "peft",
    "random",
    "random_cpu_gpu_dag",
    "random_dag",
    "random_placement",
    "round_robin",
    "sequential_time",
    "simulate",
    "simulate_latencies",
]
