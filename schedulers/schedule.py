"""The result of every scheduler: which processor runs each node, from when to when.

Data
----
A `Schedule` holds ``slots``, a dict node -> `Slot` ``(processor, start, finish)`` in seconds, in
the order the scheduler placed the nodes, and ``processors``, the processors it was given (some may
stay idle). Everything else is derived: ``placement`` (node -> processor), ``makespan`` (the last
finish, 0 for an empty schedule) and ``order`` (processor -> its nodes by start time).

`Schedule.validate` checks a schedule against the graph it was made for, with the graph's own
``costs`` (node attribute, dict processor -> seconds) and ``comm`` (edge attribute, seconds when
the two ends run on different processors; a number, or a dict ``(src, dst) -> seconds``; absent
means 0).

>>> import networkx as nx
>>> graph = nx.DiGraph()
>>> graph.add_node("a", costs={"cpu": 2.0, "gpu": 1.0})
>>> graph.add_node("b", costs={"cpu": 3.0})
>>> graph.add_edge("a", "b", comm=0.5)
>>> schedule = Schedule(
...     {"a": Slot("gpu", 0.0, 1.0), "b": Slot("cpu", 1.5, 4.5)}, processors=("cpu", "gpu"))
>>> schedule.makespan, schedule.placement["b"], schedule.order["gpu"]
(4.5, 'cpu', ('a',))
>>> schedule.validate(graph)
>>> early = Schedule({"a": Slot("gpu", 0.0, 1.0), "b": Slot("cpu", 1.0, 4.0)}, ("cpu", "gpu"))
>>> early.validate(graph)
Traceback (most recent call last):
...
schedulers.exceptions.InvalidScheduleError: invalid schedule (1 violations): node 'b' starts at 1 \
on 'cpu' before the data of 'a' arrives at 1.5
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, NamedTuple, TypeAlias

import networkx as nx

from schedulers.exceptions import InvalidScheduleError

__all__ = ["Key", "PairSum", "Schedule", "Slot", "transfer_seconds"]

Key: TypeAlias = Hashable
"""A node: any hashable (a string, an int, a tuple such as ``("forward-dense", 3, 1)``)."""


@dataclass(frozen=True)
class PairSum:
    """Transfer times made of a shared part and a part per end: ``base + scale * (ends[src] +
    ends[dst])`` seconds from ``src`` to ``dst`` (``ends`` missing a processor: 0). A network
    whose only differences between pairs are the ends' own copies (a GPU's host <-> device
    copy) needs no ``(p, p)`` table per edge: this is one number and one shared dict.

    >>> comm = PairSum(1.0, {"gpu": 0.5}, 2.0)
    >>> comm[("cpu", "gpu")], comm[("cpu", "cpu2")], comm[("gpu", "gpu")]
    (2.0, 1.0, 3.0)
    """

    base: float
    ends: Mapping[Hashable, float]
    scale: float = 1.0

    def __getitem__(self, pair: tuple[Hashable, Hashable]) -> float:
        src, dst = pair
        return self.base + self.scale * (self.ends.get(src, 0.0) + self.ends.get(dst, 0.0))


class Slot(NamedTuple):
    """Where and when one node runs: ``processor`` from ``start`` to ``finish`` (seconds)."""

    processor: Hashable
    start: float
    finish: float


def transfer_seconds(comm: Any, src: Hashable, dst: Hashable) -> float:
    """Seconds to move an edge's data from processor ``src`` to ``dst``.

    Parameters
    ----------
    comm : float, Mapping or PairSum
        The edge's ``comm`` attribute: one number for every pair of distinct processors, a dict
        ``(src, dst) -> seconds``, or a `PairSum`.
    src, dst : Hashable
        The processors of the edge's two ends.

    Returns
    -------
    float
        0 when ``src == dst``, else the transfer time.

    Examples
    --------
    >>> transfer_seconds(2.0, "cpu", "gpu"), transfer_seconds(2.0, "gpu", "gpu")
    (2.0, 0.0)
    >>> transfer_seconds({("cpu", "gpu"): 3.0, ("gpu", "cpu"): 4.0}, "gpu", "cpu")
    4.0
    """
    if src == dst:
        return 0.0
    if isinstance(comm, Mapping | PairSum):
        return float(comm[(src, dst)])
    return float(comm)


@dataclass(frozen=True)
class Schedule:
    """A schedule: ``slots`` node -> `Slot` on ``processors``; treat it as immutable.

    Parameters
    ----------
    slots : dict
        node -> ``Slot(processor, start, finish)``, in the order the nodes were placed.
    processors : tuple
        The processors the scheduler was given, idle ones included.
    algorithm : str
        The name of the scheduler that made it (``best`` reports the winner this way).
    """

    slots: dict[Key, Slot]
    processors: tuple[Hashable, ...]
    algorithm: str = ""

    @property
    def placement(self) -> dict[Key, Hashable]:
        """node -> processor."""
        return {node: slot.processor for node, slot in self.slots.items()}

    @property
    def makespan(self) -> float:
        """The last finish time in seconds; 0 for an empty schedule."""
        return max((slot.finish for slot in self.slots.values()), default=0.0)

    @property
    def order(self) -> dict[Hashable, tuple[Key, ...]]:
        """processor -> its nodes by (start, finish), ties in placement order; idle ones get ()."""
        rows: dict[Hashable, list[Key]] = {proc: [] for proc in self.processors}
        for node, slot in self.slots.items():
            rows.setdefault(slot.processor, []).append(node)
        return {
            proc: tuple(sorted(nodes, key=lambda n: (self.slots[n].start, self.slots[n].finish)))
            for proc, nodes in rows.items()
        }

    def validate(self, graph: nx.DiGraph, *, rtol: float = 1e-9) -> None:
        """Check the schedule against ``graph``; raise `InvalidScheduleError` listing violations.

        Checks: every node of the graph is scheduled exactly once and nothing else is; each runs on
        one of ``processors`` that its ``costs`` list, for at least that cost; no two nodes overlap
        on a processor; each node starts no earlier than every predecessor's finish plus the
        transfer time when they run on different processors. Times compare with an absolute
        tolerance of ``rtol * max(1, makespan)``.
        """
        tol = rtol * max(1.0, self.makespan)
        problems: list[str] = []
        problems += [f"node {node!r} is not scheduled" for node in graph if node not in self.slots]
        problems += [
            f"node {node!r} is not in the graph" for node in self.slots if node not in graph
        ]
        processors = set(self.processors)
        for node, (proc, start, finish) in self.slots.items():
            if proc not in processors:
                problems.append(f"node {node!r} runs on {proc!r}, not one of {self.processors!r}")
            if not (math.isfinite(start) and math.isfinite(finish) and 0 <= start <= finish):
                problems.append(f"node {node!r} has slot [{start}, {finish}]")
            if node not in graph:
                continue
            costs = graph.nodes[node].get("costs") or {}
            if proc not in costs:
                problems.append(f"node {node!r} runs on {proc!r}, which its costs do not list")
            elif finish - start < float(costs[proc]) - tol:
                problems.append(
                    f"node {node!r} runs {finish - start:g} s on {proc!r}, "
                    f"less than its cost {costs[proc]:g} s"
                )
        for proc, nodes in self.order.items():
            for before, after in pairwise(nodes):
                if self.slots[after].start < self.slots[before].finish - tol:
                    problems.append(f"nodes {before!r} and {after!r} overlap on {proc!r}")
        for u, v, comm in graph.edges(data="comm", default=0.0):
            if u not in self.slots or v not in self.slots:
                continue
            src, dst = self.slots[u].processor, self.slots[v].processor
            arrival = self.slots[u].finish + transfer_seconds(comm, src, dst)
            if self.slots[v].start < arrival - tol:
                problems.append(
                    f"node {v!r} starts at {self.slots[v].start:g} on {dst!r} "
                    f"before the data of {u!r} arrives at {arrival:g}"
                )
        if problems:
            raise InvalidScheduleError(problems)
