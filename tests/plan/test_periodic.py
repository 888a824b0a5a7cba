"""Periodic plans: a window of periods scheduled, tiled over the graph, checked, or refused."""

from __future__ import annotations

import pickle

import pytest

import pnngraph
import schedulers
from pnngraph import DataParallel, Hybrid, ModelAveraging, Pipeline
from pnngraph.plan import periodic
from pnngraph.plan.cluster import simulated_cluster
from pnngraph.plan.planner import make_plan, scheduling_graph
from tests.graph.conftest import make_data, make_mlp

KW = {"batch_size": 20, "optimizer": "adam", "lr": 0.01}
STRATEGIES = [DataParallel(3), Pipeline(3, 2), Hybrid(DataParallel(2), Pipeline(2, 2)),
              ModelAveraging(2, 2), DataParallel(1)]


def abstract_of(strategy, steps=16, **kw):
    if strategy == DataParallel(1):  # one shard: steps fused two per task, twice the steps
        steps, kw = 2 * steps, {"fuse_steps": 2, **kw}
    return pnngraph.build(make_mlp(), make_data("mlp"), strategy=strategy, steps=steps,
                          **{**KW, **kw}).to_networkx()


@pytest.fixture(autouse=True)
def no_cached_windows(monkeypatch):
    monkeypatch.setattr(periodic, "_WINDOWS", type(periodic._WINDOWS)())


@pytest.mark.parametrize("scheduler", ["heft", "peft", "cpop", "dask"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tiled_plans_are_valid_and_replayed_exactly(scheduler, strategy):
    cluster = simulated_cluster(cpus=3, gpus=1)
    abstract = abstract_of(strategy)
    plan = make_plan(abstract, cluster, scheduler=scheduler)
    assert plan.tiling == "periodic"
    costed = scheduling_graph(abstract, cluster)
    plan.schedule.validate(costed)
    plan.predicted.validate(costed)
    assert set(plan.placement) == set(costed)
    # the simulator at zero overhead reproduces the tiled plan, as it does a whole one
    replay = schedulers.simulate(costed, plan.placement, plan.schedule.order,
                                 processors=plan.schedule.processors)
    assert replay.slots == plan.schedule.slots
    assert plan.makespan >= plan.schedule.makespan


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("cpus", [2, 4])
def test_tiled_makespan_within_one_percent_of_the_whole_plan(strategy, cpus):
    cluster = simulated_cluster(cpus=cpus, gpus=0)
    abstract = abstract_of(strategy, steps=24)
    tiled = make_plan(abstract, cluster)
    whole = make_plan(abstract, cluster, periodic=False)
    assert (tiled.tiling, whole.tiling) == ("periodic", "whole")
    assert tiled.schedule.makespan <= 1.01 * whole.schedule.makespan


def test_copies_of_the_state_tile_too():
    cluster = simulated_cluster(cpus=4, gpus=0)
    graph = pnngraph.build(make_mlp(), make_data("mlp"), strategy=DataParallel(4), steps=12,
                           cluster=cluster, **KW)
    assert graph.abstract.graph["copies"] == 4 and graph.plan.tiling == "periodic"
    graph.plan.schedule.validate(scheduling_graph(graph.abstract, cluster))


def test_short_graphs_are_planned_whole():
    plan = make_plan(abstract_of(DataParallel(2), steps=6), simulated_cluster(2, 0))
    assert plan.tiling == "whole"


def test_a_refused_tiling_falls_back_to_the_whole_graph(monkeypatch):
    cluster = simulated_cluster(cpus=3, gpus=0)
    abstract = abstract_of(Pipeline(3, 2))
    monkeypatch.setattr(periodic, "TOLERANCE", -0.5)  # no tiled plan is close enough now
    plan = make_plan(abstract, cluster)
    assert plan.tiling.startswith("whole (tiling refused: tiled makespan")
    whole = make_plan(abstract, cluster, periodic=False)
    assert plan.schedule.slots == whole.schedule.slots
    plan.schedule.validate(scheduling_graph(abstract, cluster))


def test_a_node_without_counterpart_falls_back():
    cluster = simulated_cluster(cpus=2, gpus=0)
    abstract = abstract_of(DataParallel(2))
    name = next(k for k in abstract if k[0].startswith("update"))[0]
    abstract.add_node((name, 12, 9), kind="update", flops=1.0, bytes=1.0, step=12)
    plan = make_plan(abstract, cluster)
    assert plan.tiling.startswith("whole (tiling refused: no counterpart of")
    plan.schedule.validate(scheduling_graph(abstract, cluster))


def counting(monkeypatch, name="heft"):
    calls = []
    real = schedulers.SCHEDULERS[name]

    def scheduler(graph, processors, **options):
        calls.append(len(graph))
        return real(graph, processors, **options)

    monkeypatch.setitem(schedulers.SCHEDULERS, name, scheduler)
    return calls


def test_fit_plans_once_while_the_cluster_and_costs_stay(monkeypatch):
    calls = counting(monkeypatch)
    tilings = []
    # 46 samples in batches of 23: every step costs the same (a short last batch of an epoch
    # would cost less, and a window holding it is another problem)
    options = {"strategy": DataParallel(2), "steps": 40, "chunk_steps": 10, "progress": False,
               "scheduler": "heft", **KW, "batch_size": 23}
    pnngraph.fit(make_mlp(), make_data("mlp"), cluster=simulated_cluster(2, 0),
                 on_graph=lambda g: tilings.append(g.plan.tiling), **options)
    assert tilings == ["periodic"] * 4 and len(calls) == 1
    # another cluster model prices the tasks differently: its chunks are planned anew, once
    pnngraph.fit(make_mlp(), make_data("mlp"), cluster=simulated_cluster(2, 0, cpu_gflops=50),
                 **options)
    assert len(calls) == 2


# verify="periodic": a short graph simulated and its steady state extended to every period.
# 46 samples in batches of 23: every step costs the same, so the check applies (with a short
# last batch it falls back to simulating the whole graph, below)
EVEN = {**KW, "batch_size": 23}
EXTENDED = [(DataParallel(4), 24, 4), (Pipeline(2, 4), 24, 4),
            (Hybrid(DataParallel(2), Pipeline(2, 2)), 24, 4), (ModelAveraging(4, 5), 60, 4),
            (Pipeline(3, 2), 30, 3)]


@pytest.mark.parametrize("scheduler", ["heft", "peft", "dask"])
@pytest.mark.parametrize(("strategy", "steps", "cpus"), EXTENDED)
def test_the_extended_plan_equals_the_whole_simulation(strategy, steps, cpus, scheduler):
    cluster = simulated_cluster(cpus=cpus, gpus=1)
    abstract = pnngraph.build(make_mlp(), make_data("mlp"), strategy=strategy, steps=steps,
                              **EVEN).to_networkx()
    plan = make_plan(abstract, cluster, scheduler=scheduler)
    assert plan.tiling == "periodic" and isinstance(plan.schedule, periodic.TiledSchedule)
    assert not plan.schedule.slots.ready  # nothing simulated beyond the short graph yet
    extended, predicted = plan.schedule.makespan, plan.predicted.makespan
    full = make_plan(abstract, cluster, scheduler=scheduler, verify="full")
    assert full.tiling == "periodic" and isinstance(full.schedule.slots, dict)
    assert plan.placement == full.placement and plan.backends == full.backends
    assert plan.priorities == full.priorities
    costed = scheduling_graph(abstract, cluster)
    plan.schedule.validate(costed)  # reads the slots: the whole graph simulated now
    plan.predicted.validate(costed)
    assert plan.schedule.slots.ready and plan.schedule.slots == full.schedule.slots
    assert plan.predicted.slots == full.predicted.slots
    replay = schedulers.simulate(costed, plan.placement, plan.schedule.order,
                                 processors=plan.schedule.processors)
    assert replay.slots == plan.schedule.slots
    assert replay.makespan == plan.schedule.makespan
    assert extended == pytest.approx(replay.makespan, rel=1e-9, abs=0)
    assert predicted == pytest.approx(full.predicted.makespan, rel=1e-9, abs=0)
    assert plan.wall_seconds == pytest.approx(full.wall_seconds, rel=1e-9, abs=0)


def test_an_extended_plan_pickles_with_its_slots():
    cluster = simulated_cluster(cpus=3, gpus=0)
    abstract = pnngraph.build(make_mlp(), make_data("mlp"), strategy=DataParallel(3),
                              steps=20, **EVEN).to_networkx()
    plan = make_plan(abstract, cluster)
    again = pickle.loads(pickle.dumps(plan))
    assert isinstance(again.schedule.slots, dict) and again.schedule.slots == plan.schedule.slots
    assert again.predicted.makespan == plan.predicted.makespan
    again.schedule.validate(scheduling_graph(abstract, cluster))


def test_steps_that_cost_less_fall_back_to_the_whole_simulation():
    # batches of 20 from 46 samples: every third step has 6 samples, cheaper than its twin
    cluster = simulated_cluster(cpus=3, gpus=0)
    abstract = abstract_of(DataParallel(3), steps=30)
    plan = make_plan(abstract, cluster)
    assert plan.tiling == "periodic" and isinstance(plan.schedule.slots, dict)
    costed = scheduling_graph(abstract, cluster)
    plan.schedule.validate(costed)
    replay = schedulers.simulate(costed, plan.placement, plan.schedule.order,
                                 processors=plan.schedule.processors)
    assert replay.slots == plan.schedule.slots


def test_a_refused_extended_plan_falls_back_to_the_whole_graph(monkeypatch):
    cluster = simulated_cluster(cpus=3, gpus=0)
    abstract = pnngraph.build(make_mlp(), make_data("mlp"), strategy=Pipeline(3, 2), steps=20,
                              **EVEN).to_networkx()
    monkeypatch.setattr(periodic, "TOLERANCE", -0.5)
    plan = make_plan(abstract, cluster)
    assert plan.tiling.startswith("whole (tiling refused: tiled makespan")
    plan.schedule.validate(scheduling_graph(abstract, cluster))
