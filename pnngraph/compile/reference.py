"""Serial definitions of the strategies that are not large-batch SGD: the oracles they must match.

Data parallelism, pipelines and their hybrid all equal :func:`pnngraph.train_serial`. Model
averaging is its own algorithm, defined here as a plain loop over replicas::

    for each period of H steps (the last may be shorter):
        for each replica r:      start from the last average, keep r's own optimizer state,
            for each step s:     train on shard r of batch s (loss: mean over the shard)
        average: sum_r share_r * params_r,  share_r = r's share of the period's last batch

>>> import numpy as np
>>> from pnngraph.nn import Dense, Sequential
>>> X = np.random.default_rng(0).standard_normal((40, 2)); y = (X[:, 0] > 0).astype(int)
>>> model = Sequential([Dense(2, 2)], input_shape=(2,))
>>> result = train_averaging_serial(model, X, y, replicas=2, local_steps=3, steps=6,
...                                 batch_size=10, lr=0.1)
>>> result.losses.shape
(6,)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pnngraph.compile.strategies import ModelAveraging
from pnngraph.nn.backend import get_backend
from pnngraph.nn.layers import Context
from pnngraph.nn.losses import Loss
from pnngraph.nn.model import Sequential
from pnngraph.nn.optimizers import Optimizer
from pnngraph.nn.train import TrainingResult, batch_indices, prepare, resolve_steps


def train_averaging_serial(
    model: Sequential,
    X: Any,
    y: Any,
    *,
    replicas: int | Sequence[float] = 2,
    local_steps: int = 1,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 32,
    optimizer: str | Optimizer = "sgd",
    loss: str | Loss = "cross_entropy",
    seed: int = 0,
    shuffle: bool = True,
    **optimizer_options: Any,
) -> TrainingResult:
    """Model averaging run serially: the definition ``ModelAveraging(replicas, local_steps)``
    must reproduce. Returns the averaged model, replica 0's optimizer state and the global loss
    of every step (the shard-size-weighted sum of the replicas' local losses)."""
    strategy = ModelAveraging(replicas, local_steps)
    X_arr, y_arr, loss_fn, opt, bs = prepare(
        model, X, y, batch_size=batch_size, loss=loss, optimizer=optimizer,
        optimizer_options=optimizer_options,
    )
    total = resolve_steps(len(X_arr), bs, steps, epochs)
    xp = get_backend("numpy").xp
    R, H = strategy.replicas, strategy.local_steps
    average = model.params
    states = [opt.init(model.params) for _ in range(R)]
    losses = np.zeros(total)
    for lo in range(0, total, H):
        period = [batch_indices(len(X_arr), bs, seed, s, shuffle=shuffle)
                  for s in range(lo, min(lo + H, total))]
        splits = [strategy.split(len(idx)) for idx in period]
        finals = []
        for r in range(R):
            params = average
            for i, (index, sizes) in enumerate(zip(period, splits, strict=True)):
                off = sum(sizes[:r])
                rows = index[off : off + sizes[r]]
                ctx = Context(training=True, step=lo + i, index=rows, seed=seed)
                out, caches = model.forward(xp, params, X_arr[rows], ctx)
                value, dout = loss_fn.value_and_grad(xp, out, y_arr[rows], len(rows))
                _, grads = model.backward(xp, params, caches, dout)
                params, states[r] = opt.update(params, grads, states[r])
                losses[lo + i] += float(value) * sizes[r] / len(index)
            finals.append(params)
        shares = [n / len(period[-1]) for n in splits[-1]]
        average = [
            {k: _weighted(shares, [f[i][k] for f in finals]) for k in layer}
            for i, layer in enumerate(finals[0])
        ]
    trained = model.copy()
    trained.params = average
    return TrainingResult(trained, states[0], losses)


def _weighted(shares: Sequence[float], arrays: Sequence[np.ndarray]) -> np.ndarray:
    acc = shares[0] * arrays[0]
    for w, a in zip(shares[1:], arrays[1:], strict=True):
        acc = acc + w * a
    return acc
