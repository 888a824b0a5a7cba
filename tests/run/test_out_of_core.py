"""Data larger than a worker: a chunked dask array about four times a worker's memory limit
trains with DataParallel(2) on a real process cluster, block by block, without a worker being
restarted or a result recomputed, and equals the serial trainer given the same batches."""

from __future__ import annotations

import collections
import os

import dask
import numpy as np
import pytest

import pnngraph
from pnngraph.nn import Dense, Sequential
from pnngraph.nn.train import batch_indices
from tests.graph.conftest import max_rel_diff

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

FEATURES, BLOCK, BLOCKS = 100, 15_625, 96  # 96 blocks of 12.5 MB: 1.2 GB of float64
LIMIT = "300MiB"
RUN = {"steps": 60, "batch_size": 12_500, "window": 2, "lr": 0.1, "seed": 3}


def write_data(path):
    """X, written block by block (never whole in memory), and its labels."""
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64,
                                  shape=(BLOCK * BLOCKS, FEATURES))
    for b in range(BLOCKS):
        X[b * BLOCK : (b + 1) * BLOCK] = np.random.default_rng([7, b]).standard_normal(
            (BLOCK, FEATURES))
    X.flush()
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    del X
    return y


def read_block(path, block_id=None):
    """Block ``block_id`` of the rows of the .npy file at ``path``, read into memory."""
    b = block_id[0]
    return np.array(np.load(path, mmap_mode="r")[b * BLOCK : (b + 1) * BLOCK])


def peak_rss(dask_worker):
    return max(dask_worker.monitor.quantities["memory"])


def transitions(dask_scheduler):
    """Every ``(key, from, to)`` transition the scheduler logged."""
    return [tuple(t[:3]) for t in dask_scheduler.transition_log]


@pytest.mark.slow
@pytest.mark.cluster
def test_data_four_times_a_workers_memory_trains_block_by_block(tmp_path):
    path = str(tmp_path / "X.npy")
    y = write_data(path)
    np.save(tmp_path / "y.npy", y)
    X = da.map_blocks(read_block, path, chunks=((BLOCK,) * BLOCKS, (FEATURES,)),
                      dtype=np.float64, meta=np.empty((0, FEATURES)))
    assert X.nbytes > 3.5 * 300 * 2**20
    data = X, da.map_blocks(read_block, str(tmp_path / "y.npy"), chunks=((BLOCK,) * BLOCKS,),
                            dtype=np.int64, meta=np.empty((0,), dtype=np.int64))
    model = Sequential([Dense(FEATURES, 2)], input_shape=(FEATURES,), seed=1)
    with dask.config.set({"distributed.admin.low-level-log-length": 10**6}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     memory_limit=LIMIT, dashboard_address="127.0.0.1:0",
                                     host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        before = client.run(os.getpid)
        result = pnngraph.fit(model, data, strategy=pnngraph.DataParallel(2), client=client,
                              scheduler="static", progress=False, **RUN)
        after = client.run(os.getpid)
        peaks = client.run(peak_rss)
        log = client.run_on_scheduler(transitions)
    assert after == before  # the same workers, none restarted
    assert [t for t in log if t[1] == "memory" and t[2] not in ("released", "forgotten")] == []
    # each block was read once by the checks and once more where a step reads it, no more
    loads = collections.Counter(t[0] for t in log if t[0][0] == X.name and t[2] == "memory")
    read = {int(r) // BLOCK for s in range(RUN["steps"]) for r in batch_indices(
        len(y), RUN["batch_size"], RUN["seed"], s, block_rows=X.chunks[0], window=2)}
    assert len(loads) == BLOCKS and set(loads.values()) <= {1, 2}
    assert {key[1] for key, n in loads.items() if n == 2} == read
    print(f"blocks read by the steps: {len(read)} of {BLOCKS}")
    print(f"peak worker RSS: {max(peaks.values()) / 2**20:.0f} MiB of {LIMIT} "
          f"(data {X.nbytes / 2**20:.0f} MiB)")
    reference = pnngraph.train_serial(model, np.load(path, mmap_mode="r"), y,
                                      block_rows=X.chunks[0], **RUN)
    assert max_rel_diff(result.params, reference.params) <= 1e-12
    np.testing.assert_allclose(result.losses, reference.losses, rtol=1e-12)


@pytest.mark.cluster
def test_blocks_held_by_a_worker_are_planned_there():
    rng = np.random.default_rng(0)
    X_host = rng.standard_normal((4000, 50))
    y_host = (X_host[:, 0] > 0).astype(np.int64)
    model = Sequential([Dense(50, 2)], input_shape=(50,), seed=1)
    run = {"steps": 4, "batch_size": 500, "lr": 0.1}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        X, y = client.persist([da.from_array(X_host, chunks=(1000, 50)),
                               da.from_array(y_host, chunks=1000)])
        distributed.wait([X, y])
        held = {**client.who_has(X), **client.who_has(y)}
        graph = pnngraph.build(model, (X, y), strategy=pnngraph.DataParallel(1), client=client,
                               **run)
        # the planner prices moving each block from there (tests/graph/test_data_blocks.py)
        blocks = {k: node for k, node in graph.abstract.nodes(data=True)
                  if node["kind"] == "data"}
        assert blocks
        for k, node in blocks.items():
            assert node["home"] == min(held[node["source"].value[1]])
            assert graph.plan.placement[k] == node["home"]
        result = client.compute(graph).result()
    reference = pnngraph.train_serial(model, X_host, y_host, block_rows=(1000,) * 4, **run)
    assert max_rel_diff(result.params, reference.params) <= 1e-12


def blocks_inputs():
    """What ``_blocks_chunk`` reads of a run's inputs: the test's X and y blocks, a batch of
    12,500 rows and a window of 2."""
    from types import SimpleNamespace

    X = da.zeros((BLOCK * BLOCKS, FEATURES), chunks=(BLOCK, FEATURES))
    y = da.zeros(BLOCK * BLOCKS, dtype=np.int64, chunks=BLOCK)
    return SimpleNamespace(X=X, y=y, spec=SimpleNamespace(window=2, batch_size=12_500))


def test_a_default_chunk_reads_blocks_that_fit_a_quarter_of_the_smallest_worker():
    """Dask reads a chunk's blocks ahead of its steps and keeps them until those ran: fit's
    default chunk holds the steps whose blocks (X's and y's) fit in a quarter of the smallest
    memory limit, less the window's."""
    from types import SimpleNamespace

    from pnngraph.plan.cluster import simulated_cluster
    from pnngraph.run.fit import MAX_CHUNK_STEPS, _blocks_chunk

    inputs = blocks_inputs()

    def run(memory_gb):
        return SimpleNamespace(client=object(), cluster=simulated_cluster(
            cpus=2, gpus=0, memory_gb=memory_gb))

    # 300 MiB: 78.6 MB for blocks of 12.6 MB, 6.2 blocks, less 2: 4.2 blocks of 15,625 rows
    assert _blocks_chunk(inputs, run(300 * 2**20 / 1e9)) == 5
    assert _blocks_chunk(inputs, run(0.05)) == 1  # never fewer than one step
    assert _blocks_chunk(inputs, run(None)) == MAX_CHUNK_STEPS  # no limit known
    host = SimpleNamespace(X=np.zeros((10, 2)), y=np.zeros(10), spec=inputs.spec)
    assert _blocks_chunk(host, run(0.05)) == MAX_CHUNK_STEPS


@pytest.mark.cluster
def test_a_default_chunk_reads_the_limits_from_the_scheduler_where_nothing_was_measured():
    from types import SimpleNamespace

    from pnngraph.run.fit import _blocks_chunk

    inputs = blocks_inputs()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit=LIMIT, dashboard_address=None, host="127.0.0.1",
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}
                                  ) as cluster, \
            distributed.Client(cluster) as client:
        assert _blocks_chunk(inputs, SimpleNamespace(client=client, cluster=None)) == 5
