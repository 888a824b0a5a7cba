"""The array core of the list schedulers against its straightforward scalar definitions.

`Timelines.search` (every processor at once, in the tail of each timeline) and
`Timelines.earliest` (one processor) must give the starts and gap indices of a plain scan of
a sorted list of busy intervals; `Placer.data_ready` the max over every (predecessor, processor)
pair; the layered ranks and optimistic cost table the values of a loop over a topological order;
the fast paths of `build_problem` the order, matrix and errors of the checking path. All exactly,
so that the schedules stay the same slot for slot.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schedulers
from schedulers import InvalidCostError, MissingCostError, _core
from schedulers._core import (
    Placer,
    Timelines,
    build_problem,
    downward_rank,
    earliest_finish,
    mean_cost,
    quantize,
    ready_order,
    upward_rank,
)
from schedulers.peft import optimistic_cost_table

from sched_cases import dags  # isort: skip


def scan(starts: list, finishes: list, ready: float, duration: float) -> tuple[float, int]:
    """The earliest gap on one processor by bisect and a loop over the gaps after ``ready``."""
    if not finishes or finishes[-1] <= ready:
        return ready, len(finishes)
    i = bisect_right(finishes, ready)
    if ready + duration <= starts[i]:
        return ready, i
    for k in range(i + 1, len(starts)):
        if finishes[k - 1] + duration <= starts[k]:
            return finishes[k - 1], k
    return finishes[-1], len(starts)


def intervals(timelines: Timelines, q: int) -> tuple[list, list]:
    starts, finishes = timelines.intervals(q)
    return starts.tolist(), finishes.tolist()


def naive_ready(placer: Placer, i: int) -> np.ndarray:
    """Per processor, the max over placed predecessors of finish plus the transfer there."""
    problem = placer.problem
    ready = np.zeros(problem.p)
    for j, comm, _ in problem.preds[i]:
        src = placer.proc[j]
        if src < 0:
            continue
        for q in range(problem.p):
            if q == src:
                transfer = 0.0
            elif isinstance(comm, float):
                transfer = comm
            else:
                transfer = float(comm[src, q])
            ready[q] = max(ready[q], placer.finish[j] + transfer)
    return ready


def random_graphs() -> list[tuple[str, nx.DiGraph, list]]:
    cases = []
    for seed in range(12):
        p = (1, 2, 4, 16)[seed % 4]
        alpha = (0.5, 1.0, 3.0)[seed % 3]
        graph = schedulers.random_dag(300, list(range(p)), alpha=alpha, ccr=(0.2, 2.0)[seed % 2],
                                      seed=seed)  # fmt: skip
        cases.append((f"random_dag-{seed}", graph, list(range(p))))
    for seed in range(4):
        graph = schedulers.random_cpu_gpu_dag(200, cpus=3, gpus=1 + seed % 2, seed=seed)
        cases.append((f"cpu_gpu-{seed}", graph, graph.graph["processors"]))
    return cases


GRAPHS = random_graphs()


@pytest.mark.parametrize("tail", [1, 2, None])
@pytest.mark.parametrize("case", GRAPHS, ids=[name for name, _, _ in GRAPHS])
def test_every_search_of_a_heft_run_equals_the_scan(case: tuple, tail: int | None) -> None:
    _, graph, processors = case
    problem = build_problem(graph, processors)
    placer = Placer(problem, tail=tail)
    timelines = placer.timelines
    for i in ready_order(problem, [-value for value in quantize(upward_rank(problem))]):
        ready = placer.data_ready(i)
        np.testing.assert_array_equal(ready, naive_ready(placer, i))
        duration = problem.cost[i]
        start, index = timelines.search(ready, duration)
        for q in np.flatnonzero(np.isfinite(duration)).tolist():
            expected = scan(*intervals(timelines, q), float(ready[q]), float(duration[q]))
            assert (float(start[q]), int(index[q])) == expected
            assert timelines.earliest(q, float(ready[q]), float(duration[q])) == expected
        placer.place(i, earliest_finish(placer, i))
    schedule = placer.schedule("heft")
    schedule.validate(graph)
    assert list(schedule.slots.items()) == list(schedulers.heft(graph, processors).slots.items())


def test_the_random_graphs_fill_gaps() -> None:
    # a node placed before an earlier-placed node of its processor went into a gap
    inserted = 0
    for _, graph, processors in GRAPHS:
        latest: dict = {}
        for proc, start, finish in schedulers.heft(graph, processors).slots.values():
            inserted += start < latest.get(proc, 0.0)
            latest[proc] = max(latest.get(proc, 0.0), finish)
    assert inserted > 0


SCHEDULERS = {
    "heft": schedulers.heft,
    "heft-appending": lambda graph, procs: schedulers.heft(graph, procs, insertion=False),
    "peft": schedulers.peft,
    "cpop": schedulers.cpop,
    "greedy_start": schedulers.greedy_start,
    "fastest_single": schedulers.fastest_single,
}


@pytest.mark.parametrize("width", [1, 3])
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_schedules_do_not_depend_on_the_tail_width(
    name: str, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = SCHEDULERS[name]
    wide = [list(scheduler(graph, procs).slots.items()) for _, graph, procs in GRAPHS]
    monkeypatch.setattr(_core, "tail_width", lambda p, n: width)
    narrow = [list(scheduler(graph, procs).slots.items()) for _, graph, procs in GRAPHS]
    assert narrow == wide


def test_lookahead_does_not_depend_on_the_tail_width(monkeypatch: pytest.MonkeyPatch) -> None:
    # lookahead places and removes nodes: the tails must follow removals too
    small = [(graph, procs) for _, graph, procs in GRAPHS[:8]]
    small = [(nx.DiGraph(graph.subgraph(range(60))), procs) for graph, procs in small]
    wide = [list(schedulers.heft_lookahead(graph, procs).slots.items()) for graph, procs in small]
    monkeypatch.setattr(_core, "tail_width", lambda p, n: 1)
    narrow = [list(schedulers.heft_lookahead(graph, procs).slots.items()) for graph, procs in small]
    assert narrow == wide


_QUARTERS = st.integers(0, 8).map(lambda k: k / 4)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(_QUARTERS, _QUARTERS), max_size=14),
    st.randoms(use_true_random=False),
    st.integers(1, 5),
    st.lists(st.tuples(st.integers(0, 40).map(lambda k: k / 4), _QUARTERS), min_size=1,
             max_size=6),
)  # fmt: skip
def test_search_equals_the_scan_on_any_timeline(
    gaps_and_lengths: list, rng: random.Random, width: int, queries: list
) -> None:
    # one processor's intervals: gap then length (zeros included), inserted in a random order,
    # with some removed again; a second processor stays empty
    times, now = [], 0.0
    for gap, length in gaps_and_lengths:
        times.append((now + gap, now + gap + length))
        now += gap + length
    timelines = Timelines(2, tail=width)
    kept: list = []
    for interval in rng.sample(times, len(times)):
        index = bisect_right(kept, interval)
        kept.insert(index, interval)
        timelines.insert(0, index, *interval)
    for interval in rng.sample(kept, len(kept) // 3):
        index = kept.index(interval)
        del kept[index]
        timelines.remove(0, index)
    starts, finishes = [s for s, _ in kept], [f for _, f in kept]
    assert intervals(timelines, 0) == (starts, finishes)
    for ready, duration in queries:
        start, index = timelines.search(np.array([ready, ready]), np.array([duration, duration]))
        assert (float(start[0]), int(index[0])) == scan(starts, finishes, ready, duration)
        assert (float(start[1]), int(index[1])) == (ready, 0)
        assert timelines.earliest(0, ready, duration) == scan(starts, finishes, ready, duration)


def loop_upward(problem: _core.Problem) -> np.ndarray:
    w = mean_cost(problem).tolist()
    rank = [0.0] * problem.n
    for i in reversed(range(problem.n)):
        rank[i] = w[i] + max((mean + rank[j] for j, _, mean in problem.succs[i]), default=0.0)
    return np.array(rank)


def loop_downward(problem: _core.Problem) -> np.ndarray:
    w = mean_cost(problem).tolist()
    rank = [0.0] * problem.n
    for i in range(problem.n):
        rank[i] = max((rank[j] + w[j] + mean for j, _, mean in problem.preds[i]), default=0.0)
    return np.array(rank)


def loop_oct(problem: _core.Problem) -> np.ndarray:
    table = np.zeros((problem.n, problem.p))
    for i in reversed(range(problem.n)):
        for j, _, mean in problem.succs[i]:
            via = table[j] + problem.cost[j]
            np.maximum(table[i], np.minimum(via, via.min() + mean), out=table[i])
    return table


def check_ranks(graph: nx.DiGraph, processors: list) -> None:
    problem = build_problem(graph, processors)
    np.testing.assert_array_equal(upward_rank(problem), loop_upward(problem))
    np.testing.assert_array_equal(downward_rank(problem), loop_downward(problem))
    np.testing.assert_array_equal(optimistic_cost_table(problem), loop_oct(problem))


@pytest.mark.parametrize("case", GRAPHS, ids=[name for name, _, _ in GRAPHS])
def test_layered_ranks_equal_a_loop_over_a_topological_order(case: tuple) -> None:
    _, graph, processors = case
    check_ranks(graph, processors)


def test_layered_ranks_on_a_chain_and_on_independent_nodes() -> None:
    chain = schedulers.random_dag(50, ["a", "b"], alpha=0.01, seed=3)  # one node per level
    assert len(build_problem(chain, ["a", "b"]).height_layers) == 50
    check_ranks(chain, ["a", "b"])
    flat = schedulers.random_dag(50, ["a", "b"], alpha=100.0, seed=3)
    flat.remove_edges_from(list(flat.edges))
    check_ranks(flat, ["a", "b"])
    check_ranks(nx.DiGraph(), ["a"])


@settings(max_examples=60, deadline=None)
@given(dags())
def test_layered_ranks_on_any_dag(case: tuple) -> None:
    check_ranks(*case)


def test_layers_put_each_node_after_its_successors() -> None:
    graph = schedulers.random_dag(400, [0, 1], alpha=2.0, seed=5)
    problem = build_problem(graph, [0, 1])
    height = np.empty(problem.n, dtype=int)
    for level, nodes in enumerate(problem.height_layers):
        height[nodes] = level
    assert sorted(np.concatenate(problem.height_layers).tolist()) == list(range(problem.n))
    assert (height[problem.src] > height[problem.dst]).all()
    depth = np.empty(problem.n, dtype=int)
    for level, nodes in enumerate(problem.depth_layers):
        depth[nodes] = level
    assert (depth[problem.src] < depth[problem.dst]).all()


def shuffled(graph: nx.DiGraph, seed: int) -> nx.DiGraph:
    """The same graph with nodes inserted in a random (not topological) order."""
    nodes = list(graph.nodes(data=True))
    random.Random(seed).shuffle(nodes)
    out = nx.DiGraph(**graph.graph)
    out.add_nodes_from(nodes)
    out.add_edges_from(graph.edges(data=True))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_topological_order_is_the_lexicographic_one(seed: int) -> None:
    graph = shuffled(schedulers.random_dag(200, [0], seed=seed), seed)
    position = {node: k for k, node in enumerate(graph)}
    expected = list(nx.lexicographical_topological_sort(graph, key=position.__getitem__))
    assert _core.topological_order(graph) == expected
    assert build_problem(graph, [0]).nodes == expected


def test_preds_and_succs_list_the_edges_in_the_graph_order() -> None:
    graph = shuffled(schedulers.random_cpu_gpu_dag(60, cpus=2, gpus=1, seed=2), 2)
    procs = graph.graph["processors"]
    problem = build_problem(graph, procs)
    index = {node: i for i, node in enumerate(problem.nodes)}
    succs = [[] for _ in problem.nodes]
    preds = [[] for _ in problem.nodes]
    for u, v in graph.edges:
        succs[index[u]].append(index[v])
        preds[index[v]].append(index[u])
    assert [[j for j, _, _ in row] for row in problem.succs] == succs
    assert [[j for j, _, _ in row] for row in problem.preds] == preds
    for u, v, comm in graph.edges(data="comm"):
        (_, matrix, mean), = [e for e in problem.preds[index[v]] if e[0] == index[u]]  # fmt: skip
        for a, src in enumerate(procs):
            for b, dst in enumerate(procs):
                assert matrix[a, b] == (0.0 if a == b else comm[src, dst])
        assert mean == pytest.approx(np.mean([comm[pair] for pair in comm]))


def test_cost_rows_in_any_key_order_give_the_same_matrix() -> None:
    graph = schedulers.random_dag(40, ["a", "b", "c"], seed=1)
    fast = build_problem(graph, ["a", "b", "c"]).cost
    for node, data in graph.nodes(data=True):
        costs = data["costs"]
        if node % 2:  # keys reversed and an unknown processor: the checking path
            data["costs"] = {"z": 1.0, **{proc: costs[proc] for proc in ("c", "b", "a")}}
        if node % 3 == 0:  # an int: the checking path
            data["costs"]["a"] = 2
            fast[node, 0] = 2.0
    np.testing.assert_array_equal(build_problem(graph, ["a", "b", "c"]).cost, fast)


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf])
def test_the_first_bad_node_is_reported_whichever_path_checks_it(bad: float) -> None:
    def graph(first: dict | None, second: dict | None) -> nx.DiGraph:
        out = nx.DiGraph()
        out.add_node("ok", costs={"p": 1.0, "q": 2.0})
        out.add_node("one", costs=first)
        out.add_node("two", costs=second)
        out.add_edges_from([("ok", "one"), ("one", "two")])
        return out

    with pytest.raises(InvalidCostError) as bad_first:
        build_problem(graph({"p": bad, "q": 1.0}, None), ["p", "q"])
    assert bad_first.value.node == "one"
    assert bad_first.value.processor == "p"
    with pytest.raises(MissingCostError) as missing_first:
        build_problem(graph(None, {"p": 1.0, "q": bad}), ["p", "q"])
    assert missing_first.value.node == "one"


def test_a_bad_transfer_time_among_good_ones_is_reported() -> None:
    graph = schedulers.random_dag(30, ["p", "q"], seed=4)
    u, v = list(graph.edges)[7]
    graph.edges[u, v]["comm"] = math.nan
    with pytest.raises(InvalidCostError) as error:
        build_problem(graph, ["p", "q"])
    assert error.value.edge == (u, v)
