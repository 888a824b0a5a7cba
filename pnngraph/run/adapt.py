"""Adaptive runs: ``fit(..., adapt=True)`` re-plans between chunks from the live cluster.

After each chunk, :meth:`Adapter.after` looks at four things and returns the run the next
chunk is built from::

    membership   the workers running now (live_workers) against the run's cluster model: a
                 worker that left is dropped from the model, one that joined is added
                 (calibrate.extend: figures of a twin worker, or measured)
    drift        each worker's measured task seconds in the chunk over the model's prediction
                 (history.drift), over the median of all workers' (a machine busier for
                 everyone is no straggler); the model learns every chunk, per kernel signature
                 and worker (the node's shape, history.learn(by_shape=True)), halfway to what
                 the chunk measured, and a worker off by more than ``threshold`` (0.25: 25 %)
                 re-plans the run, its corrections taken as measured (its speed changed: half
                 of a 5x slow-down would leave it off again after the re-size)
    gain         no drift, but the refined model prices a data-parallel step with the shards
                 re-sized shorter than with the shards as they are (placement.predicted_step)
                 by more than ``threshold`` of a step: the shards are re-sized (what the run
                 learned changed the best split while every worker kept to its prediction: a
                 worker with a few samples whose own update is slow, say)
    probe        a worker the shards leave out (``DataParallel("auto")`` gives a straggler none)
                 gets a few samples again (``PROBE_SHARE`` of an equal shard) once it has
                 been left out for ``PROBE_AFTER`` chunks, the wait doubling after each probe:
                 nothing else would measure it, and a straggler that recovered would stay out;
                 one still slow costs one chunk of a small shard per probe, ever rarer

When any of them changed something, the strategy is fixed again from the refined model
(:func:`refit`): one shard per worker for ``DataParallel("auto")``, ``S`` shards for a given
``DataParallel(S)`` (shard j on live worker j mod W), each weighted by its worker's speed over
the shards that worker holds; the other strategies keep their layout and are re-placed (stages
included) by the next chunk's plan of the refined model. Each such change is one line on the
``pnngraph`` logger (INFO). The math stays that of the large batch: only the shard sizes, so
the order of the gradient sums, change between chunks (results equal the serial reference to
rounding); within a chunk nothing changes.

Chunks overlap (the next is submitted before the one before ends), so what is decided after
chunk k ends shapes the first chunk built after that: chunk k + 2.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pnngraph.compile.strategies import DataParallel, Strategy
from pnngraph.exceptions import MemoryPlanError, check_number
from pnngraph.plan.cluster import ClusterModel, refine
from pnngraph.plan.placement import predicted_step, step_terms
from pnngraph.plan.planner import balanced_shares
from pnngraph.run import history

log = logging.getLogger("pnngraph")

DEFAULT_THRESHOLD = 0.25
PROBE_AFTER = 2  # chunks a worker is left out before it is measured again (doubling each time)
PROBE_SHARE = 0.125  # of an equal shard: what a probed worker gets


def check_threshold(value: Any) -> float:
    """``adapt_threshold``: a fraction > 0 (0.25: a worker 25 % off its prediction)."""
    return check_number("adapt_threshold", value, "a fraction > 0 (0.25: 25 % off)",
                        lambda t: t > 0)


def shard_sizes(graph: Any, batch: int) -> dict[str, int]:
    """Worker -> samples of a full batch its shards hold in ``graph`` (its first step's
    gradient tasks, or its fused steps; ``"?"`` for a shard the plan left to Dask)."""
    strategy = graph.strategy
    if not isinstance(strategy, DataParallel) or strategy.auto:
        return {}
    sizes = strategy.split(batch)
    where: dict[int, str] = {}
    workers = graph.placement_value.workers
    for key, node in graph.abstract.nodes(data=True):
        if node.get("kind") in ("grad", "steps"):  # one shard's steps may be fused
            where.setdefault(int(node.get("shard") or 0), workers.get(key, "?"))
    out: dict[str, int] = {}
    for j, n in enumerate(sizes):
        w = where.get(j, "?")
        out[w] = out.get(w, 0) + n
    return dict(sorted(out.items()))


class Adapter:
    """What an adaptive ``fit`` keeps between chunks: the strategy asked for (a resumed run's
    spec holds the one its checkpoint had), the threshold, and the changes made
    (:attr:`changes`: the step after which, and the log line)."""

    def __init__(self, asked: Strategy, threshold: float) -> None:
        self.asked, self.threshold = asked, check_threshold(threshold)
        self.changes: list[dict[str, Any]] = []
        self.idle: dict[str, int] = {}  # worker -> chunks planned without it since it had work
        self.wait: dict[str, int] = {}  # worker -> chunks it waits for its next probe
        self.probes: dict[str, int] = {}  # worker -> samples its last probe gave it

    def after(self, run: Any, chunk: Any, stream: Sequence[Mapping[str, Any]]) -> Any:
        """The run the next chunk is built from, after ``chunk`` (its task stream
        ``stream``)."""
        return self._probed(self._refined(run, chunk, stream), chunk)

    def _probed(self, run: Any, chunk: Any) -> Any:
        """``run``, or where a worker it leaves out has waited its turn, ``run`` with a small
        shard on that worker (taken from the largest): the next chunk measures it again. Only
        ``DataParallel("auto")`` leaves workers out of its own accord."""
        from pnngraph.run.pipeline import _copies

        sizes = _planned(run)
        if not (isinstance(self.asked, DataParallel) and self.asked.auto) or not sizes:
            return run
        due = []
        for w in run.cluster.usable(run.options.devices):
            if sizes.get(w, 0) > 0:  # measured; back in the plan (not only probed): no wait
                self.idle[w] = 0
                if sizes[w] > self.probes.get(w, 0):
                    self.wait[w] = PROBE_AFTER
                continue
            self.idle[w] = self.idle.get(w, 0) + 1
            if self.idle[w] >= self.wait.setdefault(w, PROBE_AFTER):
                due.append(w)
        if not due:
            return run
        batch = run.spec.batch_size
        share = max(1, round(PROBE_SHARE * batch / (len(sizes) + len(due))))
        probe = dict(sizes)
        for w in due:
            largest = max(probe, key=lambda a: (probe[a], a))
            if probe[largest] <= share:
                return run  # a batch too small to spare a shard
            probe[largest] -= share
            probe[w] = share
        owners = tuple(probe)
        strategy = DataParallel([float(probe[w]) for w in owners])
        probed = replace(run, spec=replace(run.spec, strategy=strategy), shard_workers=owners,
                         copies=_copies(strategy, run.options, run.cluster, run.client))
        if _memory_miss(probed) is not None:
            return run
        for w in due:
            self.idle[w], self.wait[w], self.probes[w] = 0, 2 * self.wait[w], share
        what = f"chunk (steps {chunk.lo}-{chunk.hi}): {_workers(due)} left out, measured " \
               f"again with {share} samples; shards {_sizes(sizes)} -> {_sizes(probe)}"
        log.info(what)
        self.changes.append({"step": chunk.hi, "message": what})
        return probed

    def _refined(self, run: Any, chunk: Any, stream: Sequence[Mapping[str, Any]]) -> Any:
        from pnngraph.run.calibrate import extend
        from pnngraph.run.session import live_workers

        cluster: ClusterModel = run.cluster
        live = set(live_workers(run.client))
        gone = sorted(set(cluster.addresses) - live)
        joined = sorted(live - set(cluster.addresses))
        why = []
        if gone and len(gone) < len(cluster.addresses):
            cluster = cluster.without(gone)
            why.append(f"{_workers(gone)} left")
        if joined:
            cluster = extend(run.client, cluster, joined)
            why.append(f"{_workers(joined)} joined")
        kept = set(cluster.addresses)
        samples = [s for s in history.duration_samples(chunk.graph, run.cluster, stream)
                   if s[1] in kept]
        drifts = history.drift(samples)
        if len(drifts) > 1:  # against the others: a machine busier for all is no straggler
            common = statistics.median(drifts.values())
            drifts = {w: r / common for w, r in drifts.items()}
        off = {w: r for w, r in drifts.items() if abs(r - 1.0) > self.threshold}
        if samples:  # halfway to what this chunk measured; a worker that drifted: all the way
            cluster = history.learn(cluster, chunk.graph, stream, weight=0.5, by_shape=True,
                                    samples=[s for s in samples if s[1] not in off])
            jumped = [s for s in samples if s[1] in off]
            if jumped:
                cluster = refine(cluster, jumped, weight=1.0, by_shape=True)
        why += [f"worker {w} took {r:.2f}x its prediction (relative to the others)"
                for w, r in off.items()]
        learned = replace(run, cluster=cluster)
        fixed = refit(learned, self.asked)
        what = f"chunk (steps {chunk.lo}-{chunk.hi}): "
        if not why:
            gain = _gain(learned, fixed, chunk, self.threshold)
            if gain is None or _memory_miss(fixed) is not None:
                return learned  # nothing changes
            (now, before), (then, after) = gain
            what += f"the refined model predicts {now:.3f} s per step for shards " \
                    f"{_sizes(before)}, {then:.3f} s re-sized; shards re-sized " \
                    f"{_sizes(before)} -> {_sizes(after)}"
            log.info(what)
            self.changes.append({"step": chunk.hi, "message": what})
            return fixed
        what += "; ".join(why)
        miss = _memory_miss(fixed)
        if miss is not None:
            if gone or joined:  # the old layout names workers that are gone or misses some
                raise MemoryPlanError(miss.worker, miss.need_bytes, miss.has_bytes,
                                      [repr(fixed.spec.strategy)])
            what += f"; shards kept as they are (re-sized, they would not fit: " \
                    f"{miss.describe()})"
            log.info(what)
            self.changes.append({"step": chunk.hi, "message": what})
            return learned
        before, after = shard_sizes(chunk.graph, run.spec.batch_size), _planned(fixed)
        if after and sorted(after.values()) != sorted(before.values()):
            what += f"; shards re-sized {_sizes(before)} -> {_sizes(after)}"
        else:
            what += "; re-placed from the refined cluster model"
        log.info(what)
        self.changes.append({"step": chunk.hi, "message": what})
        return fixed


def _gain(run: Any, fixed: Any, chunk: Any, threshold: float) -> Any:
    """``((now, sizes now), (then, sizes then))``, the predicted seconds per step of ``run``'s
    data-parallel shards as they are and as ``fixed`` re-sized them (both on the refined model
    of ``run``: :func:`pnngraph.plan.placement.predicted_step`), where the re-size saves more
    than ``threshold`` of a step; else ``None``."""
    if fixed is run:
        return None
    before = _planned(run) or shard_sizes(chunk.graph, run.spec.batch_size)
    after = _planned(fixed)
    if not before or not after or "?" in before or sorted(before.items()) == \
            sorted(after.items()):
        return None
    now = predicted_step(run.cluster, run.model, run.spec, before)
    then = predicted_step(run.cluster, run.model, run.spec, after)
    if then >= (1.0 - threshold) * now:
        return None
    return (now, before), (then, after)


def _memory_miss(run: Any) -> Any:
    """Where ``run``'s plan would not fit in the workers' memory (the worker that misses the
    most: :func:`pnngraph.run.auto.memory_check`); ``None`` where it fits or no limit is
    known."""
    from pnngraph.run import auto
    from pnngraph.run.pipeline import chunk_graph, initial_states

    return auto.memory_check(run, chunk_graph, initial_states)


def refit(run: Any, asked: Strategy) -> Any:
    """``run`` fixed again for its (refined) cluster model: ``DataParallel("auto")`` sized
    anew (:func:`pnngraph.run.pipeline.fix`: one shard per worker worth one), ``DataParallel(S)``
    as S shards re-weighted to the workers (:func:`reweigh`), any other strategy as it is (the
    next chunk's plan re-places it)."""
    from pnngraph.run.pipeline import _copies, fix

    if not isinstance(asked, DataParallel) or run.options.scheduler == "dask":
        return run
    if asked.auto:
        return fix(run, asked)
    strategy, owners = reweigh(asked, run.cluster, run.model, run.spec, run.options.devices)
    return replace(run, spec=replace(run.spec, strategy=strategy), shard_workers=owners,
                   copies=_copies(strategy, run.options, run.cluster, run.client))


def reweigh(strategy: DataParallel, cluster: ClusterModel, model: Any, spec: Any,
            devices: str) -> tuple[DataParallel, tuple[str, ...]]:
    """``strategy``'s S shards on the usable workers (shard j on worker j mod W), weighted so
    that every worker ends its step at the same time, as ``DataParallel("auto")`` sizes them
    (:func:`pnngraph.plan.planner.balanced_shares`: a shard's gradient and an update priced
    on each worker), a worker's share split evenly between the shards it holds; every shard
    keeps one sample at least."""
    workers = cluster.usable(devices)
    owners = tuple(workers[j % len(workers)] for j in range(strategy.shards))
    held = Counter(owners)
    rows = max(1, round(spec.batch_size / len(owners)))
    per_sample, fixed = step_terms(cluster, model, spec, list(held), rows=rows,
                                   parts=len(held))
    _, shares = balanced_shares(per_sample, fixed, spec.batch_size, list(held))
    return DataParallel([max(shares.get(a, 0.0) / held[a], 1.0) for a in owners]), owners


def _sizes(sizes: Mapping[str, int]) -> str:
    return "/".join(str(n) for n in sizes.values()) if sizes else "?"


def _planned(run: Any) -> dict[str, int]:
    """Worker -> samples per batch of the run's strategy as fixed (its shard workers)."""
    strategy, workers = run.spec.strategy, run.shard_workers
    if not isinstance(strategy, DataParallel) or strategy.auto or workers is None:
        return {}
    out: dict[str, int] = {}
    for w, n in zip(workers, strategy.split(run.spec.batch_size), strict=True):
        out[w] = out.get(w, 0) + n
    return dict(sorted(out.items()))


def _workers(addresses: Sequence[str]) -> str:
    return ("worker " if len(addresses) == 1 else "workers ") + ", ".join(addresses)
