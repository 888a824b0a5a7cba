"""``fit``: a long run computed in chunks of steps, so the graph stays small.

Each chunk is one :class:`~pnngraph.run.collection.TrainingGraph` of at most ``chunk_steps``
steps. With a client, a chunk's final stage states stay on the workers as futures and the next
chunk starts from them (the client holds references, never the arrays); without one, each chunk
runs on Dask's threaded scheduler and hands its host states to the next. Either way the result
is bitwise-identical to one graph of all the steps::

    chunk 0: steps [0, c)      -> futures of the stage states
    chunk 1: steps [c, 2c)     <- starts from those futures
    ...                        -> gather once at the end -> TrainingResult

>>> import numpy as np
>>> from pnngraph.nn import Dense, Sequential
>>> X = np.random.default_rng(0).standard_normal((40, 2)); y = (X[:, 0] > 0).astype(int)
>>> model = Sequential([Dense(2, 2)], input_shape=(2,))
>>> result = fit(model, (X, y), strategy="data", steps=6, chunk_steps=4, batch_size=10,
...              lr=0.1, progress=False)
>>> len(result.losses), len(result.step_seconds)
(6, 6)
"""

from __future__ import annotations

import time
from typing import Any

import click
import dask.threaded
import numpy as np

from pnngraph.compile.strategies import Strategy, as_strategy
from pnngraph.exceptions import ConfigError, UnknownNameError
from pnngraph.nn.losses import Loss
from pnngraph.nn.model import Sequential
from pnngraph.nn.optimizers import Optimizer
from pnngraph.nn.train import TrainingResult, resolve_steps
from pnngraph.plan.cluster import ClusterModel
from pnngraph.plan.planner import SCHEDULERS
from pnngraph.run.collection import (
    attach_sources,
    compile_graph,
    finalize,
    prepare_data,
    resolve_auto,
)


def fit(
    model: Sequential,
    data: Any,
    *,
    strategy: Strategy | str = "data",
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 32,
    optimizer: str | Optimizer = "sgd",
    loss: str | Loss = "cross_entropy",
    seed: int = 0,
    shuffle: bool = True,
    chunk_steps: int | None = None,
    fan_in: int = 2,
    fuse_steps: int | str = "auto",
    client: Any = None,
    scheduler: str | None = None,
    cluster: ClusterModel | None = None,
    devices: str = "any",
    progress: bool = True,
    **optimizer_options: Any,
) -> TrainingResult:
    """Train like :func:`pnngraph.build` (same options), computing ``chunk_steps`` steps per
    graph. A cluster model measured for the first chunk serves every chunk.

    ``chunk_steps`` defaults to one epoch (at most 1000 steps). With ``progress`` a bar advances
    per chunk. ``TrainingResult.step_seconds`` holds each chunk's wall time spread over its
    steps.
    """
    strategy = as_strategy(strategy)
    if scheduler is None:
        scheduler = "heft" if (client is not None or cluster is not None) else "dask"
    if scheduler not in SCHEDULERS:
        raise UnknownNameError("scheduler", scheduler, SCHEDULERS)
    prepared = prepare_data(model, data, batch_size, loss, optimizer, optimizer_options)
    total = resolve_steps(prepared.n_samples, prepared.batch_size, steps, epochs)
    per_epoch = -(-prepared.n_samples // prepared.batch_size)
    chunk = min(per_epoch, 1000) if chunk_steps is None else chunk_steps
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise ConfigError("chunk_steps", "a positive integer", chunk_steps)
    keep = attach_sources(prepared, client)
    strategy, cluster, shard_workers = resolve_auto(
        strategy, cluster, client, scheduler, model.dtype, devices
    )
    states: list[Any] | None = None
    seconds = np.zeros(total)
    bar = click.progressbar(length=total, label="training") if progress else None
    graph = None
    try:
        if bar is not None:
            bar.__enter__()
        for lo in range(0, total, chunk):
            n = min(chunk, total - lo)
            graph = compile_graph(
                model, prepared, strategy=strategy, steps=n, seed=seed, shuffle=shuffle,
                start_step=lo, fan_in=fan_in, fuse_steps=fuse_steps, init_states=states,
                final=lo + n >= total, client=client,
            )
            graph.place(client=client, cluster=cluster, scheduler=scheduler, devices=devices,
                        shard_workers=shard_workers)
            t0 = time.perf_counter()
            if client is not None:
                keys: list[Any] = graph.__dask_keys__()
                futures = client.get(graph.__dask_graph__(), keys, sync=False)
                client.gather(futures, errors="raise") if lo + n >= total else _wait(futures)
                states = list(futures)
            else:
                states = list(dask.threaded.get(graph.__dask_graph__(), graph.__dask_keys__()))
                # (the threaded scheduler ignores placement; host states go to the next chunk)
            seconds[lo : lo + n] = (time.perf_counter() - t0) / n
            if bar is not None:
                bar.update(n)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    assert graph is not None and states is not None
    results = client.gather(states) if client is not None else states
    result = finalize(results, model.skeleton(), graph.averaging)
    result.step_seconds = seconds
    del keep
    return result


def _wait(futures: list[Any]) -> None:
    from distributed import wait

    wait(futures)
    for f in futures:
        if f.status == "error":
            f.result()  # raises the task's exception here
