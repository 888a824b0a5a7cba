"""``fit``: a long run computed in chunks of steps, so each graph stays small.

``fit`` is the pipeline of :mod:`pnngraph.run.pipeline` in a loop: one
:class:`~pnngraph.run.collection.TrainingGraph` of at most ``chunk_steps`` steps per chunk, each
starting from the states the one before ended with, and a :class:`ChunkRun` to compute it. With a
client, the states stay on the workers as futures between chunks (the client holds references,
never the arrays; a checkpoint or a hook gets a gathered copy besides); without one, each chunk
runs on Dask's threaded scheduler. Either way the result is bitwise-identical to one graph of
all the steps::

    chunk 0: steps [0, c)      -> futures of the states
    chunk 1: steps [c, 2c)     <- starts from those futures
    ...                        -> gathered once at the end -> TrainingResult

Each chunk is submitted before the one before it ends, so the cluster never waits for the client
between chunks; it starts from the previous chunk's futures, and a state lost with a worker is
recomputed from its lineage (back to the first chunk's initial state, which travels inside that
graph). Every ~2000 tasks (:class:`_Lineage`) a chunk's states come back and the next chunk
starts from them instead: the lineage, and what the scheduler keeps of it, stays bounded. What
Dask cannot recompute (a lost scheduler) stops the run with a
:class:`~pnngraph.exceptions.ClusterLostError` naming the newest checkpoint.
With ``checkpoint_dir``, chunk ends fall on every ``checkpoint_every`` steps; there the
states are gathered and written (:class:`~pnngraph.run.checkpoint.CheckpointPolicy`) by a
background thread, in order, while the next chunk runs. ``resume=True`` continues from the newest
checkpoint and ends with the same bits as a run that was never stopped. With ``validation_data``
or ``callbacks``, chunk ends also fall on every epoch end, where the state comes back to the
client for :class:`~pnngraph.run.callbacks.Epochs` (validation, the epoch's record, the
callbacks, which may stop the run there); every run returns its per-epoch ``history``.

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

import math
import os
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dask.threaded
import numpy as np

from pnngraph.compile.graph import Copies
from pnngraph.compile.strategies import Strategy
from pnngraph.exceptions import (
    ClusterLostError,
    ConfigError,
    PnngraphError,
    check_int,
    check_number,
)
from pnngraph.nn.losses import Loss
from pnngraph.nn.model import Sequential
from pnngraph.nn.optimizers import Optimizer
from pnngraph.nn.train import TrainingResult, batch_samples
from pnngraph.plan.cluster import ClusterModel
from pnngraph.plan.placement import PlacementOptions
from pnngraph.run import dashboard, history
from pnngraph.run.adapt import DEFAULT_THRESHOLD, Adapter, check_threshold, shard_sizes
from pnngraph.run.callbacks import (
    Callback,
    Epochs,
    check_callbacks,
    check_validation,
    logged_metrics,
)
from pnngraph.run.checkpoint import CheckpointPolicy, data_fingerprint, latest_checkpoint
from pnngraph.run.collection import (
    PlacementWarning,
    TrainingGraph,
    finalize,
    loss_state,
    losses_of,
)
from pnngraph.run.pipeline import chunk_graph, initial_states, prepare_inputs, start_run
from pnngraph.run.session import live_workers

MAX_CHUNK_STEPS = 1000  # a chunk is one epoch by default, at most this many steps
BLOCKS_MEMORY_FRACTION = 0.25  # of a worker's memory limit: a default chunk's dask-array blocks


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
    window: int = 2,
    chunk_steps: int | None = None,
    chunk_seconds: float | None = None,
    fan_in: int | str = 8,
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
    adapt: bool = False,
    adapt_threshold: float = DEFAULT_THRESHOLD,
    validation_data: Any = None,
    callbacks: Sequence[Callback] | None = None,
    **optimizer_options: Any,
) -> TrainingResult:
    """Train like :func:`pnngraph.build` (same options), computing ``chunk_steps`` steps per
    graph. A cluster model measured for the first chunk serves every chunk, and so does the
    window its plan scheduled while the costs stay (:mod:`pnngraph.plan.periodic`): a later
    chunk only tiles it.

    ``chunk_steps`` defaults to one epoch (at most 1000 steps; for a dask array X on workers
    with memory limits, at most the steps whose blocks fit in a quarter of the smallest limit).
    ``chunk_seconds`` shortens chunks to about that many seconds each (by the first chunk's
    plan, then by the measured time per step), so that what watches the chunks (the display,
    ``on_chunk``) moves at least that often; chunk ends change nothing in the results. With
    ``progress``, standard error shows on a terminal one line that moves as steps finish
    (steps, epoch, the loss of the newest chunk, samples per second; ``chunk_seconds``
    defaults to 1 then), elsewhere one line per epoch with the epoch's mean loss and samples
    per second. ``TrainingResult.step_seconds`` holds each chunk's wall time spread over its
    steps (zero for steps done before a resume).
    ``optimizer_options`` are the optimizer's (``lr``, ``momentum``, ...): any other keyword
    is a ``TypeError`` (:class:`~pnngraph.exceptions.OptionError`) naming ``fit``.

    Epochs: ``TrainingResult.history`` (a :class:`~pnngraph.nn.train.History`) holds one
    record per epoch: the mean of its step losses, its time and throughput, and with
    ``validation_data=(X_val, y_val)`` the loss (``val_loss``) and, for cross-entropy, the
    accuracy (``val_accuracy``) of the model at the end of the epoch, computed on the client.
    ``callbacks`` (:class:`~pnngraph.run.callbacks.Callback`: ``EarlyStopping``,
    ``BestCheckpoint``, your own) see each epoch's metrics; one that sets ``stop_training``
    ends the run there, and the result covers the steps run. With validation data or
    callbacks every epoch end is a chunk end where the state comes back to the client.

    Checkpoints: with ``checkpoint_dir``, a checkpoint is written every ``checkpoint_every``
    steps (a positive integer; by default at the end of every chunk; chunks are cut so that
    they end there) and after the last step (of a run stopped early too); the newest three are
    kept. A run without ``resume`` refuses a directory that already holds checkpoints.
    ``resume=True`` continues from the newest one that loads (a damaged newer one is passed
    over with a :class:`~pnngraph.run.checkpoint.SkippedCheckpointWarning`; temporary files of
    writes killed midway are removed), or starts afresh when there is none: its
    parameters, optimizer state, step, losses and history; the total steps come from
    ``steps``/``epochs`` as usual. The checkpoint must come from the same run: a different
    architecture, or a spec that differs in strategy, batch size, optimizer, loss, seed,
    shuffle, ``fan_in``, number of samples or data, raises :class:`ConfigError` naming them.
    Model averaging checkpoints may fall mid-period: they hold every replica's state besides
    the average at that step. (Callbacks keep their own state: a resumed run starts them
    afresh.)

    Hooks: ``on_graph(graph)`` gets each chunk's placed graph before it runs; ``on_steps(n)``
    is called as steps finish (per step on a client, else per chunk); ``on_chunk(report)``
    after each chunk with a :class:`ChunkReport` (the result so far, the chunk's graph with its
    plan, its task stream on a client), which gathers the state at every chunk end. With
    ``learn`` (and a cost-model plan) each chunk's measured task durations refine the cluster
    model that prices the next chunk (:func:`pnngraph.run.history.learn`).

    Adaptive runs: with ``adapt`` (a client and a cluster-model plan), every chunk is planned
    from the live cluster (:mod:`pnngraph.run.adapt`): a worker that joined gets work from the
    next chunk built, one that left is dropped (the chunk in flight is recomputed by Dask), the
    model learns each chunk's task times per kernel and worker, and a worker more than
    ``adapt_threshold`` (a fraction, 0.25) off its prediction re-sizes the shards of a
    data-parallel run (``DataParallel("auto")``: one per worker; ``DataParallel(S)``: S shards
    re-weighted) and re-places every strategy's tasks; so does a re-size of the shards that
    the refined model predicts to save more than ``adapt_threshold`` of a step, where no
    worker drifted. Each change is a line on the ``pnngraph`` logger.
    ``TrainingResult.shards`` holds every chunk's samples per worker.
    """
    options = PlacementOptions(scheduler, devices)
    inputs = prepare_inputs(
        model, data, strategy=strategy, steps=steps, epochs=epochs, batch_size=batch_size,
        optimizer=optimizer, loss=loss, seed=seed, shuffle=shuffle, window=window, fan_in=fan_in,
        fuse_steps=fuse_steps, caller="fit", **optimizer_options,
    )
    spec = inputs.spec
    asked = spec.strategy  # before a checkpoint's: what an adaptive run sizes again
    adapter = _adapter(adapt, adapt_threshold, client, asked)
    validation = check_validation(model, spec, validation_data)
    hooks = check_callbacks(callbacks, logged_metrics(spec, validation is not None))
    chunk = check_int("chunk_steps", min(spec.steps_per_epoch, MAX_CHUNK_STEPS)
                      if chunk_steps is None else chunk_steps)
    display = _Display(progress, spec, on_steps)
    if chunk_seconds is None and display.tty:
        chunk_seconds = 1.0
    pace = _Pace(chunk, chunk_seconds)
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    policy = CheckpointPolicy(folder, checkpoint_every, resume,
                              None if folder is None else data_fingerprint(inputs.X, inputs.y))
    ckpt = policy.resume_point(model, spec, adapter is not None)
    if ckpt is not None:  # an "auto" run goes on with the strategy it chose
        spec = ckpt.spec_for(spec, adapter is not None)
        inputs = replace(inputs, spec=spec)
    run = start_run(inputs, client=client, cluster=cluster, options=options)
    if adapter is not None and run.cluster is None:
        raise ConfigError("adapt", "a run planned from a cluster model (a list scheduler such "
                          "as 'heft', or DataParallel('auto'))", run.options.scheduler)
    if chunk_steps is None:
        pace.limit = min(pace.limit, _blocks_chunk(inputs, run))
    start = 0 if ckpt is None else ckpt.step
    states: list[Any] = (
        initial_states(model, run.spec) if ckpt is None else initial_states(
            ckpt.model, run.spec, ckpt.opt_state, ckpt.replicas, ckpt.losses)
    )
    epochs_ = Epochs(spec, hooks, validation, start, None if ckpt is None else ckpt.history,
                     None if ckpt is None else ckpt.losses)
    watch = on_chunk is not None or ((learn or adapter is not None) and run.cluster is not None)
    if client is not None and watch:
        client.get_task_stream(count=0)  # the scheduler records from now on
    # the threaded scheduler computes a chunk as it is made: with callbacks that may stop the
    # run, the chunk before is finished first, so no chunk runs after a stop
    overlap = client is not None or not hooks
    epochs_.begin()
    page = dashboard.feed(client, model, run.spec, start)  # the dashboard's pnngraph page
    wanted = _LossWatch(display, page, start)
    tick = display.tick if display.counts else None
    with display, ThreadPoolExecutor(1, thread_name_prefix="pnngraph-checkpoint") as writer:
        loop = _Loop(run, model, np.zeros(spec.steps), policy, on_chunk, learn, watch, tick,
                     writer, epochs_, display, pace, page, adapter)
        pending: ChunkRun | None = None
        last: ChunkRun | None = None
        cut = spec.steps_per_epoch if epochs_.live or display.shown else None
        lineage = _Lineage(client is not None)
        lo = start
        try:
            while lo < spec.steps:
                if pending is not None and not overlap:
                    last, pending = pending, None
                    if loop.finish(last):
                        break
                hi = chunk_end(lo, spec.steps, pace.steps(), policy.every, cut)
                graph = chunk_graph(loop.run, lo, hi - lo, states)
                if pace.too_long(graph, hi - lo):  # the first chunk's plan: fewer steps
                    hi = chunk_end(lo, spec.steps, pace.steps(), policy.every, cut)
                    graph = chunk_graph(loop.run, lo, hi - lo, states)
                loop.run = replace(loop.run, cluster=graph.cluster)  # with the kernel times
                loop.shards.append({"steps": [lo, hi],
                                    "sizes": shard_sizes(graph, spec.batch_size)})
                if on_graph is not None:
                    on_graph(graph)
                if pending is not None and pending.rebase:  # start from its host states
                    last, pending = pending, None
                    if loop.finish(last):
                        break
                    graph = graph.rebased(last.states)
                rebase = lineage.ends(graph, hi - lo, loop.per_step) and hi < spec.steps
                host = (rebase or hi >= spec.steps or policy.due(hi, spec.steps)
                        or on_chunk is not None
                        or (epochs_.live and epochs_.is_end(hi, spec.steps)))
                # the next chunk is submitted before this one ends: no gap between them
                with warnings.catch_warnings():
                    if adapter is not None:  # workers come and go: pins to a gone one drop
                        warnings.simplefilter("ignore", PlacementWarning)
                    current = ChunkRun(client, graph, lo, hi, host=host, on_steps=tick,
                                       losses_from=wanted.since(hi), rebase=rebase)
                page.chunk(graph, lo, hi)
                states = current.carry
                if pending is not None:
                    last = pending
                    if loop.finish(last):
                        current.cancel()
                        pending = None
                        break
                pending = current
                lo = hi
            if pending is not None:
                last = pending
                loop.finish(last)
        except Exception as err:
            lost = _lost(err, client)
            if lost is None:
                raise
            raise _stopped(lost, pending or last, lo, loop, policy) from err
        for write in loop.writes:
            write.result()  # a failed write fails the run
        page.close()
    end = spec.steps if last is None else last.hi
    result = finalize(states if last is None else last.states, model, loop.run.spec.strategy)
    result.step_seconds = loop.seconds[:end]
    result.shards = [c for c in loop.shards if c["steps"][1] <= end]
    result.history = epochs_.history(result.losses, loop.seconds, end, end)
    epochs_.end(result)
    return result


class _Loop:
    """What ``fit`` does as each submitted chunk ends: wait for it, record its time (since the
    previous chunk ended), learn from its task stream, end its epoch, write its checkpoint,
    tell ``on_chunk``. ``run`` is the run as it stands (its cluster model refined)."""

    def __init__(self, run: Any, model: Sequential, seconds: np.ndarray,
                 policy: CheckpointPolicy, on_chunk: Any, learn: bool, watch: bool,
                 tick: Callable[[int], Any] | None, writer: ThreadPoolExecutor,
                 epochs: Epochs, display: _Display, pace: _Pace, page: Any,
                 adapter: Adapter | None = None) -> None:
        self.run, self.model, self.seconds, self.policy = run, model, seconds, policy
        self.on_chunk, self.learn, self.watch, self.tick = on_chunk, learn, watch, tick
        self.writer, self.epochs, self.display, self.pace = writer, epochs, display, pace
        self.page, self.adapter = page, adapter
        self.shards: list[dict[str, Any]] = []  # each chunk's samples per worker
        self.writes: list[Future[Any]] = []  # checkpoints are written off the critical path
        self.clock = time.perf_counter()
        self.per_step = 0.0  # seconds per step of the newest chunk

    def finish(self, chunk: ChunkRun) -> bool:
        """Wait for ``chunk`` and do what its end asks; whether a callback stops the run."""
        stream = chunk.collect(self.tick, self.watch)
        now = time.perf_counter()
        # on a cluster, since the chunk before ended (they overlap); else its own compute time
        elapsed = now - self.clock if chunk.client is not None else chunk.seconds
        per_step = elapsed / (chunk.hi - chunk.lo)
        self.seconds[chunk.lo : chunk.hi] = per_step
        self.per_step = per_step
        self.clock = now
        self.pace.measured(per_step)
        self.display.chunk_done(chunk.lo, chunk.hi, chunk.losses, elapsed)
        if chunk.losses is not None and chunk.losses_from is not None:
            self.page.losses(chunk.losses_from, chunk.losses)
        run = self.run
        if self.adapter is not None and run.cluster is not None:  # it learns, and re-plans
            run = self.run = self.adapter.after(run, chunk, stream)
        elif self.learn and run.cluster is not None and stream:
            run = self.run = replace(run, cluster=history.learn(run.cluster, chunk.graph, stream))
        total = len(self.seconds)
        epoch_end = self.epochs.live and self.epochs.is_end(chunk.hi, total)
        due = self.policy.due(chunk.hi, total)
        stop = False
        if self.on_chunk is not None or due or epoch_end:
            so_far = finalize(chunk.states, self.model, run.spec.strategy)
            so_far.step_seconds = self.seconds[: chunk.hi]
            if epoch_end:
                stop = self.epochs.end_epoch(so_far, self.seconds, chunk.hi)
            so_far.history = self.epochs.history(so_far.losses, self.seconds, chunk.hi,
                                                 chunk.hi if stop else total)
            if due or (stop and self.policy.directory is not None):
                self.writes.append(self.writer.submit(self.policy.save, so_far, run.spec,
                                                      chunk.hi))
            if self.on_chunk is not None:
                so_far.shards = [c for c in self.shards if c["steps"][1] <= chunk.hi]
                self.on_chunk(ChunkReport(chunk.hi, so_far, chunk.graph, stream, run.cluster))
        return stop


@dataclass(frozen=True)
class ChunkReport:
    """What ``fit`` tells ``on_chunk`` after each chunk: the step reached, the result so far
    (model averaging: the average at that step), the chunk's graph (``graph.plan`` is its
    plan), its task stream records (empty without a client) and the cluster model in use."""

    step: int
    result: TrainingResult
    graph: Any
    stream: list[dict[str, Any]] = field(default_factory=list)
    cluster: ClusterModel | None = None


def _adapter(adapt: Any, threshold: Any, client: Any, asked: Any) -> Adapter | None:
    """The :class:`~pnngraph.run.adapt.Adapter` of an adaptive run (``None``: not one)."""
    if not isinstance(adapt, bool):
        raise ConfigError("adapt", "True or False", adapt)
    check_threshold(threshold)
    if not adapt:
        return None
    if client is None:
        raise ConfigError("adapt", "a client (adaptive runs re-plan from the live cluster)",
                          None)
    return Adapter(asked, threshold)


def chunk_bounds(
    start: int, total: int, chunk: int, every: int | None, epoch: int | None = None
) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` of each chunk from step ``start`` to ``total``: ``chunk`` steps, cut at every
    multiple of ``every`` (checkpoints) and of ``epoch`` (epoch ends, where validation and
    callbacks run).

    >>> list(chunk_bounds(0, 10, 4, 3))
    [(0, 3), (3, 6), (6, 9), (9, 10)]
    >>> list(chunk_bounds(0, 10, 4, None, epoch=5))
    [(0, 4), (4, 5), (5, 9), (9, 10)]
    """
    lo = start
    while lo < total:
        hi = chunk_end(lo, total, chunk, every, epoch)
        yield lo, hi
        lo = hi


def chunk_end(lo: int, total: int, chunk: int, every: int | None, epoch: int | None) -> int:
    """Where a chunk from step ``lo`` ends (:func:`chunk_bounds`)."""
    hi = min(lo + chunk, total)
    for cut in (every, epoch):
        if cut is not None:
            hi = min(hi, (lo // cut + 1) * cut)
    return hi


class ChunkRun:
    """The chunk runner: a chunk's graph submitted to the cluster (or, without a client,
    computed) when it is made. ``carry`` is what the next chunk starts from (futures of every
    copy of its states, at once), ``states`` its output states once :meth:`collect` returned
    (host values where ``host``)."""

    def __init__(self, client: Any, graph: TrainingGraph, lo: int, hi: int, *, host: bool,
                 on_steps: Callable[[int], Any] | None, losses_from: int | None = None,
                 rebase: bool = False) -> None:
        self.client, self.graph, self.lo, self.hi, self.host = client, graph, lo, hi, host
        self.rebase = rebase  # the next chunk starts from this one's host states
        self.losses_from = losses_from
        self.losses: np.ndarray | None = None  # the losses from step losses_from, where asked
        self.loss_future: Any = None
        self.started = time.time()
        keys = list(graph.__dask_keys__())
        self.marks = graph.progress_marks() if on_steps is not None else {}
        if client is None:  # the threaded scheduler ignores placement; host states go on
            self.states = list(dask.threaded.get(graph.__dask_graph__(), keys))
            self.seconds = time.time() - self.started  # computed here, before collect
            self.carry: list[Any] = self.states
            self.trackers: list[Any] = []
            return
        others = [k for keys_ in graph.carry for k in keys_[1:]]  # the other copies of a state
        tracked = [k for k in self.marks if k not in keys]  # outputs are counted when done
        futures = client.get(graph.__dask_graph__(), keys + others + tracked, sync=False)
        self.futures = futures
        self.outputs = futures[: len(keys)]
        copies = dict(zip(others, futures[len(keys) : len(keys) + len(others)], strict=True))
        self.trackers = futures[len(keys) + len(others) :]
        self.carry = [out if len(keys_) == 1 else Copies((out, *(copies[k] for k in keys_[1:])))
                      for out, keys_ in zip(self.outputs, graph.carry, strict=True)]
        self.states = self.carry
        if losses_from is not None and not host:  # a tiny task: only the losses travel
            self.loss_future = client.submit(losses_of, loss_state(graph.strategy, self.carry),
                                             losses_from, pure=False,
                                             key=f"losses-{uuid.uuid4().hex}")

    def cancel(self) -> None:
        """Stop the chunk (a run that stopped early): its tasks are cancelled on the cluster;
        the states it started from stay."""
        if self.client is not None:
            self.client.cancel(self.futures)

    def collect(self, on_steps: Callable[[int], Any] | None, watch: bool) -> list[dict[str, Any]]:
        """Wait for the chunk (telling ``on_steps`` of finished steps); its task stream records
        when ``watch``."""
        if self.client is None:
            if on_steps is not None:
                on_steps(sum(self.marks.values()))
            self._losses()
            return []
        from distributed import as_completed, wait

        for future in as_completed(self.trackers):
            if on_steps is not None:
                on_steps(self.marks[future.key])
            future.release()  # only a reference: the state stays where the next step needs it
        if self.host:
            self.states = list(self.client.gather(self.outputs, errors="raise"))
        else:
            wait(self.outputs)
            for f in self.outputs:
                if f.status == "error":
                    f.result()  # raises the task's exception here
        if on_steps is not None:
            on_steps(sum(self.marks.get(k, 0) for k in self.graph.__dask_keys__()))
        self._losses()
        if not watch:
            return []
        token = self.graph.token
        return [r for r in self.client.get_task_stream(start=self.started)
                if token in str(r.get("key"))]


    def _losses(self) -> None:
        if self.losses_from is None:
            return
        if self.loss_future is not None:
            self.losses = np.asarray(self.loss_future.result(), dtype=float)
            self.loss_future.release()
        else:  # host states
            state = loss_state(self.graph.strategy, self.states)
            self.losses = np.asarray(losses_of(state, self.losses_from), dtype=float)


class _LossWatch:
    """Which chunks bring the run's losses back to the client, each those since the one
    before: every chunk for a display on a terminal, each epoch's last for the epoch lines
    elsewhere, one a second (and the last) for the dashboard page."""

    def __init__(self, display: _Display, page: Any, start: int) -> None:
        self.display, self.page, self.known = display, page, start
        self.asked = -math.inf

    def since(self, hi: int) -> int | None:
        """The step from which a chunk ending at ``hi`` brings the losses (``None``: it does
        not)."""
        spec, now = self.display.spec, time.monotonic()
        last = hi >= spec.steps
        due = self.display.tty or (self.display.shown and (hi % spec.steps_per_epoch == 0
                                                           or last))
        due = due or (self.page.live and (last or now - self.asked >= dashboard.INTERVAL))
        if not due:
            return None
        self.asked = now
        since, self.known = self.known, hi
        return since


class _Lineage:
    """When a chunk ends the chain of chunks the next one depends on (with a client): once
    the chain since the last such end holds ``TASKS`` tasks or about ``SECONDS`` of work. The
    chunk after it starts from its gathered states (:meth:`TrainingGraph.rebased`), with a
    short gap between the two; the scheduler then forgets the older chunks, so its memory
    stays flat over a long run, and a state lost with a worker is recomputed from at most
    that much work."""

    TASKS = 2000
    SECONDS = 30.0

    def __init__(self, live: bool) -> None:
        self.live = live
        self.tasks, self.steps = 0, 0

    def ends(self, graph: Any, steps: int, per_step: float) -> bool:
        """Whether the chunk of ``graph`` (``steps`` steps) ends the chain (then it restarts)."""
        self.tasks, self.steps = self.tasks + len(graph), self.steps + steps
        if not self.live or (self.tasks < self.TASKS and self.steps * per_step < self.SECONDS):
            return False
        self.tasks, self.steps = 0, 0
        return True


def _lost(err: BaseException, client: Any) -> str | None:
    """What a chunk's failure says the run lost (its scheduler, workers, results), or ``None``
    for a failure of the training itself (a task's own error)."""
    if client is None or isinstance(err, PnngraphError):
        return None
    from concurrent.futures import CancelledError

    from distributed.scheduler import KilledWorker

    if isinstance(err, KilledWorker):
        return f"workers that died running one task (KilledWorker: {_line(err)})"
    if not isinstance(err, CancelledError | OSError):
        return None
    if client.status != "running" or "scheduler-connection-lost" in str(err):
        address = getattr(client.scheduler, "address", None) or "?"
        return f"its scheduler at {address} ({type(err).__name__}: {_line(err)})"
    if isinstance(err, CancelledError):
        return f"results Dask could not recompute ({_line(err)})"
    return None  # a task's own OSError (a file it reads, ...)


def _stopped(lost: str, chunk: ChunkRun | None, lo: int, loop: _Loop,
             policy: CheckpointPolicy) -> ClusterLostError:
    """The error of a run that lost ``lost`` while ``chunk`` ran, once the checkpoints gathered
    before the loss are on disk: it names the newest one."""
    for write in loop.writes:
        write.result()
    newest = None if policy.directory is None else latest_checkpoint(policy.directory)
    return ClusterLostError(lost, steps=(chunk.lo, chunk.hi) if chunk else (lo, lo),
                            checkpoint=newest)


def _line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 160 else text[:157] + "..."


def _blocks_chunk(inputs: Any, run: Any) -> int:
    """The most steps a chunk holds by default where X is a dask array and the workers' memory
    limits are known: the blocks a chunk reads fit in ``BLOCKS_MEMORY_FRACTION`` of the
    smallest limit. Dask runs a graph's reads (root tasks) whenever a worker has a thread free,
    long before the steps that read them, and keeps each block until those steps ran: with the
    whole run in one chunk, a worker could hold far more blocks than it has room for (paused,
    then restarted by its nanny)."""
    X, y, spec = inputs.X, inputs.y, inputs.spec
    if not hasattr(X, "chunks") or run.client is None:
        return MAX_CHUNK_STEPS
    if run.cluster is not None:
        limits = [w.memory_limit_bytes for w in run.cluster.workers]
    else:  # a run Dask places measures nothing: the scheduler's own records
        limits = [w.get("memory_limit") for w in live_workers(run.client).values()]
    known = [float(m) for m in limits if m]
    if not known:
        return MAX_CHUNK_STEPS
    blocks = len(X.chunks[0])
    block_bytes = (X.nbytes + getattr(y, "nbytes", 0)) / blocks
    budget = BLOCKS_MEMORY_FRACTION * min(known) / block_bytes - spec.window  # blocks
    return max(1, int(budget * X.shape[0] / blocks / spec.batch_size))


class _Pace:
    """Chunk sizes for chunks of about ``seconds`` each (``None``: always ``limit`` steps): the
    steps that fit, by the first chunk's plan until a chunk was measured, never more than
    ``limit``."""

    def __init__(self, limit: int, seconds: float | None) -> None:
        if seconds is not None:
            seconds = check_number("chunk_seconds", seconds, "a number of seconds > 0",
                                   lambda s: s > 0)
        self.limit, self.seconds = limit, seconds
        self.per_step: float | None = None

    def steps(self) -> int:
        if self.seconds is None or self.per_step is None:
            return self.limit
        return max(1, min(self.limit, int(self.seconds / max(self.per_step, 1e-9))))

    def too_long(self, graph: Any, steps: int) -> bool:
        """Whether the plan of the first chunk (``steps`` steps) predicts it well over the
        seconds asked for; then :meth:`steps` says how many fit."""
        if self.seconds is None or self.per_step is not None or graph.plan is None:
            return False
        self.per_step = graph.plan.wall_seconds / steps
        return self.steps() < steps

    def measured(self, per_step: float) -> None:
        if self.seconds is not None:
            self.per_step = per_step


class _Display:
    """What ``fit`` shows on standard error with ``progress`` (``shown``), and the chunk
    runner's ``on_steps``: the user's hook besides. On a terminal one line moves as steps
    finish: steps, epoch, the mean loss of the newest chunk, samples per second; elsewhere one
    line per epoch: its mean loss and samples per second."""

    def __init__(self, show: bool, spec: Any, hook: Callable[[int], Any] | None) -> None:
        self.tty = bool(show) and sys.stderr.isatty()
        self.shown = bool(show)
        self.spec, self.hook = spec, hook
        self.counts = self.tty or hook is not None
        self.done = 0
        self.loss = self.rate = math.nan
        self.epoch_losses: list[float] = []
        self.epoch_samples, self.epoch_seconds = 0, 0.0
        self.width = 0  # of the moving line on the terminal (0: none)

    def __enter__(self) -> _Display:
        return self

    def tick(self, n: int) -> None:
        self.done += n
        if self.hook is not None:
            self.hook(n)
        if self.tty:
            self._draw()

    def chunk_done(self, lo: int, hi: int, losses: np.ndarray | None, seconds: float) -> None:
        """A chunk of steps ``[lo, hi)`` ended, ``seconds`` after the one before; ``losses``
        those since the last chunk that brought them (chunks end on epoch ends)."""
        if not self.shown:
            return
        spec = self.spec
        samples = batch_samples(spec.n_samples, spec.batch_size, lo, hi)
        self.rate = samples / seconds if seconds > 0 else math.nan
        if losses is not None and len(losses):
            self.loss = float(np.mean(losses[-(hi - lo):]))
            self.epoch_losses.extend(float(v) for v in losses)
        self.epoch_samples += samples
        self.epoch_seconds += seconds
        per, total = self.spec.steps_per_epoch, self.spec.steps
        if hi % per == 0 or hi == total:  # an epoch's line, which stays
            rate = self.epoch_samples / self.epoch_seconds if self.epoch_seconds else math.nan
            loss = float(np.mean(self.epoch_losses)) if self.epoch_losses else math.nan
            line = (f"epoch {math.ceil(hi / per)}/{math.ceil(total / per)}: mean loss "
                    f"{loss:.4f}, {rate:,.0f} samples/s")
            sys.stderr.write(f"\r{line:<{self.width}}\n" if self.tty else line + "\n")
            sys.stderr.flush()
            self.width = 0
            self.epoch_losses, self.epoch_samples, self.epoch_seconds = [], 0, 0.0
        elif self.tty:
            self._draw()

    def _draw(self) -> None:
        spec = self.spec
        per = spec.steps_per_epoch
        line = (f"training: {self.done}/{spec.steps} steps, epoch "
                f"{max(1, math.ceil(self.done / per))}/{math.ceil(spec.steps / per)}")
        if not math.isnan(self.loss):
            line += f", loss {self.loss:.4f}"
        if not math.isnan(self.rate):
            line += f", {self.rate:,.0f} samples/s"
        sys.stderr.write(f"\r{line:<{self.width}}")
        sys.stderr.flush()
        self.width = len(line)

    def __exit__(self, *exc: Any) -> None:
        if self.tty and self.width:
            sys.stderr.write("\n")
