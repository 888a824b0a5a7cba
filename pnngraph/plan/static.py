"""Static placement: shard and stage decide the worker, no cost model.

Shard ``j`` of stage ``k`` of a run with K stages goes to worker ``(j * K + k) mod W``: data
parallel shards spread over the workers, pipeline stages sit on consecutive workers, and each
stage's aggregate and update run where its shard 0 runs (so the updated parameters start on a
worker that needs them). Data and initial state nodes get no worker: Dask moves them where
needed. The cost-model planner (HEFT and friends) improves on this; this rule is the baseline a
plan must beat and the placement used when none is asked for.

>>> import networkx as nx
>>> g = nx.DiGraph()
>>> g.add_node("a", kind="grad", shard=1, stage=0)
>>> g.add_node("u", kind="update", shard=None, stage=0)
>>> static_placement(g, ["w0", "w1"], stages=1)
{'a': 'w1', 'u': 'w0'}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import networkx as nx

from pnngraph.exceptions import ConfigError

UNPLACED = ("data", "init")


def static_placement(
    graph: nx.DiGraph, workers: Sequence[str], *, stages: int
) -> dict[Any, str]:
    """Worker of every computing node of ``graph`` by the shard/stage rule above."""
    if not workers:
        raise ConfigError("workers", "at least one worker", list(workers))
    out: dict[Any, str] = {}
    for key, node in graph.nodes(data=True):
        if node["kind"] in UNPLACED:
            continue
        copy = node.get("copy")
        shard = (node.get("shard") or 0) if copy is None else copy
        stage = node.get("stage") or 0
        out[key] = workers[(shard * stages + stage) % len(workers)]
    return out
