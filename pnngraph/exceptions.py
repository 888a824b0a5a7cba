"""Typed errors of pnngraph: one small hierarchy, each exception carrying its fields.

Every error a user can provoke with bad input derives from :class:`PnngraphError` and from the
matching builtin (``ValueError``, ``TypeError``, ``RuntimeError``), so callers may catch either::

    >>> from pnngraph.exceptions import ConfigError
    >>> try:
    ...     raise ConfigError("learning_rate", "a positive number", -1.0)
    ... except ValueError as err:
    ...     print(err)
    learning_rate: expected a positive number, got -1.0
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np


class PnngraphError(Exception):
    """Base of every error pnngraph raises on purpose."""


class ConfigError(PnngraphError, ValueError):
    """An option or argument has a bad value.

    Fields: ``name`` (the option), ``expected`` (what would be accepted), ``got`` (what came).
    """

    def __init__(self, name: str, expected: str, got: Any) -> None:
        self.name = name
        self.expected = expected
        self.got = got
        super().__init__(f"{name}: expected {expected}, got {got!r}")


class UnknownNameError(ConfigError):
    """A name (activation, loss, optimizer, strategy, scheduler, ...) is not one pnngraph knows."""

    def __init__(self, kind: str, name: Any, choices: Iterable[str]) -> None:
        self.kind = kind
        self.choices = tuple(sorted(choices))
        super().__init__(kind, "one of " + ", ".join(repr(c) for c in self.choices), name)


class OptionError(PnngraphError, TypeError):
    """A function got a keyword argument it does not take (a misspelt option, say).

    Fields: ``function`` (the function called), ``name`` (the keyword), ``accepted`` (the
    options it would have taken in that place).
    """

    def __init__(self, function: str, name: str, accepted: Iterable[str], where: str) -> None:
        self.function = function
        self.name = name
        self.accepted = tuple(accepted)
        options = ", ".join(repr(a) for a in self.accepted) or "none"
        super().__init__(f"{function}() got an unexpected keyword argument {name!r}: expected "
                         f"one of {function}'s own or an option of {where} ({options})")


class ShapeError(PnngraphError, ValueError):
    """An array's shape does not fit a layer.

    Fields: ``layer_index`` and ``layer_name`` (``None`` for the model's input), ``expected`` and
    ``got`` (shapes or descriptions of them, batch dimension left out).
    """

    def __init__(
        self,
        expected: Any,
        got: Any,
        *,
        layer_index: int | None = None,
        layer_name: str | None = None,
        detail: str = "",
    ) -> None:
        self.layer_index = layer_index
        self.layer_name = layer_name
        self.expected = expected
        self.got = got
        self.detail = detail
        where = "model input" if layer_index is None else f"layer {layer_index} ({layer_name})"
        tail = f": {detail}" if detail else ""
        super().__init__(f"{where}: expected input {expected}, got {got}{tail}")


class DataError(PnngraphError, ValueError):
    """Training or evaluation data is unusable (empty, NaN, bad labels, mismatched lengths, ...).

    Fields: ``what`` (the array or file concerned) and ``problem``.
    """

    def __init__(self, what: str, problem: str) -> None:
        self.what = what
        self.problem = problem
        super().__init__(f"{what}: {problem}")


class ModelFileError(PnngraphError, ValueError):
    """A file is not a pnngraph model or checkpoint, or is damaged. Fields: ``path``, ``reason``."""

    def __init__(self, path: Any, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: not a pnngraph model file ({reason})")


class TrainingError(PnngraphError, RuntimeError):
    """Training failed while running, e.g. the loss or a gradient became NaN.

    Fields: ``step``, ``shard`` and ``stage`` where it happened (``None`` when unknown or when
    it does not apply: a summed gradient belongs to a stage, not to a shard), ``problem``.
    """

    def __init__(self, problem: str, *, step: int | None = None, shard: int | None = None,
                 stage: int | None = None) -> None:
        self.problem = problem
        self.step = step
        self.shard = shard
        self.stage = stage
        where = [f"{name} {value}" for name, value in
                 (("step", step), ("shard", shard), ("stage", stage)) if value is not None]
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + problem)


class ClusterLostError(TrainingError):
    """A run lost what Dask cannot recompute: its scheduler, or a task that kept killing its
    workers. ``lost`` says what, ``steps`` the chunk that was running (``(lo, hi)``),
    ``checkpoint`` the newest checkpoint written (``None``: none), the one to resume from."""

    def __init__(self, lost: str, *, steps: tuple[int, int], checkpoint: Any = None) -> None:
        self.lost = lost
        self.steps = steps
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        then = ("no checkpoint was written (a checkpoint_dir makes a run resumable)"
                if checkpoint is None else
                f"resume from checkpoint {self.checkpoint} (resume=True; pnngraph train "
                "--resume)")
        super().__init__(f"the run lost {lost} during steps {steps[0]}-{steps[1]}; {then}")
        self.step = steps[0]


class MemoryPlanError(PnngraphError, ValueError):
    """No plan of the run fits in its workers' memory (their limits are in the cluster model).

    Fields: ``worker`` (the one that misses the most, in the plan that missed the least),
    ``need_bytes`` (its predicted peak), ``has_bytes`` (what it may use), ``tried`` (the
    strategies planned).
    """

    def __init__(self, worker: str, need_bytes: float, has_bytes: float,
                 tried: Iterable[str]) -> None:
        self.worker = worker
        self.need_bytes = need_bytes
        self.has_bytes = has_bytes
        self.tried = tuple(tried)
        mib = 2**20
        super().__init__(
            f"{worker} memory: expected a plan that needs at most {has_bytes / mib:.0f} MiB, "
            f"got {need_bytes / mib:.0f} MiB in the best of {len(self.tried)} plans tried "
            f"({(need_bytes - has_bytes) / mib:.0f} MiB missing)")

def check_name(kind: str, name: Any, choices: Iterable[str]) -> str:
    """The key of ``choices`` that ``name`` spells, in any case; else :class:`UnknownNameError`
    listing the choices. The one name check of the package.

    >>> check_name("optimizer", "Adam", ("adam", "sgd"))
    'adam'
    """
    table = tuple(choices)
    key = name.lower() if isinstance(name, str) else name
    if key not in table:
        raise UnknownNameError(kind, name, table)
    return str(key)


def check_int(name: str, value: Any, *, low: int = 1) -> int:
    """``value`` as an ``int`` when it is an integer (Python or numpy, not a bool) ``>= low``;
    else :class:`ConfigError` naming ``name``. The one integer check of the package.

    >>> check_int("steps", 3), check_int("start_step", 0, low=0)
    (3, 0)
    >>> check_int("steps", True)
    Traceback (most recent call last):
    ...
    pnngraph.exceptions.ConfigError: steps: expected a positive integer, got True
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        expected = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ConfigError(name, expected, value)
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a ``bool`` when it is one (Python or numpy); else :class:`ConfigError`.

    >>> check_bool("bias", False)
    False
    """
    if not isinstance(value, bool | np.bool_):
        raise ConfigError(name, "True or False", value)
    return bool(value)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real number: a Python or numpy integer or float, not a bool.

    >>> import numpy as np
    >>> is_number(np.float32(0.1)), is_number(np.int64(3)), is_number(True), is_number("1")
    (True, True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def check_number(name: str, value: Any, expected: str,
                 ok: Callable[[float], bool] = lambda v: v == v) -> float:
    """``value`` as a ``float`` when it is a number (:func:`is_number`) for which ``ok`` holds
    (by default: not NaN); else :class:`ConfigError` naming ``name``, saying ``expected``. The
    one number check of the package.

    >>> import numpy as np
    >>> check_number("rate", np.float32(0.5), "a number in [0, 1)", lambda r: 0 <= r < 1)
    0.5
    >>> check_number("rate", True, "a number in [0, 1)")
    Traceback (most recent call last):
    ...
    pnngraph.exceptions.ConfigError: rate: expected a number in [0, 1), got True
    """
    if not is_number(value) or not ok(float(value)):
        raise ConfigError(name, expected, value)
    return float(value)
