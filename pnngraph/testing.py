"""Checks for layers of your own: the shapes backward returns, and its gradients against finite
differences (the check every built-in layer passes in pnngraph's own tests); and
:func:`slow_down`, an emulated slow worker (a straggler) for tests and benchmarks of adaptive
runs.

>>> from pnngraph.nn import Dense
>>> errors = check_gradients(Dense(3, 2), (3,))
>>> sorted(errors), all(e < 1e-6 for e in errors.values())
(['W', 'b', 'x'], True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pnngraph.exceptions import ConfigError, ShapeError
from pnngraph.nn.backend import get_backend
from pnngraph.nn.layers import Context, Layer

__all__ = ["check_gradients", "check_layer", "numeric_gradient", "relative_error", "slow_down",
           "slowed_calls"]

SLOWED = ("grad", "forward", "backward", "loss_backward", "train_steps", "local_steps", "update",
          "aggregate", "average")
"""The kernels :func:`slow_down` slows: every one that computes."""

_slow: dict[str, Any] = {"factor": 1.0, "calls": 0, "originals": {}}  # in each worker process


def slow_down(client: Any, worker: str, factor: float) -> None:
    """Make the worker at ``worker`` (an address of ``client``'s cluster) an emulated device
    ``factor`` times slower: in that worker's process each pnngraph kernel call (:data:`SLOWED`)
    computes, then sleeps ``factor - 1`` times what it computed (the sleep leaves the cores to
    the other workers, as a slower device would). ``factor=1`` puts the kernels back. Tasks
    name their kernels by module and name, so each task unpickled on that worker from now on
    runs the slowed one.
    """
    factor = float(factor)
    if not factor >= 1.0:
        raise ConfigError("factor", "a slow-down factor >= 1", factor)
    if worker not in client.run(lambda: None):
        raise ConfigError("worker", "the address of a worker of the client's cluster", worker)
    client.run(_install, factor, workers=[worker])


def slowed_calls(client: Any, worker: str) -> int:
    """How many kernel calls :func:`slow_down` has slowed in the worker at ``worker``."""
    return int(client.run(_calls, workers=[worker])[worker])


def _calls() -> int:
    return int(_slow["calls"])


def _install(factor: float) -> None:
    """In a worker: wrap (``factor`` > 1) or unwrap (1) the kernels of :data:`SLOWED`."""
    import functools
    import time

    from pnngraph.compile import kernels

    originals: dict[str, Any] = _slow["originals"]
    for name in SLOWED:
        originals.setdefault(name, getattr(kernels, name))
    _slow["factor"] = factor
    for name, fn in originals.items():
        if factor == 1.0:
            setattr(kernels, name, fn)
            continue

        def slowed(*args: Any, _fn: Any = fn, **kw: Any) -> Any:
            t0 = time.perf_counter()
            out = _fn(*args, **kw)
            time.sleep((_slow["factor"] - 1.0) * (time.perf_counter() - t0))
            _slow["calls"] += 1
            return out

        setattr(kernels, name, functools.wraps(fn)(slowed))



def _shape(a: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in a.shape)


def numeric_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences ``(f(x + h) - f(x - h)) / 2h`` of scalar ``f`` at every element of
    ``x``, which ``f`` reads (each element is moved and put back in place)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f()
        x[i] = old - h
        down = f()
        x[i] = old
        g[i] = (up - down) / (2 * h)
    return g


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``|a - b| / max(|a|, |b|)`` in the L2 norm (0 for two zero arrays)."""
    scale = max(float(np.linalg.norm(a)), float(np.linalg.norm(b)), 1e-12)
    return float(np.linalg.norm(a - b) / scale)


def check_layer(layer: Layer, input_shape: Sequence[int], *, batch: int = 2,
                where: str | None = None) -> None:
    """Run ``layer`` forward and backward once on ``batch`` zero samples of per-sample
    ``input_shape`` and refuse, as one :class:`ConfigError` line, output, input-gradient or
    parameter-gradient arrays whose shapes or names are not what they must be. Building a model
    runs it on every registered layer of your own."""
    shape = tuple(int(d) for d in input_shape)
    where = where or f"{type(layer).__name__} {layer.name!r}"
    out = layer.output_shape(shape)
    params = layer.init_params(shape, np.random.default_rng(0), np.float64)
    xp = np
    x = np.zeros((batch, *shape))
    y, cache = layer.forward(xp, params, x, Context(training=True, index=np.arange(batch)))
    if _shape(y) != (batch, *out):
        raise ConfigError(f"{where} forward", f"an output of shape {(batch, *out)} "
                          "(output_shape's, with the batch first)", _shape(y))
    dx, grads = layer.backward(xp, params, cache, np.ones_like(y))
    if _shape(dx) != _shape(x):
        raise ConfigError(f"{where} backward", f"an input gradient of the input's shape "
                          f"{_shape(x)}", _shape(dx))
    if sorted(grads) != sorted(params):
        raise ConfigError(f"{where} backward", f"gradients named like the parameters "
                          f"{sorted(params)}", sorted(grads))
    for k, g in grads.items():
        if _shape(g) != _shape(params[k]):
            raise ConfigError(f"{where} backward", f"a gradient of {k!r} shaped like it, "
                              f"{_shape(params[k])}", _shape(g))


def check_gradients(
    layer: Layer,
    input_shape: Sequence[int],
    *,
    backend: str = "numpy",
    batch: int = 3,
    inputs: np.ndarray | None = None,
    ctx: Context | None = None,
    seed: int = 0,
    h: float = 1e-6,
    tol: float | None = 1e-6,
) -> dict[str, float]:
    """Relative errors of ``layer``'s backward against float64 central finite differences.

    The scalar differentiated is ``sum(forward(x) * r)`` for a fixed random ``r``; ``x`` is
    ``inputs`` or ``batch`` random samples with every value at least 0.1 from zero (so a kink at
    0 is never crossed by a step ``h``); the parameters are the layer's initial ones plus noise in
    [-0.5, 0.5]. Returns ``{"x": error, <param>: error, ...}`` (the input is not checked for
    layers whose ``integer_input`` is true, such as embeddings: give them ``inputs``).
    With ``tol`` set, raises AssertionError naming every array whose error exceeds it.
    ``backend="emulated"`` runs the layer on the emulated device, as pnngraph's tests do.
    """
    be = get_backend(backend)
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in input_shape)
    check_layer(layer, shape)
    out_shape = layer.output_shape(shape)
    integer = getattr(layer, "integer_input", False)
    if inputs is None and integer:
        raise ConfigError("check_gradients inputs", f"the ids {type(layer).__name__} takes (its "
                          "input is not differentiable)", None)
    if inputs is None:
        x = rng.uniform(0.1, 1.0, (batch, *shape)) * rng.choice([-1.0, 1.0], (batch, *shape))
    else:
        x = np.array(inputs, dtype=np.float64)
        if _shape(x)[1:] != shape:
            raise ShapeError(shape, _shape(x)[1:], detail="inputs of check_gradients")
    n = x.shape[0]
    ctx = ctx or Context(training=True, step=3, index=np.arange(n) + 40, seed=7)
    params = {k: v + rng.uniform(-0.5, 0.5, v.shape)
              for k, v in layer.init_params(shape, rng, np.float64).items()}
    r = rng.standard_normal((n, *out_shape))

    def value() -> float:
        y, _ = layer.forward(be.xp, be.tree_asarray(params), be.asarray(x), ctx)
        return float(np.sum(be.to_numpy(y) * r))

    p = be.tree_asarray(params)
    _, cache = layer.forward(be.xp, p, be.asarray(x), ctx)
    dx, grads = layer.backward(be.xp, p, cache, be.asarray(r))
    errors = {}
    if not integer:
        errors["x"] = relative_error(be.to_numpy(dx), numeric_gradient(value, x, h))
    for k in params:
        errors[k] = relative_error(be.to_numpy(grads[k]), numeric_gradient(value, params[k], h))
    if tol is not None:
        bad = {k: e for k, e in errors.items() if not e < tol}
        if bad:
            raise AssertionError(f"{type(layer).__name__} {layer.name!r}: gradients differ from "
                                 f"finite differences by more than {tol}: " +
                                 ", ".join(f"{k} {e:.2e}" for k, e in bad.items()))
    return errors
