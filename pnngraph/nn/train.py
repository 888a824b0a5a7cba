"""The serial reference trainer: a plain mini-batch loop, the oracle of every parallel strategy.

Which samples form step ``s``'s batch is a pure function (:func:`batch_indices`) of the dataset
size, the batch size, the seed and ``s``, shared with the graph compiler, so a parallel run
trains on exactly the same batches. One step is::

    x, t      = X[idx], y[idx]                   idx = batch_indices(n, batch_size, seed, s)
    out, c    = model.forward(params, x)         (Context: training, step s, sample indices idx)
    loss, g   = loss.value_and_grad(out, t, len(idx))
    _, grads  = model.backward(params, c, g)
    params, state = optimizer.update(params, grads, state)

>>> import numpy as np
>>> from pnngraph.nn.layers import Dense
>>> from pnngraph.nn.model import Sequential
>>> X = np.random.default_rng(0).standard_normal((32, 2)); y = (X[:, 0] > 0).astype(int)
>>> model = Sequential([Dense(2, 2)], input_shape=(2,))
>>> result = train_serial(model, X, y, steps=50, batch_size=8, optimizer="sgd", lr=0.5)
>>> bool(result.losses[-1] < result.losses[0])
True
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pnngraph.exceptions import ConfigError, DataError, TrainingError
from pnngraph.nn.backend import get_backend
from pnngraph.nn.layers import Context
from pnngraph.nn.losses import Loss, get_loss
from pnngraph.nn.model import ParamList, Sequential
from pnngraph.nn.optimizers import Optimizer, State, get_optimizer


def check_positive_int(name: str, v: Any) -> int:
    """``v`` as an int if it is a positive integer, else :class:`ConfigError`."""
    if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
        raise ConfigError(name, "a positive integer", v)
    return int(v)


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    """Batches in one pass over ``n_samples`` (the last one may be smaller)."""
    return math.ceil(n_samples / batch_size)


def batch_indices(
    n_samples: int, batch_size: int, seed: int, step: int, *, shuffle: bool = True
) -> np.ndarray:
    """Dataset rows of step ``step``'s batch: epoch ``e`` visits a permutation drawn from
    ``default_rng([seed, e])`` in slices of ``batch_size``; the last slice may be shorter.

    >>> batch_indices(10, 4, 0, 2, shuffle=False)
    array([8, 9])
    """
    per = steps_per_epoch(n_samples, batch_size)
    epoch, j = divmod(step, per)
    order = (
        np.random.default_rng([seed, epoch]).permutation(n_samples)
        if shuffle
        else np.arange(n_samples)
    )
    return order[j * batch_size : (j + 1) * batch_size]


def resolve_steps(n_samples: int, batch_size: int, steps: int | None, epochs: int | None) -> int:
    """Total steps from exactly one of ``steps`` and ``epochs``."""
    if (steps is None) == (epochs is None):
        raise ConfigError("steps/epochs", "exactly one of steps and epochs", (steps, epochs))
    if steps is not None:
        return check_positive_int("steps", steps)
    return check_positive_int("epochs", epochs) * steps_per_epoch(n_samples, batch_size)


@dataclass
class TrainingResult:
    """What a training run returns, serial or parallel.

    ``model`` holds the trained parameters (host arrays), ``opt_state`` the optimizer state
    (for model averaging, the first replica's), ``losses`` the global mean loss of every step,
    ``step_seconds`` the wall time of each step where it was measured (else empty), and
    ``states`` the raw final stage or replica states a parallel run can continue from.
    """

    model: Sequential
    opt_state: State
    losses: np.ndarray
    step_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    states: Any = None

    @property
    def params(self) -> ParamList:
        return self.model.params


def prepare(
    model: Sequential,
    X: Any,
    y: Any,
    *,
    batch_size: int,
    loss: str | Loss,
    optimizer: str | Optimizer,
    optimizer_options: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, Loss, Optimizer, int]:
    """Validate a training call's inputs at the boundary; returns (X, y, loss, optimizer, B)."""
    if not isinstance(model, Sequential):
        raise ConfigError("model", "a pnngraph Sequential", type(model).__name__)
    X_arr = np.asarray(X)
    if X_arr.ndim == 0 or X_arr.shape[0] == 0:
        raise DataError("X", f"expected at least one sample, got shape {X_arr.shape}")
    if model.input_shape is None:
        model.build(X_arr.shape[1:])
    X_arr = model.check_inputs(X_arr)
    loss_fn = get_loss(loss)
    y_arr = loss_fn.check_targets(np.asarray(y), model.output_shape)
    if len(y_arr) != len(X_arr):
        raise DataError("X/y", f"X has {len(X_arr)} samples but y has {len(y_arr)}")
    bs = check_positive_int("batch_size", batch_size)
    opt = get_optimizer(optimizer, **optimizer_options)
    return X_arr, y_arr, loss_fn, opt, bs


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

    Returns
    -------
    TrainingResult
        Same inputs, same seed: bitwise-identical parameters.
    """
    X_arr, y_arr, loss_fn, opt, bs = prepare(
        model,
        X,
        y,
        batch_size=batch_size,
        loss=loss,
        optimizer=optimizer,
        optimizer_options=optimizer_options,
    )
    total = resolve_steps(len(X_arr), bs, steps, epochs)
    be = get_backend(backend)
    xp = be.xp
    params = be.tree_asarray(model.params)
    state = opt.init(params) if opt_state is None else be.tree_asarray(opt_state)
    if not isinstance(start_step, int) or start_step < 0:
        raise ConfigError("start_step", "an integer >= 0", start_step)
    losses = np.empty(total)
    seconds = np.empty(total)
    for i, s in enumerate(range(start_step, start_step + total)):
        t0 = time.perf_counter()
        idx = batch_indices(len(X_arr), bs, seed, s, shuffle=shuffle)
        ctx = Context(training=True, step=s, index=idx, seed=seed)
        out, caches = model.forward(xp, params, be.asarray(X_arr[idx]), ctx)
        value, dout = loss_fn.value_and_grad(xp, out, be.asarray(y_arr[idx]), len(idx))
        _, grads = model.backward(xp, params, caches, dout)
        params, state = opt.update(params, grads, state)
        losses[i] = float(value)
        seconds[i] = time.perf_counter() - t0
        if not math.isfinite(losses[i]):
            raise TrainingError(f"the loss became {losses[i]}", step=s)
        if callback is not None:
            callback(s, losses[i])
    trained = model.copy()
    trained.params = be.tree_to_numpy(params)
    return TrainingResult(trained, be.tree_to_numpy(state), losses, seconds)
