"""The spec and the placement are values: validated once, compared field by field."""

from __future__ import annotations

import numpy as np
import pytest

import pnngraph
from pnngraph import DataParallel, ModelAveraging, Pipeline, fit
from pnngraph.compile.spec import TrainingSpec, prepare
from pnngraph.compile.strategies import Auto, strategy_from_repr
from pnngraph.exceptions import ConfigError
from pnngraph.nn import SGD, SoftmaxCrossEntropy
from pnngraph.plan.cluster import simulated_cluster
from tests.graph.conftest import make_data, make_mlp


def spec(**changes):
    base = {"strategy": DataParallel(2), "steps": 4, "batch_size": 8, "n_samples": 46,
            "optimizer": SGD(0.1), "loss": SoftmaxCrossEntropy()}
    return TrainingSpec(**(base | changes))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("seed", -1, "seed: expected an integer >= 0"),
    ("seed", 1.5, "seed: expected an integer >= 0"),
    ("steps", True, "steps: expected a positive integer"),
    ("fan_in", 1, "fan_in: expected an integer >= 2"),
    ("shuffle", 1, "shuffle: expected True or False"),
    ("fuse_steps", "fast", "fuse_steps: expected 'auto' or a positive integer"),
    ("fuse_steps", 0, "fuse_steps: expected 'auto' or a positive integer"),
    ("optimizer", "sgd", "optimizer: expected an Optimizer"),
])
def test_a_spec_checks_every_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        spec(**{field: value})


def test_numpy_integers_are_integers_everywhere():
    s = spec(steps=np.int64(4), batch_size=np.int32(8), seed=np.int64(3))
    assert (s.steps, s.batch_size, s.seed) == (4, 8, 3)
    X, y = make_data("mlp")
    result = pnngraph.train_serial(make_mlp(), X, y, steps=np.int64(2), batch_size=np.int64(8))
    assert result.losses.shape == (2,)
    with pytest.raises(ConfigError, match="steps: expected a positive integer, got True"):
        pnngraph.train_serial(make_mlp(), X, y, steps=True)


def test_differences_name_the_fields_that_change_the_bits():
    recorded = spec().to_json()
    assert spec(steps=40, fuse_steps=3).differences(recorded) == []  # same bits, longer run
    assert spec(seed=1, batch_size=4).differences(recorded) == ["batch_size", "seed"]
    assert spec(optimizer=SGD(0.2)).differences(recorded) == ["optimizer"]
    assert spec(strategy=Pipeline(2)).differences(recorded) == ["strategy"]


def test_a_resume_names_every_differing_field(tmp_path):
    X, y = make_data("mlp")
    kw = {"batch_size": 20, "optimizer": "sgd", "lr": 0.05, "progress": False}
    fit(make_mlp(), (X, y), steps=3, checkpoint_dir=tmp_path, **kw)
    with pytest.raises(ConfigError) as err:
        fit(make_mlp(), (X, y), steps=6, checkpoint_dir=tmp_path, resume=True,
            **(kw | {"batch_size": 10}), seed=4)
    assert err.value.name == "batch_size, seed"
    assert "as in checkpoint" in str(err.value) and err.value.got == [10, 4]


def test_prepare_turns_names_and_epochs_into_a_spec():
    X, y = make_data("mlp")
    s, X_arr, _ = prepare(make_mlp(), X, y, strategy="averaging", epochs=2, batch_size=20)
    assert s.strategy == ModelAveraging(2, 1) and s.steps == 2 * 3 and s.n_samples == len(X_arr)
    assert [len(s.batch(i)) for i in range(3)] == [20, 20, 6]


def test_dask_placement_on_a_cluster_model_predicts_but_pins_nothing():
    X, y = make_data("mlp")
    cluster = simulated_cluster(cpus=1, gpus=1)
    graph = pnngraph.build(make_mlp(), (X, y), strategy=DataParallel(2), steps=2, batch_size=20,
                           cluster=cluster, scheduler="dask")
    assert graph.plan is not None and graph.plan.makespan > 0
    assert graph.placement is None
    # unpinned tasks may land on any worker, so none may be told to compute on the GPU
    assert dict(graph.placement_value.backends) == {}
    heft = pnngraph.build(make_mlp(), (X, y), strategy=DataParallel(2), steps=2, batch_size=20,
                          cluster=cluster)
    assert heft.placement is not None
    # every computing node has its array library; the data and initial states in the graph
    # are pinned too (next to their first reader) and stay numpy values
    sources = {k for k, n in heft.abstract.nodes(data=True) if n["kind"] in ("data", "init")}
    assert sources and sources <= set(heft.placement)
    assert set(heft.placement_value.backends) == set(heft.placement) - sources


@pytest.mark.parametrize("strategy", [
    DataParallel(3), DataParallel([2.0, 1.0, 0.5]), DataParallel("auto"), Pipeline(3, 4),
    Pipeline([1, 2], 2), pnngraph.Hybrid(DataParallel(2), Pipeline(2, 4)),
    ModelAveraging([1.0, 3.0], 4), Auto(),
])
def test_a_strategy_is_read_back_from_its_repr(strategy):
    assert strategy_from_repr(repr(strategy)) == strategy


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "DataParallel(weights=open)",
                                  "Pipeline(stages=2)", "Dense(3)", "DataParallel(", ""])
def test_anything_but_a_strategy_repr_is_refused_unevaluated(text):
    with pytest.raises(ConfigError, match="expected the repr of a strategy"):
        strategy_from_repr(text)


def test_a_split_the_batches_cannot_take_is_refused_when_the_run_is_prepared():
    """Before any graph is built: the smallest batch of a run of 33 samples in batches of 16
    has one sample, too few for two shards; a run shorter than an epoch never meets it."""
    X, y = make_data("mlp", n=33)
    with pytest.raises(ConfigError, match="shards: expected at most the smallest batch's 1 "):
        prepare(make_mlp(), X, y, strategy=DataParallel(2), epochs=1, batch_size=16)
    spec, _, _ = prepare(make_mlp(), X, y, strategy=DataParallel(2), steps=2, batch_size=16)
    assert spec.smallest_batch == 16
    with pytest.raises(ConfigError, match="stages: expected at most the model's"):
        prepare(make_mlp(), X, y, strategy=Pipeline(9), steps=1)
