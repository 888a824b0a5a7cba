"""The local cluster of the run tests: three worker processes (so tasks are pickled, and one can
be killed), one thread each, no work stealing (a task runs where the plan pins it, so which
worker holds a result, and what a killed worker takes with it, is known)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def local_cluster() -> Iterator[Any]:
    import dask
    import distributed

    with dask.config.set({"distributed.scheduler.work-stealing": False}), \
            distributed.LocalCluster(
                n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None,
                host="127.0.0.1", scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            ) as cluster:
        yield cluster


@contextlib.contextmanager
def client_of(cluster: Any) -> Iterator[Any]:
    """A client of ``cluster`` once its three workers are up (a test may have killed one)."""
    import distributed

    with distributed.Client(cluster) as client:
        client.wait_for_workers(3, timeout=60)
        yield client
