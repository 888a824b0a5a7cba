"""Optimizers with explicit state, so an update can run as a task and its state can travel.

``params`` and ``grads`` are lists with one dict name -> array per layer (the layout of
:class:`pnngraph.nn.model.Sequential`); any sublist of layers (a pipeline stage) works the same way,
since every rule is elementwise. ``state`` is a plain dict of such lists plus a step counter::

    state = opt.init(params)
    params, state = opt.update(params, grads, state)

Two options are common to every optimizer. ``lr`` may be a number or a
:class:`~pnngraph.nn.schedules.Schedule`, asked for the rate at ``state["step"]`` (the updates
done before this one: the global step, since the counter travels with the state).
``clip_norm`` rescales the gradient by ``clip_norm / norm`` where its global L2 norm over every
parameter array exceeds ``clip_norm``; a pipeline stage, which sees only its own layers, passes
the norm of the whole model's gradient as ``grad_norm`` (:func:`squared_norms` of each stage,
summed by :func:`global_norm`).

>>> import numpy as np
>>> opt = SGD(0.1, momentum=0.9)
>>> params = [{"w": np.array([1.0])}]
>>> state = opt.init(params)
>>> params, state = opt.update(params, [{"w": np.array([2.0])}], state)
>>> params[0]["w"], state["step"]
(array([0.8]), 1)
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

from pnngraph.exceptions import ConfigError, OptionError, check_int, check_name, check_number
from pnngraph.nn.backend import Array, namespace
from pnngraph.nn.schedules import Schedule

ParamList = list[dict[str, Array]]
State = dict[str, Any]


def _zeros_like(params: ParamList) -> ParamList:
    return [{k: namespace(v).zeros_like(v) for k, v in layer.items()} for layer in params]


def _check_number(name: str, v: Any, *, low: float, high: float = math.inf, strict: bool) -> float:
    bound = f"> {low}" if strict else f">= {low}"
    expected = f"a finite number {bound}" + (f" and < {high}" if high != math.inf else "")
    return check_number(name, v, expected, lambda x: math.isfinite(x) and (
        x > low if strict else x >= low) and x < high)


def _check_lr(lr: Any) -> float | Schedule:
    if isinstance(lr, Schedule):
        return lr
    return _check_number("learning rate", lr, low=0.0, strict=True)


def _check_clip(clip_norm: Any) -> float | None:
    return None if clip_norm is None else _check_number("clip_norm", clip_norm, low=0.0,
                                                        strict=True)


def squared_norms(grads: ParamList) -> tuple[float, ...]:
    """The squared L2 norm of every array of ``grads``, in layer order: what one pipeline stage
    contributes to the global norm."""
    return tuple(float(namespace(g).sum(g * g)) for layer in grads for g in layer.values())


def global_norm(*squares: tuple[float, ...]) -> float:
    """The L2 norm of a gradient from the :func:`squared_norms` of its parts (correctly rounded
    sum, so the parts' grouping does not change the bits)."""
    return math.sqrt(math.fsum(v for part in squares for v in part))


class Optimizer:
    """Base: ``init(params) -> state`` and ``update(params, grads, state) -> (params, state)``.

    A subclass sets ``lr`` and ``clip_norm`` (checked by ``_check_lr``/``_check_clip``) and
    implements :meth:`step`, one update at a given rate; :meth:`update` picks the rate of the
    step and clips the gradient first.
    """

    name: ClassVar[str] = "optimizer"
    lr: float | Schedule
    clip_norm: float | None

    @property
    def state_arrays(self) -> int:
        """How many arrays of state it keeps per parameter array (the cost model prices them)."""
        raise NotImplementedError

    def init(self, params: ParamList) -> State:
        raise NotImplementedError

    def rate(self, step: int) -> float:
        """The learning rate of the update that follows ``step`` earlier ones."""
        return self.lr(step) if isinstance(self.lr, Schedule) else self.lr

    def update(self, params: ParamList, grads: ParamList, state: State, *,
               grad_norm: float | None = None) -> tuple[ParamList, State]:
        """One update: clip ``grads`` by the global norm (``grad_norm``, or that of ``grads``
        themselves) where ``clip_norm`` is set, then :meth:`step` at this step's rate."""
        if self.clip_norm is not None:
            norm = global_norm(squared_norms(grads)) if grad_norm is None else grad_norm
            if norm > self.clip_norm:
                scale = self.clip_norm / norm
                grads = [{k: g * scale for k, g in layer.items()} for layer in grads]
        return self.step(params, grads, state, self.rate(state["step"]))

    def step(self, params: ParamList, grads: ParamList, state: State, lr: float
             ) -> tuple[ParamList, State]:
        raise NotImplementedError

    def check_state(self, params: ParamList, state: Any) -> State:
        """``state`` when it has the structure of ``self.init(params)``: the same keys, an
        integer step counter >= 0, ``None`` where a fresh state has ``None``, and one dict per
        layer holding arrays of the parameters' shapes and dtypes; else :class:`ConfigError`
        naming what is missing or wrong. (A state from another optimizer, another model, or
        built by hand fails here, not in a task on a worker.)

        >>> import numpy as np
        >>> SGD(0.1).check_state([{"W": np.zeros(2)}], {"foo": 1})
        Traceback (most recent call last):
        ...
        pnngraph.exceptions.ConfigError: opt_state: expected the keys of an SGD state \
['step', 'velocity'], got ['foo']
        """
        fresh = self.init(params)
        kind = type(self).__name__
        if not isinstance(state, dict) or set(state) != set(fresh):
            got = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise ConfigError("opt_state", f"the keys of an {kind} state {sorted(fresh)}", got)
        for key, want in fresh.items():
            value, name = state[key], f"opt_state[{key!r}]"
            if isinstance(want, int):
                check_int(name, value, low=0)
            elif want is None:
                if value is not None:
                    raise ConfigError(name, f"None, as {kind}.init gives it", type(value).__name__)
            else:
                _check_layers(name, want, value)
        return state

    def config(self) -> dict[str, Any]:
        """The options as JSON types; ``clip_norm`` only where set (so specs recorded before it
        existed still compare equal)."""
        out = {k: (v.config() if isinstance(v, Schedule) else v) for k, v in vars(self).items()}
        if out.get("clip_norm", 0.0) is None:
            del out["clip_norm"]
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                         if k != "clip_norm" or v is not None)
        return f"{type(self).__name__}({args})"


def _check_layers(name: str, want: ParamList, got: Any) -> None:
    """``got`` holds arrays of the shapes and dtypes of ``want``'s, layer by layer."""
    if not isinstance(got, list | tuple) or len(got) != len(want):
        raise ConfigError(name, f"a list of one dict per layer ({len(want)} layers)",
                          len(got) if isinstance(got, list | tuple) else type(got).__name__)
    for i, (layer, given) in enumerate(zip(want, got, strict=True)):
        if not isinstance(given, dict) or set(given) != set(layer):
            raise ConfigError(f"{name}[{i}]", f"a dict of {sorted(layer)}",
                              sorted(map(str, given)) if isinstance(given, dict)
                              else type(given).__name__)
        for k, a in layer.items():
            b = given[k]
            if not hasattr(b, "shape") or (tuple(b.shape), str(b.dtype)) != (a.shape, str(a.dtype)):
                raise ConfigError(f"{name}[{i}][{k!r}]", f"an array of shape {a.shape} {a.dtype}",
                                  f"{tuple(b.shape)} {b.dtype}" if hasattr(b, "shape")
                                  else type(b).__name__)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay.

    With ``g = grad + weight_decay * p`` and velocity ``v = momentum * v + g``, the step is
    ``p -= lr * v`` (or ``p -= lr * (g + momentum * v)`` with Nesterov), as in PyTorch.
    """

    name = "sgd"

    def __init__(
        self,
        lr: float = 0.01,
        *,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
    ) -> None:
        self.lr = _check_lr(lr)
        self.momentum = _check_number("momentum", momentum, low=0.0, high=1.0, strict=False)
        self.nesterov = bool(nesterov)
        self.weight_decay = _check_number("weight_decay", weight_decay, low=0.0, strict=False)
        if self.nesterov and self.momentum == 0.0:
            raise ConfigError("nesterov", "a momentum > 0 with nesterov=True", momentum)
        self.clip_norm = _check_clip(clip_norm)

    @property
    def state_arrays(self) -> int:
        """One velocity per parameter array with momentum, none without."""
        return 1 if self.momentum else 0

    def init(self, params: ParamList) -> State:
        velocity = _zeros_like(params) if self.momentum else None
        return {"step": 0, "velocity": velocity}

    def step(self, params: ParamList, grads: ParamList, state: State, lr: float
             ) -> tuple[ParamList, State]:
        mu, wd = self.momentum, self.weight_decay
        new_params: ParamList = []
        new_velocity: ParamList = []
        for i, (layer, glayer) in enumerate(zip(params, grads, strict=True)):
            out, vout = {}, {}
            for k, p in layer.items():
                g = glayer[k] + wd * p if wd else glayer[k]
                if mu:
                    v = mu * state["velocity"][i][k] + g
                    vout[k] = v
                    g = g + mu * v if self.nesterov else v
                out[k] = p - lr * g
            new_params.append(out)
            new_velocity.append(vout)
        return new_params, {"step": state["step"] + 1, "velocity": new_velocity if mu else None}


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction; ``weight_decay`` adds L2 to the gradient.

    With ``m_hat = m / (1 - beta1**t)`` and ``v_hat = v / (1 - beta2**t)`` the step is
    ``p -= lr * m_hat / (sqrt(v_hat) + eps)``.
    """

    name = "adam"
    decoupled: ClassVar[bool] = False

    def __init__(
        self,
        lr: float = 1e-3,
        *,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
    ) -> None:
        self.lr = _check_lr(lr)
        self.beta1 = _check_number("beta1", beta1, low=0.0, high=1.0, strict=False)
        self.beta2 = _check_number("beta2", beta2, low=0.0, high=1.0, strict=False)
        self.eps = _check_number("eps", eps, low=0.0, strict=True)
        self.weight_decay = _check_number("weight_decay", weight_decay, low=0.0, strict=False)
        self.clip_norm = _check_clip(clip_norm)

    @property
    def state_arrays(self) -> int:
        """The first and second moment of every parameter array."""
        return 2

    def init(self, params: ParamList) -> State:
        return {"step": 0, "m": _zeros_like(params), "v": _zeros_like(params)}

    def step(self, params: ParamList, grads: ParamList, state: State, lr: float
             ) -> tuple[ParamList, State]:
        t = state["step"] + 1
        b1, b2, wd = self.beta1, self.beta2, self.weight_decay
        c1, c2 = 1.0 - b1**t, 1.0 - b2**t
        new_params: ParamList = []
        new_m: ParamList = []
        new_v: ParamList = []
        for i, (layer, glayer) in enumerate(zip(params, grads, strict=True)):
            out, mout, vout = {}, {}, {}
            for k, p in layer.items():
                xp = namespace(p)
                g = glayer[k] + wd * p if wd and not self.decoupled else glayer[k]
                m = b1 * state["m"][i][k] + (1.0 - b1) * g
                v = b2 * state["v"][i][k] + (1.0 - b2) * (g * g)
                if self.decoupled:
                    out[k] = p - lr * ((m / c1) / (xp.sqrt(v / c2) + self.eps) + wd * p)
                else:
                    out[k] = p - lr * (m / c1) / (xp.sqrt(v / c2) + self.eps)
                mout[k], vout[k] = m, v
            new_params.append(out)
            new_m.append(mout)
            new_v.append(vout)
        return new_params, {"step": t, "m": new_m, "v": new_v}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, ICLR 2019): the decay is not
    part of the gradient the moments see, but its own term of the step,
    ``p -= lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p)``.

    >>> import numpy as np
    >>> opt = AdamW(0.1, weight_decay=0.5)
    >>> params, _ = opt.update([{"w": np.array([2.0])}], [{"w": np.array([0.0])}],
    ...                        opt.init([{"w": np.array([2.0])}]))
    >>> params[0]["w"]  # no gradient: only the decay, 2 - 0.1 * 0.5 * 2
    array([1.9])
    """

    name = "adamw"
    decoupled = True

    def __init__(
        self,
        lr: float = 1e-3,
        *,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                         clip_norm=clip_norm)


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get_optimizer(optimizer: str | Optimizer, **options: Any) -> Optimizer:
    """An optimizer from a name ("sgd", "adam", "adamw", in any case) and its options, or an
    instance as it is."""
    if isinstance(optimizer, Optimizer):
        if options:
            raise ConfigError("optimizer options", "none with an Optimizer instance", options)
        return optimizer
    return OPTIMIZERS[check_name("optimizer", optimizer, OPTIMIZERS)](**options)


def accepted_options(optimizer: str | Optimizer | type[Optimizer]) -> tuple[str, ...]:
    """The keyword options an optimizer's constructor takes (``lr``, ``momentum``, ...).

    >>> accepted_options("Adam")
    ('lr', 'beta1', 'beta2', 'eps', 'weight_decay', 'clip_norm')
    """
    if isinstance(optimizer, str):
        cls = OPTIMIZERS[check_name("optimizer", optimizer, OPTIMIZERS)]
    else:
        cls = optimizer if isinstance(optimizer, type) else type(optimizer)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(name for name, p in inspect.signature(cls.__init__).parameters.items()
                 if name != "self" and p.kind in kinds)


def check_options(function: str, optimizer: str | Optimizer, options: dict[str, Any]) -> None:
    """Refuse a keyword that neither ``function`` nor the chosen optimizer takes, up front, with
    an :class:`OptionError` (a ``TypeError``) naming ``function`` and the keyword and listing
    what the optimizer accepts. An instance takes no options: those its class would take are
    left to :func:`get_optimizer`'s error."""
    if isinstance(optimizer, Optimizer):
        accepted = accepted_options(optimizer)
        for name in options:
            if name not in accepted:
                raise OptionError(function, name, (),
                                  f"the {type(optimizer).__name__} instance given")
        return
    accepted = accepted_options(optimizer)
    for name in options:
        if name not in accepted:
            key = check_name("optimizer", optimizer, OPTIMIZERS)
            raise OptionError(function, name, accepted, f"optimizer {key!r}")


def split_state(state: State, start: int, stop: int) -> State:
    """The part of ``state`` that belongs to layers ``start:stop`` (a pipeline stage)."""
    return {k: (v[start:stop] if isinstance(v, list) else v) for k, v in state.items()}


def join_states(states: list[State]) -> State:
    """Inverse of :func:`split_state` over consecutive stages (their step counters agree)."""
    out: State = {}
    for k, v in states[0].items():
        out[k] = [x for s in states for x in s[k]] if isinstance(v, list) else v
    return out
