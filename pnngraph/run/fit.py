"""``fit``: a long run computed in chunks of steps, so the graph stays small.

Each chunk is one :class:`~pnngraph.run.collection.TrainingGraph` of at most ``chunk_steps``
steps. With a client, a chunk's final stage states stay on the workers as futures and the next
chunk starts from them (the client holds references, never the arrays); without one, each chunk
runs on Dask's threaded scheduler and hands its host states to the next. Either way the result
is bitwise-identical to one graph of all the steps::

    chunk 0: steps [0, c)      -> futures of the stage states
    chunk 1: steps [c, 2c)     <- starts from those futures
    ...                        -> gather once at the end -> TrainingResult

With ``checkpoint_dir``, chunk ends fall on every ``checkpoint_every`` steps; there the states
are gathered, written by :func:`~pnngraph.run.checkpoint.save_checkpoint`, and the next chunk
starts from the gathered copy (inside its graph), which also cuts the lineage Dask would replay
after losing a worker. ``resume=True`` continues from the newest checkpoint, and
ends with the same bits as a run that was never stopped.

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

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
import dask.threaded
import numpy as np

from pnngraph.compile import kernels
from pnngraph.compile.kernels import StageState
from pnngraph.compile.strategies import ModelAveraging, Strategy, as_strategy, stage_bounds
from pnngraph.exceptions import ConfigError
from pnngraph.nn.losses import Loss
from pnngraph.nn.model import Sequential
from pnngraph.nn.optimizers import Optimizer
from pnngraph.nn.train import TrainingResult, batch_indices, resolve_steps
from pnngraph.plan.cluster import ClusterModel
from pnngraph.run import history
from pnngraph.run.checkpoint import (
    Checkpoint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from pnngraph.run.collection import (
    Prepared,
    attach_sources,
    compile_graph,
    finalize,
    initial_states,
    prepare_data,
    resolve_auto,
    resolve_scheduler,
)
from pnngraph.run.session import run_graph


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
    fan_in: int = 8,
    fuse_steps: int | str = "auto",
    client: Any = None,
    scheduler: str | None = None,
    cluster: ClusterModel | None = None,
    devices: str = "any",
    progress: bool = True,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    on_graph: Callable[[Any], Any] | None = None,
    on_chunk: Callable[[ChunkReport], Any] | None = None,
    on_steps: Callable[[int], Any] | None = None,
    learn: bool = False,
    **optimizer_options: Any,
) -> TrainingResult:
    """Train like :func:`pnngraph.build` (same options), computing ``chunk_steps`` steps per
    graph. A cluster model measured for the first chunk serves every chunk.

    ``chunk_steps`` defaults to one epoch (at most 1000 steps). With ``progress`` a bar advances
    per chunk. ``TrainingResult.step_seconds`` holds each chunk's wall time spread over its
    steps (zero for steps done before a resume).

    Checkpoints: with ``checkpoint_dir``, a checkpoint is written every ``checkpoint_every``
    steps (a positive integer; by default at the end of every chunk; chunks are cut so that
    they end there) and after the last step; the newest three are kept. A run without
    ``resume`` refuses a directory that already holds checkpoints. ``resume=True`` continues
    from the newest one (or starts afresh when there is none): its parameters, optimizer state,
    step and losses; the total steps come from ``steps``/``epochs`` as usual. The checkpoint
    must come from the same run: a different architecture, strategy, batch size, optimizer,
    loss, seed, shuffle, ``fan_in`` or number of samples raises :class:`ConfigError` naming
    the field. The resumed run ends bitwise-identical to one never stopped. Model averaging
    checkpoints may fall mid-period: they hold every replica's state besides the average.

    Hooks: ``on_graph(graph)`` gets each chunk's placed graph before it runs; ``on_steps(n)``
    is called as steps finish (per step on a client, else per chunk);
    ``on_chunk(report)`` after each chunk with a :class:`ChunkReport` (the result so far, the
    chunk's graph with its plan, its task stream on a client), which gathers the state at every
    chunk end. With ``learn`` (and a cost-model plan) each chunk's measured task durations
    refine the cluster model that prices the next chunk (:func:`pnngraph.run.history.learn`).
    """
    strategy = as_strategy(strategy)
    scheduler = resolve_scheduler(scheduler, client, cluster)
    prepared = prepare_data(model, data, batch_size, loss, optimizer, optimizer_options)
    total = resolve_steps(prepared.n_samples, prepared.batch_size, steps, epochs)
    per_epoch = -(-prepared.n_samples // prepared.batch_size)
    chunk = min(per_epoch, 1000) if chunk_steps is None else chunk_steps
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise ConfigError("chunk_steps", "a positive integer", chunk_steps)
    every = _check_checkpointing(checkpoint_dir, checkpoint_every, resume)
    run_config = _run_config(model, prepared, strategy, seed, shuffle, fan_in, total, every)
    ckpt = _find_resume(checkpoint_dir, resume, model, run_config, total)
    keep = attach_sources(prepared, client)
    strategy, cluster, shard_workers = resolve_auto(
        strategy, cluster, client, model, prepared.batch_size, devices
    )
    start = 0 if ckpt is None else ckpt.step
    states: list[Any] | None = (
        None if ckpt is None else _resume_states(ckpt, model, prepared.optimizer, strategy)
    )
    seconds = np.zeros(total)
    bar = click.progressbar(length=total - start, label="training") if progress else None
    try:
        if bar is not None:
            bar.__enter__()
        lo = start
        while lo < total:
            n = _chunk_end(lo, chunk, every, total) - lo
            graph = compile_graph(
                model, prepared, strategy=strategy, steps=n, seed=seed, shuffle=shuffle,
                start_step=lo, fan_in=fan_in, fuse_steps=fuse_steps, init_states=states,
                final=lo + n >= total,
            )
            due = checkpoint_dir is not None and (
                lo + n >= total or every is None or (lo + n) % every == 0
            )
            graph.place(client=client, cluster=cluster, scheduler=scheduler, devices=devices,
                        shard_workers=shard_workers)
            if on_graph is not None:
                on_graph(graph)
            t0 = time.perf_counter()
            stream: list[dict[str, Any]] = []
            watched = on_steps is not None or on_chunk is not None or learn
            if client is not None and watched:
                states, stream = run_graph(client, graph, on_steps=on_steps)
                if learn and cluster is not None and stream:
                    cluster = history.learn(cluster, graph, stream)
            elif client is not None:
                keys: list[Any] = graph.__dask_keys__()
                futures = client.get(graph.__dask_graph__(), keys, sync=False)
                if lo + n >= total or due:  # host states: the next chunk's graph holds them
                    states = list(client.gather(futures, errors="raise"))
                else:
                    _wait(futures)
                    states = list(futures)
            else:
                states = list(dask.threaded.get(graph.__dask_graph__(), graph.__dask_keys__()))
                # (the threaded scheduler ignores placement; host states go to the next chunk)
                if on_steps is not None:
                    on_steps(n)
            seconds[lo : lo + n] = (time.perf_counter() - t0) / n
            if on_chunk is not None:
                so_far = finalize(states, model.skeleton(), isinstance(strategy, ModelAveraging))
                so_far.step_seconds = seconds[: lo + n]
                on_chunk(ChunkReport(lo + n, so_far, graph, stream, cluster))
            if due:
                assert checkpoint_dir is not None
                _write_checkpoint(checkpoint_dir, states, model, strategy, prepared,
                                  step=lo + n, seed=seed, shuffle=shuffle, config=run_config,
                                  averaged=lo + n >= total)
            lo += n
            if bar is not None:
                bar.update(n)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    assert states is not None
    result = finalize(states, model.skeleton(), isinstance(strategy, ModelAveraging))
    result.step_seconds = seconds
    del keep
    return result


@dataclass(frozen=True)
class ChunkReport:
    """What ``fit`` tells ``on_chunk`` after each chunk: the step reached, the result so far
    (for model averaging mid-period: the last average), the chunk's graph (``graph.plan`` is its
    plan), its task stream records (empty without a client) and the cluster model in use."""

    step: int
    result: TrainingResult
    graph: Any
    stream: list[dict[str, Any]] = field(default_factory=list)
    cluster: ClusterModel | None = None


def _wait(futures: list[Any]) -> None:
    from distributed import wait

    wait(futures)
    for f in futures:
        if f.status == "error":
            f.result()  # raises the task's exception here


# ------------------------------------------------------------------------------ checkpoints
RESUME_FIELDS = ("strategy", "batch_size", "optimizer", "loss", "seed", "shuffle", "fan_in",
                 "n_samples")
"""Run options a checkpoint must share with the run that resumes from it (and the model's
architecture): any of them changes the bits of the steps still to come."""


def _check_checkpointing(directory: Any, every: Any, resume: Any) -> int | None:
    if every is not None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ConfigError("checkpoint_every", "a positive integer (steps)", every)
        if directory is None:
            raise ConfigError("checkpoint_every", "a checkpoint_dir to write to", every)
    if not isinstance(resume, bool):
        raise ConfigError("resume", "True or False", resume)
    if resume and directory is None:
        raise ConfigError("resume", "a checkpoint_dir to resume from", None)
    return every


def _run_config(
    model: Sequential, prepared: Prepared, strategy: Strategy, seed: int, shuffle: bool,
    fan_in: int, total: int, every: int | None,
) -> dict[str, Any]:
    """The options a checkpoint records, as JSON types (``RESUME_FIELDS`` must match)."""
    config = {
        "strategy": repr(strategy),
        "batch_size": prepared.batch_size,
        "optimizer": {"name": prepared.optimizer.name, "options": prepared.optimizer.config()},
        "loss": repr(prepared.loss),
        "seed": seed,
        "shuffle": shuffle,
        "fan_in": fan_in,
        "n_samples": prepared.n_samples,
        "steps": total,
        "checkpoint_every": every,
        "dtype": model.dtype,
    }
    out: dict[str, Any] = json.loads(json.dumps(config))
    return out


def _architecture(config: dict[str, Any]) -> dict[str, Any]:
    """A model config without its initialisation seed (a checkpoint supplies the params)."""
    return {k: v for k, v in config.items() if k != "seed"}


def _find_resume(
    directory: Any, resume: bool, model: Sequential, config: dict[str, Any], total: int
) -> Checkpoint | None:
    """The checkpoint to continue from (``None``: start at step 0), checked against the run."""
    if directory is None:
        return None
    newest = latest_checkpoint(directory)
    if newest is None:
        return None
    if not resume:
        raise ConfigError("checkpoint_dir",
                          "a directory without checkpoints, or resume=True to continue from "
                          f"{newest.name}", os.fspath(directory))
    ckpt = load_checkpoint(newest)
    where = f"as in checkpoint {newest}"
    if _architecture(ckpt.model.config()) != _architecture(model.config()):
        raise ConfigError("model", f"the architecture {_describe(ckpt.model)} {where}",
                          _describe(model))
    for name in RESUME_FIELDS:
        if ckpt.config.get(name) != config[name]:
            raise ConfigError(name, f"{ckpt.config.get(name)!r} {where}", config[name])
    if ckpt.step > total:
        raise ConfigError("steps", f"at least the {ckpt.step} steps done {where}", total)
    return ckpt


def _describe(model: Sequential) -> str:
    layers = ", ".join(repr(layer) for layer in model.layers)
    return f"[{layers}] on input {model.input_shape} in {model.dtype}"


def _resume_states(
    ckpt: Checkpoint, model: Sequential, optimizer: Any, strategy: Strategy
) -> list[StageState]:
    """The stage states a checkpoint stands for, as the graph's outputs at its step were."""
    losses = tuple(float(v) for v in ckpt.losses)
    if isinstance(strategy, ModelAveraging):
        if len(ckpt.replicas) != strategy.replicas:
            raise ConfigError("strategy", f"{len(ckpt.replicas)} replicas, as in checkpoint "
                              f"{ckpt.path}", strategy.replicas)
        average = StageState(ckpt.model.params, ckpt.replicas[0].opt_state, losses)
        return [average, *ckpt.replicas]
    bounds = stage_bounds(model.layer_flops(), strategy)
    states = initial_states(ckpt.model, optimizer, bounds, ckpt.opt_state)
    states[-1] = states[-1]._replace(losses=losses)  # the last stage keeps the losses
    return states


def _chunk_end(lo: int, chunk: int, every: int | None, total: int) -> int:
    """Where the chunk from step ``lo`` ends: after ``chunk`` steps, at the next multiple of
    ``every`` or at ``total``, whichever comes first.

    >>> [_chunk_end(lo, 4, 3, 10) for lo in (0, 3, 6, 9)]
    [3, 6, 9, 10]
    """
    end = min(lo + chunk, total)
    return end if every is None else min(end, (lo // every + 1) * every)


def _write_checkpoint(
    directory: str | os.PathLike[str], states: list[Any], model: Sequential,
    strategy: Strategy, prepared: Prepared, *, step: int, seed: int, shuffle: bool,
    config: dict[str, Any], averaged: bool,
) -> None:
    """Save the host ``states`` (a chunk's outputs) at ``step``.

    Model averaging between two averages: the graph's first output is the last average, so the
    checkpoint's model is the average the run would return had it stopped here (computed on
    the host by the graph's own kernel, weighted as the graph weights a final average), and
    the replicas' states go with it; resuming starts from the replicas, which is what the
    uninterrupted run does at that step.
    """
    averaging = isinstance(strategy, ModelAveraging)
    result = finalize(states, model.skeleton(), averaging)
    params, losses = result.params, result.losses
    replicas: tuple[StageState, ...] = ()
    if isinstance(strategy, ModelAveraging):
        replicas = tuple(StageState(*s) for s in result.states[1:])
        if not averaged and step % strategy.local_steps != 0:
            last = batch_indices(prepared.n_samples, prepared.batch_size, seed, step - 1,
                                 shuffle=shuffle)
            shares = tuple(n / len(last) for n in strategy.split(len(last)))
            mean = kernels.average("numpy", shares, *replicas)
            params, losses = mean.params, np.asarray(mean.losses, dtype=float)
    trained = model.skeleton()
    trained.params = params
    save_checkpoint(directory, model=trained, opt_state=result.opt_state, step=step, seed=seed,
                    losses=losses, config=config, replicas=replicas)
