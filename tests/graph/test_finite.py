"""The NaN guard: a gradient or an updated parameter that is not finite stops the run at the step
it happened, in the serial trainers and in every strategy's graph, naming where and what."""

from __future__ import annotations

import re

import dask
import numpy as np
import pytest

import pnngraph
from pnngraph import DataParallel, Hybrid, ModelAveraging, Pipeline
from pnngraph.exceptions import TrainingError
from pnngraph.nn import Dense, Sequential
from pnngraph.nn.train import check_update
from pnngraph.plan.cluster import simulated_cluster

rng = np.random.default_rng(0)
X = rng.standard_normal((40, 4))
Y = (X[:, 0] > 0).astype(int)
RUN = {"steps": 3, "batch_size": 20}

# where each run reports a step's update: its stage, or (model averaging) its replica
STRATEGIES = {
    "data, one shard": (DataParallel(1), {"fuse_steps": 1}, "stage"),
    "data, fused steps": (DataParallel(1), {"fuse_steps": 3}, "stage"),
    "data, two shards": (DataParallel(2), {}, "stage"),
    "data, a copy per worker": (DataParallel(2), {"cluster": simulated_cluster(2, 0)}, "stage"),
    "pipeline": (Pipeline(2, 2), {}, "stage"),
    "hybrid": (Hybrid(DataParallel(2), Pipeline(2, 2)), {}, "stage"),
    "averaging": (ModelAveraging(2, 2), {}, "shard"),
}


def bad_gradient():
    """Inputs of 1e200 through a first layer of 1e-200: outputs and loss are finite, the first
    layer's gradient (inputs times the 1e200-size second layer) is not."""
    model = Sequential([Dense(4, 3), Dense(3, 2)], input_shape=(4,))
    model.params[0]["W"] = model.params[0]["W"] * 1e-200
    model.params[1]["W"] = model.params[1]["W"] * 1e200
    return model, X * 1e200, {}


def bad_update():
    """Finite inputs, gradients and loss; a learning rate of 1e200 takes the weights past the
    largest float."""
    return Sequential([Dense(4, 3), Dense(3, 2)], input_shape=(4,)), X * 1e200, {"lr": 1e200}


CASES = {  # (two shards' inf gradients may sum to nan)
    "gradient": (bad_gradient, r"the gradient of layer 0 \(dense0\) W became (inf|nan)$"),
    "update": (bad_update, r"layer \d \(dense\d\) W became (inf|nan) in the update$"),
}


def run_graph(strategy, model, X_run, **options):
    graph = pnngraph.build(model, (X_run, Y), strategy=strategy, **RUN, **options)
    with np.errstate(all="ignore"):
        dask.compute(graph, scheduler="sync")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_stops_at_the_first_bad_step(case, name):
    make, problem = CASES[case]
    strategy, options, where = STRATEGIES[name]
    model, X_run, optimizer = make()
    with pytest.raises(TrainingError) as info:
        run_graph(strategy, model, X_run, **options, **optimizer)
    err = info.value
    assert err.step == 0 and re.search(problem, str(err)) and str(err).startswith("step 0, ")
    assert getattr(err, where) is not None and getattr(err, "shard" if where == "stage"
                                                      else "stage") is None


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_serial_trainers_stop_at_the_first_bad_step(case):
    make, problem = CASES[case]
    model, X_run, optimizer = make()
    with np.errstate(all="ignore"), pytest.raises(TrainingError) as info:
        pnngraph.train_serial(model, X_run, Y, **RUN, **optimizer)
    assert str(info.value).startswith("step 0: ") and re.search(problem, str(info.value))
    with np.errstate(all="ignore"), pytest.raises(TrainingError) as info:
        pnngraph.train_averaging_serial(model, X_run, Y, replicas=2, local_steps=2, **RUN,
                                        **optimizer)
    assert info.value.step == 0 and info.value.shard == 0 and re.search(problem, str(info.value))


def test_a_sum_that_overflows_is_not_a_bad_step(backend):
    """Finite parameters whose sum overflows pass: the sum only decides whether to look."""
    xp = backend.xp
    params = [{"W": backend.asarray(np.full(4, 1e308))}]
    check_update(xp, [Dense(4, 1)], 0, params, params, 0)
    bad = [{"W": backend.asarray(np.array([1.0, -np.inf]))}]
    with pytest.raises(TrainingError, match=r"^step 5, stage 1: layer 3 \(dense\) W became inf"):
        check_update(xp, [Dense(2, 1)], 3, params, bad, 5, stage=1)


@pytest.mark.cluster
def test_the_error_keeps_its_fields_across_processes():
    import distributed

    model, X_run, optimizer = bad_gradient()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        graph = pnngraph.build(model, (X_run, Y), strategy=Pipeline(2, 1), client=client,
                               scheduler="dask", **RUN, **optimizer)
        with pytest.raises(TrainingError) as info:
            client.compute(graph).result()
    assert (info.value.step, info.value.stage, info.value.shard) == (0, 0, None)
