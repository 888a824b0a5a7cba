"""Learning from runs: measured task durations against the plan's predictions.

A run's task stream (``distributed.get_task_stream``) gives each task's worker and compute time;
the plan predicted a duration for the same node on that worker. :func:`learn` folds the ratios
into the cluster model's per-(phase, worker) corrections (outliers dropped, moved halfway each
run, as StarPU's history-based models do), and can write the model back to the calibration
cache, so the next plan of that cluster is priced with what was measured::

    with get_task_stream(client=client) as stream:
        client.compute(graph).result()
    cluster = learn(cluster, graph, stream.data)
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pnngraph.plan.cluster import ClusterModel, refine
from pnngraph.plan.planner import scheduling_graph


def measured_seconds(stream: Sequence[Mapping[str, Any]]) -> dict[Any, tuple[str, float]]:
    """key -> (worker, compute seconds) from task stream records."""
    out: dict[Any, tuple[str, float]] = {}
    for record in stream:
        compute = sum(
            s["stop"] - s["start"] for s in record.get("startstops", ()) if s["action"] == "compute"
        )
        if compute > 0:
            out[record["key"]] = (record["worker"], compute)
    return out


def duration_samples(
    graph: Any, cluster: ClusterModel, stream: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str, float, float, str | None]]:
    """(phase, worker, predicted seconds, measured seconds, kernel signature) for every node
    that ran on a worker of ``cluster`` (prediction without Dask's per-task overhead, which the
    stream does not include)."""
    costed = scheduling_graph(graph.to_networkx(), cluster, dtype=graph.model.dtype)
    samples = []
    for key, (worker, seconds) in measured_seconds(stream).items():
        if key in costed and worker in costed.nodes[key]["costs"]:
            predicted = costed.nodes[key]["costs"][worker] - cluster.task_overhead_seconds
            node = costed.nodes[key]
            samples.append((node["kind"], worker, max(predicted, 1e-9), seconds, node["sig"]))
    return samples


def hop_samples(graph: Any, stream: Sequence[Mapping[str, Any]]) -> list[float]:
    """Seconds from the end of a task's last input to its own start, for every task whose last
    input was computed on its own worker while that worker had nothing else to do: what one
    dependent hop costs in this run (the calibration times a chain of no-op tasks)."""
    spans: dict[Any, tuple[str, float, float]] = {}
    for record in stream:
        for s in record.get("startstops", ()):
            if s["action"] == "compute":
                spans[record["key"]] = (record["worker"], s["start"], s["stop"])
    # per worker, its tasks by start, and the latest end among the tasks started before each
    starts: dict[str, list[float]] = {}
    latest: dict[str, list[float]] = {}
    for worker, a, b in sorted(spans.values(), key=lambda span: span[1]):
        starts.setdefault(worker, []).append(a)
        done = latest.setdefault(worker, [])
        done.append(max(b, done[-1]) if done else b)
    abstract = graph.to_networkx()
    gaps = []
    for key, (worker, start, _) in spans.items():
        inputs = [spans[u] for u in abstract.predecessors(key) if u in spans] \
            if key in abstract else []
        if not inputs:
            continue
        last_worker, _, ready = max(inputs, key=lambda span: span[2])
        before = bisect.bisect_left(starts[worker], start)  # tasks started before this one
        idle = before == 0 or latest[worker][before - 1] <= ready
        if last_worker == worker and idle and start >= ready:
            gaps.append(start - ready)
    return gaps


def drift(samples: Sequence[tuple[Any, ...]]) -> dict[str, float]:
    """Worker -> measured over predicted seconds of all its tasks in ``samples``
    (:func:`duration_samples`): 1 where the cluster model was right, 3 for a worker three times
    slower than it predicted.

    >>> found = drift([("grad", "w0", 0.1, 0.3, None), ("update", "w0", 0.01, 0.01, None),
    ...                ("grad", "w1", 0.1, 0.1, None)])
    >>> {w: round(r, 4) for w, r in found.items()}  # w0: 0.31 s measured, 0.11 predicted
    {'w0': 2.8182, 'w1': 1.0}
    """
    predicted: dict[str, float] = {}
    measured: dict[str, float] = {}
    for _, worker, p, m, *_ in samples:
        predicted[worker] = predicted.get(worker, 0.0) + p
        measured[worker] = measured.get(worker, 0.0) + m
    return {w: measured[w] / predicted[w] for w in sorted(predicted) if predicted[w] > 0}


def learn(
    cluster: ClusterModel, graph: Any, stream: Sequence[Mapping[str, Any]], *, weight: float = 0.5,
    by_shape: bool = False, samples: Sequence[tuple[Any, ...]] | None = None,
) -> ClusterModel:
    """``cluster`` with its corrections moved towards this run's measured durations (per
    kernel signature and worker with ``by_shape``, else per phase and worker), and its hop
    latency towards the median hop of the run (:func:`hop_samples`). ``samples``: the
    :func:`duration_samples` of the stream, where the caller has them already."""
    if samples is None:
        samples = duration_samples(graph, cluster, stream)
    refined = refine(cluster, samples, weight=weight, by_shape=by_shape)
    gaps = hop_samples(graph, stream)
    if len(gaps) >= 3:
        hop = (1 - weight) * refined.hop_latency_seconds + weight * statistics.median(gaps)
        refined = replace(refined, hop_latency_seconds=hop)
    return refined
