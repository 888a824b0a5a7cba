"""Honest plans: every candidate plan, predicted against measured, and against a plain numpy loop.

    python bench/honest.py [--rounds 3] [--sizes tiny,512,1024,2048] [--unset-openblas]

Four sizes (MLP, ReLU, softmax cross-entropy, SGD with momentum 0.9):

    tiny   64-32-10       float64, batch 256
    512    784-512-512-10   float32, batch 1024
    1024   784-1024-1024-10 float32, batch 4096
    2048   784-2048-2048-10 float32, batch 8192

For each size, one row per candidate: pnngraph's serial reference trainer (in this process), and
on an embedded cluster of 2 workers x 1 thread (``pnngraph.run.cluster.local_cluster``):
DataParallel(1) (fused steps where the model is tiny), DataParallel(2), Pipeline(2, 4) and the
automatic choice (``strategy="auto"``). A row gives the predicted and the measured seconds per
step (the measured time is the wall time of ``client.compute(graph).result()``, graph submission
and the gathering of the result included; the prediction is the plan's prediction of that same
wall time), the prediction's error, samples/s, and the ratio of samples/s to the baseline: a plain
numpy loop written below (the same batches, the same initial weights, in-place updates), run in
this process on the BLAS threads the environment gives it. Rounds alternate the baseline and every
candidate; every figure is a median over rounds.

``--unset-openblas`` removes OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for this process and its
workers; the table says which way it ran.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import _setup

SIZES = {  # name: (inputs, hidden widths, dtype, batch, steps per measurement)
    "tiny": (64, (32,), "float64", 256, 1000),
    "512": (784, (512, 512), "float32", 1024, 12),
    "1024": (784, (1024, 1024), "float32", 4096, 4),
    "2048": (784, (2048, 2048), "float32", 8192, 3),
}
LR, MOMENTUM = 0.01, 0.9


def numpy_loop(params: list[dict[str, Any]], X: Any, y: Any, *, steps: int, batch: int,
               seed: int = 0) -> list[float]:
    """What a user would write instead: plain numpy, SGD with momentum, updates in place.

    The batches are pnngraph's (epoch e visits ``default_rng([seed, e]).permutation(n)`` in
    slices), so both train on exactly the same samples; the losses agree to rounding.
    """
    import numpy as np

    Ws = [p["W"].copy() for p in params if p]
    bs = [p["b"].copy() for p in params if p]
    vW = [np.zeros_like(W) for W in Ws]
    vb = [np.zeros_like(b) for b in bs]
    n, L, losses = len(X), len(Ws), []
    per_epoch = -(-n // batch)
    order = None
    for s in range(steps):
        epoch, j = divmod(s, per_epoch)
        if j == 0 or order is None:
            order = np.random.default_rng([seed, epoch]).permutation(n)
        idx = order[j * batch : (j + 1) * batch]
        acts = [X[idx]]
        for i in range(L):
            z = acts[-1] @ Ws[i]
            z += bs[i]
            if i < L - 1:
                np.maximum(z, 0, out=z)
            acts.append(z)
        z, t, rows = acts[-1], y[idx], np.arange(len(idx))
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        total = z.sum(axis=1)
        losses.append(float(np.mean(np.log(total) - np.log(z[rows, t]))))
        z /= total[:, None]
        z[rows, t] -= 1.0
        z /= len(idx)
        d = z
        for i in reversed(range(L)):
            gW, gb = acts[i].T @ d, d.sum(axis=0)
            if i > 0:
                d = d @ Ws[i].T
                d *= acts[i] > 0
            vW[i] *= MOMENTUM
            vW[i] += gW
            Ws[i] -= LR * vW[i]
            vb[i] *= MOMENTUM
            vb[i] += gb
            bs[i] -= LR * vb[i]
    return losses


@dataclass
class Row:
    name: str
    predicted: list[float]
    measured: list[float]


def predicted_wall(graph: Any) -> float:
    """The plan's prediction of ``client.compute(graph).result()`` in seconds (NaN: none)."""
    plan = graph.plan
    if plan is None:
        return float("nan")
    return float(getattr(plan, "wall_seconds", plan.makespan))


def run_size(name: str, client: Any, rounds: int, steps_override: int | None) -> None:
    import numpy as np
    from distributed import get_task_stream

    import pnngraph
    from pnngraph.nn.presets import mlp
    from pnngraph.run import history
    from pnngraph.run.calibrate import remember

    n_in, hidden, dtype, batch, steps = SIZES[name]
    steps = steps_override or steps
    rng = np.random.default_rng(0)
    n = max(4 * batch, 4096)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    y = rng.integers(0, 10, n)
    model = mlp((n_in,), 10, hidden=hidden, dtype=dtype)
    opt = {"optimizer": "sgd", "lr": LR, "momentum": MOMENTUM}
    candidates: dict[str, Any] = {
        "DataParallel(1)": pnngraph.DataParallel(1),
        "DataParallel(2)": pnngraph.DataParallel(2),
        "DataParallel('auto')": pnngraph.DataParallel("auto"),
        "Pipeline(2, 4)": pnngraph.Pipeline(2, 4),
        "auto": "auto",
    }
    if name == "tiny":  # a pipeline of a 3-layer model of 256-sample batches: hops, no work
        del candidates["Pipeline(2, 4)"]

    def on_cluster(strategy: Any, n_steps: int, learn: bool = False) -> tuple[float, float]:
        try:
            graph = pnngraph.build(model, (X, y), strategy=strategy, steps=n_steps,
                                   batch_size=batch, client=client, **opt)
        except pnngraph.exceptions.PnngraphError as err:
            print(f"  {strategy!r}: {err}", file=sys.stderr)
            return float("nan"), float("nan")
        with get_task_stream(client=client) as stream:
            t0 = time.perf_counter()
            client.compute(graph).result()
            wall = time.perf_counter() - t0
        if learn and graph.cluster is not None:  # as fit and the CLI do after every chunk
            remember(client, history.learn(graph.cluster, graph, stream.data))
        return predicted_wall(graph), wall

    baseline: list[float] = []
    serial = Row("serial reference trainer (this process)", [], [])
    rows = {k: Row(k, [], []) for k in candidates}
    numpy_loop(model.params, X, y, steps=2, batch=batch)  # warm up every path once
    pnngraph.train_serial(model, X, y, steps=2, batch_size=batch, **opt)
    for strategy in candidates.values():  # warm up, and refine the cluster model from the run
        on_cluster(strategy, min(steps, 4), learn=True)
    for _ in range(rounds):
        t0 = time.perf_counter()
        numpy_loop(model.params, X, y, steps=steps, batch=batch)
        baseline.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pnngraph.train_serial(model, X, y, steps=steps, batch_size=batch, **opt)
        serial.measured.append(time.perf_counter() - t0)
        serial.predicted.append(float("nan"))
        for key, strategy in candidates.items():
            p, m = on_cluster(strategy, steps)
            rows[key].predicted.append(p)
            rows[key].measured.append(m)
    base = statistics.median(baseline) / steps
    widths = "-".join(str(w) for w in (n_in, *hidden, 10))
    print(f"\nMLP {widths} {dtype}, batch {batch}, {steps} steps: numpy loop "
          f"{base * 1e3:.2f} ms/step ({batch / base:,.0f} samples/s)")
    print(f"{'candidate':<42}{'predicted':>11}{'measured':>11}{'error':>8}{'samples/s':>12}"
          f"{'vs loop':>9}")
    for row in (serial, *rows.values()):
        meas = statistics.median(row.measured) / steps
        pred = statistics.median(row.predicted) / steps
        err = f"{100 * (pred - meas) / meas:+.0f}%" if pred == pred else "-"
        ptxt = f"{pred * 1e3:.2f} ms" if pred == pred else "-"
        print(f"{row.name:<42}{ptxt:>11}{meas * 1e3:>8.2f} ms{err:>8}{batch / meas:>12,.0f}"
              f"{base / meas:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="tiny,512,1024,2048")
    parser.add_argument("--steps", type=int, default=None, help="steps per measurement")
    parser.add_argument("--unset-openblas", action="store_true")
    args = parser.parse_args()
    openblas = _setup.settle(args)
    warnings.filterwarnings("ignore", message="Sending large graph")
    from distributed import Client

    from pnngraph.run.cluster import local_cluster

    print(f"OPENBLAS variables: {openblas}; python {sys.version.split()[0]}; {args.rounds} "
          f"rounds, alternating, medians; cluster: 2 workers x 1 thread")
    with local_cluster(2, dashboard_address=None) as cluster, Client(cluster) as client:
        for name in args.sizes.split(","):
            run_size(name.strip(), client, args.rounds, args.steps)


if __name__ == "__main__":
    main()
