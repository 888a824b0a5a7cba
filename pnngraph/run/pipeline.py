"""The one pipeline every run goes through, and ``build``, which is one chunk of it.

::

    prepare_inputs(model, data, **options)   validate once: a TrainingSpec and the data
          |                                  (no client, no cluster yet)
    start_run(inputs, client, cluster, ...)  first the checks that need the cluster (the client,
          |                                  its workers and devices; dask data, block by
          |                                  block), then what stays fixed for the whole run: the
          |                                  data given a place on the cluster, the cluster model
          |                                  (measured when the placement needs it), shards
          |                                  sized for it
    chunk_graph(run, start, steps, states)   compile (abstract graph) -> place (Placement) ->
                                             a TrainingGraph, lowered when Dask asks for it

``build`` is ``chunk_graph`` of all the steps; :func:`pnngraph.fit` loops over chunks, each
starting from the states the previous one ended with.

>>> import numpy as np, dask
>>> from pnngraph.nn import Dense, Sequential
>>> from pnngraph.compile.strategies import DataParallel
>>> X = np.random.default_rng(0).standard_normal((64, 3)); y = (X[:, 0] > 0).astype(int)
>>> model = Sequential([Dense(3, 2)], input_shape=(3,))
>>> graph = build(model, (X, y), strategy=DataParallel(2), steps=5, batch_size=16, lr=0.1)
>>> result, = dask.compute(graph, scheduler="sync")
>>> result.losses.shape
(5,)
"""

from __future__ import annotations

import math
import uuid
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import dask
import numpy as np
from dask.base import tokenize
from dask.task_spec import TaskRef

from pnngraph.compile.cost import stage_costs
from pnngraph.compile.graph import Blocks, Copies, Source, compile_training
from pnngraph.compile.kernels import StageState
from pnngraph.compile.spec import TrainingSpec, prepare
from pnngraph.compile.strategies import DataParallel, Strategy
from pnngraph.exceptions import ConfigError, DataError
from pnngraph.nn.layers import Layer
from pnngraph.nn.losses import Loss, check_finite, get_loss
from pnngraph.nn.model import Sequential
from pnngraph.nn.optimizers import Optimizer, State, split_state
from pnngraph.plan.cluster import ClusterModel
from pnngraph.plan.memory import LazyPeaks, usable_bytes
from pnngraph.plan.placement import (
    PlacementOptions,
    needs_cluster_model,
    place,
    size_shards,
)
from pnngraph.plan.planner import check_devices
from pnngraph.run import auto
from pnngraph.run.calibrate import calibrate, remember
from pnngraph.run.collection import TrainingGraph
from pnngraph.run.profile import profile


@dataclass(frozen=True)
class Inputs:
    """A run's validated inputs: the model, its spec, and the data as given (host arrays,
    checked, or dask arrays, checked by shape; their values are checked by :func:`start_run`,
    where the blocks are)."""

    model: Sequential
    spec: TrainingSpec
    X: Any
    y: Any


@dataclass(frozen=True)
class Run:
    """What stays fixed for a whole run: the model, the spec (its strategy concrete), where the
    data is, how to place, the cluster model, the worker of each sized shard, the client and
    the futures the run keeps alive."""

    model: Sequential
    spec: TrainingSpec
    data: tuple[Source | Blocks, Source | Blocks]
    options: PlacementOptions
    cluster: ClusterModel | None = None
    shard_workers: tuple[str, ...] | None = None
    client: Any = None
    keep: tuple[Any, ...] = ()
    copies: int = 1
    alternatives: tuple[tuple[str, float], ...] = ()
    fan_ins: tuple[tuple[int, float], ...] = ()
    measured: bool = False  # the cluster model was calibrated here: kernel times are cached


def prepare_inputs(model: Sequential, data: Any, **options: Any) -> Inputs:
    """Validate ``model``, ``data`` and the spec ``options`` (those of
    :func:`pnngraph.compile.spec.prepare`) at the boundary."""
    X, y = _split_data(data)
    if _is_dask_array(X) or _is_dask_array(y):
        X_meta, y_meta = _dask_metadata(X, y)
        if y_meta.ndim > _output_ndim(model, X_meta) and get_loss(
                options.get("loss", "cross_entropy")).name == "cross_entropy":
            # one-hot rows (one axis more than labels) are checked on the host only
            raise DataError("y", "expected class labels as a dask array (one-hot rows only as "
                                 f"numpy; try y.argmax(axis=1)), got shape {y.shape}")
        rows = tuple(int(n) for n in X.chunks[0])
        spec, _, _ = prepare(model, X_meta, y_meta, n_samples=int(X.shape[0]), block_rows=rows,
                             **options)
        return Inputs(model, spec, X, y)
    spec, X_arr, y_arr = prepare(model, X, y, **options)
    return Inputs(model, spec, X_arr, y_arr)


def start_run(
    inputs: Inputs, *, client: Any = None, cluster: ClusterModel | None = None,
    options: PlacementOptions | None = None,
) -> Run:
    """Fix what a run keeps, once the cluster and the dask data passed their checks
    (:func:`check_cluster`, :func:`check_dask_data`): the placement options resolved, the
    cluster model (measured on ``client`` when the placement needs one and none is given), the
    data given a place (two tasks on the cluster with a client, else inside the graph), the
    strategy (chosen among the candidates with ``"auto"``), its shards and copies
    (:func:`fix`), and more micro-batches, stages or shards where its plan would not fit in
    the workers' memory (:func:`pnngraph.run.auto.fit_in_memory`)."""
    model, spec = inputs.model, inputs.spec
    options = (options or PlacementOptions()).resolved(planned=client is not None or
                                                       cluster is not None)
    check_cluster(client, cluster, options)
    check_dask_data(inputs, client)
    measured = cluster is None and client is not None and needs_cluster_model(options,
                                                                              spec.strategy)
    if measured:
        cluster = calibrate(client)
    data, keep = _place_data(inputs, client)
    run = Run(model, spec, data, options, cluster, None, client, keep, measured=measured)
    if not spec.strategy.chooses:
        run = auto.fit_in_memory(fix(run, spec.strategy), fix, chunk_graph, initial_states)
    elif cluster is None:  # strategy="auto" with nothing to plan for: one shard, the serial loop
        run = replace(run, spec=replace(spec, strategy=DataParallel(1)))
    else:
        run = auto.choose(run, fix, chunk_graph, initial_states)
    return auto.choose_fan_in(run, chunk_graph, initial_states)


def check_cluster(client: Any, cluster: ClusterModel | None, options: PlacementOptions) -> None:
    """Refuse, before any work on it, a cluster the run cannot use: a client that is not
    running, a cluster without workers, ``devices="gpu"`` without GPU workers (or with nothing
    to place on, or with the "dask" scheduler, which pins nothing, so every task would compute
    with numpy), ``devices="cpu"`` where every worker has a GPU."""
    gpus: list[bool] | None = None
    if client is not None:
        from pnngraph.run.session import live_workers

        status = getattr(client, "status", "running")
        if status != "running":
            raise ConfigError("client", "a running Client", f"a {status} one")
        workers = live_workers(client)
        if not workers:
            raise ConfigError("client", "a cluster with at least one running worker",
                              f"no workers at {client.scheduler.address}")
        gpus = ["GPU" in (w.get("resources") or {}) for w in workers.values()]
    if cluster is not None:
        gpus = [w.gpu for w in cluster.workers]
    check_devices(options.devices, gpus)
    if options.devices == "gpu" and options.scheduler == "dask":
        raise ConfigError("scheduler", "one that pins tasks to workers for devices='gpu'",
                          options.scheduler)


def check_dask_data(inputs: Inputs, client: Any) -> None:
    """Check the values of dask arrays X and y as :func:`prepare_inputs` checks host arrays,
    block by block where the blocks are: one small task per block, computed at once (on the
    workers with ``client``, else where Dask computes by default), before any other work on
    the cluster. The run reads the data once more for this. A bad block raises the message of
    the host check (sample indices counted in the whole array) naming the block and its rows;
    the first bad block in order is the one named."""
    X, y = inputs.X, inputs.y
    if not _is_dask_array(X):
        return
    checks = [*_block_checks(X, "X", partial(_check_values, inputs.model.layers[0])),
              *_block_checks(y, "y", partial(_check_targets, inputs.spec.loss,
                                            inputs.model.output_shape))]
    found = client.compute(checks, sync=True) if client is not None else dask.compute(*checks)
    for problem in found:
        if problem is not None:
            raise DataError(*problem)


def _block_checks(a: Any, what: str, check: Callable[..., Any]) -> list[Any]:
    """One delayed :func:`_block_problem` per block of dask array ``a``, keyed
    ``("check-X-<token>", *block index)`` (grouped as ``check-X`` on the dashboard)."""
    starts = np.cumsum((0, *a.chunks[0]))
    blocks = a.to_delayed()
    one_row = all(n == 1 for n in blocks.shape[1:])  # blocks cut along the samples only
    name = f"check-{what}-{tokenize(a, check)}"
    out = []
    for index in np.ndindex(blocks.shape):
        lo, hi = int(starts[index[0]]), int(starts[index[0] + 1])
        block = index[0] if one_row else index
        out.append(dask.delayed(_block_problem)(
            check, blocks[index], what, lo, f"in block {block} (rows {lo}:{hi})",
            dask_key_name=(name, *index)))
    return out


def _block_problem(check: Callable[..., Any], block: Any, what: str, first: int,
                   where: str) -> tuple[str, str] | None:
    """``None`` when ``check(block, what, first)`` passes, else the DataError's ``(what,
    problem)`` with ``where`` added (a value, not a raise: the caller names the first bad
    block in order, whichever task finished first)."""
    try:
        check(np.asarray(block), what, first)
    except DataError as err:
        return err.what, f"{err.problem}, {where}"
    return None


def _check_values(layer: Layer, X: np.ndarray, what: str, first: int) -> None:
    check_finite(X, what, first)
    layer.check_input(X, what, first)


def _check_targets(loss: Loss, output_shape: tuple[int, ...], y: np.ndarray, what: str,
                   first: int) -> None:
    loss.check_targets(y, output_shape, first)


def fix(run: Run, strategy: Strategy) -> Run:
    """``run`` with ``strategy`` as its own: shards sized to the workers where asked
    (``DataParallel("auto")``), the state kept in one copy per worker the shards use."""
    if strategy.auto:
        run = _profiled(run)
    concrete, shard_workers = size_shards(strategy, run.cluster, run.model, run.spec,
                                          devices=run.options.devices)
    return replace(run, spec=replace(run.spec, strategy=concrete), shard_workers=shard_workers,
                   copies=_copies(concrete, run.options, run.cluster, run.client))


def _profiled(run: Run) -> Run:
    """``run`` with the kernels of an equal data-parallel step measured on every worker
    that lacks them, where it has a client to measure on (the shard sizing reads them)."""
    if run.client is None or run.cluster is None or run.options.scheduler == "dask":
        return run
    workers = run.cluster.usable(run.options.devices)
    costs = stage_costs(run.model, [(0, len(run.model.layers))], run.spec.optimizer,
                        run.spec.loss)
    sigs = (costs.grad(0, 1)["sig"], costs.update(0, 1)["sig"])
    if all(run.cluster.kernel_seconds(sig, a, 1, 1) is not None for sig in sigs
           for a in workers):
        return run  # measured already (an earlier chunk of an adaptive run, say)
    equal = DataParallel(min(len(workers), run.spec.batch_size))
    trial = replace(run, spec=replace(run.spec, strategy=equal), shard_workers=None,
                    copies=_copies(equal, run.options, run.cluster, run.client))
    if auto.memory_check(trial, chunk_graph, initial_states) is not None:
        return run  # a kernel too large for a worker would not survive its profile
    graph = chunk_graph(trial, 0, 1, initial_states(run.model, trial.spec))
    return replace(run, cluster=graph.cluster)


def _copies(strategy: Strategy, options: PlacementOptions, cluster: ClusterModel | None,
            client: Any) -> int:
    """How many copies of a data-parallel state to keep: one per worker the shards are placed
    on (at most one per shard), so each worker updates its own copy and no parameters travel;
    one when nothing is pinned (Dask may put every copy on one worker) or there is one worker."""
    if options.scheduler == "dask" or strategy.algorithm != "sgd":
        return 1
    if cluster is not None:
        workers = len(cluster.usable(options.devices))
    elif client is not None:
        from pnngraph.run.session import live_workers

        workers = len(live_workers(client))
    else:
        return 1
    return max(1, min(strategy.layout[0], workers))


def initial_states(
    model: Sequential, spec: TrainingSpec, opt_state: State | None = None,
    replicas: Sequence[StageState] = (), losses: Iterable[float] = (),
) -> list[StageState]:
    """The states a run starts from (its strategy's slots): the model's parameters and a full
    optimizer state (fresh, or the one given to continue a run) cut into stages, the last
    stage holding ``losses``; model averaging adds ``replicas``."""
    bounds = spec.strategy.stage_bounds(model.layer_flops())
    full = spec.optimizer.init(model.params) if opt_state is None else opt_state
    stages = [StageState(model.params[a:z], split_state(full, a, z), (), model.buffers[a:z])
              for a, z in bounds]
    stages[-1] = stages[-1]._replace(losses=tuple(float(v) for v in losses))
    return spec.strategy.slots(stages, replicas)


def chunk_graph(run: Run, start: int, steps: int, states: Sequence[Any]) -> TrainingGraph:
    """The placed TrainingGraph of ``steps`` steps from step ``start``, starting from
    ``states``: host stage states (as :func:`initial_states` or a checkpoint gives them), or
    futures of them (a previous chunk's outputs; :class:`Copies` of futures where a slot's
    state was kept in copies).

    Host states travel inside the graph, even on a cluster: the scheduler then holds them, so
    Dask can recompute any lost result from them after a worker dies. (Scattered states are not
    safe: the Active Memory Manager trims a scattered key no task waits for to one replica, and
    losing that worker loses the root of the whole run's lineage.) The graph names futures by
    their keys only (``TaskRef``): whoever holds the futures (``fit``, ``run.keep``) decides
    how long they live, not the graph, whose networkx structure only the garbage collector
    frees.
    """
    # a future's size is not known here: a whole model's parameters and optimizer state
    nbytes = (1 + run.spec.optimizer.state_arrays) * sum(
        int(a.nbytes) for layer in run.model.params for a in layer.values())

    def source(s: Any) -> Source:
        return Source(s, _state_bytes(s)) if isinstance(s, StageState) else \
            Source(TaskRef(s.key), nbytes, external=True)

    init = [Copies(source(c) for c in s) if isinstance(s, Copies) else source(s) for s in states]
    abstract = compile_training(run.model, run.spec, data=run.data, init=init, start=start,
                                steps=steps, copies=run.copies)
    cluster = run.cluster
    if cluster is not None and run.client is not None and run.options.scheduler != "dask":
        cluster = profile(run.client, cluster, abstract, run.model)
        if run.measured and cluster is not run.cluster:
            remember(run.client, cluster)  # the next run on this cluster knows these kernels
    workers: list[str] = []
    if run.cluster is None and run.client is not None and run.options.scheduler == "static":
        from pnngraph.run.session import live_workers

        workers = list(live_workers(run.client))
    placement = place(abstract, run.options, cluster=cluster, workers=workers,
                      dtype=run.model.dtype, shard_workers=run.shard_workers)
    if placement.plan is not None and cluster is not None:
        limits = usable_bytes(cluster)  # unknown limits: no peak predicted (nor checked)
        placement = replace(placement, plan=replace(
            placement.plan, alternatives=run.alternatives, fan_ins=run.fan_ins,
            peak_bytes=LazyPeaks(abstract, placement.plan, cluster) if limits else {},
            limit_bytes=limits))
    return TrainingGraph(abstract, run.model, run.spec.strategy, placement, client=run.client,
                         keep=run.keep, cluster=cluster)


def build(
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
    fan_in: int | str = 8,
    fuse_steps: int | str = "auto",
    start_step: int = 0,
    opt_state: State | None = None,
    client: Any = None,
    scheduler: str | None = None,
    cluster: ClusterModel | None = None,
    devices: str = "any",
    **optimizer_options: Any,
) -> TrainingGraph:
    """Compile training ``model`` on ``data`` under ``strategy`` into a Dask collection.

    Parameters
    ----------
    model : Sequential
        Its parameters are the starting point.
    data : (X, y) or Dataset
        numpy arrays, or dask arrays (their blocks are loaded on the workers; their values are
        checked first, one task per block, computed here: :func:`check_dask_data`). A task
        reads only the blocks of X's row chunks its rows are in (y is rechunked to X's rows),
        and the batches follow the blocked order of ``window`` (below).
    strategy : DataParallel, Pipeline, Hybrid, ModelAveraging, or "auto", "data", ...
        ``DataParallel("auto")`` makes one shard per worker, sized by the worker's speed;
        ``"auto"`` plans every candidate on the cluster and keeps the fastest
        (``graph.plan.alternatives``).
    steps, epochs : int
        Exactly one.
    batch_size, optimizer, loss, seed, shuffle, **optimizer_options
        As for :func:`pnngraph.train_serial`; the result equals that trainer's to rounding.
    window : int
        With dask data in several row blocks: each epoch permutes the blocks, then the rows
        within each run of ``window`` consecutive blocks (:func:`pnngraph.nn.train.epoch_order`),
        so a step reads about ``window`` blocks. ``train_serial(..., block_rows=X.chunks[0],
        window=window)`` trains on the same batches. Numpy data (and one block) ignores it.
    fan_in : int or "auto"
        Gradients are summed in a fixed tree of this fan-in, in shard order; the fan-in decides
        the order of the sums, so a given one (8 by default) gives the same bits every time.
        "auto": with a cluster model, the fan-in predicted fastest among 8, 2, 4, 16 and the
        number of shards (:func:`pnngraph.run.auto.choose_fan_in`; ``graph.plan.fan_ins`` and
        the run's spec record it), else 8.
    fuse_steps : "auto" or int
        Steps per task when the strategy has one shard and one stage ("auto": enough steps
        for about a quarter of a second of work per task, so tiny models are not drowned in
        task overhead).
    start_step, opt_state
        Continue an earlier run (its model, its ``TrainingResult.opt_state``, which must have
        the structure of the optimizer's ``init(params)``: :meth:`Optimizer.check_state`).
    client : distributed.Client, optional
        numpy data becomes two tasks on its workers, and the initial state travels in the
        graph: the scheduler holds both, so Dask recomputes anything a lost worker took with
        it; the plan pins tasks to the workers (loosely: a lost worker's tasks run elsewhere).
    scheduler : str, optional
        How nodes are placed: "heft" (default with a client or cluster), "peft", "cpop",
        "best", "heft_lookahead", the baselines of :mod:`schedulers`, "static" (shard j of
        stage k on worker (j K + k) mod W) or "dask" (no pins). List schedulers need a cluster
        model: ``cluster``, or one measured by :func:`pnngraph.calibrate` on ``client``.
    cluster : ClusterModel, optional
        The cluster to plan for; ``graph.plan`` then holds placement and predicted timeline.
    devices : {"any", "cpu", "gpu"}
        Restrict the plan to CPU or to GPU workers.

    Returns
    -------
    TrainingGraph
    """
    options = PlacementOptions(scheduler, devices)
    inputs = prepare_inputs(
        model, data, strategy=strategy, steps=steps, epochs=epochs, batch_size=batch_size,
        optimizer=optimizer, loss=loss, seed=seed, shuffle=shuffle, window=window, fan_in=fan_in,
        fuse_steps=fuse_steps, caller="build", **optimizer_options,
    )
    if opt_state is not None:
        inputs.spec.optimizer.check_state(model.params, opt_state)
    run = start_run(inputs, client=client, cluster=cluster, options=options)
    return chunk_graph(run, start_step, run.spec.steps, initial_states(model, run.spec, opt_state))


# ------------------------------------------------------------------------------------- data
def _place_data(inputs: Inputs, client: Any
                ) -> tuple[tuple[Source | Blocks, Source | Blocks], tuple[Any, ...]]:
    """Where the graph reads X and y, and the futures the run must keep alive: dask arrays
    stay where they are, one source per block of X's rows (y is rechunked to those rows; their
    blocks are recomputed from their source when a worker is lost);
    numpy data becomes one task per array on the cluster (with a client), else travels in the
    graph.

    Those two tasks hold the arrays in their definition, so the scheduler keeps a copy and
    recomputes either one on another worker when the worker holding it dies. (Scattered data
    could not be recomputed: the Active Memory Manager trims a scattered key that few tasks
    wait for to one replica, and losing that worker lost the run.)
    """
    X, y = inputs.X, inputs.y
    if _is_dask_array(X):
        rows = X.chunks[0]
        return (_dask_blocks(X, rows, client), _dask_blocks(y, rows, client)), ()
    if client is None:
        return (Source(X, X.nbytes), Source(y, y.nbytes)), ()
    # named for the task stream (data-X, data-y), never by content: a later build with the
    # same data must not race this one's release of it
    names = data_keys()
    with warnings.catch_warnings():  # the arrays are meant to travel in this graph
        warnings.filterwarnings("ignore", message="Sending large graph")
        futures = client.get(dict(zip(names, (X, y), strict=True)), list(names), sync=False)
    return (Source(TaskRef(futures[0].key), X.nbytes, external=True),
            Source(TaskRef(futures[1].key), y.nbytes, external=True)), tuple(futures)


def data_keys() -> tuple[str, str]:
    """Fresh keys for a run's X and y on the cluster, ``data-X-<token>`` and ``data-y-<token>``: the
    dashboard groups them as ``data-X`` and ``data-y``; each call has its own token.

    >>> from dask.utils import key_split
    >>> x, y = data_keys()
    >>> key_split(x), key_split(y), x == data_keys()[0]
    ('data-X', 'data-y', False)
    """
    token = uuid.uuid4().hex
    return f"data-X-{token}", f"data-y-{token}"


def _is_dask_array(a: Any) -> bool:
    return hasattr(a, "__dask_graph__") and hasattr(a, "chunks")


def _split_data(data: Any) -> tuple[Any, Any]:
    if hasattr(data, "X") and hasattr(data, "y"):
        return data.X, data.y
    if isinstance(data, tuple | list) and len(data) == 2:
        return data[0], data[1]
    raise ConfigError("data", "an (X, y) pair or a Dataset", type(data).__name__)


def _state_bytes(state: StageState) -> int:
    """Bytes of a stage state's arrays: its parameters and its optimizer state."""
    arrays = [a for layer in state.params for a in layer.values()]
    for entry in state.opt_state.values():
        if isinstance(entry, list):
            arrays += [a for layer in entry for a in layer.values()]
    return sum(int(a.nbytes) for a in arrays)


def _output_ndim(model: Any, X_meta: np.ndarray) -> int:
    """Axes of the model's per-sample outputs (built from ``X_meta`` if it has no input shape
    yet): labels of a classifier have that many, one-hot rows one more. 1 for a non-model,
    which :func:`prepare` refuses."""
    if not isinstance(model, Sequential):
        return 1
    if model.input_shape is None:
        model.build(X_meta.shape[1:])
    return len(model.output_shape)


def _dask_metadata(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Host stand-ins with the dask arrays' shapes, for validation without computing."""
    if not (_is_dask_array(X) and _is_dask_array(y)):
        raise ConfigError("data", "both X and y as dask arrays (or both as numpy)", "a mix")
    for what, a in (("X", X), ("y", y)):
        if any(math.isnan(d) for d in a.shape):  # a boolean mask's result, say
            raise DataError(what, f"expected a dask array of known chunk sizes, got shape "
                                  f"{a.shape} (try {what}.compute_chunk_sizes())")
    if X.shape[0] != y.shape[0]:
        raise DataError("X/y", f"X has {X.shape[0]} samples but y has {y.shape[0]}")
    X_meta = np.zeros((1, *X.shape[1:]), dtype=X.dtype)
    y_meta = np.zeros((1, *y.shape[1:]), dtype=y.dtype)
    return X_meta, y_meta


def _dask_blocks(a: Any, rows: tuple[int, ...], client: Any = None) -> Source | Blocks:
    """``a`` cut into blocks of ``rows`` along the samples (one block across every other
    axis): one source per block, a task reads the blocks its rows are in; one block is
    one source. With ``client``, a block already in a worker's memory (a persisted array)
    has that worker as its home (the first in address order where it has several)."""
    whole = a.rechunk({0: rows, **dict.fromkeys(range(1, a.ndim), -1)})
    keys = []
    for key in whole.__dask_keys__():
        while isinstance(key, list):  # the one block across the other axes
            key = key[0]
        keys.append(key)
    held = {} if client is None else client.who_has(whole)
    per_row = int(a.nbytes) // max(int(a.shape[0]), 1)
    sources = tuple(Source((whole, key), per_row * n, external=True,
                           home=min(held[key]) if held.get(key) else None)
                    for key, n in zip(keys, rows, strict=True))
    return sources[0] if len(sources) == 1 else Blocks(sources, tuple(rows))
