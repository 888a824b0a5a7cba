"""The calibration cache: named by what the workers' speeds depend on, not by their addresses,
so a cluster started again on other ports finds its measurement; bounded; refreshable."""

from __future__ import annotations

import json
import os

import pytest

from pnngraph.run.calibrate import CACHE_FILES, calibrate
from pnngraph.run.cluster import local_cluster

pytestmark = pytest.mark.cluster


def _calibrate(cache_dir, **kw):
    from distributed import Client

    with local_cluster(2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        addresses = sorted(cluster.scheduler.workers)
        return addresses, calibrate(client, cache_dir=cache_dir, budget_seconds=2.0, **kw)


def test_a_cluster_started_again_on_other_ports_finds_its_calibration(tmp_path):
    first_addresses, first = _calibrate(tmp_path)
    again_addresses, again = _calibrate(tmp_path)
    assert set(first_addresses).isdisjoint(again_addresses)  # random ports each start
    assert sorted(again.addresses) == again_addresses
    mapping = dict(zip(sorted(first.addresses), sorted(again.addresses), strict=True))
    assert again == first.readdressed(mapping)  # the very figures measured the first time
    (cached,) = tmp_path.glob("cluster-*.json")
    assert set(json.loads(cached.read_text())["workers"]) == set(first_addresses)
    # --refresh measures again and stores the new measurement under the live addresses
    refreshed_addresses, refreshed = _calibrate(tmp_path, refresh=True)
    assert sorted(refreshed.addresses) == refreshed_addresses
    assert set(json.loads(cached.read_text())["workers"]) == set(refreshed_addresses)


def test_the_cache_keeps_the_newest_calibrations_only(tmp_path):
    for i in range(CACHE_FILES + 5):
        stale = tmp_path / f"cluster-stale{i:02d}.json"
        stale.write_text("{}")
        stamp = 1e9 + i
        os.utime(stale, (stamp, stamp))
    _calibrate(tmp_path)
    files = sorted(tmp_path.glob("cluster-*.json"))
    assert len(files) == CACHE_FILES
    assert not (tmp_path / "cluster-stale00.json").exists()  # the least recently used went
    assert any("stale" not in f.name for f in files)  # the new one stays


def test_a_damaged_or_old_cache_file_is_measured_again(tmp_path):
    _, first = _calibrate(tmp_path)
    (cached,) = tmp_path.glob("cluster-*.json")
    cached.write_text(first.to_json())  # the format before fingerprints: a bare model
    again_addresses, again = _calibrate(tmp_path)
    assert sorted(again.addresses) == again_addresses
    assert "workers" in json.loads(cached.read_text())  # rewritten in the current format
