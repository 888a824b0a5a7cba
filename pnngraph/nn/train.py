"""Training-run primitives every trainer shares: the batch order and the result.

Which samples form step ``s``'s batch is a pure function (:func:`batch_indices`) of the dataset
size, the batch size, the seed and ``s``; the serial reference trainer
(:func:`pnngraph.train_serial`, in :mod:`pnngraph.compile.reference`) and every parallel strategy
use it, so a parallel run trains on exactly the same batches. Every trainer returns a
:class:`TrainingResult`; :func:`pnngraph.fit` adds its :class:`History`, one
:class:`EpochRecord` per epoch::

    history.records   [EpochRecord(epoch=0, step=3, loss=..., val_loss=..., ...), ...]
    history["loss"]   [loss of epoch 0, loss of epoch 1, ...]   (Keras' History.history)

>>> batch_indices(10, 4, 0, 1, shuffle=False).tolist()
[4, 5, 6, 7]
>>> steps_per_epoch(10, 4)
3
>>> history = History([EpochRecord(0, 3, 0.9, seconds=2.0, samples_per_s=5.0),
...                    EpochRecord(1, 6, 0.7, seconds=2.0, samples_per_s=5.0)])
>>> history["loss"], sorted(history.as_dict())
([0.9, 0.7], ['epoch', 'loss', 'samples_per_s', 'seconds', 'step'])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from pnngraph.exceptions import ConfigError, TrainingError, check_int
from pnngraph.nn.layers import Layer
from pnngraph.nn.model import ParamList, Sequential
from pnngraph.nn.optimizers import State


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    """Batches in one pass over ``n_samples`` (the last one may be smaller)."""
    return math.ceil(n_samples / batch_size)


def batch_samples(n_samples: int, batch_size: int, lo: int, hi: int) -> int:
    """Samples in the batches of steps ``lo, ..., hi - 1`` (an epoch's last batch may be
    short).

    >>> batch_samples(10, 4, 0, 3), batch_samples(10, 4, 2, 4)
    (10, 6)
    """
    per = steps_per_epoch(n_samples, batch_size)
    total = 0
    for epoch in range(lo // per, (hi - 1) // per + 1) if hi > lo else ():
        a, b = max(lo - epoch * per, 0), min(hi - epoch * per, per)
        total += min(n_samples, b * batch_size) - a * batch_size
    return total


def batch_indices(
    n_samples: int, batch_size: int, seed: int, step: int, *, shuffle: bool = True,
    block_rows: Sequence[int] | None = None, window: int = 2,
) -> np.ndarray:
    """Dataset rows of step ``step``'s batch: epoch ``e`` visits the rows in the order
    :func:`epoch_order` gives, in slices of ``batch_size``; the last slice may be shorter.

    ``block_rows`` (the rows of each block of chunked data, in order) and ``window`` choose the
    blocked order (see :func:`epoch_order`); without them every row is shuffled with every other.

    >>> batch_indices(10, 4, 0, 2, shuffle=False)
    array([8, 9])
    """
    epoch, j = divmod(step, steps_per_epoch(n_samples, batch_size))
    rows = None if block_rows is None else tuple(int(n) for n in block_rows)
    order = epoch_order(n_samples, seed, epoch, rows, window) if shuffle else \
        np.arange(n_samples)
    return order[j * batch_size : (j + 1) * batch_size].copy()


@functools.lru_cache(maxsize=4)
def epoch_order(n_samples: int, seed: int, epoch: int, block_rows: tuple[int, ...] | None = None,
                window: int = 2) -> np.ndarray:
    """The order epoch ``epoch`` visits the samples in, drawn once per epoch and read-only
    (every step of the epoch slices it), from ``rng = default_rng([seed, epoch])``:

    - without ``block_rows`` (one block): ``rng.permutation(n_samples)``;
    - with the rows of each block, ``block_rows``: ``rng.permutation`` of the blocks, then,
      for each run of ``window`` consecutive blocks of that order (the last run may hold
      fewer), a ``rng.permutation`` of the rows of those blocks. A batch thus reads the rows
      of about ``window`` blocks (a few more where it straddles runs), and a block is read
      only by the consecutive steps that cover its run: the rest of the data may stay on
      disk meanwhile.

    >>> epoch_order(6, 0, 0, (2, 2, 2), 1).tolist()  # window 1: blocks permuted, rows inside
    [5, 4, 0, 1, 2, 3]
    """
    check_int("window", window)
    if block_rows is None or len(block_rows) == 1:
        order = np.random.default_rng([seed, epoch]).permutation(n_samples)
    else:
        if sum(block_rows) != n_samples:
            raise ConfigError("block_rows", f"row counts that add up to {n_samples}",
                              f"{len(block_rows)} blocks of {sum(block_rows)} rows")
        rng = np.random.default_rng([seed, epoch])
        starts = np.cumsum((0, *block_rows))
        blocks = rng.permutation(len(block_rows))
        runs = []
        for w in range(0, len(blocks), window):
            rows = np.concatenate([np.arange(starts[b], starts[b + 1])
                                   for b in blocks[w : w + window]])
            runs.append(rows[rng.permutation(len(rows))])
        order = np.concatenate(runs)
    order.flags.writeable = False
    return order


def check_update(
    xp: Any, layers: Sequence[Layer], start: int, grads: ParamList, params: ParamList,
    step: int, *, shard: int | None = None, stage: int | None = None,
) -> None:
    """Refuse a step whose updated ``params`` hold NaN or inf: a :class:`TrainingError` at
    ``step`` (and ``shard`` or ``stage``) naming the first array of the gradient ``grads`` that
    holds one (an update from a bad gradient is bad), else the first updated parameter array.
    ``layers`` are the model's layers ``start, start + 1, ...``.

    It reads, never changes, the arrays: one sum per parameter array, added up on the device,
    one host synchronisation for the step. A sum is finite exactly when its terms are (unless
    it overflows: then each array is looked at), and a gradient that is not finite makes the
    parameters SGD or Adam update with it not finite, so the parameters' sum decides; the
    gradient is looked at only on a bad step, to name it.

    >>> import numpy as np
    >>> from pnngraph.nn.layers import Dense
    >>> grads = [{"W": np.array([1.0, np.nan])}]
    >>> check_update(np, [Dense(2, 1, name="dense0")], 0, grads, [{"W": grads[0]["W"] * 2}], 3,
    ...              stage=0)
    Traceback (most recent call last):
    ...
    pnngraph.exceptions.TrainingError: step 3, stage 0: the gradient of layer 0 (dense0) W \
became nan
    """
    total = 0.0
    with np.errstate(over="ignore", invalid="ignore"):  # a sum that overflows is looked into
        for layer in params:
            for a in layer.values():  # (numpy's method skips the namespace's dispatch)
                total = total + (a.sum() if isinstance(a, np.ndarray) else xp.sum(a))
        if math.isfinite(float(total)):
            return
    for trees, prefix, suffix in ((grads, "the gradient of ", ""), (params, "", " in the update")):
        for i, layer in enumerate(trees):
            for name, a in layer.items():
                if not bool(xp.all(xp.isfinite(a))):
                    value = "nan" if bool(xp.any(xp.isnan(a))) else "inf"
                    where = f"layer {start + i} ({layers[i].name}) {name}"
                    raise TrainingError(f"{prefix}{where} became {value}{suffix}", step=step,
                                        shard=shard, stage=stage)


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch of a :func:`pnngraph.fit` run measured.

    ``epoch`` counts from 0; ``step`` is the steps done when it ended (a run that ends mid-epoch
    records that part of the epoch too); ``loss`` is the mean of the epoch's step losses;
    ``val_loss`` and ``val_accuracy`` (cross-entropy only) come from the validation data, with
    the model at the end of the epoch (``None`` without); ``seconds`` is the wall time of the
    epoch's steps and ``samples_per_s`` the samples they trained on per second (steps done
    before a resume count no time: ``seconds`` 0 and ``samples_per_s`` 0 for an epoch done
    entirely before it).
    """

    epoch: int
    step: int
    loss: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    seconds: float = 0.0
    samples_per_s: float = 0.0

    def logs(self) -> dict[str, float]:
        """The metrics a callback sees: every field but ``epoch`` that has a value."""
        return {k: v for k, v in asdict(self).items() if k != "epoch" and v is not None}


class History:
    """The per-epoch records of a run, in order; ``history["val_loss"]`` is one metric as a
    list (as Keras' ``History.history`` gives it), :meth:`as_dict` all of them."""

    def __init__(self, records: Sequence[EpochRecord] = ()) -> None:
        self.records: list[EpochRecord] = list(records)

    def as_dict(self) -> dict[str, list[Any]]:
        """Every metric that was recorded, as a list over the epochs (``val_loss`` and
        ``val_accuracy`` only where recorded)."""
        out: dict[str, list[Any]] = {}
        for f in fields(EpochRecord):
            values = [getattr(r, f.name) for r in self.records]
            if self.records and all(v is not None for v in values):
                out[f.name] = values
        return out

    def __getitem__(self, metric: str) -> list[Any]:
        if metric not in {f.name for f in fields(EpochRecord)}:
            raise KeyError(metric)
        return [getattr(r, metric) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[EpochRecord]:
        return iter(self.records)

    def to_json(self) -> list[dict[str, Any]]:
        """The records as JSON objects (checkpoints store them; a value that is not finite, a
        validation loss that overflowed say, as its name: "inf", "nan")."""
        return [{k: v if not isinstance(v, float) or math.isfinite(v) else str(v)
                 for k, v in asdict(r).items()} for r in self.records]

    @classmethod
    def from_json(cls, records: Sequence[dict[str, Any]]) -> History:
        """The history :meth:`to_json` wrote."""
        def number(v: Any) -> Any:
            return float(v) if isinstance(v, str) else v

        return cls([EpochRecord(**{k: number(v) for k, v in r.items()}) for r in records])

    def __repr__(self) -> str:
        return f"History({len(self.records)} epochs: {sorted(self.as_dict())})"


@dataclass
class TrainingResult:
    """What a training run returns, serial or parallel.

    ``model`` holds the trained parameters (host arrays), ``opt_state`` the optimizer state
    (for model averaging, the first replica's), ``losses`` the global mean loss of every step,
    ``step_seconds`` the wall time of each step where it was measured (else empty),
    ``states`` the raw final stage or replica states a parallel run can continue from,
    ``history`` the per-epoch records of a :func:`pnngraph.fit` run (else empty), and
    ``shards`` each chunk of a ``fit`` run of data parallelism as ``{"steps": [lo, hi],
    "sizes": {worker: samples of a full batch}}`` (else empty).
    """

    model: Sequential
    opt_state: State
    losses: np.ndarray
    step_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    states: Any = None
    history: History = field(default_factory=History)
    shards: list[dict[str, Any]] = field(default_factory=list)

    @property
    def params(self) -> ParamList:
        return self.model.params
