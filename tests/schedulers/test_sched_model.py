"""The machine model, the metrics, the random DAGs, `Schedule.validate`, the Gantt chart, errors."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

import schedulers
from schedulers import (
    InvalidScheduleError,
    Link,
    Machine,
    ProcessorSpec,
    Schedule,
    Slot,
    annotate_costs,
    cpu_gpu_machine,
    evaluate,
    random_cpu_gpu_dag,
    random_dag,
)

from sched_cases import costed  # isort: skip

# --- machine model ---------------------------------------------------------------------------


def small_machine() -> Machine:
    cpu = ProcessorSpec("cpu", {"default": 1e9}, memory_bytes_per_s=1e9)
    gpu = ProcessorSpec("gpu", {"gemm": 1e11}, memory_bytes_per_s=1e10, task_overhead_seconds=1e-3)
    return Machine(
        {"cpu": cpu, "gpu": gpu},
        network=Link(bandwidth_bytes_per_s=1e8, latency_seconds=0.01),
        links={("gpu", "cpu"): Link(5e7, 0.02)},
    )


def test_annotate_costs_by_hand() -> None:
    graph = nx.DiGraph()
    graph.add_node("gemm", flops=2e9, bytes=1e8, work="gemm")
    graph.add_node("sort", flops=1e6, bytes=5e8, work="sort")
    graph.add_edge("gemm", "sort", bytes=1e7)
    costed_graph = annotate_costs(graph, small_machine())
    assert "costs" not in graph.nodes["gemm"]  # the input is left alone
    # gemm on cpu: max(2e9 / 1e9, 1e8 / 1e9) = 2 s; on gpu 1e-3 + max(0.02, 0.01) = 0.021 s.
    assert costed_graph.nodes["gemm"]["costs"] == pytest.approx({"cpu": 2.0, "gpu": 0.021})
    # sort: the gpu has no speed for it (and no default); the cpu is memory-bound: 0.5 s.
    assert costed_graph.nodes["sort"]["costs"] == pytest.approx({"cpu": 0.5})
    # cpu -> gpu: 0.01 + 1e7 / 1e8 = 0.11 s; gpu -> cpu (override): 0.02 + 1e7 / 5e7 = 0.22 s.
    comm = costed_graph.edges["gemm", "sort"]["comm"]
    assert comm == pytest.approx({("cpu", "gpu"): 0.11, ("gpu", "cpu"): 0.22})
    schedule = schedulers.heft(costed_graph, small_machine().names)
    schedule.validate(costed_graph)
    assert schedule.placement == {"gemm": "gpu", "sort": "cpu"}


def test_uniform_links_give_one_number() -> None:
    graph = nx.DiGraph()
    graph.add_node("a", flops=1.0)
    graph.add_node("b", bytes=1.0)
    graph.add_edge("a", "b")  # no bytes: latency only
    machine = Machine({"x": ProcessorSpec("cpu", {"default": 1.0}, 1.0)}, network=Link(1.0, 0.5))
    assert annotate_costs(graph, machine).edges["a", "b"]["comm"] == 0.0  # one processor
    two = Machine({p: ProcessorSpec("cpu", {"default": 1.0}, 1.0) for p in "xy"}, Link(1.0, 0.5))
    assert annotate_costs(graph, two).edges["a", "b"]["comm"] == 0.5


def test_cpu_gpu_machine() -> None:
    machine = cpu_gpu_machine(cpus=2, gpus=1)
    assert machine.names == [("cpu", 0), ("cpu", 1), ("gpu", 0)]
    assert machine.link(("cpu", 0), ("gpu", 0)) != machine.link(("cpu", 0), ("cpu", 1))


@pytest.mark.parametrize(
    "build",
    [
        lambda: ProcessorSpec("cpu", {"default": 0.0}, 1.0),
        lambda: ProcessorSpec("cpu", {"default": 1.0}, math.inf),
        lambda: ProcessorSpec("cpu", {"default": 1.0}, 1.0, task_overhead_seconds=-1),
        lambda: Link(-1.0),
        lambda: Link(1.0, math.nan),
        lambda: Machine({}, Link(1.0)),
        lambda: Machine({"x": ProcessorSpec("cpu", {}, 1.0)}, Link(1.0), {("x", "y"): Link(1.0)}),
    ],
)
def test_machine_checks_its_numbers(build: object) -> None:
    with pytest.raises(ValueError, match="expected"):
        build()  # type: ignore[operator]


def test_annotate_costs_needs_work() -> None:
    with pytest.raises(ValueError, match="'flops' and/or 'bytes'"):
        annotate_costs(costed([], ["a"]), small_machine())
    graph = nx.DiGraph()
    graph.add_node("a", flops=-1.0)
    with pytest.raises(ValueError, match="flops"):
        annotate_costs(graph, small_machine())


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_on_the_paper_example(topcuoglu: tuple) -> None:
    graph, processors = topcuoglu
    metrics = evaluate(schedulers.heft(graph, processors), graph)
    # CP_MIN: n1, n2, n9, n10 at min costs 9 + 13 + 12 + 7 = 41; sequential: p1, 127.
    assert metrics.lower_bound == 41 and metrics.makespan == 80
    assert metrics.slr == pytest.approx(80 / 41)
    assert metrics.speedup == pytest.approx(127 / 80)
    assert metrics.efficiency == pytest.approx(127 / 80 / 3)
    assert not metrics.failed


def test_failure_flag() -> None:
    # Round robin bounces a chain between processors: 2 + 1.5 + 1 + 1.5 + 2 = 8 > 3 on the gpu.
    graph = costed([("a", "b"), ("b", "c")])
    metrics = evaluate(schedulers.round_robin(graph, ["cpu", "gpu"]), graph)
    assert metrics.speedup == pytest.approx(3 / 8) and metrics.failed


def test_metrics_of_degenerate_graphs() -> None:
    empty = evaluate(Schedule({}, ("cpu",)), nx.DiGraph())
    assert (empty.slr, empty.speedup, empty.failed) == (1.0, 1.0, False)
    free = costed([], ["a"])
    free.nodes["a"]["costs"] = {"cpu": 0.0}
    assert evaluate(Schedule({"a": Slot("cpu", 0, 0)}, ("cpu",)), free).slr == 1.0
    late = Schedule({"a": Slot("cpu", 1, 1)}, ("cpu",))
    assert evaluate(late, free).slr == math.inf


# --- random DAGs -----------------------------------------------------------------------------


def test_random_dag_is_seeded_and_shaped() -> None:
    first = random_dag(200, ["p", "q"], alpha=1.0, out_degree=3, ccr=2.0, beta=1.0, seed=7)
    again = random_dag(200, ["p", "q"], alpha=1.0, out_degree=3, ccr=2.0, beta=1.0, seed=7)
    assert list(first.nodes(data=True)) == list(again.nodes(data=True))
    assert list(first.edges(data=True)) == list(again.edges(data=True))
    assert list(first.edges) != list(random_dag(200, ["p", "q"], seed=8).edges)
    assert nx.is_directed_acyclic_graph(first) and list(first) == list(range(200))
    costs = np.array([[d["costs"]["p"], d["costs"]["q"]] for _, d in first.nodes(data=True)])
    comm = np.array([c for _, _, c in first.edges(data="comm")])
    assert 1.2 < comm.mean() / costs.mean() < 3.0  # ccr about 2
    assert 2 < first.number_of_edges() / 200 < 4  # out-degree about 3
    assert nx.dag_longest_path_length(first) + 1 <= round(math.sqrt(200))  # levels
    wide = random_dag(200, ["p"], alpha=4.0, seed=7)
    assert nx.dag_longest_path_length(wide) + 1 <= round(math.sqrt(200) / 4)
    same = random_dag(30, ["p", "q"], beta=0.0, seed=1)
    assert all(d["costs"]["p"] == d["costs"]["q"] for _, d in same.nodes(data=True))


def test_random_cpu_gpu_dag() -> None:
    graph = random_cpu_gpu_dag(100, cpus=2, gpus=1, beta=0.0, gpu_speedup=(4, 8), seed=3)
    gpu, cpu, other = ("gpu", 0), ("cpu", 0), ("cpu", 1)
    for _, data in graph.nodes(data=True):
        assert 4 - 1e-9 <= data["costs"][cpu] / data["costs"][gpu] <= 8 + 1e-9
    for _, _, comm in graph.edges(data="comm"):
        assert comm[cpu, gpu] == comm[gpu, other] == pytest.approx(3 * comm[cpu, other])
    assert graph.graph["processors"] == [cpu, other, gpu]


@pytest.mark.parametrize(
    "options",
    [{"n": -1}, {"alpha": 0.0}, {"out_degree": 0}, {"ccr": -1.0}, {"beta": 2.5}],
)
def test_random_dag_checks_its_parameters(options: dict) -> None:
    arguments = {"n": 10} | options
    with pytest.raises(ValueError, match="expected"):
        random_dag(arguments.pop("n"), ["p"], **arguments)


def test_random_dag_sizes() -> None:
    assert random_dag(0, ["p"]).number_of_nodes() == 0
    assert random_dag(1, ["p"]).number_of_nodes() == 1
    with pytest.raises(ValueError, match="gpu_speedup"):
        random_cpu_gpu_dag(10, gpu_speedup=(3.0, 2.0))


# --- Schedule.validate -----------------------------------------------------------------------


def test_validate_lists_every_violation() -> None:
    graph = costed([("a", "b"), ("b", "c")])
    graph.add_node("lost", costs={"cpu": 1.0})
    bad = Schedule(
        {
            "a": Slot("gpu", 0.0, 0.5),  # shorter than its 1 s cost
            "b": Slot("gpu", 0.25, 1.25),  # overlaps a, starts before a's data
            "c": Slot("tpu", 5.0, 6.0),  # not a processor of the schedule nor in its costs
            "ghost": Slot("cpu", 0.0, 1.0),  # not in the graph
        },
        ("cpu", "gpu"),
    )
    with pytest.raises(InvalidScheduleError) as error:
        bad.validate(graph)
    text = "\n".join(error.value.violations)
    for expected in [
        "'lost' is not scheduled",
        "'ghost' is not in the graph",
        "less than its cost",
        "overlap on 'gpu'",
        "before the data of 'a'",
        "'tpu', not one of",
        "which its costs do not list",
    ]:
        assert expected in text
    assert pickle.loads(pickle.dumps(error.value)).violations == error.value.violations


def test_validate_accepts_touching_and_zero_length_slots() -> None:
    graph = costed([("a", "b")], ["z"])
    graph.nodes["z"]["costs"] = {"cpu": 0.0}
    ok = Schedule(
        {"a": Slot("cpu", 0, 2), "z": Slot("cpu", 2, 2), "b": Slot("cpu", 2, 4)}, ("cpu",)
    )
    ok.validate(graph)
    assert ok.order == {"cpu": ("a", "z", "b")}


def test_validate_uses_per_pair_transfers() -> None:
    graph = costed([("a", "b")])
    graph.edges["a", "b"]["comm"] = {("cpu", "gpu"): 3.0, ("gpu", "cpu"): 0.5}
    procs = ("cpu", "gpu")
    Schedule({"a": Slot("gpu", 0, 1), "b": Slot("cpu", 1.5, 3.5)}, procs).validate(graph)
    with pytest.raises(InvalidScheduleError, match="arrives at 5"):
        Schedule({"a": Slot("cpu", 0, 2), "b": Slot("gpu", 4, 5)}, procs).validate(graph)


def test_errors_pickle() -> None:
    errors = [
        schedulers.NoProcessorsError(),
        schedulers.CycleError([("a", "b"), ("b", "a")]),
        schedulers.MissingCostError("a", edge=("a", "b"), pair=("x", "y")),
        schedulers.InvalidCostError(-1.0, node="a", processor="x"),
        schedulers.UnschedulableNodeError("a", ["x"]),
        schedulers.DeadlockError({"x": "a"}),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert vars(copy) == vars(error)


# --- Gantt chart, imports --------------------------------------------------------------------


def test_gantt_svg_is_well_formed(topcuoglu: tuple) -> None:
    schedule = schedulers.heft(*topcuoglu)
    root = ET.fromstring(schedulers.gantt_svg(schedule, title="HEFT <paper> & co"))
    rects = root.findall("{http://www.w3.org/2000/svg}rect")
    assert len(rects) == 1 + 10  # background + one bar per node
    odd = Schedule({("forward-dense", 3, 1): Slot("<gpu>", 0.0, 0.0)}, ("<gpu>",))
    ET.fromstring(schedulers.gantt_svg(odd))  # zero makespan, markup in names


def test_standalone_imports() -> None:
    code = (
        "import sys, schedulers; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'pnngraph')]; "
        "sys.exit(bool(bad))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
