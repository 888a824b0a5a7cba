"""The discrete-event simulator: hand-computed timelines, orders, overheads and bad input."""

from __future__ import annotations

import itertools
import math

import networkx as nx
import pytest

import schedulers
from schedulers import DeadlockError, Slot, UnschedulableNodeError, simulate, simulate_latencies

from sched_cases import costed  # isort: skip


def test_overhead_and_latency_by_hand() -> None:
    # a (cpu, 2 s) -> b (gpu, 1 s), transfer 1.5 s; overhead 0.25 s per node, latency 0.5 s per
    # edge: a [0, 2.25]; b's input arrives at 2.25 + 1.5 + 0.5 = 4.25: b [4.25, 5.5].
    graph = costed([("a", "b")])
    timeline = simulate(graph, {"a": "cpu", "b": "gpu"}, task_overhead=0.25, edge_latency=0.5)
    assert timeline.slots == {"a": Slot("cpu", 0, 2.25), "b": Slot("gpu", 4.25, 5.5)}
    timeline.validate(graph)
    # On the same processor no transfer, but the latency stays: b [2.75, 5].
    same = simulate(graph, {"a": "cpu", "b": "cpu"}, task_overhead=0.25, edge_latency=0.5)
    assert same.slots["b"] == Slot("cpu", 2.75, 5.0)


def test_per_pair_transfer_times() -> None:
    graph = costed([("a", "b")])
    graph.edges["a", "b"]["comm"] = {("cpu", "gpu"): 3.0, ("gpu", "cpu"): 7.0}
    assert simulate(graph, {"a": "cpu", "b": "gpu"}).slots["b"] == Slot("gpu", 5, 6)
    assert simulate(graph, {"a": "gpu", "b": "cpu"}).slots["b"] == Slot("cpu", 8, 10)


def test_fixed_order_waits_for_the_next_node() -> None:
    # a (gpu) -> c (cpu); d (cpu) independent. Order cpu: c then d: the cpu idles until c's
    # input arrives (1 + 1.5), runs c [2.5, 4.5], then d [4.5, 6.5].
    graph = costed([("a", "c")], ["d"])
    placement = {"a": "gpu", "c": "cpu", "d": "cpu"}
    fixed = simulate(graph, placement, {"gpu": ["a"], "cpu": ["c", "d"]})
    assert fixed.slots["c"] == Slot("cpu", 2.5, 4.5) and fixed.slots["d"] == Slot("cpu", 4.5, 6.5)
    # Without an order the cpu starts whatever has arrived: d [0, 2], then c [2.5, 4.5].
    free = simulate(graph, placement)
    assert free.slots["d"] == Slot("cpu", 0, 2) and free.slots["c"] == Slot("cpu", 2.5, 4.5)


def test_priority_without_order() -> None:
    graph = costed([], ["a", "b"])
    assert list(simulate(graph, {"a": "cpu", "b": "cpu"}).slots) == ["a", "b"]
    reordered = simulate(graph, {"a": "cpu", "b": "cpu"}, priority=["b"])
    assert reordered.slots == {"b": Slot("cpu", 0, 2), "a": Slot("cpu", 2, 4)}


def test_reproduces_heft_and_predicts_overhead(topcuoglu: tuple) -> None:
    graph, processors = topcuoglu
    plan = schedulers.heft(graph, processors)
    assert simulate(graph, plan.placement, plan.order).slots == plan.slots
    slower = simulate(graph, plan.placement, plan.order, task_overhead=0.1, edge_latency=0.2)
    assert slower.makespan > plan.makespan
    slower.validate(graph)


def test_deadlock() -> None:
    graph = costed([("a", "b")])
    with pytest.raises(DeadlockError) as error:
        simulate(graph, {"a": "cpu", "b": "cpu"}, {"cpu": ["b", "a"]})
    assert error.value.waiting == {"cpu": "b"}


@pytest.mark.parametrize(
    "order",
    [
        {"cpu": ["a"]},  # b missing
        {"cpu": ["a", "b", "b"]},  # b twice
        {"cpu": ["a"], "gpu": ["b"]},  # b not on its processor
        {"cpu": ["a", "b", "zzz"]},  # unknown node
    ],
)
def test_bad_order(order: dict) -> None:
    with pytest.raises(ValueError, match="every node once"):
        simulate(costed([("a", "b")]), {"a": "cpu", "b": "cpu"}, order)


def test_bad_placement() -> None:
    graph = costed([("a", "b")])
    with pytest.raises(ValueError, match="none for \\['b'\\]"):
        simulate(graph, {"a": "cpu"})
    with pytest.raises(ValueError, match="unknown nodes \\['c'\\]"):
        simulate(graph, {"a": "cpu", "b": "cpu", "c": "cpu"})
    graph.nodes["b"]["costs"] = {"cpu": 1.0}
    with pytest.raises(UnschedulableNodeError):
        simulate(graph, {"a": "cpu", "b": "gpu"})


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_overhead(bad: float) -> None:
    with pytest.raises(ValueError, match="task_overhead"):
        simulate(costed([("a", "b")]), {"a": "cpu", "b": "cpu"}, task_overhead=bad)
    with pytest.raises(ValueError, match="edge_latency"):
        simulate(costed([("a", "b")]), {"a": "cpu", "b": "cpu"}, edge_latency=bad)


def test_processors_of_the_result() -> None:
    graph = costed([("a", "b")])
    assert simulate(graph, {"a": "gpu", "b": "cpu"}).processors == ("gpu", "cpu")
    listed = simulate(graph, {"a": "gpu", "b": "cpu"}, processors=["cpu", "gpu", "tpu"])
    assert listed.processors == ("cpu", "gpu", "tpu")
    assert simulate(nx.DiGraph(), {}).makespan == 0
    with pytest.raises(ValueError, match="expected processors among"):
        simulate(graph, {"a": "gpu", "b": "cpu"}, processors=["cpu"])
    with pytest.raises(ValueError, match="expected processors among"):
        simulate(
            graph, {"a": "cpu", "b": "cpu"}, {"cpu": ["a", "b"], "tpu": []}, processors=["cpu"]
        )


@pytest.mark.parametrize("name", sorted(schedulers.SCHEDULERS))
def test_reproduces_every_scheduler_with_inexact_floats(name: str) -> None:
    # Random real-valued costs and per-pair transfers: equality is still exact, since the
    # simulation adds the same floats in the same order as the list schedulers.
    for seed in range(3):
        graph = schedulers.random_cpu_gpu_dag(40, cpus=3, gpus=2, ccr=1.0, seed=seed)
        processors = graph.graph["processors"]
        plan = schedulers.SCHEDULERS[name](graph, processors)
        assert (
            simulate(graph, plan.placement, plan.order, processors=processors).slots == plan.slots
        )
        # several latencies on one indexing of the graph: the same as one simulation each
        zero, hop = simulate_latencies(graph, plan.placement, plan.order,
                                       edge_latencies=(0.0, 0.3), processors=processors)
        assert zero.slots == plan.slots
        assert hop.slots == simulate(graph, plan.placement, plan.order, edge_latency=0.3,
                                     processors=processors).slots
        for nodes in plan.order.values():  # no overlap, not even by a rounding error
            for before, after in itertools.pairwise(nodes):
                assert plan.slots[after].start >= plan.slots[before].finish
