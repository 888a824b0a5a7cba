"""The math of a training run as one value: :class:`TrainingSpec`.

Everything that decides the bits a run produces, besides the model and the data, is in the
spec: the strategy, the number of steps, the batch size and the dataset size (together with the
seed and ``shuffle`` they fix every batch, :meth:`TrainingSpec.batch`), the optimizer and loss
objects, the fan-in of the gradient sums and the step fusion. A fan-in of "auto" (the default)
is fixed before a run compiles: by the planner where a cluster model is there to predict with
(:func:`pnngraph.run.auto.choose_fan_in`), else :data:`DEFAULT_FAN_IN`; the run's spec and its
checkpoints record the number. Every public entry point
(``build``, ``fit``, ``train_serial``, ``train_averaging_serial``) turns its keyword arguments
into a spec once, with :func:`prepare`, which validates them and the data at the boundary; the
layers below take the spec as it is. Checkpoints store :meth:`TrainingSpec.to_json`, and a
resumed run must agree with it on every field that changes the bits of the steps to come
(:meth:`TrainingSpec.differences`).

>>> import numpy as np
>>> from pnngraph.nn import Dense, Sequential
>>> from pnngraph.compile.strategies import DataParallel
>>> model = Sequential([Dense(2, 2)], input_shape=(2,))
>>> X, y = np.zeros((10, 2)), np.zeros(10, dtype=int)
>>> spec, X, y = prepare(model, X, y, strategy=DataParallel(2), epochs=3, batch_size=4, lr=0.1)
>>> spec.steps, spec.steps_per_epoch, spec.batch(2).tolist() == spec.batch(2).tolist()
(9, 3, True)
>>> spec.differences(spec.to_json() | {"seed": 1, "steps": 1})
['seed']
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import numpy as np

from pnngraph.compile.strategies import DataParallel, Strategy, as_strategy
from pnngraph.exceptions import ConfigError, DataError, check_int
from pnngraph.nn.batchnorm import norm_layers
from pnngraph.nn.losses import Loss, get_loss
from pnngraph.nn.model import Sequential
from pnngraph.nn.optimizers import Optimizer, check_options, get_optimizer
from pnngraph.nn.train import batch_indices, steps_per_epoch

DEFAULT_FAN_IN = 8
"""The gradient tree's fan-in where ``fan_in="auto"`` has nothing to choose with."""


@dataclass(frozen=True)
class TrainingSpec:
    """What defines the math of a run (see the module docstring).

    ``steps`` counts every step of the run (a resumed run included); ``fuse_steps`` is "auto"
    or the steps per task of a one-shard, one-stage run. ``block_rows`` (the rows of each block
    of chunked data; ``None`` for one block) and ``window`` choose the blocked batch order of
    :func:`pnngraph.nn.train.epoch_order`; ``fan_in`` is the gradient tree's fan-in, or "auto"
    (the planner chooses, see the module docstring).
    """

    strategy: Strategy
    steps: int
    batch_size: int
    n_samples: int
    optimizer: Optimizer
    loss: Loss
    seed: int = 0
    shuffle: bool = True
    fan_in: int | Literal["auto"] = "auto"
    fuse_steps: int | Literal["auto"] = "auto"
    block_rows: tuple[int, ...] | None = None
    window: int = 2

    NOT_IN_THE_BITS: ClassVar[tuple[str, ...]] = ("steps", "fuse_steps")
    """Fields a resumed run may change: more steps, other fusion (the same kernels run)."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "n_samples"):
            check_int(name, getattr(self, name))
        check_int("seed", self.seed, low=0)
        if not isinstance(self.shuffle, bool):
            raise ConfigError("shuffle", "True or False", self.shuffle)
        if self.fan_in != "auto":
            check_int("fan_in", self.fan_in, low=2)
        check_int("window", self.window)
        if self.block_rows is not None:
            rows = tuple(check_int("block_rows", n) for n in self.block_rows)
            object.__setattr__(self, "block_rows", rows if len(rows) > 1 else None)
        if self.fuse_steps != "auto":
            try:
                check_int("fuse_steps", self.fuse_steps)
            except ConfigError:
                raise ConfigError("fuse_steps", "'auto' or a positive integer",
                                  self.fuse_steps) from None
        if not isinstance(self.optimizer, Optimizer):
            raise ConfigError("optimizer", "an Optimizer", self.optimizer)
        if not isinstance(self.loss, Loss):
            raise ConfigError("loss", "a Loss", self.loss)

    @property
    def tree_fan_in(self) -> int:
        """The fan-in the graph is compiled with (:data:`DEFAULT_FAN_IN` while "auto")."""
        return DEFAULT_FAN_IN if self.fan_in == "auto" else int(self.fan_in)

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.n_samples, self.batch_size)

    @property
    def smallest_batch(self) -> int:
        """Samples in the run's smallest batch (an epoch's last batch may be short)."""
        last = self.n_samples - (self.steps_per_epoch - 1) * self.batch_size
        return last if self.steps >= self.steps_per_epoch else min(self.batch_size,
                                                                     self.n_samples)

    def check_split(self, model: Sequential, smallest: int | None = None) -> None:
        """Refuse a strategy the model or the batches cannot be split for: more stages than
        layers, more shards than samples in the smallest batch (``smallest``, by default the
        run's), more micro-batches than samples in the smallest shard. A strategy still to be
        chosen or sized is checked when it is."""
        strategy = self.strategy
        if strategy.chooses or strategy.auto:
            return
        strategy.stage_bounds(model.layer_flops())
        smallest = self.smallest_batch if smallest is None else smallest
        shards, _, microbatches = strategy.layout
        if shards > smallest:
            raise ConfigError("shards", f"at most the smallest batch's {smallest} samples",
                              shards)
        per_shard = min(strategy.shard_sizes(smallest))
        if per_shard < microbatches:
            raise ConfigError("microbatches",
                              f"at most the smallest shard's {per_shard} samples", microbatches)
        norms = norm_layers(model.layers)
        if norms:
            i, _, layer = norms[0]
            where = model.layers[i].name if model.layers[i] is layer else \
                f"{model.layers[i].name}/{layer.name}"
            if strategy.layout[1:] != (1, 1):
                raise ConfigError(
                    f"BatchNorm {where!r} strategy", "DataParallel or ModelAveraging (a "
                    "pipeline's stages and micro-batches never see the whole batch)",
                    repr(strategy))
            if per_shard < 2:
                raise ConfigError(f"BatchNorm {where!r} shard size", "at least 2 samples in "
                                  "every shard (one sample has no variance)", per_shard)

    def batch(self, step: int) -> np.ndarray:
        """Dataset rows of step ``step``'s batch (:func:`pnngraph.nn.train.batch_indices`)."""
        return batch_indices(self.n_samples, self.batch_size, self.seed, step,
                             shuffle=self.shuffle, block_rows=self.block_rows, window=self.window)

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON types: strategy and loss as their reprs, the optimizer as its name
        and options (a learning-rate schedule as its config)."""
        raw = {f.name: getattr(self, f.name) for f in fields(self)}
        raw["strategy"] = repr(self.strategy)
        raw["loss"] = repr(self.loss)
        raw["optimizer"] = {"name": self.optimizer.name, "options": self.optimizer.config()}
        out: dict[str, Any] = json.loads(json.dumps(raw))
        return out

    def differences(self, recorded: dict[str, Any]) -> list[str]:
        """Fields whose value in ``recorded`` (a :meth:`to_json`) would change the bits of the
        steps still to come; fields ``recorded`` lacks are not compared."""
        mine = self.to_json()
        return [name for name, value in mine.items()
                if name not in self.NOT_IN_THE_BITS and name in recorded
                and recorded[name] != value]


def resolve_steps(n_samples: int, batch_size: int, steps: Any, epochs: Any) -> int:
    """Total steps from exactly one of ``steps`` and ``epochs``."""
    if (steps is None) == (epochs is None):
        raise ConfigError("steps/epochs", "exactly one of steps and epochs", (steps, epochs))
    if steps is not None:
        return check_int("steps", steps)
    return check_int("epochs", epochs) * steps_per_epoch(n_samples, batch_size)


def check_data(model: Any, X: Any, y: Any, loss: Loss) -> tuple[np.ndarray, np.ndarray]:
    """Host arrays ``(X, y)`` checked against the model (built here from ``X`` if it has no
    input shape yet) and the loss."""
    if not isinstance(model, Sequential):
        raise ConfigError("model", "a pnngraph Sequential", type(model).__name__)
    X_arr = np.asarray(X)
    if X_arr.ndim == 0 or X_arr.shape[0] == 0:
        raise DataError("X", f"expected at least one sample, got shape {X_arr.shape}")
    if model.input_shape is None:
        model.build(X_arr.shape[1:])
    X_arr = model.check_inputs(X_arr)
    y_arr = loss.check_targets(np.asarray(y), model.output_shape)
    if len(y_arr) != len(X_arr):
        raise DataError("X/y", f"X has {len(X_arr)} samples but y has {len(y_arr)}")
    return X_arr, y_arr


def prepare(
    model: Sequential,
    X: Any,
    y: Any,
    *,
    strategy: Any = None,
    steps: Any = None,
    epochs: Any = None,
    batch_size: Any = 32,
    optimizer: str | Optimizer = "sgd",
    loss: str | Loss = "cross_entropy",
    label_smoothing: Any = None,
    seed: Any = 0,
    shuffle: Any = True,
    fan_in: Any = 8,
    fuse_steps: Any = "auto",
    n_samples: int | None = None,
    block_rows: Any = None,
    window: Any = 2,
    caller: str = "prepare",
    **optimizer_options: Any,
) -> tuple[TrainingSpec, np.ndarray, np.ndarray]:
    """Validate a run's inputs once: the spec, and ``(X, y)`` as checked host arrays.

    ``strategy`` may be a name ("data", ...) or ``None`` (one shard: the serial loop). For data
    that lives elsewhere (dask arrays), ``X``/``y`` are one-sample stand-ins of the right
    shapes and dtypes and ``n_samples`` says how many samples there are. Names of optimizers
    and losses may come in any case. ``optimizer_options`` must be options of the optimizer:
    any other keyword is an :class:`~pnngraph.exceptions.OptionError` (a ``TypeError``) naming
    ``caller``, the public function the keywords were given to. One-hot targets of a
    cross-entropy run become class labels here (:func:`pnngraph.nn.losses.one_hot_labels`).
    ``label_smoothing`` builds the cross-entropy loss with that option
    (:class:`~pnngraph.nn.losses.SoftmaxCrossEntropy`). ``block_rows`` and ``window`` choose
    the blocked batch order of chunked data (:func:`pnngraph.nn.train.epoch_order`).
    """
    check_options(caller, optimizer, optimizer_options)
    loss_fn = get_loss(loss, label_smoothing=label_smoothing)
    X_arr, y_arr = check_data(model, X, y, loss_fn)
    n = len(X_arr) if n_samples is None else n_samples
    bs = check_int("batch_size", batch_size)
    opt = get_optimizer(optimizer, **optimizer_options)
    total = resolve_steps(n, bs, steps, epochs)
    spec = TrainingSpec(
        strategy=DataParallel(1) if strategy is None else as_strategy(strategy), steps=total,
        batch_size=bs, n_samples=n, optimizer=opt, loss=loss_fn, seed=seed, shuffle=shuffle,
        fan_in=fan_in, fuse_steps=fuse_steps,
        block_rows=None if block_rows is None else tuple(block_rows), window=window,
    )
    if spec.block_rows is not None and sum(spec.block_rows) != n:
        raise ConfigError("block_rows", f"row counts that add up to the data's {n} samples",
                          f"{len(spec.block_rows)} blocks of {sum(spec.block_rows)} rows")
    spec.check_split(model)
    if bs > n:  # every batch would be the whole data set, and every cost priced for bs samples
        raise ConfigError("batch_size", f"at most the data's {n} samples", bs)
    return spec, X_arr, y_arr

