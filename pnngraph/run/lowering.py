"""Lowering: the abstract training graph becomes Dask tasks in a HighLevelGraph.

Each abstract node becomes a ``dask.task_spec.Task`` calling its kernel; ``Ref(key)`` arguments
become ``TaskRef(key)``; data and initial-state nodes become ``DataNode`` values, or vanish when
their value already lives on the cluster (a ``distributed.Future``, which is itself a TaskRef, is
passed straight to its consumers; a key of another collection becomes a TaskRef and that
collection's layers join the graph). The :class:`~pnngraph.plan.placement.Placement` travels as
per-key layer annotations (``workers``, ``allow_other_workers``, ``priority``) through small
picklable lookup objects, since annotations must reach the scheduler as callables key -> value;
its backends decide each task's array library, and where a device output meets a host task a
``to_host`` task goes between them.

>>> import networkx as nx
>>> from pnngraph.compile.graph import Ref, Source
>>> g = nx.DiGraph()
>>> g.add_node(("data-abcdefab", 0), kind="data", fn=None, args=(), source=Source(2, 8))
>>> g.add_node(("double-abcdefab", 0), kind="update", fn=abs, args=(Ref(("data-abcdefab", 0)),))
>>> hlg, keys = lower(g, "training-abcdefab", Placement())
>>> sorted(hlg.to_dict())
[('data-abcdefab', 0), ('double-abcdefab', 0)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import networkx as nx
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.task_spec import DataNode, List, Task, TaskRef

from pnngraph.collect import without_gc
from pnngraph.compile import kernels
from pnngraph.compile.graph import Ref, WorkerBackend, refs_in
from pnngraph.compile.keys import Key, host_key, value_key
from pnngraph.plan.placement import Placement


class KeyLookup:
    """A picklable ``key -> value`` function for layer annotations (``default`` when absent)."""

    def __init__(self, mapping: Mapping[Key, Any], default: Any = None) -> None:
        self.mapping = dict(mapping)
        self.default = default

    def __call__(self, key: Key) -> Any:
        return self.mapping.get(key, self.default)


def _external(node: Mapping[str, Any]) -> Any:
    source = node.get("source")
    return source.value if source is not None and source.external else None


@without_gc
def lower(
    graph: nx.DiGraph, name: str, placement: Placement, outputs: Sequence[Key] = ()
) -> tuple[HighLevelGraph, list[Key]]:
    """A HighLevelGraph with one materialized layer ``name`` holding every task of ``graph``,
    and the keys to compute for ``outputs`` (the same keys, unless an output is on a device).

    ``placement.workers`` pins keys to worker addresses (loosely unless ``placement.loose`` is
    false), ``placement.priorities`` orders them, both as layer annotations.
    ``placement.backends`` gives each node's array library: a node's StageSpec and
    WORKER_BACKEND arguments take it, and where a device node's output reaches a numpy node (or
    is an output), a ``to_host`` task on the device's worker is put between them.
    """
    handles, deps = _handles(graph)
    tasks = _Tasks(placement)
    backends = placement.backends
    for key, node in graph.nodes(data=True):
        if key in handles:
            continue
        if node["fn"] is None:
            if key in tasks.workers:  # pinned: a task that waits for an unpinned root
                anchor = value_key(key)
                tasks.tasks[anchor] = DataNode(anchor, None)
                tasks.tasks[key] = Task(key, _same, node["source"].value, TaskRef(anchor))
            else:
                tasks.tasks[key] = DataNode(key, node["source"].value)
            continue
        backend = backends.get(key, "numpy")
        args = [_arg(a, handles, tasks, backend) for a in node["args"]]
        tasks.tasks[key] = Task(key, node["fn"], *args)
    keys = [tasks.host_copy(k) if tasks.on_device(k) else k for k in outputs]
    layers: dict[str, Any] = {name: MaterializedLayer(tasks.tasks, annotations=tasks.annotations())}
    dependencies: dict[str, set[str]] = {name: set()}
    for dep_graph in deps.values():
        for lname, layer in dep_graph.layers.items():
            layers[lname] = layer
            dependencies[lname] = set(dep_graph.dependencies.get(lname, set()))
            dependencies[name].add(lname)
    return HighLevelGraph(layers, dependencies), keys


def _same(value: Any, anchor: None) -> Any:
    """A pinned source's task: its value (which travels in the task, to its worker only).
    Dask keeps a task with worker restrictions, loose or not, in ``no-worker`` while no worker
    it names is alive, and does not look at it again when another joins
    (``bulk_schedule_unrunnable_after_adding_worker`` checks only the named workers): a pinned
    root task would wait forever once every worker was lost. So the pinned source is no root:
    it waits for ``anchor``, an unpinned root holding ``None`` (``value-`` before the source's
    name), and Dask places it loosely when that is ready."""
    return value


def _arg(a: Any, handles: Mapping[Key, Any], tasks: _Tasks, backend: str) -> Any:
    """A node's argument as its task's: Refs (also inside tuples: the blocks a task reads)
    become TaskRefs (of a host copy where a device output meets a numpy task), the worker's
    backend goes where the node asks for it."""
    if isinstance(a, Ref):
        if a.key in handles:
            return handles[a.key]
        if backend == "numpy" and tasks.on_device(a.key):
            return TaskRef(tasks.host_copy(a.key))
        return TaskRef(a.key)
    if isinstance(a, tuple) and not hasattr(a, "_fields") and any(refs_in((a,))):
        return List(*(_arg(v, handles, tasks, backend) for v in a))  # Dask finds refs in lists
    if isinstance(a, WorkerBackend):
        return backend
    if isinstance(a, kernels.StageSpec) and a.backend != backend:
        return replace(a, backend=backend)
    return a


def _handles(graph: nx.DiGraph) -> tuple[dict[Key, Any], dict[str, HighLevelGraph]]:
    """TaskRefs standing for the nodes whose values already live on the cluster, and the
    graphs of the other collections they come from, culled to the keys the graph reads (the
    blocks of chunked data its steps need)."""
    handles: dict[Key, Any] = {}
    collections: dict[str, Any] = {}
    needed: dict[str, set[Key]] = {}
    for key, node in graph.nodes(data=True):
        ext = _external(node)
        if ext is None:
            continue
        if isinstance(ext, TaskRef):  # a distributed.Future: pass it as it is
            handles[key] = ext
        else:  # (collection, key) of another Dask collection
            collection, ext_key = ext
            handles[key] = TaskRef(ext_key)
            name = collection.__dask_layers__()[0]
            collections[name] = collection
            needed.setdefault(name, set()).add(ext_key)
    deps = {name: c.__dask_graph__().cull(needed[name]) for name, c in collections.items()}
    return handles, deps


class _Tasks:
    """The tasks of the layer being built, with the pins and priorities of the placement (a
    ``to_host`` copy runs where, and when, its device task does)."""

    def __init__(self, placement: Placement) -> None:
        self.tasks: dict[Key, Any] = {}
        self.workers = dict(placement.workers)
        self.priorities = dict(placement.priorities)
        self.device = {k for k, b in placement.backends.items() if b != "numpy"}
        self.loose = placement.loose

    def on_device(self, key: Key) -> bool:
        return key in self.device

    def host_copy(self, key: Key) -> Key:
        hk = host_key(key)
        if hk not in self.tasks:
            self.tasks[hk] = Task(hk, kernels.to_host, TaskRef(key))
            if key in self.workers:
                self.workers[hk] = self.workers[key]
            if key in self.priorities:
                self.priorities[hk] = self.priorities[key]
        return hk

    def annotations(self) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        if self.workers:
            out["workers"] = KeyLookup({k: [w] for k, w in self.workers.items()})
            out["allow_other_workers"] = KeyLookup({}, self.loose)
        if self.priorities:
            out["priority"] = KeyLookup(self.priorities, 0)
        return out or None
