"""The live worker list, under the race that empties ``client.scheduler_info()``.

In distributed 2026.8 the client's periodic refresh overwrites the reply of
``client.scheduler_info(n_workers=-1)`` with an empty worker list; with the refresh at 1 ms a
caller sees no workers now and then on a healthy cluster. Every reader of the worker list in
pnngraph asks the scheduler directly (:func:`pnngraph.run.session.live_workers`): builds, static
placement, the live-pin check at lowering and calibration must never see a worker vanish.
"""

from __future__ import annotations

import time
import warnings

import dask
import numpy as np
import pytest

from pnngraph import DataParallel, build, calibrate
from pnngraph.nn import Dense, ReLU, Sequential
from pnngraph.run.collection import PlacementWarning
from pnngraph.run.session import live_workers

SECONDS = 10.0


@pytest.mark.slow
@pytest.mark.cluster
def test_builds_see_every_worker_while_the_client_refreshes_every_millisecond(tmp_path):
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4))
    y = (X[:, 0] > 0).astype(int)
    model = Sequential([Dense(4, 8), ReLU(), Dense(8, 2)], input_shape=(4,))
    with dask.config.set({"distributed.client.scheduler-info-interval": "1ms"}), \
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            ) as cluster, \
            distributed.Client(cluster) as client, warnings.catch_warnings():
        warnings.simplefilter("error", PlacementWarning)  # a false "worker left" fails the test
        expected = sorted(nanny.worker_address for nanny in cluster.workers.values())
        measured = calibrate(client, cache_dir=tmp_path, budget_seconds=2.0)
        assert sorted(measured.addresses) == expected
        builds, deadline = 0, time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            assert list(live_workers(client)) == expected
            plan = {"scheduler": "static"} if builds % 2 else {"cluster": measured}
            graph = build(model, (X, y), strategy=DataParallel(2), steps=2, batch_size=16,
                          client=client, **plan)
            graph.__dask_graph__()  # lowering: the pins are checked against live workers
            assert sorted(set(graph.placement.values())) == expected
            builds += 1
        assert builds > 0
