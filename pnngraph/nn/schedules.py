"""Learning-rate schedules: pure functions of the global training step.

A schedule is a small value that maps a step to a learning rate; an optimizer takes one where it
takes a number (``SGD(lr=Cosine(0.1, total_steps=100))``) and asks it for the rate of every
update at the step its state counts (``state["step"]``: the updates done before this one). That
counter travels with the optimizer state through chunks, checkpoints and every strategy, so a
chunked, resumed or parallel run sees the same rates as one serial run. Nothing here holds
state; :meth:`Schedule.config` is the schedule as JSON types (recorded in a run's spec, so a
resumed run must use the same schedule), and :func:`schedule_from_config` reads it back::

    Constant(lr)                        lr
    StepDecay(lr, every, gamma)         lr * gamma ** (step // every)
    Cosine(lr, total_steps, floor)      floor + (lr - floor) * (1 + cos(pi * step / total)) / 2,
                                        then floor from total_steps on
    Warmup(schedule, steps)             schedule(0) * (step + 1) / steps for the first steps,
                                        then schedule(step - steps)

>>> s = Warmup(Cosine(0.1, total_steps=4), steps=2)
>>> [round(s(t), 4) for t in range(7)]
[0.05, 0.1, 0.1, 0.0854, 0.05, 0.0146, 0.0]
>>> schedule_from_config(s.config()) == s
True

References
----------
Loshchilov, Hutter. SGDR: Stochastic gradient descent with warm restarts. ICLR 2017 (cosine).
Goyal et al. Accurate, large minibatch SGD: training ImageNet in 1 hour. 2017 (linear warm-up).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pnngraph.exceptions import ConfigError, check_int, check_name


def _rate(name: str, v: Any, *, strict: bool = True) -> float:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or v < 0 or (strict and v == 0):
        raise ConfigError(name, f"a finite number {'>' if strict else '>='} 0.0", v)
    return float(v)


class Schedule:
    """Base: ``schedule(step) -> learning rate`` for a step >= 0, and its config."""

    name: ClassVar[str] = "schedule"

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The schedule as JSON types: its name and its arguments (nested schedules too)."""
        args = {k: (v.config() if isinstance(v, Schedule) else v) for k, v in vars(self).items()}
        return {"kind": self.name, **args}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((self.name, tuple(vars(self).items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """The same rate at every step."""

    name = "constant"

    def __init__(self, lr: float) -> None:
        self.lr = _rate("Constant lr", lr)

    def __call__(self, step: int) -> float:
        return self.lr


class StepDecay(Schedule):
    """``lr`` multiplied by ``gamma`` every ``every`` steps."""

    name = "step"

    def __init__(self, lr: float, every: int, gamma: float = 0.1) -> None:
        self.lr = _rate("StepDecay lr", lr)
        self.every = check_int("StepDecay every", every)
        self.gamma = _rate("StepDecay gamma", gamma)
        if self.gamma > 1.0:
            raise ConfigError("StepDecay gamma", "a number in (0, 1]", gamma)

    def __call__(self, step: int) -> float:
        return self.lr * self.gamma ** (step // self.every)


class Cosine(Schedule):
    """Half a cosine from ``lr`` at step 0 down to ``floor`` at ``total_steps``, then ``floor``."""

    name = "cosine"

    def __init__(self, lr: float, total_steps: int, floor: float = 0.0) -> None:
        self.lr = _rate("Cosine lr", lr)
        self.total_steps = check_int("Cosine total_steps", total_steps)
        self.floor = _rate("Cosine floor", floor, strict=False)
        if self.floor > self.lr:
            raise ConfigError("Cosine floor", f"a number <= lr {self.lr}", floor)

    def __call__(self, step: int) -> float:
        if step >= self.total_steps:
            return self.floor
        return self.floor + (self.lr - self.floor) * 0.5 * (
            1.0 + math.cos(math.pi * step / self.total_steps))


class Warmup(Schedule):
    """A linear ramp over the first ``steps`` steps up to ``schedule(0)``, then ``schedule``
    from its own step 0. A warm-up longer than the run is allowed: the run ends warming up."""

    name = "warmup"

    def __init__(self, schedule: Schedule | float, steps: int) -> None:
        self.schedule = schedule if isinstance(schedule, Schedule) else Constant(schedule)
        self.steps = check_int("Warmup steps", steps)

    def __call__(self, step: int) -> float:
        if step < self.steps:
            return self.schedule(0) * (step + 1) / self.steps
        return self.schedule(step - self.steps)


SCHEDULES: dict[str, type[Schedule]] = {
    s.name: s for s in (Constant, StepDecay, Cosine, Warmup)
}


def schedule_from_config(config: dict[str, Any]) -> Schedule:
    """The schedule that :meth:`Schedule.config` wrote."""
    if not isinstance(config, dict) or "kind" not in config:
        raise ConfigError("schedule config", "a dict with a 'kind'", config)
    args = {k: v for k, v in config.items() if k != "kind"}
    cls = SCHEDULES[check_name("schedule", config["kind"], SCHEDULES)]
    if cls is Warmup and "schedule" in args:
        args["schedule"] = schedule_from_config(args["schedule"])
    try:
        return cls(**args)
    except TypeError:
        raise ConfigError("schedule config", f"the arguments of {cls.__name__}",
                          config) from None
