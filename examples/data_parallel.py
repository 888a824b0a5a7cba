"""Data parallelism on a local cluster: two shards per batch, gradients summed, one update.

    python examples/data_parallel.py [--epochs 10]

Trains an MLP on scikit-learn's digits with DataParallel(2) on a LocalCluster of two worker
processes, then checks the result against the serial reference trainer.
"""

from __future__ import annotations

import argparse

import numpy as np
from distributed import Client, LocalCluster

import pnngraph
from pnngraph import data
from pnngraph.nn.presets import mlp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)

    train, test = data.digits().split(0.2, seed=0)
    model = mlp((64,), 10, hidden=(64,))
    options = {"epochs": args.epochs, "batch_size": 64, "optimizer": "sgd", "lr": 0.1,
               "momentum": 0.9}
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        print("dashboard:", client.dashboard_link)
        graph = pnngraph.build(model, train, strategy=pnngraph.DataParallel(2), client=client,
                               **options)
        print(graph)
        result = client.compute(graph).result()

    serial = pnngraph.train_serial(model, train.X, train.y, **options)
    diff = max(float(np.max(np.abs(a[k] - b[k])))
               for a, b in zip(result.params, serial.params, strict=True) for k in a)
    print(f"final loss {result.losses[-1]:.4f}; test accuracy "
          f"{result.model.evaluate(test.X, test.y)['accuracy']:.3f}; "
          f"max |parallel - serial| = {diff:.2e}")


if __name__ == "__main__":
    main()
