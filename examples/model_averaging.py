"""Model averaging: four replicas, eight local steps between averages.

    python examples/model_averaging.py [--epochs 10]

Each replica trains on its quarter of every batch with its own momentum, and parameters are
averaged every eight steps: eight times fewer synchronisations than data parallelism. Compared
with the serial definition of the same algorithm, and with large-batch SGD.
"""

from __future__ import annotations

import argparse

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
    options = {"epochs": args.epochs, "batch_size": 128, "optimizer": "sgd", "lr": 0.1,
               "momentum": 0.9}
    strategy = pnngraph.ModelAveraging(replicas=4, local_steps=8)
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        graph = pnngraph.build(model, train, strategy=strategy, client=client, **options)
        print(graph)
        averaged = client.compute(graph).result()

    reference = pnngraph.train_averaging_serial(model, train.X, train.y, replicas=4,
                                                local_steps=8, **options)
    sgd = pnngraph.train_serial(model, train.X, train.y, **options)
    for name, result in (("averaging (graph)", averaged), ("averaging (serial)", reference),
                         ("large-batch SGD", sgd)):
        accuracy = result.model.evaluate(test.X, test.y)["accuracy"]
        print(f"{name:<20} final loss {result.losses[-1]:.4f}  test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
