"""AdamW, learning-rate schedules, gradient clipping and label smoothing under every strategy:
each equals the serial reference trainer with the same options (1e-12, float64), a run in
chunks or resumed from a checkpoint equals one run bitwise, and a checkpoint of another
schedule is refused."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from pnngraph import (
    DataParallel,
    Hybrid,
    ModelAveraging,
    Pipeline,
    build,
    fit,
    train_averaging_serial,
    train_serial,
)
from pnngraph.exceptions import ConfigError
from pnngraph.nn.schedules import Cosine, StepDecay, Warmup
from tests.graph.conftest import bitwise_equal, make_cnn, make_data, make_mlp, max_rel_diff

T, BATCH = 7, 20  # 46 samples: the third batch of each epoch is short
OPTIONS = {
    "adamw-warmup-cosine": {"optimizer": "adamw", "lr": Warmup(Cosine(0.02, total_steps=4), 2),
                            "weight_decay": 0.1, "clip_norm": 0.1, "label_smoothing": 0.1},
    "sgd-step-decay": {"optimizer": "sgd", "lr": StepDecay(0.1, every=2, gamma=0.5),
                       "momentum": 0.9, "clip_norm": 0.2},
}
STRATEGIES = {
    "dp-unequal": DataParallel([1, 2, 4]),
    "pipe3x2": Pipeline(3, 2),
    "hybrid2x2": Hybrid(DataParallel(2), Pipeline(2, 2)),
}
MODELS = {"mlp": make_mlp, "cnn": make_cnn}


def run_graph(strategy, options, kind="mlp", steps=T, scheduler="threads"):
    X, y = make_data(kind)
    graph = build(MODELS[kind](), (X, y), strategy=strategy, steps=steps, batch_size=BATCH,
                  **options)
    (result,) = dask.compute(graph, scheduler=scheduler)
    return result


def serial(options, kind="mlp", steps=T):
    X, y = make_data(kind)
    return train_serial(MODELS[kind](), X, y, steps=steps, batch_size=BATCH, **options)


@pytest.mark.parametrize("opt", sorted(OPTIONS))
def test_the_options_change_the_run(opt):
    """Every option is live in these cases: clipping clips, the schedule moves the rate."""
    plain = {k: v for k, v in OPTIONS[opt].items() if k not in ("clip_norm", "label_smoothing")}
    reference = serial(OPTIONS[opt]).params
    assert max_rel_diff(serial(plain).params, reference) > 1e-3
    constant = {**OPTIONS[opt], "lr": OPTIONS[opt]["lr"](0)}
    assert max_rel_diff(serial(constant).params, reference) > 1e-3


@pytest.mark.parametrize("opt", sorted(OPTIONS))
@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_with_the_options_equals_serial_on_the_threaded_scheduler(name, kind, opt):
    result = run_graph(STRATEGIES[name], OPTIONS[opt], kind)
    reference = serial(OPTIONS[opt], kind)
    assert max_rel_diff(result.params, reference.params) <= 1e-12
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-12)
    assert result.opt_state["step"] == T


def test_pipeline_clips_by_the_norm_of_the_whole_model():
    """Each stage of a pipeline sees only its layers; clipping by the stage's own norm would
    be another algorithm. The graph has one norm node per stage and step, read by every
    stage's update, and nothing of it when clipping is off."""
    X, y = make_data("mlp")
    kw = {"strategy": Pipeline(3, 2), "steps": 2, "batch_size": BATCH}
    clipped = build(make_mlp(), (X, y), **kw, **OPTIONS["sgd-step-decay"]).to_networkx()
    norms = [k for k, kind in clipped.nodes(data="kind") if kind == "norm"]
    assert len(norms) == 3 * 2
    for key in norms:
        readers = [v for v in clipped.successors(key) if clipped.nodes[v]["kind"] == "update"]
        assert len(readers) == 3
    plain = build(make_mlp(), (X, y), **kw, optimizer="sgd", lr=0.1).to_networkx()
    assert "norm" not in dict(plain.nodes(data="kind")).values()


@pytest.mark.parametrize("fused", [1, 3])
def test_one_shard_and_fused_steps_equal_serial_bitwise(fused):
    X, y = make_data("mlp")
    graph = build(make_mlp(), (X, y), strategy=DataParallel(1), steps=T, batch_size=BATCH,
                  fuse_steps=fused, **OPTIONS["adamw-warmup-cosine"])
    (result,) = dask.compute(graph, scheduler="threads")
    reference = serial(OPTIONS["adamw-warmup-cosine"])
    assert bitwise_equal(result.params, reference.params)
    np.testing.assert_array_equal(result.losses, reference.losses)


def test_averaging_with_one_local_step_and_sgd_equals_data_parallel_with_a_schedule():
    kw = {"optimizer": "sgd", "lr": Warmup(Cosine(0.1, total_steps=5), 2),
          "label_smoothing": 0.2}
    averaged = run_graph(ModelAveraging(3, 1), kw)
    assert max_rel_diff(averaged.params, serial(kw).params) <= 1e-12


@pytest.mark.parametrize(("replicas", "local_steps"), [(3, 1), ((2.0, 1.0), 3)])
def test_averaging_with_the_options_equals_its_serial_definition(replicas, local_steps):
    """Each replica clips its own local gradient, at the global step's rate."""
    X, y = make_data("mlp")
    kw = {"steps": T, "batch_size": BATCH, **OPTIONS["sgd-step-decay"]}
    result = run_graph(ModelAveraging(replicas, local_steps), OPTIONS["sgd-step-decay"])
    reference = train_averaging_serial(make_mlp(), X, y, replicas=replicas,
                                       local_steps=local_steps, **kw)
    assert max_rel_diff(result.params, reference.params) <= 1e-12
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-12)


@pytest.mark.parametrize("strategy", [DataParallel(2), Pipeline(2, 2), ModelAveraging(2, 2)],
                         ids=repr)
def test_fit_in_chunks_equals_one_graph_bitwise(strategy):
    options = OPTIONS["adamw-warmup-cosine"]
    whole = run_graph(strategy, options, scheduler="sync")
    X, y = make_data("mlp")
    chunked = fit(make_mlp(), (X, y), strategy=strategy, steps=T, batch_size=BATCH,
                  chunk_steps=3, progress=False, **options)
    assert bitwise_equal(whole.params, chunked.params)
    np.testing.assert_array_equal(whole.losses, chunked.losses)


@pytest.mark.parametrize("strategy", [DataParallel(2), Pipeline(2, 2), ModelAveraging(2, 2)],
                         ids=repr)
def test_resumed_fit_equals_one_run_bitwise(tmp_path, strategy):
    X, y = make_data("mlp")
    kw = {"strategy": strategy, "batch_size": BATCH, "progress": False,
          **OPTIONS["adamw-warmup-cosine"]}
    whole = fit(make_mlp(), (X, y), steps=T, **kw)
    fit(make_mlp(), (X, y), steps=3, checkpoint_dir=tmp_path, **kw)
    resumed = fit(make_mlp(seed=5), (X, y), steps=T, checkpoint_dir=tmp_path, resume=True, **kw)
    assert bitwise_equal(resumed.params, whole.params)
    np.testing.assert_array_equal(resumed.losses, whole.losses)


@pytest.mark.parametrize(("field", "change"), [
    ("optimizer", {"lr": Warmup(Cosine(0.02, total_steps=5), 2)}),
    ("optimizer", {"lr": 0.02}),
    ("optimizer", {"clip_norm": 0.3}),
    ("loss", {"label_smoothing": 0.2}),
])
def test_a_checkpoint_of_other_options_is_refused(tmp_path, field, change):
    X, y = make_data("mlp")
    kw = {"batch_size": BATCH, "progress": False, **OPTIONS["adamw-warmup-cosine"]}
    fit(make_mlp(), (X, y), steps=3, checkpoint_dir=tmp_path, **kw)
    with pytest.raises(ConfigError) as err:
        fit(make_mlp(), (X, y), steps=T, checkpoint_dir=tmp_path, resume=True,
            **{**kw, **change})
    assert err.value.name == field


@pytest.mark.cluster
def test_pipeline_with_the_options_on_a_local_cluster(cluster_client):
    X, y = make_data("mlp")
    options = OPTIONS["adamw-warmup-cosine"]
    graph = build(make_mlp(), (X, y), strategy=Hybrid(DataParallel(2), Pipeline(2, 2)),
                  steps=T, batch_size=BATCH, client=cluster_client, **options)
    result = cluster_client.compute(graph).result()
    assert max_rel_diff(result.params, serial(options).params) <= 1e-12
    again = cluster_client.compute(graph).result()
    assert bitwise_equal(result.params, again.params)


@pytest.mark.cluster
def test_clipped_pipeline_on_emulated_gpu_and_cpu_workers():
    """Stages on both kinds of device: the norms and the clipped updates move nothing between
    devices that the plan does not move (the emulated device refuses silent mixing)."""
    from distributed import Client

    from pnngraph.run.calibrate import calibrate
    from pnngraph.run.cluster import local_cluster

    X, y = make_data("mlp")
    options = OPTIONS["adamw-warmup-cosine"]
    with local_cluster(2, 1, dashboard_address=None) as cluster, Client(cluster) as client:
        model = calibrate(client, gpu_backend="emulated", emulated_speedup=1.0, cache=False)
        graph = build(make_mlp(), (X, y), strategy=Pipeline(3, 2), steps=5, batch_size=BATCH,
                      client=client, cluster=model, scheduler="round_robin", **options)
        assert set(graph.plan.backends.values()) == {"numpy", "emulated"}
        result = client.compute(graph).result()
    assert max_rel_diff(result.params, serial(options, steps=5).params) <= 1e-12
