"""Model partitioning: a CNN cut into two stages, eight micro-batches in flight.

    python examples/pipeline.py [--epochs 3]

Trains a small CNN on 8x8 digits with Pipeline(stages=2, microbatches=8) on a LocalCluster of two
worker processes: stage 0 (the convolutions) on one worker, stage 1 (the classifier) on the other.
"""

from __future__ import annotations

import argparse

import numpy as np
from distributed import Client, LocalCluster

import pnngraph
from pnngraph import data
from pnngraph.nn.presets import cnn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)

    train, test = data.digits(flatten=False).split(0.2, seed=0)
    model = cnn((1, 8, 8), 10, channels=(8, 16))
    strategy = pnngraph.Pipeline(stages=2, microbatches=8)
    options = {"epochs": args.epochs, "batch_size": 128, "optimizer": "adam", "lr": 0.005}
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        print("dashboard:", client.dashboard_link)
        graph = pnngraph.build(model, train, strategy=strategy, client=client, **options)
        workers = sorted(set(graph.placement.values())) if graph.placement else []
        print(graph, "on", len(workers), "workers")
        result = pnngraph.fit(model, train, strategy=strategy, client=client, **options)

    serial = pnngraph.train_serial(model, train.X, train.y, **options)
    diff = max(float(np.max(np.abs(a[k] - b[k])))
               for a, b in zip(result.params, serial.params, strict=True) for k in a)
    print(f"final loss {result.losses[-1]:.4f}; test accuracy "
          f"{result.model.evaluate(test.X, test.y)['accuracy']:.3f}; "
          f"max |pipeline - serial| = {diff:.2e}")


if __name__ == "__main__":
    main()
