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
computes something else. A model with BatchNorm refuses pipelines and hybrids (their stages never
see the whole batch): those candidates drop out like any split that does not fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

HORIZON = 4  # steps planned per candidate (a one-shard candidate: up to FUSED_HORIZON)
FUSED_HORIZON = 1000
LARGE_STEP_FLOPS = 2e9  # a step of at least this much arithmetic may pay for a pipeline


def choose(run: Any, fix: Callable[..., Any], plan_chunk: Callable[..., Any],
           initial_states: Callable[..., Any]) -> Any:
    """``run`` (a :class:`pnngraph.run.pipeline.Run` whose strategy is :class:`Auto`) with the
    candidate predicted fastest, its shards and copies fixed, and the predictions of all
    candidates in ``run.alternatives`` (fastest first). ``fix(run, strategy)``,
    ``plan_chunk`` and ``initial_states`` are the pipeline's own steps."""
    model, spec = run.model, run.spec
    workers = len(run.cluster.usable(run.options.devices))
    step_flops = 3.0 * sum(model.layer_flops()) * spec.batch_size
    candidates = spec.strategy.candidates(workers, len(model.layers),
                                          step_flops >= LARGE_STEP_FLOPS)
    scored: list[tuple[float, str, Any]] = []
    cluster, failure = run.cluster, None
    for candidate in candidates:
        try:  # a split may not fit this batch or cluster (more shards than samples, ...)
            trial = fix(replace(run, cluster=cluster), candidate)
            horizon = min(spec.steps, FUSED_HORIZON if trial.spec.strategy.fusable else HORIZON)
            graph = plan_chunk(trial, 0, horizon, initial_states(model, trial.spec))
        except ValueError as err:
            failure = err
            continue
        cluster = graph.cluster
        plan = graph.plan
        seconds = plan.terms["submit"] + plan.terms["gather"] \
            + plan.terms["steps"] * spec.steps / horizon
        name = repr(trial.spec.strategy)
        if candidate.auto:
            name += " (shards sized to the workers)"
        scored.append((seconds, name, trial))
    if not scored:
        raise failure or ValueError("no candidate strategy")
    scored.sort(key=lambda item: (item[0], item[1]))
    best = scored[0][2]
    alternatives = tuple((name, seconds) for seconds, name, _ in scored)
    return replace(best, cluster=cluster, alternatives=alternatives)

