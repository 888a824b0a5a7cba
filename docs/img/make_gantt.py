"""Draw the Gantt charts of docs/schedulers.md: ``python docs/img/make_gantt.py``."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import schedulers  # noqa: E402


def main() -> None:
    graph, processors = schedulers.examples.topcuoglu2002()
    for name in ("heft", "cpop"):
        schedule = schedulers.SCHEDULERS[name](graph, processors)
        title = f"{name.upper()}, example of Topcuoglu et al. (2002)"
        svg = schedulers.gantt_svg(schedule, title=title, label=lambda node: f"n{node}")
        (HERE / f"{name}_topcuoglu2002.svg").write_text(svg + "\n")
    mixed = schedulers.random_cpu_gpu_dag(16, cpus=3, gpus=1, ccr=0.5, alpha=1.0, seed=6)
    names = mixed.graph["processors"]
    for name in ("heft", "best"):
        schedule = schedulers.SCHEDULERS[name](mixed, names)
        winner = f" (winner: {schedule.algorithm})" if name == "best" else ""
        title = f"{name}{winner}, random CPU+GPU DAG"
        svg = schedulers.gantt_svg(
            schedule, title=title, processor_label=lambda proc: f"{proc[0]} {proc[1]}"
        )
        (HERE / f"{name}_cpu_gpu.svg").write_text(svg + "\n")


if __name__ == "__main__":
    main()
