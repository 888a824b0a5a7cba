"""A machine model that turns per-node work into the ``costs`` and ``comm`` the schedulers read.

Data
----
- `ProcessorSpec`: a processor's ``kind`` (``"cpu"``, ``"gpu"``: a label), its speed per kind of
  work in ``flops_per_s`` (dict work kind -> FLOP/s; the key ``"default"`` serves unlisted kinds; a
  kind it lacks, with no default, is work it cannot run), its ``memory_bytes_per_s``, a fixed
  ``task_overhead_seconds`` per node and optionally ``copy_bytes_per_s``, a copy every transfer to
  or from it pays on top of the link (a GPU's host <-> device copy).
- `Link`: ``bandwidth_bytes_per_s`` and ``latency_seconds`` between two processors.
- `Machine`: processors by name, the default ``network`` link and per-pair ``links`` overrides.

A node with attributes ``flops``, ``bytes`` (memory traffic) and optionally ``work`` (its work kind,
default ``"default"``) runs on a processor for the roofline time
``task_overhead_seconds + max(flops / flops_per_s[work], bytes / memory_bytes_per_s)``. An edge with
attribute ``bytes`` (default 0) moves in ``latency_seconds + bytes / bandwidth_bytes_per_s`` between
two distinct processors, plus ``bytes / copy_bytes_per_s`` at each end that has one.
`annotate_costs` writes both into a copy of the graph; without per-pair ``links`` an edge's
``comm`` is one number or a `PairSum` (one shared part, one per end), so a machine of a thousand
processors costs no ``(p, p)`` table per edge.

>>> import networkx as nx

from schedulers.schedule import PairSum
>>> machine = cpu_gpu_machine(cpus=1, gpus=1)
>>> graph = nx.DiGraph()
>>> graph.add_node("gemm", flops=2e9, bytes=1e6)
>>> graph.add_node("sum", flops=1e6, bytes=8e6)
>>> graph.add_edge("gemm", "sum", bytes=8e6)
>>> costed = annotate_costs(graph, machine)
>>> {proc: round(s, 6) for proc, s in costed.nodes["gemm"]["costs"].items()}
{('cpu', 0): 0.02, ('gpu', 0): 0.00021}
>>> round(costed.edges["gemm", "sum"]["comm"], 6)  # every pair touches the GPU: one number
0.01
>>> comm = annotate_costs(graph, cpu_gpu_machine(cpus=2, gpus=1)).edges["gemm", "sum"]["comm"]
>>> round(comm[("cpu", 0), ("cpu", 1)], 6), round(comm[("cpu", 0), ("gpu", 0)], 6)
(0.005833, 0.01)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from schedulers.schedule import PairSum

__all__ = ["Link", "Machine", "ProcessorSpec", "annotate_costs", "cpu_gpu_machine"]


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"expected {name} > 0 and finite, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"expected {name} >= 0 and finite, got {value!r}")


@dataclass(frozen=True)
class ProcessorSpec:
    """A processor: ``kind`` label, speeds per work kind and memory, fixed overhead per node."""

    kind: str
    flops_per_s: Mapping[str, float]
    memory_bytes_per_s: float
    task_overhead_seconds: float = 0.0
    copy_bytes_per_s: float | None = None

    def __post_init__(self) -> None:
        for work, speed in self.flops_per_s.items():
            _positive(f"flops_per_s[{work!r}]", speed)
        _positive("memory_bytes_per_s", self.memory_bytes_per_s)
        _non_negative("task_overhead_seconds", self.task_overhead_seconds)
        if self.copy_bytes_per_s is not None:
            _positive("copy_bytes_per_s", self.copy_bytes_per_s)

    @property
    def copy_seconds_per_byte(self) -> float:
        return 0.0 if self.copy_bytes_per_s is None else 1.0 / self.copy_bytes_per_s

    def run_seconds(self, flops: float, nbytes: float, work: str = "default") -> float | None:
        """Roofline time of a node, or ``None`` if this processor cannot run ``work``."""
        speed = self.flops_per_s.get(work, self.flops_per_s.get("default"))
        if speed is None:
            return None
        return self.task_overhead_seconds + max(flops / speed, nbytes / self.memory_bytes_per_s)


@dataclass(frozen=True)
class Link:
    """A link between two processors."""

    bandwidth_bytes_per_s: float
    latency_seconds: float = 0.0

    def __post_init__(self) -> None:
        _positive("bandwidth_bytes_per_s", self.bandwidth_bytes_per_s)
        _non_negative("latency_seconds", self.latency_seconds)

    def transfer_seconds(self, nbytes: float) -> float:
        """``latency_seconds + nbytes / bandwidth_bytes_per_s``."""
        return self.latency_seconds + nbytes / self.bandwidth_bytes_per_s


@dataclass(frozen=True)
class Machine:
    """Processors by name, the default ``network`` link and per-ordered-pair ``links``."""

    processors: Mapping[Hashable, ProcessorSpec]
    network: Link
    links: Mapping[tuple[Hashable, Hashable], Link] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.processors:
            raise ValueError("expected at least one processor, got none")
        unknown = [pair for pair in self.links if not set(pair) <= set(self.processors)]
        if unknown:
            raise ValueError(f"expected links between known processors, got {unknown!r}")

    @property
    def names(self) -> list[Hashable]:
        """The processor names, to pass to a scheduler."""
        return list(self.processors)

    def link(self, src: Hashable, dst: Hashable) -> Link:
        """The link from ``src`` to ``dst``: its override, else the default network with the
        copies at either end (``copy_bytes_per_s``) folded into its bandwidth."""
        if (src, dst) in self.links:
            return self.links[(src, dst)]
        extra = self.processors[src].copy_seconds_per_byte + \
            self.processors[dst].copy_seconds_per_byte
        if not extra:
            return self.network
        per_byte = 1.0 / self.network.bandwidth_bytes_per_s + extra
        return Link(1.0 / per_byte, self.network.latency_seconds)


def annotate_costs(graph: nx.DiGraph, machine: Machine, *, copy: bool = True) -> nx.DiGraph:
    """Return a copy of ``graph`` with node ``costs`` and edge ``comm`` from ``machine``.

    Parameters
    ----------
    graph : networkx.DiGraph
        Nodes with ``flops`` and/or ``bytes`` (memory traffic) and optionally ``work`` (work kind);
        edges optionally with ``bytes`` moved (default 0: the edge costs only the link latency).
    machine : Machine
        The machine model.
    copy : bool
        ``False`` writes the attributes into ``graph`` itself and returns it.

    Returns
    -------
    networkx.DiGraph
        A copy whose nodes have ``costs`` (processor -> seconds; processors that cannot run the
        node's work kind are left out) and whose edges have ``comm``: one number when every pair
        of distinct processors costs the same, else a `PairSum` when the machine has no per-pair
        ``links`` (only the ends' copies differ), else a dict ``(src, dst) -> seconds``.
    """
    out = graph.copy() if copy else graph
    names = machine.names
    kinds: dict[int, list[Hashable]] = {}  # processors by spec: each spec priced once per node
    for name, spec in machine.processors.items():
        kinds.setdefault(id(spec), []).append(name)
    specs = [(machine.processors[group[0]], group) for group in kinds.values()]
    node_costs: dict[tuple[float, float, str], dict[Hashable, float]] = {}
    for node, data in out.nodes(data=True):
        if "flops" not in data and "bytes" not in data:
            raise ValueError(
                f"node {node!r}: expected attribute 'flops' and/or 'bytes', got neither"
            )
        flops, nbytes = float(data.get("flops", 0.0)), float(data.get("bytes", 0.0))
        work = data.get("work", "default")
        costs = node_costs.get((flops, nbytes, work))
        if costs is None:  # nodes of equal work cost the same: priced once
            _non_negative(f"node {node!r} flops", flops)
            _non_negative(f"node {node!r} bytes", nbytes)
            priced: dict[Hashable, float] = {}
            for spec, group in specs:
                seconds = spec.run_seconds(flops, nbytes, work)
                if seconds is not None:
                    priced.update(dict.fromkeys(group, seconds))
            costs = node_costs[flops, nbytes, work] = {
                name: priced[name] for name in names if name in priced}
        data["costs"] = dict(costs)
    if not machine.links:
        _network_comm(out, machine)
        return out
    pairs = [(src, dst) for src in names for dst in names if src != dst]
    # the pairs that share a link cost the same: price each distinct link once per edge size
    by_link: dict[Link, list[tuple[Hashable, Hashable]]] = {}
    for pair in pairs:
        by_link.setdefault(machine.link(*pair), []).append(pair)
    edge_comm: dict[float, Any] = {}
    edges = ((u, v, data) for u, nbrs in out.adjacency() for v, data in nbrs.items())
    for u, v, data in edges:
        nbytes = float(data.get("bytes", 0.0))
        comm = edge_comm.get(nbytes)
        if comm is None:
            _non_negative(f"edge {(u, v)!r} bytes", nbytes)
            per_link = {link: link.transfer_seconds(nbytes) for link in by_link}
            if len(set(per_link.values())) == 1:
                comm = next(iter(per_link.values()))
            elif not per_link:
                comm = 0.0
            else:
                comm = {pair: per_link[machine.link(*pair)] for pair in pairs}
            edge_comm[nbytes] = comm
        data["comm"] = dict(comm) if isinstance(comm, dict) else comm
    return out


def _network_comm(graph: nx.DiGraph, machine: Machine) -> None:
    """Edge ``comm`` on a machine without per-pair links: the network's latency and bandwidth,
    and each end's copy (one `PairSum` per edge, one shared dict of ends)."""
    network = machine.network
    ends = {name: spec.copy_seconds_per_byte for name, spec in machine.processors.items()
            if spec.copy_bytes_per_s is not None}
    uniform = len(set(ends.values())) <= 1 and (not ends or len(ends) == len(machine.processors))
    end = next(iter(ends.values()), 0.0)
    single = len(machine.processors) == 1
    for u, v, data in graph.edges(data=True):
        nbytes = float(data.get("bytes", 0.0))
        _non_negative(f"edge {(u, v)!r} bytes", nbytes)
        base = network.transfer_seconds(nbytes)
        if single:
            data["comm"] = 0.0
        elif uniform:
            data["comm"] = base + nbytes * (end + end)
        else:
            data["comm"] = PairSum(base, ends, nbytes)


def cpu_gpu_machine(
    cpus: int = 4,
    gpus: int = 1,
    *,
    cpu_flops_per_s: float = 1e11,
    gpu_flops_per_s: float = 1e13,
    cpu_memory_bytes_per_s: float = 2e10,
    gpu_memory_bytes_per_s: float = 1e12,
    gpu_task_overhead_seconds: float = 1e-5,
    network: Link | None = None,
    gpu_link: Link | None = None,
) -> Machine:
    """An illustrative machine: ``cpus`` CPU workers and ``gpus`` GPU workers.

    Processors are named ``("cpu", i)`` and ``("gpu", i)``. Transfers between CPUs use ``network``
    (default 1.5 GB/s, 0.5 ms: a worker-to-worker copy); any transfer touching a GPU uses
    ``gpu_link`` (default 1 GB/s, 2 ms: the copy to and from host memory comes on top).
    """
    cpu = ProcessorSpec("cpu", {"default": cpu_flops_per_s}, cpu_memory_bytes_per_s)
    gpu = ProcessorSpec(
        "gpu", {"default": gpu_flops_per_s}, gpu_memory_bytes_per_s, gpu_task_overhead_seconds
    )
    processors: dict[Hashable, ProcessorSpec] = {("cpu", i): cpu for i in range(cpus)}
    processors.update({("gpu", i): gpu for i in range(gpus)})
    network = network or Link(1.5e9, 5e-4)
    gpu_link = gpu_link or Link(1e9, 2e-3)
    links = {
        (src, dst): gpu_link
        for src in processors
        for dst in processors
        if src != dst and "gpu" in (processors[src].kind, processors[dst].kind)
    }
    return Machine(processors, network, links)
