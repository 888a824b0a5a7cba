"""Epochs in ``fit``: their records (:class:`~pnngraph.nn.train.History`), validation, and the
callbacks that watch them.

An epoch of a run is ``spec.steps_per_epoch`` steps. When ``fit`` is given ``validation_data``
or ``callbacks``, every epoch end is a chunk end at which the state comes back to the client;
there :class:`Epochs` makes the epoch's :class:`~pnngraph.nn.train.EpochRecord` (the mean of
its step losses, its wall time, and the validation loss and accuracy of the model at that
point, computed on the client) and hands its metrics to each callback::

    chunk ends at an epoch end -> result so far (host) -> EpochRecord -> logs
        for each callback:  callback.model = the model at the end of the epoch
                            callback.on_epoch_end(epoch, logs)
        any callback.stop_training -> fit stops here (the next chunk is cancelled)
    run ends                   -> callback.model = the model fit returns
                                  callback.on_train_end(logs of the last epoch)

``logs`` holds ``step``, ``loss``, ``seconds``, ``samples_per_s`` and, with validation data,
``val_loss`` and (cross-entropy) ``val_accuracy``. A callback asks to stop by setting its
``stop_training`` attribute to ``True``; each run starts with it ``False`` and calls
``on_train_begin`` first (the shipped callbacks forget their best value there). Without
validation or callbacks no epoch end needs the state: the records are made afterwards from the
losses and step times.

A callback that monitors a metric the run does not log is refused before any work
(:func:`check_callbacks`). Callbacks only read: a run with callbacks computes the same bits as
one without, for the steps it ran.

>>> import numpy as np
>>> from pnngraph import Dense, Sequential, fit
>>> X = np.random.default_rng(0).standard_normal((40, 2)); y = (X[:, 0] > 0).astype(int)
>>> model = Sequential([Dense(2, 2)], input_shape=(2,))
>>> stop = EarlyStopping(monitor="val_loss", patience=1, min_delta=0.5)
>>> result = fit(model, (X, y), epochs=20, batch_size=10, lr=0.1, progress=False,
...              validation_data=(X[:10], y[:10]), callbacks=[stop])
>>> stop.stopped_epoch, len(result.history), len(result.losses)
(1, 2, 8)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pnngraph.compile.spec import TrainingSpec
from pnngraph.exceptions import ConfigError, DataError, check_int, check_name, check_number
from pnngraph.nn.model import Sequential
from pnngraph.nn.train import EpochRecord, History, TrainingResult, batch_samples

MODES = ("auto", "max", "min")


class Callback:
    """Base of the callbacks of :func:`pnngraph.fit`: override what you need.

    Attributes
    ----------
    model : Sequential or None
        Set by ``fit`` before each call: the model at the end of the epoch (a host copy), and
        for :meth:`on_train_end` the model ``fit`` returns (a callback may change its
        parameters there, as ``EarlyStopping(restore_best=True)`` does).
    stop_training : bool
        Set it to ``True`` (in :meth:`on_epoch_end`) to stop the run at the end of this epoch.
    """

    model: Sequential | None = None
    stop_training: bool = False

    def monitors(self) -> tuple[str, ...]:
        """The metrics this callback reads from ``logs``: ``fit`` refuses, before any work, a
        callback that monitors a metric the run does not log."""
        return ()

    def on_train_begin(self, logs: dict[str, float]) -> None:
        """Before the first step of this run (``logs`` is empty)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """After epoch ``epoch`` (from 0) with its metrics."""

    def on_train_end(self, logs: dict[str, float]) -> None:
        """After the last step run, with the last epoch's metrics."""


class _Monitor:
    """When a monitored value improves: ``mode`` "min" or "max" ("auto": "max" for accuracies
    and throughput, else "min"), by more than ``min_delta``."""

    def __init__(self, owner: str, monitor: str, mode: str, min_delta: float) -> None:
        if not isinstance(monitor, str):
            raise ConfigError(f"{owner} monitor", "a metric name such as 'val_loss'", monitor)
        mode = check_name(f"{owner} mode", mode, MODES)
        if mode == "auto":
            mode = "max" if "accuracy" in monitor or monitor == "samples_per_s" else "min"
        self.monitor, self.mode = monitor, mode
        self.min_delta = check_number(f"{owner} min_delta", min_delta, "a finite number >= 0",
                                      lambda v: math.isfinite(v) and v >= 0)
        self.reset()

    def reset(self) -> None:
        """Forget the best value (a new run)."""
        self.best = math.inf if self.mode == "min" else -math.inf

    def improved(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (NaN never does); if so it is the best."""
        better = (value < self.best - self.min_delta if self.mode == "min"
                  else value > self.best + self.min_delta)
        if better:
            self.best = value
        return bool(better)


class _Watching(Callback):
    """A callback that watches one metric (its ``_monitor``): ``monitor``, ``best``."""

    _monitor: _Monitor

    @property
    def monitor(self) -> str:
        return self._monitor.monitor

    @property
    def best(self) -> float:
        return self._monitor.best

    def monitors(self) -> tuple[str, ...]:
        return (self.monitor,)



class EarlyStopping(_Watching):
    """Stop when ``monitor`` has not improved for ``patience`` epochs (Keras' EarlyStopping).

    Parameters
    ----------
    monitor : str
        A metric of the logs: "val_loss" (needs ``validation_data``), "val_accuracy", "loss".
    patience : int
        Epochs without improvement after which the run stops (0 and 1: the first one).
    min_delta : float
        The least change that counts as an improvement.
    mode : {"auto", "min", "max"}
        "auto": "max" for accuracies, else "min".
    restore_best : bool
        At the end, give the model the parameters of the best epoch (the optimizer state, the
        losses and the raw states of the result stay those of the last step run).

    Attributes: ``best`` (the best value), ``best_epoch``, ``stopped_epoch`` (``None`` if it
    never stopped the run), ``wait`` (epochs since the best).
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto", restore_best: bool = False) -> None:
        self._monitor = _Monitor("EarlyStopping", monitor, mode, min_delta)
        self.patience = check_int("EarlyStopping patience", patience, low=0)
        if not isinstance(restore_best, bool):
            raise ConfigError("EarlyStopping restore_best", "True or False", restore_best)
        self.restore_best = restore_best
        self.on_train_begin({})

    def on_train_begin(self, logs: dict[str, float]) -> None:
        self._monitor.reset()
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self._best_params: list[dict[str, np.ndarray]] | None = None
        self._best_buffers: list[dict[str, np.ndarray]] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self._monitor.improved(logs[self.monitor]):
            self.best_epoch, self.wait = epoch, 0
            if self.restore_best and self.model is not None:
                self._best_params = [{k: np.array(v) for k, v in layer.items()}
                                     for layer in self.model.params]
                self._best_buffers = [{k: np.array(v) for k, v in layer.items()}
                                      for layer in self.model.buffers]
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch, self.stop_training = epoch, True

    def on_train_end(self, logs: dict[str, float]) -> None:
        if self.restore_best and self._best_params is not None and self.model is not None:
            self.model.params = self._best_params
            self.model.buffers = self._best_buffers

    def __repr__(self) -> str:
        m = self._monitor
        return (f"EarlyStopping(monitor={m.monitor!r}, patience={self.patience}, "
                f"min_delta={m.min_delta}, mode={m.mode!r}, restore_best={self.restore_best})")


class BestCheckpoint(_Watching):
    """Write the model to ``path`` (:meth:`Sequential.save`) whenever ``monitor`` improves.

    The file appears whole or not at all: the model goes to a temporary file in the same
    folder (created if missing), which then replaces ``path``. Attributes: ``best``,
    ``best_epoch`` (``None`` until the first write).
    """

    def __init__(self, path: str | os.PathLike[str], monitor: str = "val_loss",
                 mode: str = "auto", min_delta: float = 0.0) -> None:
        self.path = Path(path)
        self._monitor = _Monitor("BestCheckpoint", monitor, mode, min_delta)
        self.on_train_begin({})

    def on_train_begin(self, logs: dict[str, float]) -> None:
        self._monitor.reset()
        self.best_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.model is not None and self._monitor.improved(logs[self.monitor]):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.model.save(self.path)  # atomic: the file is whole or the old one
            self.best_epoch = epoch

    def __repr__(self) -> str:
        return f"BestCheckpoint({os.fspath(self.path)!r}, monitor={self.monitor!r})"


def check_callbacks(callbacks: Iterable[Any] | None, logged: Sequence[str]) -> list[Callback]:
    """The callbacks as a list, each a :class:`Callback` monitoring only ``logged`` metrics;
    else :class:`ConfigError` naming the callback and the metric."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or not isinstance(callbacks, Iterable):
        raise ConfigError("callbacks", "a list of Callback objects", type(callbacks).__name__)
    out = list(callbacks)
    for i, cb in enumerate(out):
        if not isinstance(cb, Callback):
            raise ConfigError(f"callbacks[{i}]", "a pnngraph Callback", type(cb).__name__)
        for metric in cb.monitors():
            if metric not in logged:
                need = "" if "val_loss" in logged else \
                    "; 'val_loss' and 'val_accuracy' need validation_data"
                raise ConfigError(f"{type(cb).__name__} monitor", "a metric this run logs ("
                                  + ", ".join(repr(m) for m in logged) + need + ")", metric)
    return out


def check_validation(model: Sequential, spec: TrainingSpec,
                     validation_data: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``validation_data`` as checked host arrays ``(X_val, y_val)`` (one-hot labels become
    class labels), or ``None``."""
    if validation_data is None:
        return None
    if hasattr(validation_data, "X") and hasattr(validation_data, "y"):
        X, y = validation_data.X, validation_data.y
    elif isinstance(validation_data, tuple | list) and len(validation_data) == 2:
        X, y = validation_data
    else:
        raise ConfigError("validation_data", "an (X_val, y_val) pair or a Dataset",
                          type(validation_data).__name__)
    X_arr = model.check_inputs(np.asarray(X), what="validation_data X")
    try:
        y_arr = spec.loss.check_targets(np.asarray(y), model.output_shape)
    except DataError as err:
        raise DataError("validation_data y", err.problem) from None
    if len(y_arr) != len(X_arr):
        raise DataError("validation_data", f"X has {len(X_arr)} samples but y has {len(y_arr)}")
    return X_arr, y_arr


class Epochs:
    """The epochs of one ``fit`` run: their records so far, the validation data, the callbacks.

    ``live`` (validation data or callbacks given): every epoch end must be a chunk end with
    the state on the client, where :meth:`end_epoch` runs. ``records`` starts with those of a
    resumed run's checkpoint (epochs before the resume point it has no record of are rebuilt
    from its losses, without times or validation).
    """

    def __init__(self, spec: TrainingSpec, callbacks: list[Callback],
                 validation: tuple[np.ndarray, np.ndarray] | None, start: int = 0,
                 earlier: History | None = None, losses: np.ndarray | None = None) -> None:
        self.spec, self.callbacks, self.validation = spec, callbacks, validation
        self.per_epoch = spec.steps_per_epoch
        self.live = validation is not None or bool(callbacks)
        kept = [r for r in (earlier or History()) if r.step <= start]
        if kept and kept[-1].step == start and start % self.per_epoch and start < spec.steps:
            kept.pop()  # a run that ended mid-epoch: the resumed run completes that epoch
        self.records: list[EpochRecord] = kept
        if losses is not None:  # epochs the checkpoint has losses but no records of
            done = self.records[-1].step if self.records else 0
            self.records += [self._record(e, losses, np.zeros(start)) for e in
                             self._ends(done, start, start if start == spec.steps else -1)]

    def is_end(self, step: int, total: int) -> bool:
        """Whether a chunk ending at ``step`` of ``total`` ends an epoch (or the run)."""
        return step % self.per_epoch == 0 or step == total

    def _ends(self, lo: int, hi: int, total: int) -> list[int]:
        """Epoch ends in ``(lo, hi]``, and ``hi`` itself when it ends the run."""
        ends = list(range((lo // self.per_epoch + 1) * self.per_epoch, hi + 1, self.per_epoch))
        if hi == total and hi > lo and (not ends or ends[-1] != hi):
            ends.append(hi)
        return ends

    def _record(self, step: int, losses: np.ndarray, seconds: np.ndarray,
                val: dict[str, float] | None = None) -> EpochRecord:
        epoch = (step - 1) // self.per_epoch
        first = epoch * self.per_epoch
        took = float(np.sum(seconds[first:step]))
        samples = batch_samples(self.spec.n_samples, self.spec.batch_size, first, step)
        val = val or {}
        return EpochRecord(epoch, step, float(np.mean(losses[first:step])),
                           val.get("loss"), val.get("accuracy"), took,
                           samples / took if took > 0 else 0.0)

    def history(self, losses: np.ndarray, seconds: np.ndarray, step: int, total: int) -> History:
        """The records up to ``step``: those made so far, then the epochs since, from the
        losses and step times (no validation)."""
        done = self.records[-1].step if self.records else 0
        extra = [self._record(e, losses, seconds) for e in self._ends(done, step, total)]
        return History(self.records + extra)

    def begin(self) -> None:
        """Start the callbacks afresh: none asks to stop yet."""
        for cb in self.callbacks:
            cb.stop_training = False
            cb.on_train_begin({})

    def end_epoch(self, so_far: TrainingResult, seconds: np.ndarray, step: int) -> bool:
        """Record the epoch that ends at ``step`` (``so_far``: the result at that step) and
        tell the callbacks; whether one asks to stop."""
        val = None if self.validation is None else so_far.model.evaluate(
            *self.validation, loss=self.spec.loss)
        record = self._record(step, so_far.losses, seconds, val)
        self.records.append(record)
        logs = record.logs()
        for cb in self.callbacks:
            cb.model = so_far.model
            cb.on_epoch_end(record.epoch, dict(logs))
        return any(cb.stop_training for cb in self.callbacks)

    def end(self, result: TrainingResult) -> None:
        """Tell the callbacks the run ended (``result.model``: the model ``fit`` returns)."""
        logs = result.history.records[-1].logs() if len(result.history) else {}
        for cb in self.callbacks:
            cb.model = result.model
            cb.on_train_end(dict(logs))


def logged_metrics(spec: TrainingSpec, validation: bool) -> tuple[str, ...]:
    """The metrics of this run's logs."""
    names = ["step", "loss", "seconds", "samples_per_s"]
    if validation:
        names.append("val_loss")
        if spec.loss.task == "classification":
            names.append("val_accuracy")
    return tuple(sorted(names))
