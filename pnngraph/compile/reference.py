"""The serial definitions every strategy must reproduce: the oracles of the whole package.

Data parallelism, pipelines and their hybrid all equal :func:`train_serial`, a plain mini-batch
loop. One step is::

    x, t      = X[idx], y[idx]                   idx = spec.batch(s)
    out, c    = model.forward(params, x)         (Context: training, step s, sample indices idx)
    loss, g   = loss.value_and_grad(out, t, len(idx))
    _, grads  = model.backward(params, c, g)
    params, state = optimizer.update(params, grads, state)
    buffers   = running statistics of every BatchNorm from this batch's (pnngraph.nn.batchnorm)

Model averaging is its own algorithm, :func:`train_averaging_serial`, a plain loop over
replicas::

    for each period of H steps (the last may be shorter):
        for each replica r:      start from the last average, keep r's own optimizer state,
            for each step s:     train on shard r of batch s (loss: mean over the shard)
        average: sum_r share_r * params_r,  share_r = r's share of the period's last batch
                 (BatchNorm's running statistics likewise: each replica's are its own shard's)

>>> import numpy as np
>>> from pnngraph.nn import Dense, Sequential
>>> X = np.random.default_rng(0).standard_normal((40, 2)); y = (X[:, 0] > 0).astype(int)
>>> model = Sequential([Dense(2, 2)], input_shape=(2,))
>>> result = train_serial(model, X, y, steps=50, batch_size=8, optimizer="sgd", lr=0.5)
>>> bool(result.losses[-1] < result.losses[0])
True
>>> result = train_averaging_serial(model, X, y, replicas=2, local_steps=3, steps=6,
...                                 batch_size=10, lr=0.1)
>>> result.losses.shape
(6,)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from pnngraph.compile.spec import prepare
from pnngraph.compile.strategies import ModelAveraging
from pnngraph.exceptions import TrainingError, check_int
from pnngraph.nn.backend import get_backend
from pnngraph.nn.batchnorm import serial_sync, update_running
from pnngraph.nn.layers import Context
from pnngraph.nn.losses import Loss
from pnngraph.nn.model import Sequential
from pnngraph.nn.optimizers import Optimizer, State
from pnngraph.nn.train import TrainingResult, check_update


def train_serial(
    model: Sequential,
    X: Any,
    y: Any,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = 32,
    optimizer: str | Optimizer = "sgd",
    loss: str | Loss = "cross_entropy",
    seed: int = 0,
    shuffle: bool = True,
    backend: str = "numpy",
    callback: Any = None,
    start_step: int = 0,
    opt_state: State | None = None,
    block_rows: Sequence[int] | None = None,
    window: int = 2,
    **optimizer_options: Any,
) -> TrainingResult:
    """Train ``model`` on ``(X, y)`` one mini-batch at a time, deterministically.

    Parameters
    ----------
    model : Sequential
        Its parameters are the starting point; they are not modified (the result has a copy).
    X, y : array_like
        Samples (N, *input_shape) and targets (class labels for cross-entropy).
    steps, epochs : int
        Exactly one: the number of optimizer steps, or of passes over the data.
    batch_size : int
    optimizer : {"sgd", "adam"} or Optimizer
        With a name, further keyword arguments (``lr``, ``momentum``, ...) configure it.
    loss : {"cross_entropy", "mse"} or Loss
    seed : int
        Fixes the batch order and dropout masks.
    backend : {"numpy", "cupy", "emulated"}
    callback : callable, optional
        Called as ``callback(step, loss)`` after every step.
    start_step, opt_state : int, dict
        Continue an earlier run: its model, its ``opt_state`` and the step it stopped at. Training
        in pieces this way ends bitwise-identical to one uninterrupted run.
    block_rows, window : sequence of int, int
        The batch order of data in blocks (:func:`pnngraph.nn.train.epoch_order`): the rows of
        each block (a dask array's ``X.chunks[0]``) and how many consecutive blocks are
        shuffled together. A run on that dask array trains on the batches this order gives.

    Returns
    -------
    TrainingResult
        Same inputs, same seed: bitwise-identical parameters.
    """
    spec, X_arr, y_arr = prepare(
        model, X, y, steps=steps, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
        loss=loss, seed=seed, shuffle=shuffle, block_rows=block_rows, window=window,
        caller="train_serial", **optimizer_options,
    )
    start = check_int("start_step", start_step, low=0)
    be = get_backend(backend)
    xp = be.xp
    params = be.tree_asarray(model.params)
    buffers = be.tree_asarray(model.buffers)
    state = spec.optimizer.init(params) if opt_state is None else be.tree_asarray(
        spec.optimizer.check_state(model.params, opt_state))
    losses = np.empty(spec.steps)
    seconds = np.empty(spec.steps)
    for i, s in enumerate(range(start, start + spec.steps)):
        t0 = time.perf_counter()
        idx = spec.batch(s)
        sync = serial_sync(model.layers)
        ctx = Context(training=True, step=s, index=idx, seed=spec.seed, sync=sync)
        out, caches = model.forward(xp, params, be.asarray(X_arr[idx]), ctx)
        value, dout = spec.loss.value_and_grad(xp, out, be.asarray(y_arr[idx]), len(idx))
        _, grads = model.backward(xp, params, caches, dout, input_grad=False, sync=sync)
        params, state = spec.optimizer.update(params, grads, state)
        if sync is not None:
            buffers = update_running(model.layers, buffers, sync.known)
        losses[i] = float(value)
        seconds[i] = time.perf_counter() - t0
        if not math.isfinite(losses[i]):
            raise TrainingError(f"the loss became {losses[i]}", step=s)
        check_update(xp, model.layers, 0, grads, params, s)
        if callback is not None:
            callback(s, losses[i])
    trained = model.copy()
    trained.params = be.tree_to_numpy(params)
    trained.buffers = be.tree_to_numpy(buffers)
    return TrainingResult(trained, be.tree_to_numpy(state), losses, seconds)


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
    block_rows: Sequence[int] | None = None,
    window: int = 2,
    **optimizer_options: Any,
) -> TrainingResult:
    """Model averaging run serially: the definition ``ModelAveraging(replicas, local_steps)``
    must reproduce. Returns the averaged model, replica 0's optimizer state and the global loss
    of every step (the shard-size-weighted sum of the replicas' local losses). ``block_rows``
    and ``window`` choose the batch order of data in blocks, as for :func:`train_serial`."""
    strategy = ModelAveraging(replicas, local_steps)
    spec, X_arr, y_arr = prepare(
        model, X, y, strategy=strategy, steps=steps, epochs=epochs, batch_size=batch_size,
        optimizer=optimizer, loss=loss, seed=seed, shuffle=shuffle, block_rows=block_rows,
        window=window, caller="train_averaging_serial", **optimizer_options,
    )
    xp = get_backend("numpy").xp
    R, H, opt = strategy.replicas, strategy.local_steps, spec.optimizer
    average, average_buffers = model.params, model.buffers
    states = [opt.init(model.params) for _ in range(R)]
    losses = np.zeros(spec.steps)
    for lo in range(0, spec.steps, H):
        period = [spec.batch(s) for s in range(lo, min(lo + H, spec.steps))]
        splits = [strategy.split(len(idx)) for idx in period]
        finals, final_buffers = [], []
        for r in range(R):
            params, buffers = average, average_buffers
            for i, (index, sizes) in enumerate(zip(period, splits, strict=True)):
                off = sum(sizes[:r])
                rows = index[off : off + sizes[r]]
                sync = serial_sync(model.layers)
                ctx = Context(training=True, step=lo + i, index=rows, seed=spec.seed, sync=sync)
                out, caches = model.forward(xp, params, X_arr[rows], ctx)
                value, dout = spec.loss.value_and_grad(xp, out, y_arr[rows], len(rows))
                _, grads = model.backward(xp, params, caches, dout, input_grad=False, sync=sync)
                params, states[r] = opt.update(params, grads, states[r])
                if sync is not None:
                    buffers = update_running(model.layers, buffers, sync.known)
                if not math.isfinite(float(value)):
                    raise TrainingError(f"the loss became {float(value)}", step=lo + i, shard=r)
                check_update(xp, model.layers, 0, grads, params, lo + i, shard=r)
                losses[lo + i] += float(value) * sizes[r] / len(index)
            finals.append(params)
            final_buffers.append(buffers)
        shares = strategy.shares(len(period[-1]))
        average, average_buffers = (
            [{k: _weighted(shares, [f[i][k] for f in trees]) for k in layer}
             for i, layer in enumerate(trees[0])]
            for trees in (finals, final_buffers))
    trained = model.copy()
    trained.params = average
    trained.buffers = average_buffers
    return TrainingResult(trained, states[0], losses)


def _weighted(shares: Sequence[float], arrays: Sequence[np.ndarray]) -> np.ndarray:
    acc = shares[0] * arrays[0]
    for w, a in zip(shares[1:], arrays[1:], strict=True):
        acc = acc + w * a
    return acc
