"""Hand-computed cases for each scheduler, with the arithmetic in the comments."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

import schedulers
from schedulers import Slot
from schedulers._core import build_problem, downward_rank, upward_rank
from schedulers.cpop import critical_path
from schedulers.peft import optimistic_cost_table

from sched_cases import costed  # isort: skip


def two_nodes() -> nx.DiGraph:
    """a -> b; a: cpu 2, gpu 3; b: cpu 9, gpu 1; transfer 4 s."""
    graph = nx.DiGraph()
    graph.add_node("a", costs={"cpu": 2.0, "gpu": 3.0})
    graph.add_node("b", costs={"cpu": 9.0, "gpu": 1.0})
    graph.add_edge("a", "b", comm=4.0)
    return graph


# --- HEFT ------------------------------------------------------------------------------------


def test_heft_ranks_on_the_paper_example(topcuoglu: tuple) -> None:
    # Topcuoglu et al. 2002, Table 2: rank_u(n10) = mean(21, 7, 16) = 14.667;
    # rank_u(n8) = mean(5, 11, 14) + 11 + 14.667 = 35.667; ... rank_u(n1) = 108.
    problem = build_problem(*topcuoglu)
    expected = [108, 77, 80, 80, 69, 63.333, 42.667, 35.667, 44.333, 14.667]
    np.testing.assert_allclose(upward_rank(problem), expected, atol=5e-4)


def test_heft_reproduces_the_paper_schedule(topcuoglu: tuple) -> None:
    # Order n1, n3, n4, n2, n5, n6, n9, n7, n8, n10 (n3 and n4 tie at 80: topological index).
    # n1: EFT p1 14, p2 16, p3 9 -> p3 [0, 9].
    # n3: p1 9+12+11 = 32, p2 9+12+13 = 34, p3 9+19 = 28 -> p3 [9, 28].
    # n4: p1 9+9+13 = 31, p2 18+8 = 26, p3 28+17 = 45 -> p2 [18, 26].
    # n2: p1 27+13 = 40, p2 27+19 = 46, p3 28+18 = 46 -> p1 [27, 40]. ... makespan 80.
    graph, processors = topcuoglu
    schedule = schedulers.heft(graph, processors)
    assert list(schedule.slots) == [1, 3, 4, 2, 5, 6, 9, 7, 8, 10]
    assert schedule.slots == {
        1: Slot("p3", 0, 9), 3: Slot("p3", 9, 28), 4: Slot("p2", 18, 26),
        2: Slot("p1", 27, 40), 5: Slot("p3", 28, 38), 6: Slot("p2", 26, 42),
        9: Slot("p2", 56, 68), 7: Slot("p3", 38, 49), 8: Slot("p1", 57, 62),
        10: Slot("p2", 73, 80),
    }  # fmt: skip
    assert schedule.makespan == 80
    assert schedule.order == {"p1": (2, 8), "p2": (4, 6, 9, 10), "p3": (1, 3, 5, 7)}


def test_heft_inserts_into_an_idle_gap() -> None:
    # a (p, 1 s) -> b (p, 5 s) -> z (q, 1 s, transfer 0.5 s); w alone (q, 0.5 s).
    # Ranks: z 1, b 5 + 0.5 + 1 = 6.5, a 1 + 0 + 6.5 = 7.5, w 0.5: order a, b, z, w.
    # a p [0, 1], b p [1, 6], z q [6.5, 7.5]; w fits the idle gap [0, 6.5) on q: [0, 0.5].
    # Without insertion w goes after z: [7.5, 8].
    graph = nx.DiGraph()
    graph.add_node("a", costs={"p": 1.0})
    graph.add_node("b", costs={"p": 5.0})
    graph.add_node("z", costs={"q": 1.0})
    graph.add_node("w", costs={"q": 0.5})
    graph.add_edge("a", "b", comm=0.0)
    graph.add_edge("b", "z", comm=0.5)
    with_gap = schedulers.heft(graph, ["p", "q"])
    assert list(with_gap.slots) == ["a", "b", "z", "w"]
    assert with_gap.slots["z"] == Slot("q", 6.5, 7.5)
    assert with_gap.slots["w"] == Slot("q", 0.0, 0.5)
    assert with_gap.order["q"] == ("w", "z")
    appended = schedulers.heft(graph, ["p", "q"], insertion=False)
    assert appended.slots["w"] == Slot("q", 7.5, 8.0)


def test_heft_ties_go_to_the_processor_listed_first() -> None:
    graph = costed([], ["a"])
    graph.nodes["a"]["costs"] = {"x": 1.0, "y": 1.0}
    assert schedulers.heft(graph, ["x", "y"]).placement == {"a": "x"}
    assert schedulers.heft(graph, ["y", "x"]).placement == {"a": "y"}


def test_heft_per_pair_transfer_times() -> None:
    # b may run on p2 (slow link from p1: 10 s) or p3 (fast link: 1 s), equally fast otherwise.
    graph = nx.DiGraph()
    graph.add_node("a", costs={"p1": 1.0})
    graph.add_node("b", costs={"p2": 2.0, "p3": 2.0})
    pairs = {(s, d): 5.0 for s in ("p1", "p2", "p3") for d in ("p1", "p2", "p3") if s != d}
    pairs["p1", "p2"], pairs["p1", "p3"] = 10.0, 1.0
    graph.add_edge("a", "b", comm=pairs)
    assert schedulers.heft(graph, ["p1", "p2", "p3"]).slots["b"] == Slot("p3", 2.0, 4.0)


# --- CPOP ------------------------------------------------------------------------------------


def test_cpop_on_the_paper_example(topcuoglu: tuple) -> None:
    # priority = rank_u + rank_d; |CP| = priority(n1) = 108 + 0.
    # rank_d(n2) = 0 + mean(14, 16, 9) + 18 = 31, priority 31 + 77 = 108: on the CP.
    # rank_d(n9) = rank_d(n2) + mean(13, 19, 18) + 16 = 63.667, priority 63.667 + 44.333 = 108.
    # CP = n1, n2, n9, n10; on p1 14+13+18+21 = 66, p2 16+19+12+7 = 54, p3 9+18+20+16 = 63: p2.
    graph, processors = topcuoglu
    problem = build_problem(graph, processors)
    priority = (upward_rank(problem) + downward_rank(problem)).tolist()
    assert [problem.nodes[i] for i in critical_path(problem, priority)] == [1, 2, 9, 10]
    assert priority[0] == pytest.approx(108)
    schedule = schedulers.cpop(graph, processors)
    assert {schedule.placement[n] for n in (1, 2, 9, 10)} == {"p2"}
    assert schedule.makespan == 86  # Topcuoglu et al. 2002, Fig. 5(b)


def test_cpop_without_a_processor_for_the_whole_critical_path() -> None:
    # a (only on p) -> b (only on q): no processor runs the whole CP; both go by EFT.
    graph = nx.DiGraph()
    graph.add_node("a", costs={"p": 1.0})
    graph.add_node("b", costs={"q": 1.0})
    graph.add_edge("a", "b", comm=2.0)
    assert schedulers.cpop(graph, ["p", "q"]).slots == {"a": Slot("p", 0, 1), "b": Slot("q", 3, 4)}


# --- PEFT ------------------------------------------------------------------------------------


def test_peft_looks_past_the_greedy_choice() -> None:
    # OCT[a, cpu] = min(b on cpu: 0 + 9, b on gpu: 0 + 1 + 4) = 5; OCT[a, gpu] = min(9 + 4, 1) = 1.
    # a: O_EFT cpu = 2 + 5 = 7, gpu = 3 + 1 = 4 -> gpu [0, 3]; b: gpu [3, 4]. HEFT: a on cpu
    # (EFT 2 < 3), b on gpu at 2 + 4 = 6, makespan 7.
    graph = two_nodes()
    table = optimistic_cost_table(build_problem(graph, ["cpu", "gpu"]))
    assert table.tolist() == [[5.0, 1.0], [0.0, 0.0]]
    assert schedulers.peft(graph, ["cpu", "gpu"]).slots == {
        "a": Slot("gpu", 0, 3),
        "b": Slot("gpu", 3, 4),
    }
    assert schedulers.heft(graph, ["cpu", "gpu"]).makespan == 7


def test_peft_on_the_paper_example(topcuoglu: tuple) -> None:
    # OCT rows by hand: n8 -> n10 (comm 11): p1 min(21, 7+11, 16+11) = 18, p2 min(21+11, 7,
    # 16+11) = 7, p3 min(32, 18, 16) = 16. n2 -> {n8 (19), n9 (16)} on p1: n8 min(18+5,
    # 7+11+19, 16+14+19) = 23, n9 min(20+18, 7+12+16, 16+20+16) = 35 -> 35.
    graph, processors = topcuoglu
    table = optimistic_cost_table(build_problem(graph, processors))
    assert table[7].tolist() == [18, 7, 16]
    assert table[1].tolist() == [35, 19, 35]
    assert table[0].tolist() == [48, 38, 53]
    # rank_oct: n1 46.3, n4 31, n2 29.7, n5 27.7, n3 25.7, n6 23.7, n7 14.7, n9 14.3, n8 13.7.
    # n1: O_EFT p1 14+48, p2 16+38 = 54, p3 9+53 -> p2 [0, 16]; n4: p2 24 + 19 = 43 -> [16, 24];
    # n2: p2 43 + 19 = 62 -> [24, 43]; ... n8: p1 67 + 18 = 85 ties p2 78 + 7 = 85: the lower EFT
    # wins, p1 [62, 67]; n10: p2 max(59+17, 67+11, 62) + 7 = 85. (Not a figure of the paper,
    # which uses its own example; the reference implementation agrees.)
    schedule = schedulers.peft(graph, processors)
    assert list(schedule.slots) == [1, 4, 2, 5, 3, 6, 7, 9, 8, 10]
    assert schedule.slots[8] == Slot("p1", 62, 67)
    assert schedule.makespan == 85


# --- lookahead HEFT --------------------------------------------------------------------------


def test_lookahead_scores_a_processor_by_its_children() -> None:
    # a on cpu: a [0, 2]; b best on gpu at 2 + 4 + 1 = 7 -> score 7.
    # a on gpu: a [0, 3]; b on gpu [3, 4] -> score 4. So a goes to the GPU.
    schedule = schedulers.heft_lookahead(two_nodes(), ["cpu", "gpu"])
    assert schedule.slots == {"a": Slot("gpu", 0, 3), "b": Slot("gpu", 3, 4)}


def test_lookahead_on_the_paper_example(topcuoglu: tuple) -> None:
    assert schedulers.heft_lookahead(*topcuoglu).makespan == 76  # reference implementation agrees


# --- baselines -------------------------------------------------------------------------------


def test_round_robin_deals_in_turn() -> None:
    # chain a -> b -> c (cpu 2 s, gpu 1 s, transfers 1.5 s): a cpu [0, 2], b gpu [3.5, 4.5],
    # c cpu [6, 8].
    schedule = schedulers.round_robin(costed([("a", "b"), ("b", "c")]), ["cpu", "gpu"])
    assert schedule.slots == {
        "a": Slot("cpu", 0, 2),
        "b": Slot("gpu", 3.5, 4.5),
        "c": Slot("cpu", 6, 8),
    }


def test_round_robin_skips_a_processor_that_cannot_run_the_node() -> None:
    graph = costed([], ["a", "b", "c"])
    graph.nodes["b"]["costs"] = {"cpu": 2.0}
    placement = schedulers.round_robin(graph, ["cpu", "gpu"]).placement
    assert placement == {"a": "cpu", "b": "cpu", "c": "gpu"}


def test_fastest_single() -> None:
    # Topcuoglu example: totals p1 127, p2 130, p3 143.
    graph, processors = schedulers.examples.topcuoglu2002()
    schedule = schedulers.fastest_single(graph, processors)
    assert set(schedule.placement.values()) == {"p1"} and schedule.makespan == 127


def test_fastest_single_prefers_a_processor_that_runs_everything() -> None:
    # gpu is faster but cannot run b: cpu runs everything in 2 + 2 = 4 s.
    graph = costed([("a", "b")])
    graph.nodes["b"]["costs"] = {"cpu": 2.0}
    assert schedulers.fastest_single(graph, ["gpu", "cpu"]).makespan == 4


def test_fastest_single_when_no_processor_runs_everything() -> None:
    # a only on p (1 s), b only on q (1 s), c on both (p 1 s, q 3 s): p misses one node with
    # total 2, q misses one with total 4 -> p; b goes where it finishes first, q [1 + 2, 4].
    graph = nx.DiGraph()
    graph.add_node("a", costs={"p": 1.0})
    graph.add_node("b", costs={"q": 1.0})
    graph.add_node("c", costs={"p": 1.0, "q": 3.0})
    graph.add_edge("a", "b", comm=2.0)
    schedule = schedulers.fastest_single(graph, ["q", "p"])
    assert schedule.slots == {"a": Slot("p", 0, 1), "b": Slot("q", 3, 4), "c": Slot("p", 1, 2)}


def test_greedy_start_is_blind_to_run_time() -> None:
    # x and y (cpu 5 s, gpu 1 s): x starts at 0 anywhere, the shorter run wins: gpu [0, 1];
    # y starts at 0 on the cpu, 1 on the gpu: cpu [0, 5]. HEFT puts both on the gpu: 2 s.
    graph = costed([], ["x", "y"])
    for node in graph:
        graph.nodes[node]["costs"] = {"cpu": 5.0, "gpu": 1.0}
    greedy = schedulers.greedy_start(graph, ["cpu", "gpu"])
    assert greedy.slots == {"x": Slot("gpu", 0, 1), "y": Slot("cpu", 0, 5)}
    assert schedulers.heft(graph, ["cpu", "gpu"]).makespan == 2


def test_greedy_start_takes_nodes_as_they_become_ready() -> None:
    # a (2 s) -> b; c (10 s) -> d. b is released at 2, d at 10: b is placed before d.
    graph = nx.DiGraph()
    for node, seconds in {"a": 2.0, "c": 10.0, "b": 1.0, "d": 1.0}.items():
        graph.add_node(node, costs={"p": seconds, "q": seconds})
    graph.add_edges_from([("c", "d"), ("a", "b")], comm=0.0)
    assert list(schedulers.greedy_start(graph, ["p", "q"]).slots) == ["a", "c", "b", "d"]


def test_random_is_seeded() -> None:
    graph = costed([], [f"n{i}" for i in range(20)])
    first = schedulers.random(graph, ["cpu", "gpu"], seed=3)
    assert schedulers.random(graph, ["cpu", "gpu"], seed=3) == first
    assert schedulers.random(graph, ["cpu", "gpu"], seed=4).placement != first.placement
    assert set(first.placement.values()) == {"cpu", "gpu"}


def test_best_picks_the_shortest_and_names_it(topcuoglu: tuple) -> None:
    graph, processors = topcuoglu
    schedule = schedulers.best(graph, processors)
    assert (schedule.makespan, schedule.algorithm) == (76, "heft_lookahead")
    only_heft = schedulers.best(graph, processors, portfolio=[schedulers.heft, schedulers.cpop])
    assert (only_heft.makespan, only_heft.algorithm) == (80, "heft")
    with pytest.raises(ValueError, match="at least one"):
        schedulers.best(graph, processors, portfolio=[])


def test_registry() -> None:
    assert set(schedulers.SCHEDULERS) == {
        "heft", "cpop", "peft", "heft_lookahead", "best",
        "greedy_start", "round_robin", "fastest_single", "random",
    }  # fmt: skip
    graph, processors = schedulers.examples.topcuoglu2002()
    for name, scheduler in schedulers.SCHEDULERS.items():
        schedule = scheduler(graph, processors)
        assert schedule.algorithm == name or name == "best"
