"""The abstract graph, its keys, the lowered tasks, the collection protocol and bad input."""

from __future__ import annotations

import pickle

import dask
import networkx as nx
import pytest
from dask.task_spec import Task
from dask.utils import key_split
from distributed import get_task_stream

from pnngraph import DataParallel, Hybrid, ModelAveraging, Pipeline, build
from pnngraph.exceptions import ConfigError, DataError, ShapeError, TrainingError, UnknownNameError
from pnngraph.nn import Dense, Sequential
from tests.graph.conftest import make_cnn, make_data, make_mlp, max_rel_diff

KW = {"steps": 2, "batch_size": 20, "optimizer": "sgd", "lr": 0.1}


def test_key_prefixes_group_by_phase_and_layer():
    X, y = make_data("cnn")
    graph = build(make_cnn(), (X, y), strategy=Hybrid(DataParallel(3), Pipeline(2, 2)),
                  fan_in=2, **KW)
    prefixes = {key_split(k) for k in graph.__dask_graph__()}
    assert prefixes == {
        "data", "init", "forward-conv", "backward-conv", "backward-dense", "aggregate-conv",
        "aggregate-dense", "update-conv", "update-dense",
    }
    dp = build(make_mlp(), make_data("mlp"), strategy=DataParallel(3), **{**KW, "momentum": 0.9})
    assert {key_split(k) for k in dp.__dask_graph__()} == {
        "data", "init", "grad-dense", "params-dense", "update-dense",
    }


def test_abstract_graph_is_a_dag_with_costs():
    X, y = make_data("mlp")
    graph = build(make_mlp(), (X, y), strategy=Pipeline(3, 2), **KW)
    g = graph.to_networkx()
    assert isinstance(g, nx.DiGraph) and nx.is_directed_acyclic_graph(g)
    for _key, node in g.nodes(data=True):
        assert node["kind"] in {"data", "init", "forward", "backward", "aggregate", "update"}
        assert node["bytes"] >= 0 and node["flops"] >= 0
        if node["kind"] in {"forward", "backward"}:
            assert node["flops"] > 0 and node["stage"] is not None and node["micro"] is not None
    assert all(d["bytes"] > 0 for _, _, d in g.edges(data=True))
    # per step: 2 micro-batches x (2 forwards + 3 backwards) + 3 updates (+1 aggregate each)
    kinds = [k for _, k in g.nodes(data="kind")]
    assert kinds.count("forward") == 2 * 2 * 2 and kinds.count("backward") == 2 * 2 * 3
    assert kinds.count("update") == 2 * 3


def test_gradient_tree_follows_the_fan_in():
    X, y = make_data("mlp")
    g = build(make_mlp(), (X, y), strategy=DataParallel(5), fan_in=2, **KW).to_networkx()
    update = next(k for k, kind in g.nodes(data="kind") if kind == "update")
    tree = nx.ancestors(g, update)
    # 5 leaves, fan-in 2: (0,1) (2,3) 4 -> ((0,1),(2,3)) 4 -> update takes 2 inputs
    aggregates = [k for k in tree if g.nodes[k]["kind"] == "aggregate"]
    assert len(aggregates) == 3 and g.in_degree(update) == 3  # 2 parts + previous state
    wide = build(make_mlp(), (X, y), strategy=DataParallel(5), fan_in=8, **KW).to_networkx()
    assert not [k for k, kind in wide.nodes(data="kind") if kind == "aggregate"]


def test_every_task_survives_a_pickle_round_trip():
    X, y = make_data("mlp")
    for strategy in (DataParallel(2), Pipeline(2, 2), ModelAveraging(2, 2), DataParallel(1)):
        graph = build(make_mlp(), (X, y), strategy=strategy, **KW)
        for key, task in graph.__dask_graph__().to_dict().items():
            back = pickle.loads(pickle.dumps(task))
            assert back.key == key
            if isinstance(task, Task):
                assert back.func is task.func


def test_collection_protocol_persist_and_compute():
    X, y = make_data("mlp")
    graph = build(make_mlp(), (X, y), strategy=DataParallel(2), **KW)
    assert dask.base.tokenize(graph) == dask.base.tokenize(graph)
    (persisted,) = dask.persist(graph, scheduler="sync")
    (a,) = dask.compute(persisted, scheduler="sync")
    (b,) = dask.compute(graph, scheduler="sync")
    assert max_rel_diff(a.params, b.params) == 0.0
    assert "TrainingGraph" in repr(graph) and len(graph) == graph.to_networkx().number_of_nodes()


@pytest.mark.cluster
def test_client_holds_no_parameters_between_steps(cluster_client):
    X, y = make_data("mlp")
    graph = build(make_mlp(), (X, y), strategy=DataParallel(2), steps=4, batch_size=20,
                  client=cluster_client, optimizer="adam", lr=0.01)
    future = cluster_client.compute(graph)
    result = future.result()
    assert result.opt_state["step"] == 4

    def wanted(dask_scheduler):
        return {str(ts.key) for c in dask_scheduler.clients.values() for ts in c.wants_what}

    wanted_keys = cluster_client.run_on_scheduler(wanted)
    step_keys = {str(k) for k, kind in graph.to_networkx().nodes(data="kind")
                 if kind in {"grad", "update", "aggregate", "init"}}
    assert wanted_keys  # the finalized result, the data
    assert not wanted_keys & step_keys  # the client asked only for the finalized result
    held = {str(k) for k in cluster_client.futures}
    assert not held & step_keys  # and holds no reference to any step's state


def test_bad_input_shards_larger_than_batch():
    X, y = make_data("mlp")
    with pytest.raises(ConfigError, match="shards: expected at most the smallest batch's 6"):
        build(make_mlp(), (X, y), strategy=DataParallel(7), steps=3, batch_size=20)


def test_bad_input_microbatches_larger_than_shard():
    X, y = make_data("mlp")
    with pytest.raises(ConfigError, match="microbatches: expected at most the smallest shard's"):
        build(make_mlp(), (X, y), strategy=Hybrid(DataParallel(2), Pipeline(2, 4)), steps=3,
              batch_size=20)


def test_bad_input_more_stages_than_layers():
    X, y = make_data("mlp")
    with pytest.raises(ConfigError, match="stages: expected at most the model's 5 layers"):
        build(make_mlp(), (X, y), strategy=Pipeline(6), **KW)
    with pytest.raises(ConfigError, match="add up to the model's 5 layers"):
        build(make_mlp(), (X, y), strategy=Pipeline([2, 2]), **KW)


def test_bad_input_steps_and_strategy():
    X, y = make_data("mlp")
    with pytest.raises(ConfigError, match="steps: expected a positive integer, got 0"):
        build(make_mlp(), (X, y), strategy="data", steps=0)
    with pytest.raises(UnknownNameError, match="strategy: expected one of"):
        build(make_mlp(), (X, y), strategy="zero-bubble", steps=1)
    with pytest.raises(ConfigError, match="strategy: expected DataParallel"):
        build(make_mlp(), (X, y), strategy=3, steps=1)
    with pytest.raises(ConfigError, match="shards: expected a count or a list"):
        DataParallel([1, -1])
    with pytest.raises(ConfigError, match="fan_in"):
        build(make_mlp(), (X, y), strategy="data", steps=1, fan_in=1)


def test_bad_input_data_that_does_not_fit_the_model():
    X, y = make_data("cnn")
    with pytest.raises(ShapeError, match="expected input \\(5,\\), got \\(1, 6, 6\\)"):
        build(make_mlp(), (X, y), strategy="data", steps=1)
    Xm, ym = make_data("mlp")
    with pytest.raises(DataError, match="X has 46 samples but y has 45"):
        build(make_mlp(), (Xm, ym[:-1]), strategy="data", steps=1)
    with pytest.raises(ConfigError, match="data: expected an \\(X, y\\) pair"):
        build(make_mlp(), Xm, strategy="data", steps=1)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_nan_loss_stops_the_run_naming_step_and_shard():
    X, y = make_data("mlp")
    X = X.copy()
    model = Sequential([Dense(5, 3)], input_shape=(5,))
    graph = build(model, (X * 1e150, y), strategy=DataParallel(2), steps=6, batch_size=20,
                  optimizer="sgd", lr=1e150)
    with pytest.raises(TrainingError, match="step \\d+, shard \\d+: the loss became") as info:
        dask.compute(graph, scheduler="sync")
    assert info.value.step is not None and info.value.shard in (0, 1)


@pytest.mark.cluster
def test_static_placement_is_applied(cluster_client):
    X, y = make_data("mlp")
    graph = build(make_mlp(), (X, y), strategy=Hybrid(DataParallel(2), Pipeline(2, 2)), steps=3,
                  batch_size=20, client=cluster_client, optimizer="adam", lr=0.01)
    plan = graph.placement
    assert plan and len(set(plan.values())) == 2
    with get_task_stream(client=cluster_client) as stream:
        cluster_client.compute(graph).result()
    ran = {record["key"]: record["worker"] for record in stream.data}
    placed = {k: w for k, w in plan.items() if k in ran}
    assert len(placed) == len(plan)
    assert all(ran[k] == w for k, w in placed.items())


@pytest.mark.cluster
def test_client_persist_then_compute(cluster_client):
    X, y = make_data("mlp")
    graph = build(make_mlp(), (X, y), strategy=DataParallel(2), steps=3, batch_size=20,
                  client=cluster_client, optimizer="adam", lr=0.01)
    persisted = cluster_client.persist(graph)
    assert persisted is not graph and len(persisted.__dask_keys__()) == 1
    result = cluster_client.compute(persisted).result()
    (reference,) = dask.compute(build(make_mlp(), (X, y), strategy=DataParallel(2), steps=3,
                                      batch_size=20, optimizer="adam", lr=0.01),
                                scheduler="sync")
    assert max_rel_diff(result.params, reference.params) <= 1e-12
