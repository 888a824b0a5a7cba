"""The abstract training graph: every task of a training run as a node of a networkx DiGraph.

Compiling is pure (no Dask): the result is plain data that the scheduler places and the lowering
turns into Dask tasks. A node's key is its Dask key, ``(f"{phase}-{label}-{token}", indices...)``:
the string holds letters and dashes plus an 8-hex token, so the dashboard groups tasks by phase
and layer kinds (``forward-dense``), and two builds never share keys. Node attributes::

    kind     data | init | grad | forward | backward | aggregate | update | params | steps | local
             | average
    n_steps  on ``steps`` and ``local`` nodes: how many training steps the task runs
    fn, args the kernel (pnngraph.compile.kernels) and its arguments; Ref(key) marks an input
    step, shard, micro, stage             where it sits in the run (None where not applicable)
    flops    floating-point work of the task
    bytes    size of its output;  edges carry the bytes moved from producer to consumer

One data-parallel step with S = 3 shards and ``fan_in=2`` (K = 1, so forward, loss and backward of a
shard are one ``grad`` task)::

    init/update(s-1) ──┬──> grad(s,0) ──┐
                       ├──> grad(s,1) ──┴──> aggregate(s) ──┐
                       └──> grad(s,2) ──────────────────────┴──> update(s)

A pipeline step (K = 2 stages, M = 2 micro-batches) chains stages per micro-batch::

    forward(s,m,0) ──> backward(s,m,1) ──> backward(s,m,0)      (backward of the last stage runs
    update_1 <── backward(s,*,1)     update_0 <── backward(s,*,0)  its forward and the loss too)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from pnngraph.compile import kernels
from pnngraph.compile.strategies import (
    ModelAveraging,
    Strategy,
    proportional_split,
    shard_sizes,
    stage_bounds,
)
from pnngraph.exceptions import ConfigError
from pnngraph.nn.layers import Layer
from pnngraph.nn.losses import Loss
from pnngraph.nn.model import Sequential
from pnngraph.nn.optimizers import Optimizer
from pnngraph.nn.train import batch_indices

Key = str | tuple[Any, ...]
"""A node of the training graph, which is also its Dask key: a tuple ``(name, indices...)``."""

PARAM_LAYER_KINDS = ("dense", "conv")
STEP_TARGET_SECONDS = 0.05  # fused step tasks aim at about this much work
DEFAULT_FLOPS_PER_S = 1e10  # a rough CPU core, for the fusion decision only


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
    (a Dask future or a key of another collection)."""

    value: Any
    nbytes: int
    external: bool = False


def stage_label(layers: Sequence[Layer]) -> str:
    """Letters-and-dashes name of a group of layers: its parametric layer kinds, in order.

    >>> from pnngraph.nn import Conv2D, Dense, ReLU, Flatten
    >>> stage_label([Conv2D(1, 2, 3), ReLU(), Conv2D(2, 2, 3), Flatten(), Dense(4, 2)])
    'conv-dense'
    """
    kinds: list[str] = []
    for layer in layers:
        if layer.kind in PARAM_LAYER_KINDS and (not kinds or kinds[-1] != layer.kind):
            kinds.append(layer.kind)
    return "-".join(kinds) if kinds else layers[0].kind


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


class _Builder:
    """Accumulates nodes; edges follow from the Refs in each node's arguments."""

    def __init__(self) -> None:
        self.g = nx.DiGraph()

    def add(self, key: Key, kind: str, fn: Callable[..., Any] | None, *args: Any, **attrs: Any):
        attrs.setdefault("flops", 0.0)
        attrs.setdefault("bytes", 0)
        for name in ("step", "shard", "micro", "stage"):
            attrs.setdefault(name, None)
        self.g.add_node(key, kind=kind, fn=fn, args=args, **attrs)
        for a in args:
            if isinstance(a, Ref):
                self.g.add_edge(a.key, key, bytes=self.g.nodes[a.key]["bytes"])
        return Ref(key)

    def tree(self, leaves: list[Ref], fan_in: int, key: Callable[[int, int], Key], nbytes: int,
             flops: float, **attrs: Any) -> list[Ref]:
        """Sum ``leaves`` in order, ``fan_in`` at a time, until at most ``fan_in`` remain."""
        level = 0
        while len(leaves) > fan_in:
            groups = [leaves[i : i + fan_in] for i in range(0, len(leaves), fan_in)]
            leaves = [
                group[0] if len(group) == 1 else
                self.add(key(level, q), "aggregate", kernels.aggregate, WORKER_BACKEND, *group,
                         bytes=nbytes, flops=flops, **attrs)
                for q, group in enumerate(groups)
            ]
            level += 1
        return leaves


def compile_training(
    model: Sequential,
    *,
    n_samples: int,
    strategy: Strategy,
    steps: int,
    batch_size: int,
    optimizer: Optimizer,
    loss: Loss,
    data: tuple[Source, Source],
    init: Sequence[Source],
    seed: int = 0,
    shuffle: bool = True,
    start_step: int = 0,
    fan_in: int = 8,
    fuse_steps: int | str = "auto",
    itemsize: int = 8,
    final: bool = True,
) -> nx.DiGraph:
    """Compile ``steps`` training steps of ``model`` under ``strategy`` into an abstract graph.

    ``init`` holds one source per stage (a :class:`kernels.StageState`); for model averaging,
    the averaged state followed by one state per replica; ``final`` false means the run goes
    on after this graph (model averaging then does not average a period cut short). The
    graph's ``graph`` dict holds ``outputs`` (final state keys, in the order of ``init``),
    ``token`` and ``layout``.
    """
    if not isinstance(fan_in, int) or fan_in < 2:
        raise ConfigError("fan_in", "an integer >= 2", fan_in)
    bounds = stage_bounds(model.layer_flops(), strategy)
    S, K, M = strategy.layout
    K = len(bounds)
    token = fingerprint(
        model.config(), strategy, steps, batch_size, repr(optimizer), repr(loss), seed, shuffle,
        start_step, fan_in, fuse_steps, [s.value if s.external else s.nbytes for s in data],
        *[s.value for s in data if not s.external],
        [s.value if s.external else None for s in init],
        *[p for s in init if not s.external for layer in s.value.params for p in layer.values()],
    )
    b = _Builder()
    x_ref = b.add((f"data-{token}", 0), "data", None, source=data[0], bytes=data[0].nbytes)
    y_ref = b.add((f"data-{token}", 1), "data", None, source=data[1], bytes=data[1].nbytes)
    init_refs = [
        b.add((f"init-{token}", i), "init", None, source=s, bytes=s.nbytes, stage=i)
        for i, s in enumerate(init)
    ]
    flops = model.layer_flops()
    shapes = model.shapes
    specs = [
        kernels.StageSpec(
            tuple(model.layers[a:z]), a, loss if z == len(model.layers) else None, optimizer, seed
        )
        for a, z in bounds
    ]
    labels = [stage_label(model.layers[a:z]) for a, z in bounds]
    stage_flops = [sum(flops[a:z]) for a, z in bounds]
    param_bytes = [
        sum(int(np.prod(p.shape)) * itemsize for layer in model.params[a:z] for p in layer.values())
        for a, z in bounds
    ]
    state_factor = 1 + {"sgd": 1 if getattr(optimizer, "momentum", 0) else 0, "adam": 2}.get(
        optimizer.name, 2
    )
    batches = [
        batch_indices(n_samples, batch_size, seed, s, shuffle=shuffle)
        for s in range(start_step, start_step + steps)
    ]
    ctx = {"b": b, "token": token, "x": x_ref, "y": y_ref, "specs": specs, "labels": labels,
           "stage_flops": stage_flops, "param_bytes": param_bytes, "batches": batches,
           "start": start_step, "fan_in": fan_in, "state_factor": state_factor,
           "itemsize": itemsize, "shapes": shapes, "bounds": bounds}
    if isinstance(strategy, ModelAveraging):
        outputs = _averaging(ctx, strategy, init_refs, final)
    else:
        _check_split(strategy, batches, M)
        chunk = _fusion(fuse_steps, (S, K, M), stage_flops[0], batch_size, len(model.layers), steps)
        if chunk > 1:
            outputs = _fused(ctx, init_refs[0], chunk)
        else:
            outputs = _steps(ctx, strategy, init_refs, M)
    b.g.graph.update(outputs=[r.key for r in outputs], token=token, layout=(S, K, M))
    return b.g


def _check_split(strategy: Strategy, batches: list[np.ndarray], M: int) -> None:
    smallest = min(len(i) for i in batches)
    n_shards = len(shard_sizes(strategy, max(smallest, 1)))
    if n_shards > smallest:
        raise ConfigError(
            "shards", f"at most the smallest batch's {smallest} samples", n_shards
        )
    per_shard = min(shard_sizes(strategy, smallest))
    if per_shard < M:
        raise ConfigError(
            "microbatches", f"at most the smallest shard's {per_shard} samples", M
        )


def _fusion(fuse: int | str, layout: tuple[int, int, int], flops: float, batch: int,
            n_layers: int, steps: int) -> int:
    """Steps per task: 1 unless the run is one shard of one stage and a step is tiny."""
    if fuse == "auto":
        if layout != (1, 1, 1):
            return 1
        seconds = 3.0 * flops * batch / DEFAULT_FLOPS_PER_S + 50e-6 * n_layers
        return max(1, min(steps, math.ceil(STEP_TARGET_SECONDS / seconds)))
    if not isinstance(fuse, int) or isinstance(fuse, bool) or fuse < 1:
        raise ConfigError("fuse_steps", "'auto' or a positive integer", fuse)
    if fuse > 1 and layout != (1, 1, 1):
        raise ConfigError("fuse_steps", "1 unless the strategy has one shard and one stage", fuse)
    return min(fuse, steps)


def _fused(ctx: dict[str, Any], init: Ref, chunk: int) -> list[Ref]:
    b, token, batches, start = ctx["b"], ctx["token"], ctx["batches"], ctx["start"]
    state, label = init, ctx["labels"][0]
    per_sample = ctx["stage_flops"][0]
    for lo in range(0, len(batches), chunk):
        idx = tuple(batches[lo : lo + chunk])
        rows = sum(len(i) for i in idx)
        state = b.add((f"steps-{label}-{token}", start + lo), "steps", kernels.train_steps,
                      ctx["specs"][0], state, ctx["x"], ctx["y"], idx, start + lo,
                      step=start + lo, stage=0, flops=3.0 * per_sample * rows, n_steps=len(idx),
                      bytes=ctx["param_bytes"][0] * ctx["state_factor"])
    return [state]


def _steps(ctx: dict[str, Any], strategy: Strategy, init: list[Ref], M: int) -> list[Ref]:
    b, token, specs, labels = ctx["b"], ctx["token"], ctx["specs"], ctx["labels"]
    K, itemsize, shapes, bounds = len(specs), ctx["itemsize"], ctx["shapes"], ctx["bounds"]
    states = list(init)  # full stage states: what the updates read and write
    # what forward/backward tasks read: with optimizer state and several consumers per stage, a
    # small task extracts the parameters, so the state never travels to other workers
    split = ctx["state_factor"] > 1 and strategy.layout[0] * M > 1
    params = list(init)
    for i, index in enumerate(ctx["batches"]):
        s = ctx["start"] + i
        parts: list[list[Ref]] = [[] for _ in range(K)]
        offset = 0
        for j, n_shard in enumerate(shard_sizes(strategy, len(index))):
            rows = index[offset : offset + n_shard]
            offset += n_shard
            lo = 0
            for m, n_micro in enumerate(proportional_split(n_shard, [1.0] * M)):
                mb = rows[lo : lo + n_micro]
                lo += n_micro
                where = {"step": s, "shard": j, "micro": m}
                if K == 1:
                    parts[0].append(b.add(
                        (f"grad-{labels[0]}-{token}", s, j, m), "grad", kernels.grad, specs[0],
                        params[0], ctx["x"], ctx["y"], mb, len(index), s, j, stage=0,
                        flops=3.0 * ctx["stage_flops"][0] * n_micro,
                        bytes=ctx["param_bytes"][0] + 8, **where))
                    continue
                fwd: list[Ref] = []
                x_in: Ref | None = None
                for k in range(K - 1):
                    a, z = bounds[k]
                    act = sum(math.prod(shapes[q]) for q in range(a, z + 1)) * n_micro * itemsize
                    x_in = b.add(
                        (f"forward-{labels[k]}-{token}", s, j, m, k), "forward", kernels.forward,
                        specs[k], params[k], x_in, ctx["x"], mb, s, stage=k,
                        flops=ctx["stage_flops"][k] * n_micro, bytes=act, **where)
                    fwd.append(x_in)
                up = None
                for k in range(K - 1, -1, -1):
                    a = bounds[k][0]
                    dx_bytes = math.prod(shapes[a]) * n_micro * itemsize + ctx["param_bytes"][k]
                    key = (f"backward-{labels[k]}-{token}", s, j, m, k)
                    if k == K - 1:
                        up = b.add(key, "backward", kernels.loss_backward, specs[k], params[k],
                                   x_in, ctx["x"], ctx["y"], mb, len(index), s, j, stage=k,
                                   flops=3.0 * ctx["stage_flops"][k] * n_micro, bytes=dx_bytes,
                                   **where)
                    else:
                        up = b.add(key, "backward", kernels.backward, specs[k], params[k],
                                   fwd[k], up, stage=k,
                                   flops=2.0 * ctx["stage_flops"][k] * n_micro, bytes=dx_bytes,
                                   **where)
                    parts[k].append(up)
        for k in range(K):
            nbytes = ctx["param_bytes"][k]
            label = labels[k]
            leaves = b.tree(parts[k], ctx["fan_in"],
                            lambda lv, q, label=label, s=s, k=k:
                                (f"aggregate-{label}-{token}", s, k, lv, q),
                            nbytes + 8, nbytes / itemsize * ctx["fan_in"], step=s, stage=k)
            states[k] = b.add((f"update-{label}-{token}", s, k), "update", kernels.update,
                              specs[k], states[k], *leaves, step=s, stage=k,
                              flops=nbytes / itemsize * (len(leaves) + 2 * ctx["state_factor"]),
                              bytes=nbytes * ctx["state_factor"])
            params[k] = states[k]
            if split and i + 1 < len(ctx["batches"]):
                params[k] = b.add((f"params-{label}-{token}", s, k), "params",
                                  kernels.params_of, states[k], step=s, stage=k, bytes=nbytes)
    return states


def _averaging(
    ctx: dict[str, Any], strategy: ModelAveraging, init: list[Ref], final: bool
) -> list[Ref]:
    b, token, spec, label = ctx["b"], ctx["token"], ctx["specs"][0], ctx["labels"][0]
    batches, start, H, R = ctx["batches"], ctx["start"], strategy.local_steps, strategy.replicas
    if len(init) != 1 + R:
        raise ConfigError("init", f"{1 + R} states (average, then one per replica)", len(init))
    _check_split(strategy, batches, 1)
    nbytes = ctx["param_bytes"][0]
    params_from, states = init[0], list(init[1:])
    end = start + len(batches)
    s = start
    while s < end:
        # a segment runs to the end of its period (periods are aligned to global steps) or of
        # this graph; it starts from the last average only at the start of a period
        seg_end = min((s // H + 1) * H, end)
        period = batches[s - start : seg_end - start]
        splits = [strategy.split(len(idx)) for idx in period]
        for r in range(R):
            idx, weights = [], []
            for index, sizes in zip(period, splits, strict=True):
                off = sum(sizes[:r])
                idx.append(index[off : off + sizes[r]])
                weights.append(sizes[r] / len(index))
            states[r] = b.add(
                (f"local-{label}-{token}", s, r), "local", kernels.local_steps, spec,
                params_from if s % H == 0 else states[r], states[r], ctx["x"], ctx["y"],
                tuple(idx), tuple(weights), s, r, step=s, shard=r, stage=0, n_steps=len(idx),
                flops=3.0 * ctx["stage_flops"][0] * sum(len(i) for i in idx),
                bytes=nbytes * ctx["state_factor"])
        if seg_end % H == 0 or (final and seg_end == end):
            shares = tuple(n / len(period[-1]) for n in splits[-1])
            params_from = b.add(
                (f"average-{label}-{token}", seg_end - 1), "average", kernels.average,
                WORKER_BACKEND, shares, *states, step=seg_end - 1, stage=0,
                flops=2.0 * R * nbytes / ctx["itemsize"],
                bytes=nbytes * ctx["state_factor"])
        s = seg_end
    return [params_from, *states]
