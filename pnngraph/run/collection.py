"""``pnngraph.build``: a training run as a Dask collection, and its result.

``build`` validates the inputs, compiles the abstract graph (:mod:`pnngraph.compile.graph`) and
returns a :class:`TrainingGraph`, which implements the Dask collection protocol, so any of these
runs it and returns a :class:`~pnngraph.nn.train.TrainingResult`::

    graph = pnngraph.build(model, (X, y), strategy=DataParallel(2), steps=100, batch_size=256)
    result = client.compute(graph).result()      # a distributed cluster
    result, = dask.compute(graph)                # threads; or scheduler="sync"

The outputs are the final state of every stage (model averaging: the average, then each
replica); parameters and optimizer state stay on the workers from one step to the next.

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

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.threaded
import networkx as nx
import numpy as np

from pnngraph.compile.graph import Key, Source, compile_training
from pnngraph.compile.kernels import StageState
from pnngraph.compile.strategies import (
    DataParallel,
    ModelAveraging,
    Strategy,
    as_strategy,
    stage_bounds,
)
from pnngraph.exceptions import ConfigError, DataError, UnknownNameError
from pnngraph.nn.backend import to_numpy
from pnngraph.nn.losses import Loss
from pnngraph.nn.model import Sequential
from pnngraph.nn.optimizers import Optimizer, State, join_states, split_state
from pnngraph.nn.train import TrainingResult, prepare, resolve_steps
from pnngraph.plan.cluster import ClusterModel
from pnngraph.plan.planner import SCHEDULERS, Plan, auto_shares, make_plan
from pnngraph.plan.static import static_placement
from pnngraph.run.calibrate import calibrate
from pnngraph.run.lowering import lower


class PlacementWarning(UserWarning):
    """The cluster changed between planning and running; the run goes on without some pins."""


def _is_dask_array(a: Any) -> bool:
    return hasattr(a, "__dask_graph__") and hasattr(a, "chunks")


def _split_data(data: Any) -> tuple[Any, Any]:
    if hasattr(data, "X") and hasattr(data, "y"):
        return data.X, data.y
    if isinstance(data, tuple | list) and len(data) == 2:
        return data[0], data[1]
    raise ConfigError("data", "an (X, y) pair or a Dataset", type(data).__name__)


def initial_states(
    model: Sequential,
    optimizer: Optimizer,
    bounds: Sequence[tuple[int, int]],
    opt_state: State | None = None,
) -> list[StageState]:
    """One :class:`StageState` per stage from the model's parameters (and a full optimizer
    state, when continuing a run)."""
    full = optimizer.init(model.params) if opt_state is None else opt_state
    return [
        StageState(model.params[a:z], split_state(full, a, z), ()) for a, z in bounds
    ]


class TrainingGraph:
    """A compiled training run: a Dask collection whose result is a ``TrainingResult``.

    Attributes
    ----------
    abstract : networkx.DiGraph
        The abstract graph (``to_networkx()`` returns it): nodes with kind, step, shard,
        micro, stage, flops and bytes; edges with bytes.
    token : str
        Eight hex digits that name this build's keys.
    """

    __dask_optimize__ = None
    __dask_scheduler__ = staticmethod(dask.threaded.get)

    def __init__(
        self,
        abstract: nx.DiGraph,
        model: Sequential,
        *,
        averaging: bool,
        keep: Sequence[Any] = (),
    ) -> None:
        self.abstract = abstract
        self.token: str = abstract.graph["token"]
        self.model = model
        self.averaging = averaging
        self._keep = list(keep)  # futures of scattered data: alive as long as the graph
        self._keys: list[Key] = list(abstract.graph["outputs"])
        self._name = f"training-{self.token}"
        self._workers: dict[Key, str] | None = None  # pins, set by place()
        self._priorities: dict[Key, int] | None = None
        self._backends: dict[Key, str] | None = None
        self._client: Any = None
        self.plan: Plan | None = None
        self._hlg: Any = None
        self._lowered_keys: list[Key] = list(self._keys)

    def place(
        self,
        *,
        client: Any = None,
        cluster: ClusterModel | None = None,
        scheduler: str = "heft",
        devices: str = "any",
        shard_workers: Sequence[str] | None = None,
    ) -> Plan | None:
        """Place the graph's nodes on workers; returns the plan (``None`` when there is none).

        ``scheduler`` is a name from :data:`pnngraph.plan.planner.SCHEDULERS`: a list
        scheduler (needs ``cluster``, or a ``client`` to calibrate), ``"static"`` (the
        shard/stage rule) or ``"dask"`` (no pins). ``shard_workers`` ties shard j's gradient
        tasks to a worker (``DataParallel("auto")``).
        """
        if scheduler not in SCHEDULERS:
            raise UnknownNameError("scheduler", scheduler, SCHEDULERS)
        if cluster is None and client is not None and scheduler not in ("static", "dask"):
            cluster = calibrate(client)
        self._client = client
        self._hlg = None
        if cluster is None:
            self.plan = None
            self._backends = None
            if client is None or scheduler == "dask":
                self._workers = None
                return None
            workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
            stages = self.abstract.graph["layout"][1]
            self._workers = static_placement(self.abstract, workers, stages=stages)
            return None
        plan = make_plan(self.abstract, cluster, scheduler=scheduler, dtype=self.model.dtype,
                         devices=devices, shard_workers=shard_workers)  # type: ignore[arg-type]
        self.plan = plan
        self._workers = dict(plan.placement) if plan.pinned else None
        self._priorities = dict(plan.priorities) if plan.pinned else None
        self._backends = dict(plan.backends)
        return plan

    @property
    def placement(self) -> dict[Key, str] | None:
        """Node -> worker address the lowering pins it to (``None`` when unpinned)."""
        return self._workers

    def to_networkx(self) -> nx.DiGraph:
        """The abstract graph, before lowering."""
        return self.abstract

    def __len__(self) -> int:
        return self.abstract.number_of_nodes()

    def __repr__(self) -> str:
        kinds: dict[str, int] = {}
        for _, kind in self.abstract.nodes(data="kind"):
            kinds[kind] = kinds.get(kind, 0) + 1
        summary = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
        return f"<TrainingGraph {self.token}: {summary}>"

    # ------------------------------------------------------------------ Dask collection protocol
    def __dask_graph__(self) -> Any:
        if self._hlg is None:
            self._hlg, self._lowered_keys = lower(
                self.abstract, self._name, workers=self._live_pins(),
                priorities=self._priorities, backends=self._backends, outputs=self._keys,
            )
        return self._hlg

    def _live_pins(self) -> dict[Key, str] | None:
        """The pins, less those to workers that left the cluster since planning (warned)."""
        if not self._workers or self._client is None:
            return self._workers
        try:
            alive = set(self._client.scheduler_info(n_workers=-1)["workers"])
        except Exception:  # a closed client: keep the plan as it is
            return self._workers
        gone = sorted(set(self._workers.values()) - alive)
        if not gone:
            return self._workers
        warnings.warn(
            f"worker(s) {', '.join(gone)} left the cluster after planning; their tasks run "
            "where Dask puts them",
            PlacementWarning,
            stacklevel=3,
        )
        return {k: w for k, w in self._workers.items() if w in alive}

    def __dask_keys__(self) -> list[Key]:
        if self._hlg is None:
            self.__dask_graph__()
        return list(self._lowered_keys)

    def __dask_layers__(self) -> tuple[str, ...]:
        return (self._name,)

    def __dask_tokenize__(self) -> str:
        return self._name

    def __dask_postcompute__(self) -> tuple[Any, tuple[Any, ...]]:
        return finalize, (self.model.skeleton(), self.averaging)

    def __dask_postpersist__(self) -> tuple[Any, tuple[Any, ...]]:
        return self._rebuild, ()

    def _rebuild(self, dsk: Any, *args: Any, rename: Any = None) -> TrainingGraph:
        other = object.__new__(TrainingGraph)
        other.__dict__.update(self.__dict__)
        other._hlg = dsk
        return other


def finalize(results: Sequence[Any], model: Sequential, averaging: bool) -> TrainingResult:
    """Assemble the final stage states (computed outputs) into a TrainingResult on the host."""
    states = [StageState(*s) for s in results]
    host = [
        StageState(
            [{k: to_numpy(v) for k, v in layer.items()} for layer in s.params],
            _state_to_numpy(s.opt_state),
            s.losses,
        )
        for s in states
    ]
    trained = model.skeleton()
    if averaging:
        trained.params = host[0].params
        opt_state, losses = host[1].opt_state, host[0].losses
    else:
        trained.params = [layer for s in host for layer in s.params]
        opt_state, losses = join_states([s.opt_state for s in host]), host[-1].losses
    return TrainingResult(trained, opt_state, np.asarray(losses, dtype=float), states=host)


def _state_to_numpy(state: State) -> State:
    def conv(v: Any) -> Any:
        if isinstance(v, list):
            return [{k: to_numpy(a) for k, a in layer.items()} for layer in v]
        return v

    return {k: conv(v) for k, v in state.items()}


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
    fan_in: int = 8,
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
        numpy arrays, or dask arrays (their blocks are loaded on the workers).
    strategy : DataParallel, Pipeline, Hybrid, ModelAveraging, or "data", "pipeline", ...
        ``DataParallel("auto")`` makes one shard per worker, sized by the worker's speed.
    steps, epochs : int
        Exactly one.
    batch_size, optimizer, loss, seed, shuffle, **optimizer_options
        As for :func:`pnngraph.train_serial`; the result equals that trainer's to rounding.
    fan_in : int
        Gradients are summed in a fixed tree of this fan-in, in shard order.
    fuse_steps : "auto" or int
        Steps per task when the strategy has one shard and one stage ("auto": enough steps
        for about 50 ms of work per task, so tiny models are not drowned in task overhead).
    start_step, opt_state
        Continue an earlier run (its model, its ``TrainingResult.opt_state``).
    client : distributed.Client, optional
        Data is scattered to its workers once (the initial state travels in the graph, so
        Dask can recompute from it), and the plan pins tasks to them (loosely: a lost
        worker's tasks run elsewhere).
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
    strategy = as_strategy(strategy)
    scheduler = resolve_scheduler(scheduler, client, cluster)
    prepared = prepare_data(model, data, batch_size, loss, optimizer, optimizer_options)
    keep = attach_sources(prepared, client)
    total = resolve_steps(prepared.n_samples, prepared.batch_size, steps, epochs)
    strategy, cluster, shard_workers = resolve_auto(
        strategy, cluster, client, model, prepared.batch_size, devices
    )
    graph = compile_graph(
        model, prepared, strategy=strategy, steps=total, seed=seed, shuffle=shuffle,
        start_step=start_step, fan_in=fan_in, fuse_steps=fuse_steps, opt_state=opt_state,
    )
    graph._keep.extend(keep)
    graph.place(client=client, cluster=cluster, scheduler=scheduler, devices=devices,
                shard_workers=shard_workers)
    return graph


def resolve_scheduler(scheduler: str | None, client: Any, cluster: Any) -> str:
    """The scheduler name to plan with: "heft" when there is a cluster to plan for, else
    "dask"; an unknown name is an error."""
    if scheduler is None:
        scheduler = "heft" if (client is not None or cluster is not None) else "dask"
    if scheduler not in SCHEDULERS:
        raise UnknownNameError("scheduler", scheduler, SCHEDULERS)
    return scheduler


def attach_sources(prepared: Prepared, client: Any) -> list[Any]:
    """Give numpy data a place: scattered to every worker (with a client) or in the graph.
    Returns the futures the caller must keep alive."""
    if prepared.sources is not None:
        return []
    X, y = prepared.X, prepared.y
    if client is None:
        prepared.sources = (Source(X, X.nbytes), Source(y, y.nbytes))
        return []
    # not hashed: a later build with the same data must not race this one's release of it
    futures = client.scatter([X, y], broadcast=True, hash=False)
    prepared.sources = (
        Source(futures[0], X.nbytes, external=True),
        Source(futures[1], y.nbytes, external=True),
    )
    return list(futures)


def resolve_auto(
    strategy: Strategy,
    cluster: ClusterModel | None,
    client: Any,
    model: Sequential,
    batch_size: int,
    devices: str,
) -> tuple[Strategy, ClusterModel | None, list[str] | None]:
    """``DataParallel("auto")`` -> one shard per usable worker, sized so that all gradients
    reach the update together (speed and transfers priced, :func:`plan.planner.auto_shares`).

    Returns the concrete strategy, the cluster model (measured if it had to be) and the worker
    of each shard (``None`` unless the shards were sized here).
    """
    if not (isinstance(strategy, DataParallel) and strategy.auto):
        return strategy, cluster, None
    if cluster is None:
        if client is None:
            raise ConfigError("shards", "a client or cluster model for shards='auto'", "auto")
        cluster = calibrate(client)
    workers = cluster.usable(devices)
    if not workers:
        raise ConfigError("devices", f"workers of kind {devices!r} in the cluster", "none")
    itemsize = np.dtype(model.dtype).itemsize
    shares = auto_shares(
        cluster, workers, flops_per_sample=3.0 * sum(model.layer_flops()), batch=batch_size,
        param_bytes=float(model.n_params * itemsize), dtype=model.dtype,
    )
    return DataParallel(list(shares.values())), cluster, list(shares)


@dataclass
class Prepared:
    """Validated inputs of a build: host data (or dask sources), loss, optimizer, batch size."""

    X: Any
    y: Any
    n_samples: int
    loss: Loss
    optimizer: Optimizer
    batch_size: int
    sources: tuple[Source, Source] | None = None


def prepare_data(
    model: Sequential,
    data: Any,
    batch_size: int,
    loss: str | Loss,
    optimizer: str | Optimizer,
    optimizer_options: dict[str, Any],
) -> Prepared:
    """Validate model, data and options at the boundary (dask data: shapes only)."""
    X, y = _split_data(data)
    if _is_dask_array(X) or _is_dask_array(y):
        X_meta, y_meta = _dask_metadata(X, y)
        _, _, loss_fn, opt, bs = prepare(
            model, X_meta, y_meta, batch_size=batch_size, loss=loss, optimizer=optimizer,
            optimizer_options=optimizer_options,
        )
        sources = (_dask_source(X), _dask_source(y))
        return Prepared(X, y, int(X.shape[0]), loss_fn, opt, bs, sources)
    X_arr, y_arr, loss_fn, opt, bs = prepare(
        model, X, y, batch_size=batch_size, loss=loss, optimizer=optimizer,
        optimizer_options=optimizer_options,
    )
    return Prepared(X_arr, y_arr, len(X_arr), loss_fn, opt, bs)


def compile_graph(
    model: Sequential,
    prepared: Prepared,
    *,
    strategy: Strategy,
    steps: int,
    seed: int,
    shuffle: bool,
    start_step: int,
    fan_in: int,
    fuse_steps: int | str,
    opt_state: State | None = None,
    init_states: Sequence[Any] | None = None,
    final: bool = True,
) -> TrainingGraph:
    """The TrainingGraph of ``steps`` steps from ``start_step``, starting from the model and
    ``opt_state``, or from ``init_states`` (host stage states, as a checkpoint holds them, or
    futures of them, as a previous graph's outputs).

    Host initial states travel inside the graph, even on a cluster: the scheduler then
    holds them, so Dask can recompute any lost result from them after a worker dies. (Scattered
    states are not safe: the Active Memory Manager trims a scattered key no task waits for to
    one replica, and losing that worker loses the root of the whole run's lineage.)
    """
    if not isinstance(start_step, int) or isinstance(start_step, bool) or start_step < 0:
        raise ConfigError("start_step", "an integer >= 0", start_step)
    assert prepared.sources is not None
    averaging = isinstance(strategy, ModelAveraging)
    if init_states is None:
        bounds = (
            [(0, len(model.layers))] if averaging else stage_bounds(model.layer_flops(), strategy)
        )
        states: list[Any] = initial_states(model, prepared.optimizer, bounds, opt_state)
        if isinstance(strategy, ModelAveraging):
            states = states * (1 + strategy.replicas)
    else:
        states = list(init_states)
    nbytes = sum(int(a.nbytes) for layer in model.params for a in layer.values())
    init = [
        s_ if isinstance(s_, Source) else
        Source(s_, _state_bytes(s_)) if isinstance(s_, StageState) else
        Source(s_, nbytes, external=True)
        for s_ in states
    ]
    abstract = compile_training(
        model, n_samples=prepared.n_samples, strategy=strategy, steps=steps,
        batch_size=prepared.batch_size, optimizer=prepared.optimizer, loss=prepared.loss,
        data=prepared.sources, init=init, seed=seed, shuffle=shuffle, start_step=start_step,
        fan_in=fan_in, fuse_steps=fuse_steps, itemsize=np.dtype(model.dtype).itemsize,
        final=final,
    )
    return TrainingGraph(abstract, model, averaging=averaging)


def _state_bytes(state: StageState) -> int:
    return sum(int(a.nbytes) for layer in state.params for a in layer.values())


def _dask_metadata(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Host stand-ins with the dask arrays' shapes, for validation without computing."""
    if not (_is_dask_array(X) and _is_dask_array(y)):
        raise ConfigError("data", "both X and y as dask arrays (or both as numpy)", "a mix")
    if X.shape[0] != y.shape[0]:
        raise DataError("X/y", f"X has {X.shape[0]} samples but y has {y.shape[0]}")
    if any(np.isnan(d) for d in X.shape):
        raise DataError("X", "unknown chunk sizes: call X.compute_chunk_sizes() first")
    X_meta = np.zeros((1, *X.shape[1:]), dtype=X.dtype)
    y_meta = np.zeros((1, *y.shape[1:]), dtype=y.dtype)
    return X_meta, y_meta


def _dask_source(a: Any) -> Source:
    one = a.rechunk(a.shape)
    key = one.__dask_keys__()
    while isinstance(key, list):
        key = key[0]
    return Source((one, key), int(a.nbytes), external=True)
