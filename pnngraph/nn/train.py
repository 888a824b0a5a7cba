"""Training-run primitives every trainer shares: the batch order and the result.

Which samples form step ``s``'s batch is a pure function (:func:`batch_indices`) of the dataset
size, the batch size, the seed and ``s``; the serial reference trainer
(:func:`pnngraph.train_serial`, in :mod:`pnngraph.compile.reference`) and every parallel strategy
use it, so a parallel run trains on exactly the same batches. Every trainer returns a
:class:`TrainingResult`.

>>> batch_indices(10, 4, 0, 1, shuffle=False).tolist()
[4, 5, 6, 7]
>>> steps_per_epoch(10, 4)
3
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pnngraph.nn.model import ParamList, Sequential
from pnngraph.nn.optimizers import State


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
    epoch, j = divmod(step, steps_per_epoch(n_samples, batch_size))
    order = epoch_order(n_samples, seed, epoch) if shuffle else np.arange(n_samples)
    return order[j * batch_size : (j + 1) * batch_size].copy()


@functools.lru_cache(maxsize=4)
def epoch_order(n_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The order epoch ``epoch`` visits the samples in: ``default_rng([seed, epoch])``'s
    permutation, drawn once per epoch and read-only (every step of the epoch slices it)."""
    order = np.random.default_rng([seed, epoch]).permutation(n_samples)
    order.flags.writeable = False
    return order


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
