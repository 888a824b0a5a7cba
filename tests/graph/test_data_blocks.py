"""Data in blocks of rows: the blocked batch order, and strategies on chunked dask arrays equal
the serial trainer given the same order."""

from __future__ import annotations

import itertools

import dask
import numpy as np
import pytest

from pnngraph import DataParallel, Hybrid, ModelAveraging, Pipeline, build, train_serial
from pnngraph.nn.train import batch_indices, epoch_order
from tests.graph.conftest import make_data, make_mlp, max_rel_diff

da = pytest.importorskip("dask.array")

ROWS = (10, 7, 10, 10, 9)  # 46 samples in unequal blocks
STARTS = np.cumsum((0, *ROWS))


def block_of(row):
    return int(np.searchsorted(STARTS, row, side="right") - 1)


@pytest.mark.parametrize("window", [1, 2, 3, 5])
def test_an_epoch_visits_every_row_once_block_runs_of_window_blocks(window):
    order = epoch_order(46, 3, 1, ROWS, window)
    assert sorted(order.tolist()) == list(range(46))
    blocks = [block_of(r) for r in order]
    # the order is runs of `window` whole blocks: each run holds every row of its blocks
    seen, at = [], 0
    for lo in range(0, len(ROWS), window):
        run_blocks = []
        for b in blocks[at:]:
            if b not in run_blocks:
                if len(run_blocks) == min(window, len(ROWS) - lo):
                    break
                run_blocks.append(b)
        n = sum(ROWS[b] for b in run_blocks)
        assert set(blocks[at : at + n]) == set(run_blocks)
        seen += run_blocks
        at += n
    assert sorted(seen) == list(range(len(ROWS)))


def test_the_order_is_a_pure_function_of_seed_and_step():
    a = [batch_indices(46, 8, 5, s, block_rows=ROWS, window=2) for s in range(12)]
    epoch_order.cache_clear()
    b = [batch_indices(46, 8, 5, s, block_rows=list(ROWS), window=2) for s in range(12)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    # blocks are permuted (not visited in storage order), and epochs differ
    firsts = {block_of(epoch_order(46, seed, 0, ROWS, 1)[0]) for seed in range(20)}
    assert len(firsts) > 1
    assert not np.array_equal(epoch_order(46, 5, 0, ROWS, 2), epoch_order(46, 5, 1, ROWS, 2))


def test_numpy_data_and_one_block_keep_the_plain_order():
    plain = np.random.default_rng([4, 2]).permutation(46)
    assert np.array_equal(epoch_order(46, 4, 2), plain)
    assert np.array_equal(epoch_order(46, 4, 2, (46,), 3), plain)


def dask_data(rows=ROWS, y_rows=None):
    X, y = make_data("mlp")
    return X, y, (da.from_array(X, chunks=(rows, 5)), da.from_array(y, chunks=y_rows or rows))


@pytest.mark.parametrize("strategy", [DataParallel([1, 2]), Hybrid(DataParallel(2), Pipeline(2, 2)),
                                      ModelAveraging(2, 2), DataParallel(1)],
                         ids=["dp-unequal", "hybrid", "averaging", "serial"])
def test_chunked_dask_data_equals_serial_given_the_same_order(strategy):
    X, y, data = dask_data(y_rows=(23, 23))  # y is rechunked to X's rows
    kw = {"steps": 7, "batch_size": 12, "optimizer": "adam", "lr": 0.01}
    graph = build(make_mlp(), data, strategy=strategy, window=2, **kw)
    (result,) = dask.compute(graph, scheduler="sync")
    if isinstance(strategy, ModelAveraging):
        from pnngraph import train_averaging_serial

        reference = train_averaging_serial(make_mlp(), X, y, replicas=2, local_steps=2,
                                           block_rows=ROWS, window=2, **kw)
    else:
        reference = train_serial(make_mlp(), X, y, block_rows=ROWS, window=2, **kw)
    assert max_rel_diff(result.params, reference.params) <= 1e-12
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-12)


def test_a_task_is_given_only_the_blocks_its_rows_are_in():
    _, _, data = dask_data()
    graph = build(make_mlp(), data, strategy=DataParallel(2), steps=4, batch_size=6, window=1)
    g = graph.abstract
    for key, node in g.nodes(data=True):
        if node["kind"] != "grad":
            continue
        X_blocks, index = node["args"][2], node["args"][4]
        assert {block_of(r) for r in index} == {block_of(lo) for lo, _ in X_blocks}
        blocks = {u for u in g.predecessors(key) if g.nodes[u]["kind"] == "data"}
        assert len(blocks) == 2 * len(X_blocks)  # X's and y's
        for u in blocks:  # each edge carries its block's bytes
            assert g.edges[u, key]["bytes"] == g.nodes[u]["bytes"] > 0
    # 4 steps of 6 rows read the blocks of the first two runs only; the others are left out
    read = {g.nodes[k]["block"] for k, kind in g.nodes(data="kind") if kind == "data"}
    order = [block_of(r) for r in epoch_order(46, 0, 0, ROWS, 1)[:24]]
    assert read == set(order) and len(read) < len(ROWS)


@pytest.mark.parametrize("scheduler", ["heft", "peft", "static", "dask"])
@pytest.mark.parametrize("home", ["sim-cpu-0", "sim-cpu-1"])
def test_the_plan_puts_the_tasks_where_their_blocks_are_held(home, scheduler):
    from pnngraph.compile.graph import Blocks, Source, compile_training
    from pnngraph.compile.spec import prepare
    from pnngraph.plan.cluster import simulated_cluster
    from pnngraph.plan.planner import make_plan, scheduling_graph
    from pnngraph.run.pipeline import _state_bytes, initial_states

    X, y = make_data("mlp")
    model = make_mlp()
    spec, X, y = prepare(model, X, y, steps=3, batch_size=12, block_rows=ROWS, lr=0.1)
    starts = STARTS.tolist()

    def blocks(a):  # held by `home`, priced as if each were 100 MB
        return Blocks(tuple(Source(a[lo:hi], 10**8, home=home)
                            for lo, hi in itertools.pairwise(starts)), ROWS)

    init = [Source(s, _state_bytes(s)) for s in initial_states(model, spec)]
    abstract = compile_training(model, spec, data=(blocks(X), blocks(y)), init=init, start=0,
                                steps=3)
    cluster = simulated_cluster(cpus=2, gpus=0)
    plan = make_plan(abstract, cluster, scheduler=scheduler)
    costed = scheduling_graph(abstract, cluster)
    plan.schedule.validate(costed)
    plan.predicted.validate(costed)
    data = [k for k, kind in abstract.nodes(data="kind") if kind == "data"]
    assert {plan.placement[k] for k in data} == {home}  # a held block stays where it is
    grads = [k for k, kind in abstract.nodes(data="kind") if kind == "grad"]
    if scheduler in ("heft", "peft"):  # the cost model: moving 100 MB blocks costs most
        assert grads and {plan.placement[k] for k in grads} == {home}


@pytest.mark.parametrize("strategy", [DataParallel(2), ModelAveraging(2, 2)],
                         ids=["dp", "averaging"])
def test_a_resumed_run_on_chunked_data_is_bitwise_the_whole_run(tmp_path, strategy):
    from pnngraph import fit
    from pnngraph.exceptions import ConfigError
    from tests.graph.conftest import bitwise_equal

    _, _, data = dask_data()
    kw = {"strategy": strategy, "batch_size": 12, "window": 2, "progress": False,
          "optimizer": "adam", "lr": 0.01}
    whole = fit(make_mlp(), data, steps=9, **kw)
    fit(make_mlp(), data, steps=4, checkpoint_dir=tmp_path, **kw)
    resumed = fit(make_mlp(seed=99), data, steps=9, checkpoint_dir=tmp_path, resume=True, **kw)
    assert bitwise_equal(resumed.params, whole.params)
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    with pytest.raises(ConfigError, match="window"):  # another order is another run
        fit(make_mlp(), data, steps=9, checkpoint_dir=tmp_path, resume=True, **{**kw, "window": 3})


def test_batchnorm_on_chunked_data_equals_the_serial_trainer_in_the_blocked_order():
    """BatchNorm's rounds read their rows from the blocks, as grad tasks do."""
    import dask.array as da

    from pnngraph.nn import BatchNorm, Dense, ReLU, Sequential

    def model():
        return Sequential([Dense(8, bias=False), BatchNorm(), ReLU(), Dense(3)], input_shape=(5,))

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 5)), rng.integers(0, 3, 60)
    run = {"steps": 6, "batch_size": 16, "optimizer": "adam", "lr": 0.01}
    graph = build(model(), (da.from_array(X, chunks=20), da.from_array(y, chunks=20)),
                  strategy=DataParallel([1, 2]), **run)
    (result,) = dask.compute(graph, scheduler="sync")
    reference = train_serial(model(), X, y, block_rows=(20, 20, 20), window=2, **run)
    assert max_rel_diff(result.params, reference.params) <= 1e-12
    assert max_rel_diff(result.model.buffers, reference.model.buffers) <= 1e-12
