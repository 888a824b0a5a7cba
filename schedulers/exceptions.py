"""Errors raised by the schedulers, one small hierarchy with fields.

Every error is a `SchedulingError`, itself a `ValueError`, so a caller may catch broadly
(``except ValueError``) or narrowly (``except CycleError``). Each error keeps the offending values
as attributes, and its message names them:

>>> import networkx as nx
>>> from schedulers import heft, MissingCostError
>>> graph = nx.DiGraph()
>>> graph.add_node("load")
>>> try:
...     heft(graph, ["cpu"])
... except MissingCostError as error:
...     print(error.node, "|", error)
load | node 'load' has no 'costs' attribute: expected a dict processor -> seconds
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

__all__ = [
    "CycleError",
    "DeadlockError",
    "InvalidCostError",
    "InvalidScheduleError",
    "MissingCostError",
    "NoProcessorsError",
    "SchedulingError",
    "UnschedulableNodeError",
]


def _rebuild(cls: type[SchedulingError], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return cls(*args, **kwargs)


class SchedulingError(ValueError):
    """Base class of every error raised by `schedulers`; picklable with its fields."""

    _fields: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self._fields
        return _rebuild, (type(self), args, kwargs)


class NoProcessorsError(SchedulingError):
    """The list of processors is empty."""

    def __init__(self) -> None:
        super().__init__("expected at least one processor, got an empty list")


class CycleError(SchedulingError):
    """The graph has a cycle; ``cycle`` lists its edges."""

    def __init__(self, cycle: Sequence[tuple[Hashable, Hashable]]) -> None:
        self._fields = ((list(cycle),), {})
        self.cycle = list(cycle)
        path = " -> ".join(repr(u) for u, _ in self.cycle)
        first = self.cycle[0][0] if self.cycle else None
        super().__init__(f"expected a DAG, got a cycle {path} -> {first!r}")


class MissingCostError(SchedulingError):
    """A node lacks ``costs`` or a per-pair ``comm`` dict lacks a pair of processors."""

    def __init__(
        self,
        node: Hashable,
        *,
        edge: tuple[Hashable, Hashable] | None = None,
        pair: tuple[Hashable, Hashable] | None = None,
    ) -> None:
        self._fields = ((node,), {"edge": edge, "pair": pair})
        self.node = node
        self.edge = edge
        self.pair = pair
        if edge is None:
            message = (
                f"node {node!r} has no 'costs' attribute: expected a dict processor -> seconds"
            )
        else:
            message = f"edge {edge!r} has a 'comm' dict without the processor pair {pair!r}"
        super().__init__(message)


class InvalidCostError(SchedulingError):
    """A cost or transfer time is not a finite number of seconds >= 0."""

    def __init__(
        self,
        value: Any,
        *,
        node: Hashable | None = None,
        edge: tuple[Hashable, Hashable] | None = None,
        processor: Hashable | None = None,
    ) -> None:
        self._fields = ((value,), {"node": node, "edge": edge, "processor": processor})
        self.value = value
        self.node = node
        self.edge = edge
        self.processor = processor
        where = f"node {node!r}" if edge is None else f"edge {edge!r}"
        if processor is not None:
            where += f" on processor {processor!r}"
        super().__init__(f"{where}: expected a finite number of seconds >= 0, got {value!r}")


class UnschedulableNodeError(SchedulingError):
    """No given processor can run ``node`` (its ``costs`` name none of them)."""

    def __init__(self, node: Hashable, processors: Sequence[Hashable]) -> None:
        self._fields = ((node, tuple(processors)), {})
        self.node = node
        self.processors = tuple(processors)
        super().__init__(
            f"node {node!r} can run on none of the processors {list(self.processors)!r}"
        )


class DeadlockError(SchedulingError):
    """A fixed per-processor order contradicts the graph's dependencies (see `simulate`)."""

    def __init__(self, waiting: dict[Hashable, Hashable]) -> None:
        self._fields = ((dict(waiting),), {})
        self.waiting = waiting
        detail = ", ".join(f"{proc!r} waits to run {node!r}" for proc, node in waiting.items())
        super().__init__(f"the per-processor order deadlocks: {detail}")


class InvalidScheduleError(SchedulingError):
    """`Schedule.validate` found violations; ``violations`` lists them, one string each."""

    def __init__(self, violations: Sequence[str]) -> None:
        self._fields = ((list(violations),), {})
        self.violations = list(violations)
        shown = "; ".join(self.violations[:5])
        more = len(self.violations) - 5
        tail = f"; and {more} more" if more > 0 else ""
        super().__init__(f"invalid schedule ({len(self.violations)} violations): {shown}{tail}")
