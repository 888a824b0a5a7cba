"""The training graph as a Dask collection, and the result it computes to.

A :class:`TrainingGraph` holds three values, nothing derived from them: the abstract graph
(:mod:`pnngraph.compile.graph`), the strategy (which says what its outputs are) and the
:class:`~pnngraph.plan.placement.Placement`. It implements the Dask collection protocol, so any
of these runs it and returns a :class:`~pnngraph.nn.train.TrainingResult`::

    result = client.compute(graph).result()      # a distributed cluster
    result, = dask.compute(graph)                # threads; or scheduler="sync"
    graph = client.persist(graph)                # the final states stay on the workers

It is lowered (:func:`pnngraph.run.lowering.lower`) when Dask first asks for its tasks; pins to
workers that left the cluster since planning are dropped then, with a :class:`PlacementWarning`.
The outputs are the final state of every slot of the strategy (one per stage; model averaging:
the average, then each replica); :func:`finalize` assembles them on the host.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import dask.threaded
import networkx as nx
import numpy as np

from pnngraph.compile.kernels import StageState, to_host
from pnngraph.compile.keys import Key
from pnngraph.compile.strategies import Strategy
from pnngraph.nn.model import Sequential
from pnngraph.nn.optimizers import join_states
from pnngraph.nn.train import TrainingResult
from pnngraph.plan.cluster import ClusterModel
from pnngraph.plan.placement import Placement
from pnngraph.plan.planner import Plan
from pnngraph.run.lowering import lower


class PlacementWarning(UserWarning):
    """The cluster changed between planning and running; the run goes on without some pins."""


class TrainingGraph:
    """A compiled, placed training run: a Dask collection whose result is a ``TrainingResult``.

    Attributes
    ----------
    abstract : networkx.DiGraph
        The abstract graph (``to_networkx()`` returns it): nodes with kind, step, shard,
        micro, stage, flops and bytes; edges with bytes.
    strategy : Strategy
    placement_value : Placement
        Where every node runs (:attr:`placement` and :attr:`plan` read it).
    token : str
        Eight hex digits that name this build's keys.
    """

    __dask_optimize__ = None
    __dask_scheduler__ = staticmethod(dask.threaded.get)

    def __init__(
        self,
        abstract: nx.DiGraph,
        model: Sequential,
        strategy: Strategy,
        placement: Placement,
        *,
        client: Any = None,
        keep: Sequence[Any] = (),
        cluster: ClusterModel | None = None,
    ) -> None:
        self.abstract = abstract
        self.model = model.skeleton()
        self.strategy = strategy
        self.placement_value = placement
        self.cluster = cluster  # the cluster model the plan was priced with
        self._client = client  # to check, when lowering, that the pinned workers are there
        self._keep = list(keep)  # futures of the run's data: alive as long as the graph
        self._name = f"training-{self.token}"
        self._hlg: Any = None
        self._keys: list[Key] = list(abstract.graph["outputs"])

    @property
    def token(self) -> str:
        return str(self.abstract.graph["token"])

    @property
    def plan(self) -> Plan | None:
        """The placed, ordered, predicted schedule (``None`` when there was no cluster model)."""
        return self.placement_value.plan

    @property
    def placement(self) -> dict[Key, str] | None:
        """Node -> worker address the lowering pins it to (``None`` when unpinned)."""
        return dict(self.placement_value.workers) or None

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
            self._hlg, self._keys = lower(self.abstract, self._name, self._live_placement(),
                                          self.abstract.graph["outputs"])
        return self._hlg

    def _live_placement(self) -> Placement:
        """The placement, less its pins to workers that left the cluster since planning."""
        pinned = set(self.placement_value.workers.values())
        if not pinned or self._client is None:
            return self.placement_value
        from pnngraph.run.session import live_workers

        try:
            alive = set(live_workers(self._client))
        except Exception:  # a closed client: keep the plan as it is
            return self.placement_value
        gone = pinned - alive
        if not gone:
            return self.placement_value
        warnings.warn(
            f"worker(s) {', '.join(sorted(gone))} left the cluster after planning; their tasks "
            "run where Dask puts them", PlacementWarning, stacklevel=3,
        )
        return self.placement_value.without(gone)

    def __dask_keys__(self) -> list[Key]:
        if self._hlg is None:
            self.__dask_graph__()
        return list(self._keys)

    def __dask_layers__(self) -> tuple[str, ...]:
        return (self._name,)

    def __dask_tokenize__(self) -> str:
        return self._name

    def __dask_postcompute__(self) -> tuple[Any, tuple[Any, ...]]:
        return finalize, (self.model, self.strategy)

    def __dask_postpersist__(self) -> tuple[Any, tuple[Any, ...]]:
        return self._rebuild, ()

    def _rebuild(self, dsk: Any, *args: Any, rename: Any = None) -> TrainingGraph:
        other = object.__new__(TrainingGraph)
        other.__dict__.update(self.__dict__)
        other._hlg = dsk
        return other

    def rebased(self, states: Sequence[Any]) -> TrainingGraph:
        """This graph (same keys, same plan) starting from host ``states``, one per slot (as a
        chunk's gathered outputs are), instead of what it was built on: the futures of the
        chunk before it. The chain of earlier chunks is then needed no more (the scheduler
        forgets it, and a lost result is recomputed from these states)."""
        from pnngraph.compile.graph import Source

        abstract = self.abstract.copy()
        for key, node in abstract.nodes(data=True):
            if node["kind"] == "init":  # key (f"init-{token}", slot[, copy])
                node["source"] = Source(StageState(*states[key[1]]), node["bytes"])
        return TrainingGraph(abstract, self.model, self.strategy, self.placement_value,
                             client=self._client, keep=self._keep, cluster=self.cluster)

    @property
    def carry(self) -> list[list[Key]]:
        """Per output slot, the keys of every copy of its final state (one key but where the
        state was kept in copies, :func:`pnngraph.compile.graph.compile_training`)."""
        return [list(keys) for keys in self.abstract.graph["carry"]]

    def progress_marks(self) -> dict[Key, int]:
        """Nodes whose completion marks training progress, with the steps each completes: the
        last stage's updates, fused steps, replica 0's local steps."""
        last_stage = self.abstract.graph["layout"][1] - 1
        marks = {}
        for key, node in self.abstract.nodes(data=True):
            kind = node["kind"]
            if kind == "update" and node["stage"] == last_stage and not node.get("copy"):
                marks[key] = 1
            elif kind == "steps" or (kind == "local" and node["shard"] == 0):
                marks[key] = node["n_steps"]
        return marks


def loss_state(strategy: Strategy, carry: Sequence[Any]) -> Any:
    """Of a graph's outputs (or the futures of them), the state whose ``losses`` are the run's
    (the last stage's; model averaging: the average's); its first copy where it has several."""
    from pnngraph.compile.graph import Copies

    stages, _ = strategy.unslot(list(carry))
    return stages[-1][0] if isinstance(stages[-1], Copies) else stages[-1]


def losses_of(state: Any, offset: int) -> list[float]:
    """The losses of a stage state from step ``offset`` on (a task: runs where the state is,
    so only the losses travel)."""
    return [float(v) for v in StageState(*state).losses[offset:]]


def finalize(results: Sequence[Any], model: Sequential, strategy: Strategy) -> TrainingResult:
    """Assemble a graph's outputs (its strategy's slots) into a TrainingResult on the host."""
    host = [to_host(StageState(*s)) for s in results]
    stages, replicas = strategy.unslot(host)
    if replicas:  # each replica keeps its own optimizer state: the result has the first one's
        stages = [stages[0]._replace(opt_state=replicas[0].opt_state)]
    trained = model.skeleton()
    trained.params = [layer for s in stages for layer in s.params]
    if all(len(s.buffers) == len(s.params) for s in stages):
        trained.buffers = [layer for s in stages for layer in s.buffers]
    opt_state = join_states([s.opt_state for s in stages])
    losses = np.asarray(stages[-1].losses, dtype=float)
    return TrainingResult(trained, opt_state, losses, states=host)
