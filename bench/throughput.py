"""Training throughput: pnngraph's strategies against the serial reference trainer, one run.

    python bench/throughput.py [--steps 5] [--rounds 3] [--unset-openblas]

Model: MLP 784-2048-2048-10, float32, global batch 8192, SGD with momentum. Rows:
(a) the serial reference trainer in this process (numpy, BLAS threads as the environment sets),
(b) pnngraph DataParallel(2) on LocalCluster(2 workers x 1 thread), (c) Pipeline(2, 8) on the same
cluster, (d) the tiny digits model (64-64-10, batch 32): serial loop vs pnngraph (fused steps),
(e) the ``transformer`` preset (character language model: 2 blocks, width 64, 4 heads, context
64, 116,577 parameters, float64, batch 256 of random ids, AdamW): serial vs DataParallel(2).
Each row is the median over rounds of samples/s; ratios are to the serial row of the same model.
Rounds alternate baseline and candidates so drifts in machine load hit both.

``--unset-openblas`` removes OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for this process and its workers
(they slow numpy on some processors here); the table says which way it ran.
"""

from __future__ import annotations

import statistics
import sys
import time

import _setup


def main() -> None:
    args = _setup.arguments(__doc__, steps=5)
    openblas = _setup.settle(args)
    import numpy as np
    from distributed import Client, LocalCluster

    import pnngraph
    from pnngraph import data as datasets
    from pnngraph.nn.presets import mlp, transformer

    rng = np.random.default_rng(0)
    n = 2 * args.batch
    X = rng.standard_normal((n, 784)).astype(np.float32)
    y = rng.integers(0, 10, n)
    big = mlp((784,), 10, hidden=(args.hidden, args.hidden), dtype="float32")
    opt = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9}
    steps, B = args.steps, args.batch

    digits = datasets.digits()
    tiny = mlp((64,), 10, hidden=(64,))
    tiny_steps = 2000

    lm = transformer((64,), 97)
    lm_batch = 256
    lm_X = rng.integers(0, 97, (2 * lm_batch, 64)).astype(np.float64)
    lm_y = rng.integers(0, 97, (2 * lm_batch, 64))
    lm_opt = {"optimizer": "adamw", "lr": 1e-3}

    results: dict[str, list[float]] = {}

    def record(name: str, samples: int, seconds: float) -> None:
        results.setdefault(name, []).append(samples / seconds)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, host="127.0.0.1") as cluster, Client(cluster) as c:
        def on_cluster(strategy, model, Xd, yd, n_steps, batch, options=opt):
            graph = pnngraph.build(model, (Xd, yd), strategy=strategy, steps=n_steps,
                                   batch_size=batch, client=c, **options)
            t0 = time.perf_counter()
            c.compute(graph).result()
            return time.perf_counter() - t0

        # warm up: worker imports, first compile of every code path
        pnngraph.train_serial(big, X, y, steps=1, batch_size=B, **opt)
        on_cluster(pnngraph.DataParallel(2), big, X, y, 1, B)
        on_cluster(pnngraph.Pipeline(2, 8), big, X, y, 1, B)
        on_cluster(pnngraph.DataParallel(2), lm, lm_X, lm_y, 1, lm_batch, lm_opt)
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            pnngraph.train_serial(big, X, y, steps=steps, batch_size=B, **opt)
            record("a", steps * B, time.perf_counter() - t0)
            record("b", steps * B, on_cluster(pnngraph.DataParallel(2), big, X, y, steps, B))
            record("c", steps * B, on_cluster(pnngraph.Pipeline(2, 8), big, X, y, steps, B))
            t0 = time.perf_counter()
            pnngraph.train_serial(tiny, digits.X, digits.y, steps=tiny_steps, batch_size=32,
                                  **opt)
            record("d0", tiny_steps * 32, time.perf_counter() - t0)
            record("d", tiny_steps * 32, on_cluster(pnngraph.DataParallel(1), tiny, digits.X,
                                                    digits.y, tiny_steps, 32))
            t0 = time.perf_counter()
            pnngraph.train_serial(lm, lm_X, lm_y, steps=steps, batch_size=lm_batch, **lm_opt)
            record("e0", steps * lm_batch, time.perf_counter() - t0)
            record("e", steps * lm_batch, on_cluster(pnngraph.DataParallel(2), lm, lm_X, lm_y,
                                                     steps, lm_batch, lm_opt))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"OPENBLAS variables: {openblas}; python {sys.version.split()[0]}; "
          f"{args.rounds} rounds, medians")
    print(f"large: MLP 784-{args.hidden}-{args.hidden}-10 float32, batch {B}, {steps} steps; "
          f"tiny: digits MLP 64-64-10 float64, batch 32, {tiny_steps} steps")
    rows = [
        ("a", "serial reference trainer (large)", "a"),
        ("b", "DataParallel(2), LocalCluster 2x1 (large)", "a"),
        ("c", "Pipeline(2, 8), LocalCluster 2x1 (large)", "a"),
        ("d0", "serial reference trainer (tiny)", "d0"),
        ("d", "DataParallel(1), fused steps, LocalCluster 2x1 (tiny)", "d0"),
        ("e0", "serial reference trainer (transformer)", "e0"),
        ("e", "DataParallel(2), LocalCluster 2x1 (transformer)", "e0"),
    ]
    print(f"{'row':<4}{'run':<58}{'samples/s':>12}{'ratio':>8}")
    for key, label, base in rows:
        print(f"({key:<2}){label:<58}{med[key]:>12,.0f}{med[key] / med[base]:>8.2f}")


if __name__ == "__main__":
    main()
