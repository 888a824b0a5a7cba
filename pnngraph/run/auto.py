"""``strategy="auto"``: every candidate compiled, placed and predicted; the fastest one runs.

The candidates are those of :meth:`pnngraph.compile.strategies.Auto.candidates` for the cluster's
usable workers: one shard (fused steps where a step is tiny), data parallelism over 2..W workers
and with shards sized to their speeds, and, where the model is large, pipelines and a hybrid.
Each is planned exactly as it would run (its kernels profiled on the workers, placed by the
run's scheduler) for a horizon of a few steps, and its wall time for the run's steps is
predicted from that plan::

    predicted(T) = submit + gather + makespan(t) * T / t      t = the planned horizon

The choice and every alternative with its prediction are kept (``graph.plan.alternatives``), so
a user, the command line and the report can say why. Model averaging is never a candidate: it
computes something else.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pnngraph.compile.strategies import Strategy
from pnngraph.plan.placement import model_sizes, size_shards

HORIZON = 4  # steps planned per candidate (a one-shard candidate: up to FUSED_HORIZON)
FUSED_HORIZON = 1000
LARGE_STEP_FLOPS = 2e9  # a step of at least this much arithmetic may pay for a pipeline


def choose(run: Any, plan_chunk: Any, initial_states: Any) -> Any:
    """``run`` (a :class:`pnngraph.run.pipeline.Run` whose strategy is :class:`Auto`) with the
    candidate predicted fastest, its shards and copies fixed, and the predictions of all
    candidates in ``run.alternatives`` (fastest first)."""
    model, spec = run.model, run.spec
    workers = len(run.cluster.usable(run.options.devices))
    step_flops = 3.0 * sum(model.layer_flops()) * spec.batch_size
    candidates = spec.strategy.candidates(workers, len(model.layers),
                                          step_flops >= LARGE_STEP_FLOPS)
    scored: list[tuple[float, str, Any]] = []
    cluster = run.cluster
    for candidate in candidates:
        trial = fixed(replace(run, cluster=cluster), candidate)
        if trial is None:
            continue
        horizon = min(spec.steps, FUSED_HORIZON if trial.spec.strategy.fusable else HORIZON)
        try:
            graph = plan_chunk(trial, 0, horizon, initial_states(model, trial.spec))
        except ValueError:  # this split does not fit the batch (more shards than samples, ...)
            continue
        cluster = graph.cluster
        plan = graph.plan
        seconds = plan.terms["submit"] + plan.terms["gather"] \
            + plan.terms["steps"] * spec.steps / horizon
        name = repr(trial.spec.strategy)
        if candidate.auto:
            name += " (shards sized to the workers)"
        scored.append((seconds, name, trial))
    scored.sort(key=lambda item: (item[0], item[1]))
    best = scored[0][2]
    alternatives = tuple((name, seconds) for seconds, name, _ in scored)
    return replace(best, cluster=cluster, alternatives=alternatives)


def fixed(run: Any, strategy: Strategy) -> Any:
    """``run`` with ``strategy`` as its own: shards sized to the workers where asked, the state
    kept in one copy per worker the shards use (``None``: this strategy cannot run here)."""
    from pnngraph.run.pipeline import copies_for

    try:
        concrete, shard_workers = size_shards(
            strategy, run.cluster, batch_size=run.spec.batch_size, devices=run.options.devices,
            **model_sizes(run.model, run.spec))
    except ValueError:
        return None
    return replace(run, spec=replace(run.spec, strategy=concrete), shard_workers=shard_workers,
                   copies=copies_for(concrete, run.options, run.cluster, run.client))
