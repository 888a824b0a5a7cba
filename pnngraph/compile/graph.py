"""The abstract training graph: every task of a training run as a node of a networkx DiGraph.

Compiling is pure (no Dask): the result is plain data that the scheduler places and the lowering
turns into Dask tasks. A node's key is its Dask key (:mod:`pnngraph.compile.keys`), so the
dashboard groups tasks by phase and layer kinds (``forward-dense``), and two builds never share
keys. Its ``flops`` and ``bytes`` come from :mod:`pnngraph.compile.cost`. Node attributes::

    kind     data | init | grad | forward | backward | aggregate | norm | update | params | steps
             | local | average | segment | stats (BatchNorm's rounds and statistics, _synced)
    n_steps  on ``steps`` and ``local`` nodes: how many training steps the task runs
    fn, args the kernel (pnngraph.compile.kernels) and its arguments; Ref(key) marks an input
    step, shard, micro, stage             where it sits in the run (None where not applicable)
    flops    floating-point work of the task
    bytes    size of its output;  edges carry the bytes moved from producer to consumer

The graph's own attributes (``graph.graph``): ``outputs`` (the final state keys, one per slot of
the strategy, :meth:`~pnngraph.compile.strategies.DataParallel.slots`), ``token``, ``layout`` and
``period`` ``(P, origin)``: the graph repeats every ``P`` steps (H for model averaging, the steps
of a fused task, else 1), period i holding the steps ``origin + i P, ...`` (the planner tiles it).

One data-parallel step with S = 3 shards and ``fan_in=2`` (K = 1, so forward, loss and backward of a
shard are one ``grad`` task)::

    init/update(s-1) ──┬──> grad(s,0) ──┐
                       ├──> grad(s,1) ──┴──> aggregate(s) ──┐
                       └──> grad(s,2) ──────────────────────┴──> update(s)

A pipeline step (K = 2 stages, M = 2 micro-batches) chains stages per micro-batch::

    forward(s,m,0) ──> backward(s,m,1) ──> backward(s,m,0)      (backward of the last stage runs
    update_1 <── backward(s,*,1)     update_0 <── backward(s,*,0)  its forward and the loss too)

Model averaging chains each replica's ``local`` tasks (H steps each) into an ``average`` at every
period end and at the end of the graph.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import networkx as nx
import numpy as np

from pnngraph.collect import without_gc
from pnngraph.compile import kernels
from pnngraph.compile.cost import Cost, StageCosts, stage_costs
from pnngraph.compile.keys import Key, node_key
from pnngraph.compile.spec import TrainingSpec
from pnngraph.compile.strategies import ModelAveraging, proportional_split
from pnngraph.exceptions import ConfigError, check_int
from pnngraph.nn.layers import ACTIVATIONS, Layer
from pnngraph.nn.model import Sequential

PARAMETER_FREE_KINDS = frozenset({*ACTIVATIONS, "flatten", "dropout", "maxpool", "avgpool",
                                  "globalavgpool"})
"""Layer kinds that name no stage: the stage label is made of the others."""


@dataclass(frozen=True)
class Ref:
    """An argument that is the output of the node ``key``."""

    key: Key


@dataclass(frozen=True)
class WorkerBackend:
    """An argument that becomes the backend name ("numpy", "cupy", ...) of the worker the plan
    puts the node on; "numpy" when there is no plan."""


WORKER_BACKEND = WorkerBackend()


@dataclass(frozen=True)
class Source:
    """An input given from outside the graph: a host value, or a handle the lowering knows
    (a Dask future or a key of another collection); ``home`` is the worker that holds it,
    where that is known (a block of a persisted dask array)."""

    value: Any
    nbytes: int
    external: bool = False
    home: str | None = None


@dataclass(frozen=True)
class Blocks:
    """Data in blocks of rows (a chunked dask array): one source per block, in order, and the
    rows of each. A task then reads only the blocks its rows are in (:func:`kernels.rows_in`),
    and each edge from a block carries the block's bytes."""

    sources: tuple[Source, ...]
    rows: tuple[int, ...]


class BlockRefs(tuple):
    """The nodes of a :class:`Blocks` input, as ``(first row, last row + 1, Ref)`` triples."""


class Copies(tuple):
    """The copies of one slot's state, one per copy (data parallelism kept in copies)."""


def stage_label(layers: Sequence[Layer]) -> str:
    """Letters-and-dashes name of a group of layers: the kinds of its layers that may hold
    parameters (blocks and layers of one's own included), in order, repeats merged, every
    character but letters and dashes dropped (a dashboard groups keys by that name).

    >>> from pnngraph.nn import Conv2D, Dense, ReLU, Flatten, Residual
    >>> stage_label([Conv2D(1, 2, 3), ReLU(), Conv2D(2, 2, 3), Flatten(), Dense(4, 2)])
    'conv-dense'
    >>> stage_label([Residual([Dense(2)]), Residual([Dense(2)]), ReLU()])
    'residual'
    """
    kinds: list[str] = []
    for layer in layers:
        kind = re.sub(r"[^a-z-]+", "", layer.kind.lower()).strip("-")
        if kind and layer.kind not in PARAMETER_FREE_KINDS and (not kinds or kinds[-1] != kind):
            kinds.append(kind)
    return "-".join(kinds) if kinds else re.sub(r"[^a-z-]+", "", layers[0].kind) or "layers"


def fingerprint(*parts: Any) -> str:
    """Eight hex digits that change with any of ``parts`` (arrays hashed by content)."""
    h = hashlib.blake2b(digest_size=4)
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str((p.shape, p.dtype)).encode())
            h.update(np.ascontiguousarray(p).view(np.uint8).data)
        else:
            h.update(repr(p).encode())
    return h.hexdigest()


@dataclass
class _Builder:
    """Accumulates nodes (edges follow from the Refs in each node's arguments) and holds what
    every part of the compiler needs: the spec, the stages and their costs, the batches."""

    spec: TrainingSpec
    token: str
    specs: list[kernels.StageSpec]
    labels: list[str]
    costs: StageCosts
    batches: list[np.ndarray]
    start: int
    g: nx.DiGraph
    sizes: dict[Key, float] = field(default_factory=dict)  # node -> bytes of its output

    def add(self, phase: str, k: int, indices: tuple[int, ...], fn: Callable[..., Any] | None,
            *args: Any, cost: Cost, **attrs: Any) -> Ref:
        """Node ``(f"{phase}-{label of stage k}-{token}", *indices)`` running ``fn(*args)``."""
        key = node_key(phase, self.labels[k], self.token, *indices)
        for name in ("step", "shard", "micro", "stage", "copy"):
            attrs.setdefault(name, None)
        self.g.add_node(key, kind=phase, fn=fn, args=args, **cost, **attrs)
        self.sizes[key] = cost["bytes"]
        sizes = self.sizes
        self.g.add_edges_from([(a.key, key, {"bytes": sizes[a.key]}) for a in refs_in(args)])
        return Ref(key)

    def data(self, i: int, data: Source | Blocks) -> Ref | BlockRefs:
        """The node of input ``i`` (X: 0, y: 1), or one node per block of it."""
        if isinstance(data, Source):
            return self.source("data", i, data)
        starts = np.cumsum((0, *data.rows)).tolist()
        return BlockRefs((starts[q], starts[q + 1], self.source("data", i, src, block=q))
                         for q, src in enumerate(data.sources))

    def rows(self, data: Ref | BlockRefs, *index: np.ndarray, needed: bool = True) -> Any:
        """What a task reading rows ``index`` of ``data`` is given: the node of host data, or
        the ``(first row, Ref)`` pairs of the blocks those rows are in (``None`` where the
        task does not read them, ``needed=False``)."""
        if isinstance(data, Ref):
            return data
        if not needed:
            return None
        rows = np.concatenate(index)
        return tuple((lo, ref) for lo, hi, ref in data
                     if np.any((rows >= lo) & (rows < hi)))

    def source(self, phase: str, i: int, source: Source, *, stage: int | None = None,
               copy: int | None = None, block: int | None = None) -> Ref:
        """Node ``(f"{phase}-{token}", i)`` holding ``source``; ``copy`` (of an init state) or
        ``block`` (of a data input) adds an index to the key."""
        extra = () if copy is None and block is None else (copy if block is None else block,)
        key = node_key(phase, "", self.token, i, *extra)
        self.g.add_node(key, kind=phase, fn=None, args=(), source=source, flops=0.0,
                        bytes=source.nbytes, step=None, shard=None, micro=None, stage=stage,
                        copy=copy, block=block, home=source.home)
        self.sizes[key] = source.nbytes
        return Ref(key)

    def tree(self, leaves: list[Ref], k: int, step: int, until: int | None = None, *,
             point: int | None = None) -> list[Ref]:
        """Sum stage ``k``'s ``leaves`` in order, ``fan_in`` at a time, until at most ``until``
        (by default ``fan_in``) remain; with ``point``, the shards' statistics of BatchNorm
        sync point ``point`` instead of gradients (``stats`` nodes)."""
        fan_in, level = self.spec.tree_fan_in, 0
        until = fan_in if until is None else until
        phase, fn, cost = (("aggregate", kernels.aggregate, self.costs.aggregate(k, fan_in))
                           if point is None else
                           ("stats", kernels.combine_stats, self.costs.stats(k, fan_in)))
        while len(leaves) > until:
            groups = [leaves[i : i + fan_in] for i in range(0, len(leaves), fan_in)]
            leaves = [
                group[0] if len(group) == 1 else
                self.add(phase, k, (step, k if point is None else point, level, q), fn,
                         WORKER_BACKEND, *group, cost=cost, step=step, stage=k)
                for q, group in enumerate(groups)
            ]
            level += 1
        return leaves


@without_gc
def compile_training(
    model: Sequential,
    spec: TrainingSpec,
    *,
    data: tuple[Source | Blocks, Source | Blocks],
    init: Sequence[Source | Copies],
    start: int,
    steps: int,
    copies: int = 1,
) -> nx.DiGraph:
    """The abstract graph of steps ``start, ..., start + steps - 1`` of the run ``spec``.

    ``init`` holds one source per slot of the strategy (:meth:`Strategy.slots`): a
    :class:`kernels.StageState` per stage, or for model averaging the last average followed by
    one state per replica. ``data`` is the sources of X and y, or their :class:`Blocks` (row
    blocks that agree between X and y).

    ``copies`` > 1 (data parallelism, one stage, several shards): the state is kept in that
    many copies, and every step each copy's own update sums all the shards' gradients, so no
    parameters travel after an update (shard j reads copy j mod ``copies``); the copies stay
    bitwise equal, and the first is the graph's output (``graph["carry"]`` lists them all, for
    a next graph to start from). An init slot may then be :class:`Copies` of sources.
    """
    start = check_int("start_step", start, low=0)
    steps = check_int("steps", steps)
    strategy = spec.strategy
    bounds = strategy.stage_bounds(model.layer_flops())
    copies = check_int("copies", copies) if len(bounds) == 1 and strategy.algorithm == "sgd" \
        and strategy.layout[0] > 1 else 1
    flat = [s for slot in init for s in (slot if isinstance(slot, Copies) else (slot,))]
    sources = [s for d in data for s in (d.sources if isinstance(d, Blocks) else (d,))]
    token = fingerprint(
        model.config(), spec.to_json(), start, steps, copies,
        [s.value if s.external else s.nbytes for s in sources],
        *[s.value for s in sources if not s.external],
        [s.value if s.external else None for s in flat],
        *[p for s in flat if not s.external for layer in s.value.params for p in layer.values()],
    )
    b = _Builder(
        spec=spec, token=token, start=start, g=nx.DiGraph(),
        specs=[kernels.StageSpec(tuple(model.layers[a:z]), a,
                                 spec.loss if z == len(model.layers) else None, spec.optimizer,
                                 spec.seed, stage=k) for k, (a, z) in enumerate(bounds)],
        labels=[stage_label(model.layers[a:z]) for a, z in bounds],
        costs=stage_costs(model, bounds, spec.optimizer, spec.loss),
        batches=[spec.batch(s) for s in range(start, start + steps)],
    )
    x, y = b.data(0, data[0]), b.data(1, data[1])
    slots = [[b.source("init", i, s, stage=i)] if not isinstance(s, Copies) else
             [b.source("init", i, c, stage=i, copy=r) for r, c in enumerate(s)]
             for i, s in enumerate(init)]
    S, _, M = strategy.layout
    carry: list[list[Ref]]
    spec.check_split(model, min(len(i) for i in b.batches))
    period = (1, start)
    if strategy.algorithm == "averaging":
        averaging = cast(ModelAveraging, strategy)
        outputs = _averaging(b, averaging, [s[0] for s in slots], x, y)
        carry = [[r] for r in outputs]
        period = (averaging.local_steps, 0)
    else:
        per_task = _fusion(b, len(model.layers), isinstance(x, BlockRefs))
        period = (per_task, start)
        if copies > 1:
            carry = [_copies(b, [slots[0][r % len(slots[0])] for r in range(copies)], x, y)]
        elif per_task > 1:
            carry = [[_fused(b, slots[0][0], x, y, per_task)]]
        else:
            carry = [[r] for r in _steps(b, [s[0] for s in slots], x, y, M)]
        outputs = [c[0] for c in carry]
    # blocks no step of this graph reads are left out: nothing loads them
    b.g.remove_nodes_from([k for k, block in b.g.nodes(data="block")
                           if block is not None and b.g.out_degree(k) == 0])
    b.g.graph.update(outputs=[r.key for r in outputs], carry=[[r.key for r in c] for c in carry],
                     token=token, layout=(S, len(bounds), M), copies=copies, period=period)
    return b.g


def refs_in(args: Sequence[Any]) -> Iterator[Ref]:
    """The Refs among ``args`` and inside their tuples (the blocks a task reads)."""
    for a in args:
        if isinstance(a, Ref):
            yield a
        elif isinstance(a, tuple):
            yield from refs_in(a)


def _fusion(b: _Builder, n_layers: int, blocked: bool) -> int:
    """Steps per task: 1 unless the run is one shard of one stage and a step is tiny, and
    never more than one by "auto" on data in blocks (a task of many steps would hold the
    blocks of all of them)."""
    fuse, steps = b.spec.fuse_steps, len(b.batches)
    if not b.spec.strategy.fusable:
        if fuse != "auto" and fuse > 1:
            raise ConfigError("fuse_steps", "1 unless the strategy has one shard and one stage",
                              fuse)
        return 1
    if fuse == "auto":
        if blocked:
            return 1
        return b.costs.fused_steps(b.spec.batch_size, n_layers, steps)
    return min(fuse, steps)


def _fused(b: _Builder, init: Ref, x: Any, y: Any, per_task: int) -> Ref:
    state = init
    spec = b.spec
    for lo in range(0, len(b.batches), per_task):
        idx = tuple(b.batches[lo : lo + per_task])
        s = b.start + lo
        batches = kernels.Batches(spec.n_samples, spec.batch_size, spec.seed, spec.shuffle, s,
                                  len(idx), spec.block_rows, spec.window)
        state = b.add("steps", 0, (s,), kernels.train_steps, b.specs[0], state, b.rows(x, *idx),
                      b.rows(y, *idx), batches, s,
                      cost=b.costs.steps(0, sum(len(i) for i in idx), len(idx)), step=s,
                      stage=0, n_steps=len(idx))
    return state


def _copies(b: _Builder, init: list[Ref], x: Any, y: Any) -> list[Ref]:
    """Data parallelism on ``len(init)`` copies of the state: every step, shard j's gradient
    reads copy j mod R, and each copy's update sums every shard's gradient (the same tree, the
    same order, so the copies stay bitwise equal); with more copies than the fan-in, the sum
    reaches them along a relay tree (:func:`_relay`)."""
    states, R = list(init), len(init)
    for i, index in enumerate(b.batches):
        s = b.start + i
        parts: list[Ref] = []
        shards: list[np.ndarray] = []
        offset = 0
        for j, n_shard in enumerate(b.spec.strategy.shard_sizes(len(index))):
            rows = index[offset : offset + n_shard]
            offset += n_shard
            if b.specs[0].norms:
                shards.append(rows)
            else:
                parts.append(b.add("grad", 0, (s, j, 0), kernels.grad, b.specs[0], states[j % R],
                                   b.rows(x, rows), b.rows(y, rows), rows, len(index), s, j,
                                   cost=b.costs.grad(0, n_shard), step=s, shard=j, micro=0,
                                   stage=0, copy=j % R))
        stats: list[Ref] = []
        if shards:
            parts, stats = _synced(b, [states[j % R] for j in range(len(shards))], x, y, shards,
                                   len(index), s, copies=R)
        if b.spec.tree_fan_in >= R:  # every copy's update sums the last partial sums
            inputs = [b.tree(parts, 0, s)] * R
        else:  # more copies than that: the sum is relayed to them
            inputs = [[relay] for relay in _relay(b, b.tree(parts, 0, s, 1)[0], R, s)]
        states = [_update(b, states[r], s, stats, inputs[r], copy=r) for r in range(R)]
    return states


def _update(b: _Builder, state: Ref, s: int, stats: list[Ref], leaves: list[Ref],
            **attrs: Any) -> Ref:
    """The update of a one-stage step (with BatchNorm: its running statistics from ``stats``)."""
    at = (s, 0) if attrs.get("copy") is None else (s, 0, attrs["copy"])
    if not stats:
        return b.add("update", 0, at, kernels.update, b.specs[0], state, s, *leaves,
                     cost=b.costs.update(0, len(leaves)), step=s, stage=0, **attrs)
    return b.add("update", 0, at, kernels.update_norms, b.specs[0], state, s, len(stats),
                 *stats, *leaves, cost=b.costs.update(0, len(leaves)), step=s, stage=0, **attrs)


def _synced(b: _Builder, states: list[Ref], x: Any, y: Any, shards: list[np.ndarray],
            n_global: int, s: int, copies: int | None = None) -> tuple[list[Ref], list[Ref]]:
    """Step ``s`` of a model with B BatchNorm layers, shard j on rows ``shards[j]`` reading
    ``states[j]``: 2 B rounds of ``segment`` tasks per shard, each stopping at a sync point,
    whose partial statistics (``stats`` nodes) are combined like gradients, in the fixed tree
    order, and go back to every shard's next round; the last round (``grad``) gives the
    shard's gradient. Returns the gradients and the B global forward statistics::

        segment(s,j,0) ──> stats(s,j,0) ──┬──> stats(s,0,..) ──┬──> segment(s,j,1) ──> ...
        segment(s,i,0) ──> stats(s,i,0) ──┘                    └──> segment(s,i,1) ──> ...
        ... segment(s,j,2B-1) ──> stats ──> ... ──> grad(s,j,0) ──> aggregate/update
    """
    spec = b.specs[0]
    n_points = 2 * spec.norms
    rounds: list[Ref | None] = [None] * len(shards)
    news: list[Ref] = []
    totals: list[Ref] = []
    for point in range(n_points + 1):
        last = point == n_points
        parts = []
        for j, rows in enumerate(shards):
            at = {"step": s, "shard": j, "micro": 0, "stage": 0,
                  **({} if copies is None else {"copy": j % copies})}
            phase, where = ("grad", (s, j, 0)) if last else ("segment", (s, j, point))
            cost = b.costs.segment(0, len(rows), n_points + 1, last=last)
            rounds[j] = b.add(phase, 0, where, kernels.segment, spec, states[j], b.rows(x, rows),
                              b.rows(y, rows), rows, n_global, s, j, rounds[j], *news,
                              cost=cost, **at)
            if not last:
                parts.append(b.add("stats", 0, (s, j, point), kernels.stats_of, rounds[j],
                                   cost=b.costs.stats(0, 0), **at))
        if not last:
            news = b.tree(parts, 0, s, until=1, point=point)
            totals.extend(news)
    return [cast(Ref, r) for r in rounds], totals[: spec.norms]


def _relay(b: _Builder, total: Ref, R: int, s: int) -> list[Ref]:
    """Step ``s``'s summed gradient passed on to ``R`` copies along a tree of the gradient
    tree's fan-in: copy r's relay (an ``aggregate`` of one part, at level -1: the sum as it is,
    on copy r's worker) reads copy (r - 1) // fan_in's, copy 0's the sum. No worker sends it
    more than fan_in times, where every copy's update reading the last partial sums would make
    their workers send them R times. Each update sums one part, the total, which is what it
    summed from the partial sums: the same additions in the same order, the same bits."""
    fan_in = b.spec.tree_fan_in
    relays: list[Ref] = []
    for r in range(R):
        relays.append(b.add("aggregate", 0, (s, 0, -1, r), kernels.aggregate, WORKER_BACKEND,
                            total if r == 0 else relays[(r - 1) // fan_in],
                            cost=b.costs.aggregate(0, 1), step=s, stage=0, copy=r))
    return relays


def _steps(b: _Builder, init: list[Ref], x: Any, y: Any, M: int) -> list[Ref]:
    K = len(b.specs)
    states = list(init)  # full stage states: what the updates read and write
    # what forward/backward tasks read: with optimizer state and several consumers per stage, a
    # small task extracts the parameters, so the state never travels to other workers
    split = b.costs.state_factor > 1 and b.spec.strategy.layout[0] * M > 1
    clip = K > 1 and b.spec.optimizer.clip_norm is not None
    params = list(init)
    for i, index in enumerate(b.batches):
        s = b.start + i
        parts: list[list[Ref]] = [[] for _ in range(K)]
        offset = 0
        sizes = b.spec.strategy.shard_sizes(len(index))
        stats: list[Ref] = []
        if K == 1 and M == 1 and b.specs[0].norms:  # BatchNorm: every shard's rounds at once
            shards = [index[lo : lo + n] for lo, n in zip(np.cumsum([0, *sizes[:-1]]), sizes,
                                                          strict=True)]
            parts[0], stats = _synced(b, [params[0]] * len(shards), x, y, shards, len(index), s)
            sizes = []  # no shard left for the loop below
        for j, n_shard in enumerate(sizes):
            rows = index[offset : offset + n_shard]
            offset += n_shard
            lo = 0
            for m, n_micro in enumerate(proportional_split(n_shard, [1.0] * M)):
                mb = rows[lo : lo + n_micro]
                lo += n_micro
                if K == 1:
                    parts[0].append(b.add(
                        "grad", 0, (s, j, m), kernels.grad, b.specs[0], params[0], b.rows(x, mb),
                        b.rows(y, mb), mb,
                        len(index), s, j, cost=b.costs.grad(0, n_micro), step=s, shard=j,
                        micro=m, stage=0))
                else:
                    _pipeline(b, params, parts, x, y, mb, len(index), (s, j, m))
        if clip:
            _clipped_updates(b, states, parts, s)
        for k in range(K):
            if stats:
                states[k] = _update(b, states[k], s, stats, b.tree(parts[k], k, s))
            elif not clip:
                leaves = b.tree(parts[k], k, s)
                states[k] = b.add("update", k, (s, k), kernels.update, b.specs[k], states[k],
                                  s, *leaves, cost=b.costs.update(k, len(leaves)), step=s,
                                  stage=k)
            params[k] = states[k]
            if split and i + 1 < len(b.batches):
                params[k] = b.add("params", k, (s, k), kernels.params_of, states[k],
                                  cost=b.costs.params(k), step=s, stage=k)
    return states


def _clipped_updates(b: _Builder, states: list[Ref], parts: list[list[Ref]], s: int) -> None:
    """Step ``s``'s updates of K stages clipped by the norm of the whole model's gradient: each
    stage sums its gradient (the same tree as an unclipped update), a small ``norm`` node per
    stage squares it, and every stage's update waits for all the norms (a few floats each)::

        aggregate(s,k) ──> norm(s,k) ──┬──> update(s,0)      (and aggregate(s,k) ──> update(s,k))
                           norm(s,j) ──┴──> update(s,1)
    """
    K = len(b.specs)
    totals = [b.tree(parts[k], k, s, until=1)[0] for k in range(K)]
    norms = [b.add("norm", k, (s, k), kernels.grad_squares, totals[k], cost=b.costs.norm(k),
                   step=s, stage=k) for k in range(K)]
    for k in range(K):
        states[k] = b.add("update", k, (s, k), kernels.clipped_update, b.specs[k], states[k],
                          s, totals[k], *norms, cost=b.costs.update(k, 1), step=s, stage=k)


def _pipeline(b: _Builder, params: list[Ref], parts: list[list[Ref]], x: Any, y: Any,
              mb: np.ndarray, n_global: int, where: tuple[int, int, int]) -> None:
    """One micro-batch through the K stages: forwards, then backwards from the last stage."""
    K, n = len(b.specs), len(mb)
    s, j, m = where
    at = {"step": s, "shard": j, "micro": m}
    fwd: list[Ref] = []
    x_in: Ref | None = None
    for k in range(K - 1):
        x_in = b.add("forward", k, (*where, k), kernels.forward, b.specs[k], params[k], x_in,
                     b.rows(x, mb, needed=k == 0), mb, s, cost=b.costs.forward(k, n), stage=k, **at)
        fwd.append(x_in)
    up = b.add("backward", K - 1, (*where, K - 1), kernels.loss_backward, b.specs[K - 1],
               params[K - 1], x_in, b.rows(x, mb, needed=False), b.rows(y, mb), mb, n_global, s, j,
               cost=b.costs.backward(K - 1, n, last=True), stage=K - 1, **at)
    parts[K - 1].append(up)
    for k in range(K - 2, -1, -1):
        up = b.add("backward", k, (*where, k), kernels.backward, b.specs[k], params[k], fwd[k],
                   up, cost=b.costs.backward(k, n, last=False), stage=k, **at)
        parts[k].append(up)


def _averaging(b: _Builder, strategy: ModelAveraging, init: list[Ref], x: Any, y: Any
               ) -> list[Ref]:
    H, R, spec = strategy.local_steps, strategy.replicas, b.specs[0]
    if len(init) != 1 + R:
        raise ConfigError("init", f"{1 + R} states (average, then one per replica)", len(init))
    params_from, states = init[0], list(init[1:])
    end = b.start + len(b.batches)
    s = b.start
    while s < end:
        # a segment runs to the end of its period (periods are aligned to global steps) or of
        # this graph; it starts from the last average only at the start of a period
        seg_end = min((s // H + 1) * H, end)
        period = b.batches[s - b.start : seg_end - b.start]
        splits = [strategy.split(len(idx)) for idx in period]
        for r in range(R):
            idx, weights = [], []
            for index, sizes in zip(period, splits, strict=True):
                off = sum(sizes[:r])
                idx.append(index[off : off + sizes[r]])
                weights.append(sizes[r] / len(index))
            states[r] = b.add(
                "local", 0, (s, r), kernels.local_steps, spec,
                params_from if s % H == 0 else states[r], states[r], b.rows(x, *idx),
                b.rows(y, *idx), tuple(idx),
                tuple(weights), s, r,
                cost=b.costs.steps(0, sum(len(i) for i in idx), len(idx), "local_steps"), step=s,
                shard=r, stage=0, n_steps=len(idx))
        if seg_end % H == 0 or seg_end == end:
            params_from = b.add(
                "average", 0, (seg_end - 1,), kernels.average, WORKER_BACKEND,
                strategy.shares(len(period[-1])), *states, cost=b.costs.average(0, R),
                step=seg_end - 1, stage=0)
        s = seg_end
    return [params_from, *states]
