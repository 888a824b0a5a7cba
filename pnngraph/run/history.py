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

from collections.abc import Mapping, Sequence
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
) -> list[tuple[str, str, float, float]]:
    """(phase, worker, predicted seconds, measured seconds) for every node that ran on a worker
    of ``cluster`` (prediction without Dask's per-task overhead, which the stream does not
    include)."""
    costed = scheduling_graph(graph.to_networkx(), cluster, dtype=graph.model.dtype)
    samples = []
    for key, (worker, seconds) in measured_seconds(stream).items():
        if key in costed and worker in costed.nodes[key]["costs"]:
            predicted = costed.nodes[key]["costs"][worker] - cluster.task_overhead_seconds
            samples.append((costed.nodes[key]["kind"], worker, max(predicted, 1e-9), seconds))
    return samples


def learn(
    cluster: ClusterModel, graph: Any, stream: Sequence[Mapping[str, Any]], *, weight: float = 0.5
) -> ClusterModel:
    """``cluster`` with its corrections moved towards this run's measured durations."""
    return refine(cluster, duration_samples(graph, cluster, stream), weight=weight)
