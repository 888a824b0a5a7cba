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

Memory (:mod:`pnngraph.plan.memory`): where the cluster model knows the workers' limits, each
candidate is first planned for two steps without the client, and one whose predicted peak does
not fit is dropped (listed last, with ``inf`` seconds and why); where none fits, pipelines of
more stages are tried, then :class:`~pnngraph.exceptions.MemoryPlanError`. A candidate with
stages is also tried with its stages one per worker (:func:`spread`). A strategy given by the
user goes through :func:`fit_in_memory`: its stages one per worker, other micro-batch counts,
more stages or shards where it does not fit.

``fan_in="auto"`` (asked for; the default is 8) is fixed the same way, once the strategy is:
each fan-in of :func:`fan_in_candidates` is compiled and planned for one step, and the fastest
predicted step wins (ties: the earlier candidate, so 8, the fixed default of earlier versions,
unless another is strictly faster). Planning is deterministic, so the choice is a pure function
of the model, the spec and the cluster model; ``graph.plan.fan_ins`` lists what was tried, and
the run's spec (checkpoints, run.json) keeps the number, so a resumed run sums in the same
order. The cluster model of a calibrated cluster is measured, so two fresh runs may choose
differently (and their bits differ in the last places): that is why it is not the default. A
fan-in given by the user is kept as it is: it decides the bits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from pnngraph.compile.strategies import Pipeline
from pnngraph.exceptions import MemoryPlanError
from pnngraph.plan.memory import Shortfall, remedies, shortfall, usable_bytes
from pnngraph.plan.placement import UNPLANNED

log = logging.getLogger("pnngraph")

FAN_INS = (8, 2, 4, 16)  # then the number of shards: one flat sum
MAX_FLAT_EDGES = 2**16  # a flat sum into every copy's update: copies x shards edges at most
HORIZON = 4  # steps planned per candidate (a one-shard candidate: up to FUSED_HORIZON)
FUSED_HORIZON = 1000
LARGE_STEP_FLOPS = 2e9  # a step of at least this much arithmetic may pay for a pipeline
MEMORY_HORIZON = 2  # steps planned to check a plan's memory: a state and its successor


def choose(run: Any, fix: Callable[..., Any], plan_chunk: Callable[..., Any],
           initial_states: Callable[..., Any]) -> Any:
    """``run`` (a :class:`pnngraph.run.pipeline.Run` whose strategy is :class:`Auto`) with the
    candidate predicted fastest, its shards and copies fixed, and the predictions of all
    candidates in ``run.alternatives`` (fastest first). ``fix(run, strategy)``,
    ``plan_chunk`` and ``initial_states`` are the pipeline's own steps.

    Where the cluster model knows the workers' memory, a candidate whose plan does not fit
    (:func:`memory_check`) is dropped before its kernels are profiled, and listed last in the
    alternatives with ``inf`` seconds and why; where no candidate fits, pipelines of 2 and more
    stages are tried too (a model whose state does not fit one worker), and where none of them
    fits either, :class:`~pnngraph.exceptions.MemoryPlanError`."""
    model, spec = run.model, run.spec
    workers = len(run.cluster.usable(run.options.devices))
    step_flops = 3.0 * sum(model.layer_flops()) * spec.batch_size
    candidates = spec.strategy.candidates(workers, len(model.layers),
                                          step_flops >= LARGE_STEP_FLOPS)
    scored: list[tuple[float, str, Any]] = []
    dropped: list[tuple[str, float]] = []
    misses: list[Shortfall] = []
    cluster, failure = run.cluster, None

    def score(candidate: Any) -> None:
        nonlocal cluster, failure
        try:  # a split may not fit this batch or cluster (more shards than samples, ...)
            trial = fix(replace(run, cluster=cluster), candidate)
            name = repr(trial.spec.strategy)
            if candidate.auto:
                name += " (shards sized to the workers)"
            miss = memory_check(trial, plan_chunk, initial_states)
            if miss is not None:
                trial, miss = spread(trial, miss, plan_chunk, initial_states)
            if trial.options.scheduler != run.options.scheduler:
                name += " (stages one per worker)"
            if miss is not None:
                misses.append(miss)
                dropped.append((f"{name} (does not fit in memory: {miss.describe()})", math.inf))
                return
            horizon = min(spec.steps, FUSED_HORIZON if trial.spec.strategy.fusable else HORIZON)
            graph = plan_chunk(trial, 0, horizon, initial_states(model, trial.spec))
            cluster = graph.cluster
            if cluster is not trial.cluster:  # its kernels profiled: checked on their times
                miss = memory_check(replace(trial, cluster=cluster), plan_chunk, initial_states)
                if miss is not None:
                    misses.append(miss)
                    dropped.append((f"{name} (does not fit in memory with its kernels as "
                                    f"profiled: {miss.describe()})", math.inf))
                    return
        except ValueError as err:
            failure = err
            return
        plan = graph.plan
        seconds = plan.terms["submit"] + plan.terms["gather"] \
            + plan.terms["steps"] * spec.steps / horizon
        scored.append((seconds, name, trial))

    for candidate in candidates:
        score(candidate)
    if not scored and misses:  # nothing fits: the model's state in stages on several workers
        tried = {repr(c) for c in candidates}
        for k in range(2, min(workers, len(model.layers)) + 1):
            for m in (1, 4, 8):
                if repr(Pipeline(k, m)) not in tried and m <= spec.batch_size:
                    score(Pipeline(k, m))
    if not scored and misses:
        best = min(misses, key=lambda m: m.missing_bytes)
        raise MemoryPlanError(best.worker, best.need_bytes, best.has_bytes,
                              [name for name, _ in dropped])
    if not scored:
        raise failure or ValueError("no candidate strategy")
    scored.sort(key=lambda item: (item[0], item[1]))
    best_run = scored[0][2]
    alternatives = tuple((name, seconds) for seconds, name, _ in scored) + tuple(dropped)
    return replace(best_run, cluster=cluster, alternatives=alternatives)


def memory_check(run: Any, plan_chunk: Callable[..., Any],
                 initial_states: Callable[..., Any]) -> Shortfall | None:
    """The worker of ``run``'s plan that misses the most memory (``None``: the plan fits, or
    the cluster model knows no worker's limit): :data:`MEMORY_HORIZON` steps planned without
    the client, so no kernel is profiled (a kernel too large for a worker would not survive
    its profile) and the times are the cluster model's as they are."""
    if run.cluster is None or not usable_bytes(run.cluster):
        return None
    steps = min(run.spec.steps, MEMORY_HORIZON)
    graph = plan_chunk(replace(run, client=None), 0, steps, initial_states(run.model, run.spec))
    plan = graph.plan
    return None if plan is None else shortfall(plan.peak_bytes, plan.limit_bytes)


def spread(run: Any, miss: Shortfall, plan_chunk: Callable[..., Any],
           initial_states: Callable[..., Any]) -> tuple[Any, Shortfall | None]:
    """``run``, whose plan misses ``miss``, with its stages one per worker (the ``"static"``
    rule) where it has stages placed by a list scheduler and that plan fits: ``(that run,
    None)``. HEFT keeps the stages of a small model together where a transfer costs more than
    running them side by side saves, and with them their whole state. Else ``(run, the
    smaller of the two shortfalls)``."""
    if run.spec.strategy.layout[1] < 2 or run.options.scheduler in UNPLANNED:
        return run, miss
    static = replace(run, options=replace(run.options, scheduler="static"))
    other = memory_check(static, plan_chunk, initial_states)
    if other is None:
        return static, None
    return run, min(miss, other, key=lambda m: m.missing_bytes)


def fit_in_memory(run: Any, fix: Callable[..., Any], plan_chunk: Callable[..., Any],
                  initial_states: Callable[..., Any]) -> Any:
    """``run`` as it is where its plan fits in the workers' memory (or their limits are not
    known), else placed or changed so that it fits: the same strategy with its stages one per
    worker (:func:`spread`), else the first of :func:`pnngraph.plan.memory.remedies` that
    fits (other micro-batch counts, more stages or shards: the same large-batch SGD, so the
    result equals the serial trainer's all the same), each as planned, then spread; else
    :class:`~pnngraph.exceptions.MemoryPlanError` naming the worker that misses the most in
    the plan that missed the least. What changed is one line on the ``pnngraph`` logger
    (INFO).

    With a client, the plan found is then planned once more with its kernels profiled on the
    workers (each fits: its plan did), and where their measured times give a plan that does
    not fit (the timeline, so what is alive at once, changed), the search runs again on those
    times."""
    fitted, change = _fitted(run, fix, plan_chunk, initial_states)
    if run.client is not None and run.cluster is not None and usable_bytes(run.cluster):
        steps = min(run.spec.steps, MEMORY_HORIZON)
        profiled = plan_chunk(fitted, 0, steps, initial_states(run.model, fitted.spec)).cluster
        if profiled is not fitted.cluster:
            fitted, change = _fitted(replace(run, cluster=profiled), fix, plan_chunk,
                                     initial_states)
    if change:
        log.info(change)
    return fitted


def _fitted(run: Any, fix: Callable[..., Any], plan_chunk: Callable[..., Any],
            initial_states: Callable[..., Any]) -> tuple[Any, str]:
    """:func:`fit_in_memory` on ``run``'s cluster model as it is: the run that fits, and what
    changed (``""``: nothing)."""
    first = memory_check(run, plan_chunk, initial_states)
    if first is None:
        return run, ""

    def trials() -> Iterator[tuple[Any, Shortfall | None]]:
        yield run, first
        workers = len(run.cluster.usable(run.options.devices))
        for strategy in remedies(run.spec.strategy, workers=workers,
                                 n_layers=len(run.model.layers), batch=run.spec.batch_size):
            try:
                trial = fix(run, strategy)
                miss = memory_check(trial, plan_chunk, initial_states)
            except ValueError:  # a split that does not fit this batch or model
                continue
            yield trial, miss

    best, tried = first, []
    for trial, miss in trials():
        tried.append(repr(trial.spec.strategy))
        if miss is not None:
            trial, miss = spread(trial, miss, plan_chunk, initial_states)
        if miss is None:
            how = "" if trial.options.scheduler == run.options.scheduler else \
                f", its stages one per worker (scheduler 'static', not " \
                f"{run.options.scheduler!r})"
            return trial, f"{run.spec.strategy!r} does not fit in the workers' memory as " \
                f"planned ({first.describe()}); it runs as {trial.spec.strategy!r}{how}"
        best = min(best, miss, key=lambda m: m.missing_bytes)
    raise MemoryPlanError(best.worker, best.need_bytes, best.has_bytes, tried)


def fan_in_candidates(shards: int, copies: int = 1) -> list[int]:
    """The fan-ins worth trying for ``shards`` gradients summed into ``copies`` updates:
    :data:`FAN_INS` and ``shards``, one per distinct tree (every fan-in of at least ``shards``
    sums them all in the update, the same graph: the first such is kept). The flat sum is left
    out where it would take more than :data:`MAX_FLAT_EDGES` edges (every copy reading every
    shard's gradient: a graph too large to plan quickly).

    >>> fan_in_candidates(3), fan_in_candidates(64, 64), fan_in_candidates(1024, 1024)
    ([8, 2], [8, 2, 4, 16, 64], [8, 2, 4, 16])
    """
    seen: set[int] = set()
    out = []
    flat = (shards,) if shards * copies <= MAX_FLAT_EDGES else ()
    for f in (*FAN_INS, *flat):
        tree = min(f, shards)
        if f >= 2 and tree not in seen:
            seen.add(tree)
            out.append(f)
    return out


def choose_fan_in(run: Any, plan_chunk: Callable[..., Any],
                  initial_states: Callable[..., Any]) -> Any:
    """``run`` with its spec's ``fan_in`` a number: the one given, else the fastest predicted
    of :func:`fan_in_candidates` for its shards where there is a cluster model and more than
    one candidate (``run.fan_ins``: each with its predicted seconds per step, the chosen one
    first), else :data:`pnngraph.compile.spec.DEFAULT_FAN_IN`."""
    spec = run.spec
    if spec.fan_in != "auto":
        return run
    shards, _, micro = spec.strategy.layout if spec.strategy.algorithm == "sgd" else (1, 1, 1)
    candidates = fan_in_candidates(shards * micro, run.copies)  # each stage's tree's leaves
    if run.cluster is None or len(candidates) < 2:
        return replace(run, spec=replace(spec, fan_in=spec.tree_fan_in))
    scored = []
    cluster = run.cluster
    for order, fan_in in enumerate(candidates):
        trial = replace(run, spec=replace(spec, fan_in=fan_in), cluster=cluster)
        graph = plan_chunk(trial, 0, 1, initial_states(run.model, trial.spec))
        cluster = graph.cluster  # kernels profiled on a client are kept
        if graph.plan is None:  # nothing predicted (no list scheduler): keep the default
            return replace(run, spec=replace(spec, fan_in=spec.tree_fan_in), cluster=cluster)
        scored.append((graph.plan.terms["steps"], order, fan_in))
    scored.sort()
    return replace(run, spec=replace(spec, fan_in=scored[0][2]), cluster=cluster,
                   fan_ins=tuple((fan_in, seconds) for seconds, _, fan_in in scored))
