"""What the NaN guard costs: the kernels with the check of each update against the same kernels
with it switched off, in this process.

    python bench/finite_check.py [--steps 200] [--rounds 5] [--hidden 2048] [--batch 8192]

Rows, each the median over rounds (of about 0.2 s each) of the time of one call, rounds
alternating guard off and on:
(a) the tiny digits model (64-64-10, batch 32, SGD with momentum), ``--steps`` steps fused in one
task (``kernels.train_steps``: the serial loop, where a step is shortest and the check's fixed
cost shows most); (b) the serial reference trainer on the same model; (c) one update of the
MLP 784-H-H-10 (float32, SGD with momentum: ``kernels.update`` of one summed gradient, where the
check's pass over the parameters shows most); (d) one whole step of that model on a batch
(``kernels.grad`` then ``kernels.update``). The ratio is guard on / guard off. Two last lines:
the check alone (``check_update`` of one step), its time and its share of a step of (a) and (d)
with the guard off (steadier than the ratios on a loaded machine).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import _setup


def main() -> None:
    args = _setup.arguments(__doc__, steps=200, rounds=5)
    openblas = _setup.settle(args)
    import numpy as np

    import pnngraph
    from pnngraph.compile import kernels, reference
    from pnngraph.compile.kernels import Batches, StageSpec, StageState
    from pnngraph.nn.losses import SoftmaxCrossEntropy
    from pnngraph.nn.optimizers import SGD
    from pnngraph.nn.presets import mlp
    from pnngraph.nn.train import check_update

    rng = np.random.default_rng(0)
    opt = SGD(0.01, momentum=0.9)

    def stage(model: Any) -> tuple[StageSpec, StageState]:
        spec = StageSpec(tuple(model.layers), 0, SoftmaxCrossEntropy(), opt, 0)
        return spec, StageState(model.params, opt.init(model.params), ())

    tiny = mlp((64,), 10, hidden=(64,))
    Xt = rng.standard_normal((1797, 64))
    yt = rng.integers(0, 10, 1797)
    tiny_spec, tiny_state = stage(tiny)
    batches = Batches(1797, 32, 0, True, 0, args.steps)

    big = mlp((784,), 10, hidden=(args.hidden, args.hidden), dtype="float32")
    Xb = rng.standard_normal((args.batch, 784)).astype(np.float32)
    yb = rng.integers(0, 10, args.batch)
    big_spec, big_state = stage(big)
    rows = np.arange(args.batch)
    part = kernels.grad(big_spec, big_state, Xb, yb, rows, args.batch, 0, 0)

    cases: dict[str, Callable[[], Any]] = {
        f"(a) tiny model, {args.steps} fused steps": lambda: kernels.train_steps(
            tiny_spec, tiny_state, Xt, yt, batches, 0),
        f"(b) tiny model, train_serial {args.steps} steps": lambda: pnngraph.train_serial(
            tiny, Xt, yt, steps=args.steps, batch_size=32, optimizer=opt),
        f"(c) MLP 784-{args.hidden}-{args.hidden}-10, one update": lambda: kernels.update(
            big_spec, big_state, 0, part),
        f"(d) MLP 784-{args.hidden}-{args.hidden}-10, one step of {args.batch}": lambda:
            kernels.update(big_spec, big_state, 0, kernels.grad(
                big_spec, big_state, Xb, yb, rows, args.batch, 0, 0)),
    }

    def guard(on: bool) -> None:
        fn = check_update if on else (lambda *a, **k: None)
        kernels.check_update = reference.check_update = fn  # type: ignore[assignment]

    def check_alone(model: Any, calls: int) -> float:
        """Median seconds of one step's check of ``model`` (measured first: the BLAS threads
        of the large model's matrix products would still spin afterwards)."""
        rounds = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for _ in range(calls):
                check_update(np, model.layers, 0, model.params, model.params, 0)
            rounds.append((time.perf_counter() - t0) / calls)
        return statistics.median(rounds)

    alone_tiny, alone_big = check_alone(tiny, 2000), check_alone(big, 20)
    times: dict[tuple[str, bool], list[float]] = {}
    for name, fn in cases.items():
        t0 = time.perf_counter()
        fn()  # warm up, and how many calls make a round of about 0.2 s
        calls = max(1, round(0.2 / (time.perf_counter() - t0)))
        for _ in range(args.rounds):
            for on in (False, True):
                guard(on)
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                times.setdefault((name, on), []).append((time.perf_counter() - t0) / calls)
    guard(True)
    names = list(cases)
    tiny_step = statistics.median(times[(names[0], False)]) / args.steps
    big_step = statistics.median(times[(names[3], False)])

    print(f"OPENBLAS variables: {openblas}; median of {args.rounds} rounds, alternating")
    print(f"{'case':<52} {'off (s)':>10} {'on (s)':>10} {'on/off':>7}")
    for name in cases:
        off = statistics.median(times[(name, False)])
        on = statistics.median(times[(name, True)])
        print(f"{name:<52} {off:>10.5f} {on:>10.5f} {on / off:>7.3f}")
    for label, alone, per_step in (("tiny model", alone_tiny, tiny_step), ("MLP", alone_big,
                                                                          big_step)):
        print(f"check alone, {label}: {alone * 1e6:.1f} us per step, {alone / per_step:.3f} "
              "of a step")


if __name__ == "__main__":
    main()
