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
>>> hlg = lower(g, "training-abcdefab")
>>> sorted(hlg.to_dict())
[('data-abcdefab', 0), ('double-abcdefab', 0)]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.task_spec import DataNode, Task, TaskRef

from pnngraph.compile.graph import Key, Ref


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


def lower(
    graph: nx.DiGraph,
    name: str,
    *,
    workers: Mapping[Key, str] | None = None,
    priorities: Mapping[Key, int] | None = None,
    loose: bool = True,
) -> HighLevelGraph:
    """A HighLevelGraph with one materialized layer ``name`` holding every task of ``graph``.

    ``workers`` pins keys to worker addresses (loosely unless ``loose`` is false) and
    ``priorities`` orders them; both become layer annotations.
    """
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

    def arg(a: Any) -> Any:
        if isinstance(a, Ref):
            return handles.get(a.key, TaskRef(a.key))
        return a

    tasks: dict[Key, Any] = {}
    for key, node in graph.nodes(data=True):
        if key in handles:
            continue
        if node["fn"] is None:
            tasks[key] = DataNode(key, node["source"].value)
        else:
            tasks[key] = Task(key, node["fn"], *(arg(a) for a in node["args"]))
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
    return HighLevelGraph(layers, dependencies)
