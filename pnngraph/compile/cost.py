"""Cost of every node of the training graph: floating-point work and the bytes of its output.

The graph compiler asks this module, node by node, and stores the answers as the nodes' ``flops``
and ``bytes`` (edges carry their producer's bytes); the planner turns them into seconds with the
cluster model. Everything is counted from the model's per-sample forward FLOPs of each stage, the
stage's parameter bytes and activation shapes, and how many state arrays the optimizer keeps::

    grad        (3 F - F_1) n    (forward, loss and backward of n samples, whole model; the
                                 first layer's input gradient F_1 is not computed)
    forward     F_k n            output and caches: every activation of the stage
    backward    3 F_k n (last stage: it runs its forward and the loss too), else 2 F_k n
    aggregate   P_k / itemsize * fan_in     additions of parameter-sized gradients
    update      P_k / itemsize * (parts + 2 (1 + state))
    steps/local 3 F n  over all the samples of the fused steps
    average     2 R P / itemsize
    segment     (3 F - F_1) n / (2 B + 1) of a model with B BatchNorm layers (its step cut at
                2 B sync points); output: every activation and cache (the last: a gradient)
    stats       Q / itemsize * fan_in, Q the bytes of a BatchNorm layer's statistics (3 C)

Beside its output, a node may need memory only while it runs (``work_bytes``, for the predicted
peak of :mod:`pnngraph.plan.memory`): a task that runs a forward pass and its backward (grad,
the last stage's backward, fused steps) holds every activation and cache of its rows,
``ACTIVATION_WORK_FACTOR`` x the stage's activation bytes; an update the sum of its parts (one
parameter-sized array, when there are several) and the optimizer's intermediate arrays,
``UPDATE_WORK_FACTOR`` x max(1, state arrays) x the stage's parameter bytes (measured: Adam
makes two parameter-sized temporaries beside its new state, SGD one); fused steps hold
the activations, the gradient, the update's temporaries and one state more (the state of the
step in progress, beside the task's input and its output).

>>> from pnngraph.nn import Dense, ReLU, SGD, Sequential
>>> model = Sequential([Dense(4, 8), ReLU(), Dense(8, 2)], input_shape=(4,))
>>> costs = stage_costs(model, [(0, 3)], SGD(0.1, momentum=0.9))
>>> cost = costs.grad(0, 10)
>>> cost["flops"], cost["bytes"], cost["rows"], cost["sig"].startswith("grad:")
(2480.0, 472, 10.0, True)
>>> costs.state_factor
2
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pnngraph.nn.batchnorm import norm_layers
from pnngraph.nn.model import Sequential
from pnngraph.nn.optimizers import Optimizer

LOSS_BYTES = 8  # a float travels with every gradient
STEP_TARGET_SECONDS = 0.25  # fused step tasks aim at about this much work (a hop: ~10 ms)
DEFAULT_FLOPS_PER_S = 1e10  # a rough CPU core, for the fusion decision only
LAYER_OVERHEAD_SECONDS = 50e-6  # Python per layer and step, for the fusion decision only
ACTIVATION_WORK_FACTOR = 1.1  # a forward + backward task's working set / its activation bytes
UPDATE_WORK_FACTOR = 1.0  # an optimizer step's temporaries / (max(1, state arrays) x params)

Cost = dict[str, Any]


@dataclass(frozen=True)
class StageCosts:
    """Per-sample forward FLOPs, parameter bytes and activation sizes of each stage.

    ``flops[k]`` forward FLOPs per sample of stage k, ``param_bytes[k]`` its parameters,
    ``act_bytes[k]`` the bytes per sample of every activation it keeps (its output and caches),
    ``in_bytes[k]`` the bytes per sample of its input, ``dx_flops[k]`` the FLOPs per sample of
    its input gradient that the first stage skips (nothing needs it); ``state_factor`` how many
    parameter-sized arrays a stage's state holds (1 + the optimizer's state arrays); ``sigs[k]``
    names what stage k computes (its layers, dtype, optimizer and loss), so that a measured
    kernel time can price every node that runs the same kernel on the same stage.

    Every cost also says how much work of its kind a node does, for measured kernel times
    (``a * count + b * rows`` seconds): ``sig`` (kernel and stage), ``rows`` (samples; parts
    summed for aggregate and update, replicas for average) and ``count`` (calls: the steps of a
    fused task).
    """

    flops: tuple[float, ...]
    param_bytes: tuple[int, ...]
    act_bytes: tuple[int, ...]
    in_bytes: tuple[int, ...]
    dx_flops: tuple[float, ...]
    itemsize: int
    state_factor: int
    sigs: tuple[str, ...]
    stat_bytes: tuple[int, ...] = ()
    """Per stage, the bytes of its widest BatchNorm layer's statistics (0: none)."""

    def _activations(self, k: int, n: float) -> float:
        """Working set of a forward and backward pass of stage ``k`` on ``n`` samples."""
        return ACTIVATION_WORK_FACTOR * self.act_bytes[k] * n

    def _temporaries(self, k: int) -> float:
        """Intermediate arrays of one optimizer step of stage ``k``."""
        return UPDATE_WORK_FACTOR * max(1, self.state_factor - 1) * self.param_bytes[k]

    def _work(self, kernel: str, k: int, rows: float, count: int = 1) -> dict[str, Any]:
        return {"sig": f"{kernel}:{self.sigs[k]}", "rows": float(rows), "count": count}

    def grad(self, k: int, n: int) -> Cost:
        return {"flops": (3.0 * self.flops[k] - self.dx_flops[k]) * n,
                "bytes": self.param_bytes[k] + LOSS_BYTES, "work_bytes": self._activations(k, n),
                **self._work("grad", k, n)}

    def forward(self, k: int, n: int) -> Cost:
        return {"flops": self.flops[k] * n, "bytes": self.act_bytes[k] * n,
                **self._work("forward", k, n)}

    def backward(self, k: int, n: int, *, last: bool) -> Cost:
        factor = 3.0 if last else 2.0
        return {"flops": (factor * self.flops[k] - self.dx_flops[k]) * n,
                "bytes": self.in_bytes[k] * n + self.param_bytes[k],
                "work_bytes": self._activations(k, n) if last else 0.0,
                **self._work("loss_backward" if last else "backward", k, n)}

    def aggregate(self, k: int, fan_in: int) -> Cost:
        return {"flops": self.param_bytes[k] / self.itemsize * fan_in,
                "bytes": self.param_bytes[k] + LOSS_BYTES, **self._work("aggregate", k, fan_in)}

    def update(self, k: int, parts: int) -> Cost:
        return {"flops": self.param_bytes[k] / self.itemsize * (parts + 2 * self.state_factor),
                "bytes": self.param_bytes[k] * self.state_factor,
                "work_bytes": self._temporaries(k) + (self.param_bytes[k] if parts > 1 else 0),
                **self._work("update", k, parts)}

    def norm(self, k: int) -> Cost:
        """Squared norms of stage ``k``'s gradient arrays (gradient clipping): a few floats."""
        return {"flops": 2.0 * self.param_bytes[k] / self.itemsize, "bytes": LOSS_BYTES,
                **self._work("norm", k, 1)}

    def segment(self, k: int, n: int, rounds: int, *, last: bool) -> Cost:
        """One of the ``rounds`` tasks of a shard's step with BatchNorm, on ``n`` samples."""
        out = self.param_bytes[k] + LOSS_BYTES if last else 2 * self.act_bytes[k] * n
        return {"flops": (3.0 * self.flops[k] - self.dx_flops[k]) * n / rounds, "bytes": out,
                **self._work("segment", k, n)}

    def stats(self, k: int, fan_in: int) -> Cost:
        """A shard's BatchNorm statistics (``fan_in`` 0: taken from its round), or the
        combination of ``fan_in`` shards' statistics."""
        q = self.stat_bytes[k] if self.stat_bytes else 0
        return {"flops": 4.0 * q / self.itemsize * max(fan_in, 1), "bytes": q + LOSS_BYTES,
                **self._work("stats", k, fan_in)}

    def params(self, k: int) -> Cost:
        return {"flops": 0.0, "bytes": self.param_bytes[k], **self._work("params", k, 0)}

    def steps(self, k: int, rows: int, count: int = 1, kernel: str = "train_steps") -> Cost:
        """Whole training steps of ``rows`` samples in all, ``count`` steps (fused steps;
        ``kernel="local_steps"`` for model averaging's)."""
        return {"flops": (3.0 * self.flops[k] - self.dx_flops[k]) * rows,
                "bytes": self.param_bytes[k] * self.state_factor,
                "work_bytes": self._activations(k, rows / max(count, 1)) + self._temporaries(k)
                + self.param_bytes[k] * (1 + (self.state_factor if count > 1 else 0)),
                **self._work(kernel, k, rows, count)}

    def average(self, k: int, replicas: int) -> Cost:
        return {"flops": 2.0 * replicas * self.param_bytes[k] / self.itemsize,
                "bytes": self.param_bytes[k] * self.state_factor,
                **self._work("average", k, replicas)}

    def fused_steps(self, batch_size: int, n_layers: int, steps: int) -> int:
        """Steps per task for a one-shard, one-stage run: about ``STEP_TARGET_SECONDS`` of work."""
        seconds = 3.0 * self.flops[0] * batch_size / DEFAULT_FLOPS_PER_S
        seconds += LAYER_OVERHEAD_SECONDS * n_layers
        return max(1, min(steps, math.ceil(STEP_TARGET_SECONDS / seconds)))


def stage_costs(
    model: Sequential, bounds: Sequence[tuple[int, int]], optimizer: Optimizer,
    loss: Any = None,
) -> StageCosts:
    """The :class:`StageCosts` of ``model`` cut into stages ``bounds`` (``loss``: the run's,
    which the last stage computes)."""
    itemsize = np.dtype(model.dtype).itemsize
    layer_flops, shapes = model.layer_flops(), model.shapes
    layers = model.config()["layers"]

    def size(q: int) -> int:
        return math.prod(shapes[q]) * itemsize

    def sig(a: int, z: int) -> str:
        # what decides a kernel's time: the layers (not their names), the input shape, dtype,
        # the optimizer's kind and state (not its learning rate), the loss on the last stage
        kinds = [{k: v for k, v in layer.items() if k != "name"} for layer in layers[a:z]]
        last = type(loss).__name__ if z == len(model.layers) and loss is not None else None
        return _digest(kinds, list(shapes[a]), model.dtype, type(optimizer).__name__,
                       optimizer.state_arrays, last)

    return StageCosts(
        flops=tuple(float(sum(layer_flops[a:z])) for a, z in bounds),
        param_bytes=tuple(
            sum(int(np.prod(p.shape)) * itemsize for layer in model.params[a:z]
                for p in layer.values())
            for a, z in bounds
        ),
        act_bytes=tuple(sum(size(q) for q in range(a, z + 1)) for a, z in bounds),
        in_bytes=tuple(size(a) for a, _ in bounds),
        dx_flops=tuple(float(layer_flops[0]) if a == 0 else 0.0 for a, _ in bounds),
        itemsize=itemsize,
        state_factor=1 + optimizer.state_arrays,
        sigs=tuple(sig(a, z) for a, z in bounds),
        stat_bytes=tuple(max((3 * model.params[i][f"{prefix}gamma"].shape[0] * itemsize
                              for i, prefix, _ in norm_layers(model.layers) if a <= i < z),
                             default=0) for a, z in bounds),
    )


def _digest(*parts: Any) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(),
                           digest_size=5).hexdigest()
