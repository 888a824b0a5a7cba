"""Memory: each worker's predicted peak under a plan, what it may use, and what to try instead.

The peak is read off the plan's predicted timeline (node -> worker, start, finish), walking every
worker's events in time order::

    a node's output      on its worker from the node's start until its last consumer finishes
                         (a graph output: until the end), ``bytes`` of the abstract graph (a
                         state's ``params`` beside the state: nothing, they share its arrays)
    a copy of an input   on a consumer's worker, when the producer ran elsewhere (or is data or an
                         initial state, which come from outside), from the first consumer's start
                         there until the last one's finish there
    a node's work        while it runs: ``work_bytes`` (activations and caches of a forward and
                         backward pass, an optimizer's temporaries; :mod:`pnngraph.compile.cost`),
                         and, on the worker an initial state is sent to inside the graph's
                         message, a copy of it: it arrives unaligned, the kernel aligns it
    the process          ``BASELINE_BYTES`` on every host worker (an idle Dask worker with
                         pnngraph loaded, measured on the machines of this project)

so a pipeline stage's forward output (every activation its backward needs) stays until that
micro-batch's backward of the stage, a state until the next step's update has made its successor,
and a GPU worker's arrays count against its device memory, without the host process.

What a worker may use (:func:`usable_bytes`) is ``PAUSE_FRACTION`` of its memory limit (Dask
pauses a worker above 80 % of it, ``distributed.worker.memory.pause``, and restarts it above 95
%) and ``DEVICE_FRACTION`` of a GPU's memory. :func:`remedies` lists the strategies to try when a
plan does not fit, in order: more micro-batches, then more stages (a pipeline), more shards (data
parallelism).

>>> import networkx as nx
>>> from pnngraph.plan.cluster import simulated_cluster
>>> from pnngraph.plan.planner import make_plan
>>> g = nx.DiGraph()
>>> g.add_node("a", kind="grad", flops=1e9, bytes=1e8, work_bytes=3e8)
>>> g.add_node("b", kind="update", flops=1e6, bytes=2e8)
>>> g.add_edge("a", "b", bytes=1e8)
>>> cluster = simulated_cluster(cpus=1, gpus=0, memory_gb=1.0)
>>> plan = make_plan(g, cluster)
>>> peak_bytes(g, plan, cluster, baseline=0)  # a's work and output, then a's output and b's
{'sim-cpu-0': 400000000.0}
>>> usable_bytes(cluster)
{'sim-cpu-0': 800000000.0}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx

from pnngraph.compile.strategies import DataParallel, Hybrid, Pipeline, Strategy
from pnngraph.plan.cluster import ClusterModel
from pnngraph.plan.planner import source_workers

BASELINE_BYTES = 88e6  # measured: RSS of an idle Dask worker after a small pnngraph run (84 MiB)
PAUSE_FRACTION = 0.8  # distributed.worker.memory.pause: a worker above it stops running tasks
DEVICE_FRACTION = 0.9  # of a GPU's memory: CuPy's pool and the CUDA context take the rest
MiB = 2**20


def peak_bytes(abstract: nx.DiGraph, plan: Any, cluster: ClusterModel, *,
               baseline: float = BASELINE_BYTES) -> dict[str, float]:
    """Predicted peak bytes of every worker that runs a node of ``plan`` (a
    :class:`~pnngraph.plan.planner.Plan` of ``abstract``), as the module docstring counts them."""
    slots = plan.predicted.slots
    end = plan.predicted.makespan
    nodes, succ, pred = abstract.nodes, abstract.succ, abstract.pred
    in_graph = source_workers(abstract, plan)  # a value in the graph's message -> its worker
    events: dict[str, list[tuple[float, float]]] = {}

    def hold(worker: str, t0: float, t1: float, nbytes: float) -> None:
        if nbytes > 0 and t1 > t0:
            events.setdefault(worker, []).extend(((t0, nbytes), (t1, -nbytes)))

    for key, node in nodes(data=True):
        out = float(node.get("bytes") or 0)
        spans: dict[str, list[float]] = {}  # consumer worker -> [first start, last finish]
        for c in succ[key]:
            s = slots.get(c)
            if s is None:
                continue
            span = spans.get(s.processor)
            if span is None:
                spans[s.processor] = [s.start, s.finish]
            else:
                span[0], span[1] = min(span[0], s.start), max(span[1], s.finish)
        last = max((span[1] for span in spans.values()), default=end)
        here = slots.get(key)
        if here is not None:
            worker = here.processor
            # an initial state arrives unaligned on its worker: the kernel copies it there
            # (kernels._adopt; a copy sent on to another worker arrives aligned)
            work = float(node.get("work_bytes") or 0) + sum(
                float(nodes[p].get("bytes") or 0) for p in pred[key]
                if in_graph.get(p) == str(worker))
            hold(str(worker), here.start, here.finish, work)
            if not _shares(abstract, slots, key, worker):
                hold(str(worker), here.start, max(last, here.finish), out)
            spans.pop(worker, None)
        for worker, (t0, _) in spans.items():  # Dask drops a copy when it drops the value
            hold(str(worker), t0, last, out)
    peaks = {}
    for worker, changes in events.items():
        changes.sort()  # in time order; at one instant, frees first
        level = top = 0.0
        for _, delta in changes:
            level += delta
            top = max(top, level)
        device = cluster.worker(worker).backend == "cupy"
        peaks[worker] = top + (0.0 if device else baseline)
    return dict(sorted(peaks.items()))


class LazyPeaks(Mapping[str, float]):
    """:func:`peak_bytes` of a plan, computed when first read: the walk reads the plan's whole
    timeline, which a tiled plan simulates only when asked (:mod:`pnngraph.plan.periodic`), so a
    chunk whose peaks nobody reads costs nothing more. A pickle holds them as a plain dict."""

    def __init__(self, abstract: nx.DiGraph, plan: Any, cluster: ClusterModel) -> None:
        self._args: tuple[Any, ...] | None = (abstract, plan, cluster)
        self._peaks: dict[str, float] = {}

    def _get(self) -> dict[str, float]:
        if self._args is not None:
            self._peaks, self._args = peak_bytes(*self._args), None
        return self._peaks

    def __getitem__(self, worker: str) -> float:
        return self._get()[worker]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __reduce__(self) -> tuple[Any, ...]:
        return dict, (self._get(),)


def _shares(abstract: nx.DiGraph, slots: Mapping[Any, Any], key: Any, worker: Any) -> bool:
    """Whether ``key`` is a ``params`` node (a state's parameters, the same arrays) whose state
    is on ``worker``: its output takes no memory there."""
    if abstract.nodes[key]["kind"] != "params":
        return False
    return all(getattr(slots.get(p), "processor", None) == worker
               for p in abstract.predecessors(key))


def usable_bytes(cluster: ClusterModel) -> dict[str, float]:
    """The bytes each worker of ``cluster`` may use, where its limit is known: a GPU worker's
    device memory, else its memory limit, each times its margin (module docstring)."""
    out = {}
    for w in cluster.workers:
        if w.backend == "cupy" and w.device_memory_bytes:
            out[w.address] = DEVICE_FRACTION * w.device_memory_bytes
        elif w.memory_limit_bytes:
            out[w.address] = PAUSE_FRACTION * w.memory_limit_bytes
    return out


@dataclass(frozen=True)
class Shortfall:
    """A worker whose predicted peak exceeds what it may use."""

    worker: str
    need_bytes: float
    has_bytes: float

    @property
    def missing_bytes(self) -> float:
        return self.need_bytes - self.has_bytes

    def describe(self) -> str:
        return (f"{self.worker} needs {self.need_bytes / MiB:.0f} MiB, may use "
                f"{self.has_bytes / MiB:.0f} MiB")


def shortfall(peaks: Mapping[str, float], limits: Mapping[str, float]) -> Shortfall | None:
    """The worker that misses the most memory (ties: the first in address order), or ``None``
    when every peak fits."""
    worst = None
    for worker in sorted(peaks):
        if worker in limits and peaks[worker] > limits[worker]:
            s = Shortfall(worker, peaks[worker], limits[worker])
            if worst is None or s.missing_bytes > worst.missing_bytes:
                worst = s
    return worst


MAX_REMEDIES = 12


def remedies(strategy: Strategy, *, workers: int, n_layers: int, batch: int) -> list[Strategy]:
    """What to try, in order, when ``strategy`` does not fit: a pipeline's or a hybrid's
    micro-batches doubled (up to the samples of a shard: each holds fewer activations), then
    halved (down to 1: each keeps a gradient of its stage until they are summed, which for a
    model of large layers and a small batch weighs more), then for a pipeline one stage more
    at a time (up to the workers and the layers), each with the micro-batch counts asked and
    more; for data parallelism the shards doubled (up to the batch). At most
    :data:`MAX_REMEDIES`.

    >>> [s.layout for s in remedies(Pipeline(2, 2), workers=3, n_layers=4, batch=8)]
    [(1, 2, 4), (1, 2, 8), (1, 2, 1), (1, 3, 2), (1, 3, 4), (1, 3, 8)]
    >>> [s.shards for s in remedies(DataParallel(2), workers=2, n_layers=2, batch=10)]
    [4, 8]
    """
    out: list[Strategy] = []
    if isinstance(strategy, Pipeline):
        micro = _doublings(strategy.microbatches, batch)
        fewer = _halvings(strategy.microbatches)
        out += [Pipeline(strategy.layer_counts or strategy.stages, m)
                for m in micro[1:] + fewer[1:]]
        for k in range(strategy.stages + 1, min(workers, n_layers) + 1):
            out += [Pipeline(k, m) for m in micro]
    elif isinstance(strategy, Hybrid):
        per_shard = batch // max(strategy.data.shards, 1)
        p = strategy.pipeline
        out += [Hybrid(strategy.data, Pipeline(p.layer_counts or p.stages, m))
                for m in _doublings(p.microbatches, per_shard)[1:] + _halvings(p.microbatches)[1:]]
    elif isinstance(strategy, DataParallel) and not strategy.auto:
        out += [DataParallel(s) for s in _doublings(strategy.shards, batch)[1:]]
    return out[:MAX_REMEDIES]


def _halvings(n: int) -> list[int]:
    """``n, n // 2, n // 4, ...`` down to 1."""
    out = [n]
    while out[-1] > 1:
        out.append(out[-1] // 2)
    return out


def _doublings(n: int, most: int) -> list[int]:
    """``n, 2 n, 4 n, ...`` up to ``most`` (``[n]`` at least)."""
    out = [n]
    while out[-1] * 2 <= most:
        out.append(out[-1] * 2)
    return out
