"""Hybrid parallelism: two pipelines of two stages each, on Dask's threaded scheduler.

    python examples/hybrid.py [--epochs 5]

No cluster needed: ``dask.compute`` runs the graph on local threads. The same graph runs unchanged
on a distributed cluster with ``client.compute(graph)``.
"""

from __future__ import annotations

import argparse

import dask

import pnngraph
from pnngraph import data
from pnngraph.nn.presets import mlp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)

    train, test = data.digits().split(0.2, seed=0)
    model = mlp((64,), 10, hidden=(128, 64))
    strategy = pnngraph.Hybrid(pnngraph.DataParallel(2), pnngraph.Pipeline(2, 4))
    graph = pnngraph.build(model, train, strategy=strategy, epochs=args.epochs, batch_size=64,
                           optimizer="sgd", lr=0.1, momentum=0.9)
    print(graph)
    (result,) = dask.compute(graph, scheduler="threads")
    scores = result.model.evaluate(test.X, test.y)
    print(f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}; "
          f"test accuracy {scores['accuracy']:.3f}")


if __name__ == "__main__":
    main()
