"""Dask data is checked like host data, block by block where the blocks are, before a run
starts; the cluster is checked before any work on it (tests/test_errors.py holds the messages)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

import pnngraph
from pnngraph.exceptions import DataError
from pnngraph.nn import Dense, Sequential
from tests.graph.conftest import max_rel_diff

rng = np.random.default_rng(0)
X = rng.standard_normal((30, 4))
Y = (X[:, 0] > 0).astype(int)
RUN = {"steps": 2, "batch_size": 10, "lr": 0.1}


def model(n_out=2):
    return Sequential([Dense(4, n_out)], input_shape=(4,))


def spoilt(a, index, value):
    a = a.astype(float)
    a[index] = value
    return a


def test_the_first_bad_block_in_order_is_named():
    bad = spoilt(spoilt(X, (25, 0), np.inf), (12, 3), np.nan)
    with pytest.raises(DataError, match=r"^X: 1 values are NaN or inf \(first in sample 12\), "
                                        r"in block 1 \(rows 10:20\)$"):
        pnngraph.build(model(), (da.from_array(bad, chunks=(10, 4)), da.from_array(Y)), **RUN)


def test_blocks_cut_across_features_are_named_by_their_grid_index():
    bad = spoilt(X, (4, 3), -np.inf)
    with pytest.raises(DataError, match=r"in block \(0, 1\) \(rows 0:15\)$"):
        pnngraph.build(model(), (da.from_array(bad, chunks=(15, 2)), da.from_array(Y)), **RUN)


def test_regression_targets_are_checked_as_on_the_host():
    targets = spoilt(rng.standard_normal((30, 3)), (27, 1), np.nan)
    with pytest.raises(DataError, match=r"^y: 1 values are NaN or inf \(first in sample 27\), "
                                        r"in block 2 \(rows 20:30\)$"):
        pnngraph.build(model(3), (da.from_array(X, chunks=10), da.from_array(targets, chunks=10)),
                       loss="mse", **RUN)


def test_checked_dask_data_trains_as_the_same_numpy_data():
    # y, chunked otherwise, is rechunked to X's rows; the batches follow X's blocks
    a = pnngraph.train_serial(model(), X, Y, block_rows=(7, 7, 7, 7, 2), **RUN)
    b = pnngraph.fit(model(), (da.from_array(X, chunks=7), da.from_array(Y, chunks=11)),
                     progress=False, **RUN)
    assert max_rel_diff(a.params, b.params) <= 1e-12


@pytest.mark.cluster
def test_on_a_cluster_the_blocks_are_checked_on_the_workers_before_any_step():
    import distributed
    from dask.utils import key_split

    from pnngraph.run.session import live_workers

    bad = (da.from_array(spoilt(X, (13, 1), np.nan), chunks=10), da.from_array(Y, chunks=10))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as stream, pytest.raises(
                DataError, match=r"in block 1 \(rows 10:20\)$"):
            pnngraph.fit(model(), bad, client=client, scheduler="dask", progress=False, **RUN)
        workers = set(live_workers(client))
    ran = {}
    for task in stream.data:
        ran.setdefault(key_split(task["key"]), set()).add(task["worker"])
    assert set(ran) >= {"check-X", "check-y"} and ran["check-X"] <= workers
    assert not set(ran) - {"check-X", "check-y", "array"}, ran  # no step ran
