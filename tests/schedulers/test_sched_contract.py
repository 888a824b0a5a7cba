"""The contract every scheduler keeps, as one suite inherited by each scheduler's test class.

A scheduler is ``f(graph, processors) -> Schedule``: the schedule validates (every node once, no
overlap, transfers before starts); it is deterministic and does not depend on node names; bad input
raises the typed errors; simulating its placement and order with zero overhead gives back its slots.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schedulers
from schedulers import (
    CycleError,
    InvalidCostError,
    MissingCostError,
    NoProcessorsError,
    Schedule,
    UnschedulableNodeError,
    critical_path_lower_bound,
    evaluate,
    simulate,
)

from sched_cases import PROCS, costed  # isort: skip

# Every subclass runs the same hypothesis tests: the database shares their examples, which is fine.
HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)


def renamed(graph: nx.DiGraph) -> tuple[nx.DiGraph, dict]:
    """A copy of ``graph`` with every node renamed, in the same insertion order."""
    mapping = {node: ("renamed", position) for position, node in enumerate(graph)}
    return nx.relabel_nodes(graph, mapping, copy=True), mapping


class SchedulerContract:
    """Inherit and set ``scheduler`` to a function ``(graph, processors) -> Schedule``."""

    scheduler: Callable[..., Schedule]

    def run(self, graph: nx.DiGraph, processors: list) -> Schedule:
        schedule = type(self).scheduler(graph, processors)
        assert isinstance(schedule, Schedule)
        schedule.validate(graph)
        assert set(schedule.slots) == set(graph)
        assert schedule.processors == tuple(processors)
        return schedule

    def test_shapes(self, shape: nx.DiGraph) -> None:
        schedule = self.run(shape, PROCS)
        assert schedule.makespan >= critical_path_lower_bound(shape, PROCS)

    def test_topcuoglu_example(self, topcuoglu: tuple[nx.DiGraph, list[str]]) -> None:
        graph, processors = topcuoglu
        metrics = evaluate(self.run(graph, processors), graph)
        assert metrics.slr >= 1

    @HYPOTHESIS
    @given(data=st.data())
    def test_random_dags(self, dag_strategy: st.SearchStrategy, data: st.DataObject) -> None:
        graph, processors = data.draw(dag_strategy)
        schedule = self.run(graph, processors)
        assert schedule.makespan >= critical_path_lower_bound(graph, processors) - 1e-9
        for node, slot in schedule.slots.items():
            assert slot.processor in graph.nodes[node]["costs"]
        if len(processors) == 1:  # the same costs, summed in another order: not a failure
            assert not evaluate(schedule, graph).failed

    @HYPOTHESIS
    @given(data=st.data())
    def test_simulation_reproduces_slots(
        self, dag_strategy: st.SearchStrategy, data: st.DataObject
    ) -> None:
        graph, processors = data.draw(dag_strategy)
        schedule = self.run(graph, processors)
        replay = simulate(graph, schedule.placement, schedule.order, processors=processors)
        assert replay.slots == schedule.slots  # exactly, not approximately

    @HYPOTHESIS
    @given(data=st.data())
    def test_deterministic_and_blind_to_names(
        self, dag_strategy: st.SearchStrategy, data: st.DataObject
    ) -> None:
        graph, processors = data.draw(dag_strategy)
        first = self.run(graph, processors)
        assert self.run(graph.copy(), list(processors)).slots == first.slots
        other, mapping = renamed(graph)
        second = self.run(other, processors)
        assert second.makespan == first.makespan
        assert second.slots == {mapping[node]: slot for node, slot in first.slots.items()}

    def test_empty_graph(self) -> None:
        schedule = self.run(nx.DiGraph(), PROCS)
        assert schedule.slots == {} and schedule.makespan == 0
        assert schedule.order == {"cpu": (), "gpu": ()}

    def test_one_processor_runs_everything_back_to_back(self, shape: nx.DiGraph) -> None:
        schedule = self.run(shape, ["cpu"])
        assert schedule.makespan == 2.0 * shape.number_of_nodes()

    def test_respects_restricted_processors(self) -> None:
        graph = costed([("a", "b"), ("b", "c")])
        graph.nodes["b"]["costs"] = {"cpu": 5.0}
        graph.nodes["c"]["costs"] = {"gpu": 1.0, "tpu": 0.1}  # tpu is not given: ignored
        schedule = self.run(graph, PROCS)
        assert schedule.placement["b"] == "cpu" and schedule.placement["c"] == "gpu"

    def test_pickle_round_trip(self, topcuoglu: tuple[nx.DiGraph, list[str]]) -> None:
        schedule = self.run(*topcuoglu)
        assert pickle.loads(pickle.dumps(schedule)) == schedule

    def test_cycle(self) -> None:
        graph = costed([("a", "b"), ("b", "c"), ("c", "a")])
        with pytest.raises(CycleError) as error:
            type(self).scheduler(graph, PROCS)
        assert {u for u, _ in error.value.cycle} == {"a", "b", "c"}

    def test_self_loop(self) -> None:
        with pytest.raises(CycleError):
            type(self).scheduler(costed([("a", "a")]), PROCS)

    def test_node_without_costs(self) -> None:
        graph = costed([("a", "b")])
        del graph.nodes["b"]["costs"]
        with pytest.raises(MissingCostError, match="'b'") as error:
            type(self).scheduler(graph, PROCS)
        assert error.value.node == "b"

    @pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "fast", None, True])
    def test_bad_cost(self, bad: object) -> None:
        graph = costed([("a", "b")])
        graph.nodes["b"]["costs"]["gpu"] = bad
        with pytest.raises(InvalidCostError) as error:
            type(self).scheduler(graph, PROCS)
        assert (error.value.node, error.value.processor) == ("b", "gpu")
        assert repr(bad) in str(error.value)

    @pytest.mark.parametrize("bad", [-0.5, math.nan, {("cpu", "gpu"): -1.0, ("gpu", "cpu"): 1.0}])
    def test_bad_comm(self, bad: object) -> None:
        graph = costed([("a", "b")])
        graph.edges["a", "b"]["comm"] = bad
        with pytest.raises(InvalidCostError) as error:
            type(self).scheduler(graph, PROCS)
        assert error.value.edge == ("a", "b")

    def test_comm_dict_missing_a_pair(self) -> None:
        graph = costed([("a", "b")])
        graph.edges["a", "b"]["comm"] = {("cpu", "gpu"): 1.0}
        with pytest.raises(MissingCostError) as error:
            type(self).scheduler(graph, PROCS)
        assert error.value.pair == ("gpu", "cpu")

    def test_unschedulable_node(self) -> None:
        graph = costed([("a", "b")])
        graph.nodes["b"]["costs"] = {"tpu": 1.0}
        with pytest.raises(UnschedulableNodeError) as error:
            type(self).scheduler(graph, PROCS)
        assert error.value.node == "b" and error.value.processors == ("cpu", "gpu")

    def test_no_processors(self) -> None:
        with pytest.raises(NoProcessorsError):
            type(self).scheduler(costed([("a", "b")]), [])

    def test_repeated_processor(self) -> None:
        with pytest.raises(ValueError, match="distinct"):
            type(self).scheduler(costed([("a", "b")]), ["cpu", "cpu"])

    def test_not_a_digraph(self) -> None:
        with pytest.raises(TypeError, match="DiGraph"):
            type(self).scheduler(nx.Graph([("a", "b")]), PROCS)

    def test_errors_are_value_errors(self) -> None:
        with pytest.raises(ValueError):
            type(self).scheduler(costed([("a", "b"), ("b", "a")]), PROCS)


class TestHeft(SchedulerContract):
    scheduler = staticmethod(schedulers.heft)


class TestHeftWithoutInsertion(SchedulerContract):
    @staticmethod
    def scheduler(graph: nx.DiGraph, processors: list) -> Schedule:
        return schedulers.heft(graph, processors, insertion=False)


class TestCpop(SchedulerContract):
    scheduler = staticmethod(schedulers.cpop)


class TestPeft(SchedulerContract):
    scheduler = staticmethod(schedulers.peft)


class TestHeftLookahead(SchedulerContract):
    scheduler = staticmethod(schedulers.heft_lookahead)


class TestBest(SchedulerContract):
    scheduler = staticmethod(schedulers.best)

    @HYPOTHESIS
    @given(data=st.data())
    def test_never_fails(self, dag_strategy: st.SearchStrategy, data: st.DataObject) -> None:
        graph, processors = data.draw(dag_strategy)
        schedule = self.run(graph, processors)
        assert schedule.makespan <= schedulers.heft(graph, processors).makespan
        assert schedule.makespan <= schedulers.fastest_single(graph, processors).makespan


class TestRoundRobin(SchedulerContract):
    scheduler = staticmethod(schedulers.round_robin)


class TestFastestSingle(SchedulerContract):
    scheduler = staticmethod(schedulers.fastest_single)


class TestGreedyStart(SchedulerContract):
    scheduler = staticmethod(schedulers.greedy_start)


class TestRandom(SchedulerContract):
    scheduler = staticmethod(schedulers.random)


def test_every_registered_scheduler_has_a_contract_class() -> None:
    tested = {
        cls.scheduler
        for cls in SchedulerContract.__subclasses__()
        if isinstance(cls.__dict__.get("scheduler"), staticmethod)
    }
    assert set(schedulers.SCHEDULERS.values()) <= tested | {schedulers.random_placement}
