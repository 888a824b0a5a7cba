"""What an LSTM's forward + backward costs on numpy, and how much of it is Python overhead.

    python bench/recurrent.py [--hidden 64] [--batch 256] [--steps 8] [--rounds 7]

``--steps`` is the sequence length T here; the input has 8 features. Three rows, medians over
rounds that alternate them:

- the LSTM layer, forward then backward (the input gradient included);
- the same LSTM at batch 1, where the arithmetic is almost nothing and the time is the per-step
  Python and dispatch overhead of the loop; batch 1 / batch N near 1 means the layer is
  overhead-bound at this size;
- a baseline of the same matmul FLOPs without the recurrence: a Dense layer (features + hidden)
  -> 4 * hidden over N * T rows, forward then backward, which is what a fused, loop-free
  kernel could at best reach.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import _setup
import numpy as np

from pnngraph.nn import LSTM, Context, Dense
from pnngraph.nn.backend import get_backend

FEATURES = 8


def lstm_step(hidden: int, batch: int, steps: int) -> Callable[[], None]:
    xp, rng = get_backend("numpy").xp, np.random.default_rng(0)
    layer = LSTM(hidden)
    params = layer.init_params((steps, FEATURES), rng, np.float64)
    x = rng.standard_normal((batch, steps, FEATURES))
    dy = rng.standard_normal((batch, hidden))

    def run() -> None:
        _, cache = layer.forward(xp, params, x, Context(training=True))
        layer.backward(xp, params, cache, dy)
    return run


def dense_step(hidden: int, batch: int, steps: int) -> Callable[[], None]:
    xp, rng = get_backend("numpy").xp, np.random.default_rng(0)
    layer = Dense(FEATURES + hidden, 4 * hidden)
    params = layer.init_params((FEATURES + hidden,), rng, np.float64)
    x = rng.standard_normal((batch * steps, FEATURES + hidden))
    dy = rng.standard_normal((batch * steps, 4 * hidden))

    def run() -> None:
        _, cache = layer.forward(xp, params, x, Context(training=True))
        layer.backward(xp, params, cache, dy)
    return run


def seconds(fn: Callable[[], None], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    args = _setup.arguments(__doc__ or "", steps=8, rounds=7)
    if args.hidden == 2048 and args.batch == 8192:  # the shared defaults are for the MLP benches
        args.hidden, args.batch = 64, 256
    blas = _setup.settle(args)
    h, n, t = args.hidden, args.batch, args.steps
    rows = {
        f"LSTM({h}), T={t}, batch {n}": lstm_step(h, n, t),
        f"LSTM({h}), T={t}, batch 1": lstm_step(h, 1, t),
        f"Dense({FEATURES + h}, {4 * h}) over {n}x{t} rows": dense_step(h, n, t),
    }
    for fn in rows.values():
        fn()  # warm up
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, fn in rows.items():
            times[name].append(seconds(fn, 5))
    median = {name: statistics.median(v) for name, v in times.items()}
    lstm, one, dense = median.values()
    print(f"forward + backward, numpy float64, {FEATURES} features; OPENBLAS variables {blas}")
    for name, s in median.items():
        print(f"  {name:<40} {s * 1e3:8.2f} ms")
    print(f"  batch 1 / batch {n}: {one / lstm:.2f} (near 1: Python overhead dominates)")
    print(f"  LSTM / Dense of the same matmul FLOPs: {lstm / dense:.2f}")


if __name__ == "__main__":
    main()
