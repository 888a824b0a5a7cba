"""The /pnngraph page on the scheduler's dashboard shows the published plan."""

from __future__ import annotations

import urllib.request

import pytest
from distributed import Client

import pnngraph
from pnngraph.run import dashboard
from pnngraph.run.cluster import local_cluster
from tests.graph.conftest import make_data, make_mlp

pytestmark = pytest.mark.cluster


def test_the_plan_page_shows_the_published_plan():
    import dask

    routes = dask.config.get(dashboard.ROUTES_CONFIG)
    try:
        dashboard.enable()
        assert dashboard.MODULE in dask.config.get(dashboard.ROUTES_CONFIG)
        with local_cluster(2, 0, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
                Client(cluster) as client:
            page = client.dashboard_link.rsplit("/", 1)[0] + "/pnngraph"
            before = urllib.request.urlopen(page, timeout=10).read().decode()
            assert "No pnngraph plan has been published" in before
            graph = pnngraph.build(make_mlp(), make_data("mlp"), strategy=pnngraph.DataParallel(2),
                                   steps=2, batch_size=20, client=client, scheduler="heft")
            dashboard.publish_plan(client, graph)
            after = urllib.request.urlopen(page, timeout=10).read().decode()
    finally:
        dask.config.set({dashboard.ROUTES_CONFIG: routes})  # enable() is global: undo it
    assert "predicted makespan" in after and "<svg" in after
    assert graph.token in after and "grad" in after
