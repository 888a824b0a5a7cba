"""Lowering: the abstract training graph becomes Dask tasks in a HighLevelGraph.

Each abstract node becomes a ``dask.task_spec.Task`` calling its kernel; ``Ref(key)`` arguments
become ``TaskRef(key)``; data and initial-state nodes become ``DataNode`` values, or vanish when
their value already lives on the cluster (a ``distributed.Future``, which is itself a TaskRef, is
passed straight to its consumers; a key of another collection becomes a TaskRef and that
collection's layers join the graph). Placement, when a plan gives one, travels as per-key layer
annotations (``workers``, ``allow_other_workers``, ``priority``) through small picklable lookup
objects, since annotations must reach the scheduler as callables key -> value.

>>> import networkx as nx
>>> from pnngraph.compile.graph import Ref, Source
>>> g = nx.DiGraph()
>>> g.add_node(("data-abcdefab", 0), kind="data", fn=None, args=(), source=Source(2, 8))
>>> g.add_node(("double-abcdefab", 0), kind="update", fn=abs, args=(Ref(("data-abcdefab", 0)),))
>>> hlg, keys = lower(g, "training-abcdefab")
>>> sorted(hlg.to_dict())
[('data-abcdefab', 0), ('double-abcdefab', 0)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import networkx as nx
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.task_spec import DataNode, Task, TaskRef

from pnngraph.compile import kernels
from pnngraph.compile.graph import Key, Ref, WorkerBackend


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


def host_key(key: Key) -> Key:
    """Key of the device-to-host copy of ``key``'s output: ``tohost-`` before its name."""
    if isinstance(key, tuple):
        return (f"tohost-{key[0]}", *key[1:])
    return f"tohost-{key}"


def lower(
    graph: nx.DiGraph,
    name: str,
    *,
    workers: Mapping[Key, str] | None = None,
    priorities: Mapping[Key, int] | None = None,
    backends: Mapping[Key, str] | None = None,
    outputs: Sequence[Key] = (),
    loose: bool = True,
) -> tuple[HighLevelGraph, list[Key]]:
    """A HighLevelGraph with one materialized layer ``name`` holding every task of ``graph``,
    and the keys to compute for ``outputs`` (the same keys, unless an output is on a device).

    ``workers`` pins keys to worker addresses (loosely unless ``loose`` is false), ``priorities``
    orders them, both as layer annotations. ``backends`` gives each node's array library: a
    node's StageSpec and WORKER_BACKEND arguments take it, and where a device node's output
    reaches a numpy node (or is an output), a ``to_host`` task on the device's worker is put
    between them.
    """
    workers = dict(workers or {})
    priorities = dict(priorities or {})
    backends = backends or {}
    handles: dict[Key, Any] = {}
    deps: dict[str, HighLevelGraph] = {}
    for key, node in graph.nodes(data=True):
        ext = _external(node)
        if ext is None:
            continue
        if isinstance(ext, TaskRef):  # a distributed.Future: pass it as it is
            handles[key] = ext
        else:  # (collection, key) of another Dask collection
            collection, ext_key = ext
            handles[key] = TaskRef(ext_key)
            deps[collection.__dask_layers__()[0]] = collection.__dask_graph__()

    def on_device(key: Key) -> bool:
        return backends.get(key, "numpy") != "numpy"

    tasks: dict[Key, Any] = {}

    def host_copy(key: Key) -> Key:
        hk = host_key(key)
        if hk not in tasks:
            tasks[hk] = Task(hk, kernels.to_host, TaskRef(key))
            if key in workers:
                workers[hk] = workers[key]
            if key in priorities:
                priorities[hk] = priorities[key]
        return hk

    for key, node in graph.nodes(data=True):
        if key in handles:
            continue
        if node["fn"] is None:
            tasks[key] = DataNode(key, node["source"].value)
            continue
        backend = backends.get(key, "numpy")
        args = []
        for a in node["args"]:
            if isinstance(a, Ref):
                if a.key in handles:
                    args.append(handles[a.key])
                elif backend == "numpy" and on_device(a.key):
                    args.append(TaskRef(host_copy(a.key)))
                else:
                    args.append(TaskRef(a.key))
            elif isinstance(a, WorkerBackend):
                args.append(backend)
            elif isinstance(a, kernels.StageSpec) and a.backend != backend:
                args.append(replace(a, backend=backend))
            else:
                args.append(a)
        tasks[key] = Task(key, node["fn"], *args)
    keys = [host_copy(k) if on_device(k) else k for k in outputs]
    annotations: dict[str, Any] = {}
    if workers:
        annotations["workers"] = KeyLookup({k: [w] for k, w in workers.items()})
        annotations["allow_other_workers"] = KeyLookup({}, loose)
    if priorities:
        annotations["priority"] = KeyLookup(priorities, 0)
    layers: dict[str, Any] = {name: MaterializedLayer(tasks, annotations=annotations or None)}
    dependencies: dict[str, set[str]] = {name: set()}
    for dep_graph in deps.values():
        for lname, layer in dep_graph.layers.items():
            layers[lname] = layer
            dependencies[lname] = set(dep_graph.dependencies.get(lname, set()))
            dependencies[name].add(lname)
    return HighLevelGraph(layers, dependencies), keys
