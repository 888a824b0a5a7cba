"""Cost of every node of the training graph: floating-point work and the bytes of its output.

The graph compiler asks this module, node by node, and stores the answers as the nodes' ``flops``
and ``bytes`` (edges carry their producer's bytes); the planner turns them into seconds with the
cluster model. Everything is counted from the model's per-sample forward FLOPs of each stage, the
stage's parameter bytes and activation shapes, and how many state arrays the optimizer keeps::

    grad        3 F n            (forward, loss and backward of n samples, whole model)
    forward     F_k n            output and caches: every activation of the stage
    backward    3 F_k n (last stage: it runs its forward and the loss too), else 2 F_k n
    aggregate   P_k / itemsize * fan_in     additions of parameter-sized gradients
    update      P_k / itemsize * (parts + 2 (1 + state))
    steps/local 3 F n  over all the samples of the fused steps
    average     2 R P / itemsize

>>> from pnngraph.nn import Dense, ReLU, SGD, Sequential
>>> model = Sequential([Dense(4, 8), ReLU(), Dense(8, 2)], input_shape=(4,))
>>> costs = stage_costs(model, [(0, 3)], SGD(0.1, momentum=0.9))
>>> costs.grad(0, 10)
{'flops': 3120.0, 'bytes': 472}
>>> costs.state_factor
2
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pnngraph.nn.model import Sequential
from pnngraph.nn.optimizers import Optimizer

LOSS_BYTES = 8  # a float travels with every gradient
STEP_TARGET_SECONDS = 0.05  # fused step tasks aim at about this much work
DEFAULT_FLOPS_PER_S = 1e10  # a rough CPU core, for the fusion decision only
LAYER_OVERHEAD_SECONDS = 50e-6  # Python per layer and step, for the fusion decision only

Cost = dict[str, float]


@dataclass(frozen=True)
class StageCosts:
    """Per-sample forward FLOPs, parameter bytes and activation sizes of each stage.

    ``flops[k]`` forward FLOPs per sample of stage k, ``param_bytes[k]`` its parameters,
    ``act_bytes[k]`` the bytes per sample of every activation it keeps (its output and caches),
    ``in_bytes[k]`` the bytes per sample of its input; ``state_factor`` how many parameter-sized
    arrays a stage's state holds (1 + the optimizer's state arrays).
    """

    flops: tuple[float, ...]
    param_bytes: tuple[int, ...]
    act_bytes: tuple[int, ...]
    in_bytes: tuple[int, ...]
    itemsize: int
    state_factor: int

    def grad(self, k: int, n: int) -> Cost:
        return {"flops": 3.0 * self.flops[k] * n, "bytes": self.param_bytes[k] + LOSS_BYTES}

    def forward(self, k: int, n: int) -> Cost:
        return {"flops": self.flops[k] * n, "bytes": self.act_bytes[k] * n}

    def backward(self, k: int, n: int, *, last: bool) -> Cost:
        factor = 3.0 if last else 2.0
        return {"flops": factor * self.flops[k] * n,
                "bytes": self.in_bytes[k] * n + self.param_bytes[k]}

    def aggregate(self, k: int, fan_in: int) -> Cost:
        return {"flops": self.param_bytes[k] / self.itemsize * fan_in,
                "bytes": self.param_bytes[k] + LOSS_BYTES}

    def update(self, k: int, parts: int) -> Cost:
        return {"flops": self.param_bytes[k] / self.itemsize * (parts + 2 * self.state_factor),
                "bytes": self.param_bytes[k] * self.state_factor}

    def params(self, k: int) -> Cost:
        return {"flops": 0.0, "bytes": self.param_bytes[k]}

    def steps(self, k: int, rows: int) -> Cost:
        """Whole training steps of ``rows`` samples in all (fused steps, local steps)."""
        return {"flops": 3.0 * self.flops[k] * rows,
                "bytes": self.param_bytes[k] * self.state_factor}

    def average(self, k: int, replicas: int) -> Cost:
        return {"flops": 2.0 * replicas * self.param_bytes[k] / self.itemsize,
                "bytes": self.param_bytes[k] * self.state_factor}

    def fused_steps(self, batch_size: int, n_layers: int, steps: int) -> int:
        """Steps per task for a one-shard, one-stage run: about ``STEP_TARGET_SECONDS`` of work."""
        seconds = 3.0 * self.flops[0] * batch_size / DEFAULT_FLOPS_PER_S
        seconds += LAYER_OVERHEAD_SECONDS * n_layers
        return max(1, min(steps, math.ceil(STEP_TARGET_SECONDS / seconds)))


def stage_costs(
    model: Sequential, bounds: Sequence[tuple[int, int]], optimizer: Optimizer
) -> StageCosts:
    """The :class:`StageCosts` of ``model`` cut into stages ``bounds``."""
    itemsize = np.dtype(model.dtype).itemsize
    layer_flops, shapes = model.layer_flops(), model.shapes

    def size(q: int) -> int:
        return math.prod(shapes[q]) * itemsize

    return StageCosts(
        flops=tuple(float(sum(layer_flops[a:z])) for a, z in bounds),
        param_bytes=tuple(
            sum(int(np.prod(p.shape)) * itemsize for layer in model.params[a:z]
                for p in layer.values())
            for a, z in bounds
        ),
        act_bytes=tuple(sum(size(q) for q in range(a, z + 1)) for a, z in bounds),
        in_bytes=tuple(size(a) for a, _ in bounds),
        itemsize=itemsize,
        state_factor=1 + optimizer.state_arrays,
    )
