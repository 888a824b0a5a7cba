"""The live pnngraph page of the Dask dashboard, from a plain ``pnngraph.fit`` call.

    python examples/dashboard.py [--epochs 5] [--keep]

Trains an MLP on scikit-learn's digits with a two-stage pipeline on a LocalCluster of two worker
processes, one chunk per epoch. Open the printed address while it runs: the planned and measured
Gantt charts, compute seconds per worker, the loss curve, the current step and the predicted
time left. With ``--keep`` the cluster (and the page) stays up until Enter is pressed.
"""

from __future__ import annotations

import argparse

from distributed import Client, LocalCluster

import pnngraph
from pnngraph import data
from pnngraph.nn.presets import mlp
from pnngraph.run import dashboard


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the page up until Enter")
    args = parser.parse_args(argv)

    train, _ = data.digits().split(0.2, seed=0)
    model = mlp((64,), 10, hidden=(64, 32))
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        print("pnngraph page:", dashboard.attach(client))  # fit registers it too
        result = pnngraph.fit(model, train, strategy=pnngraph.Pipeline(2, 4), client=client,
                              epochs=args.epochs, batch_size=64, lr=0.1, scheduler="heft")
        view = dashboard.view(client)  # what the page shows, as plain data
        print(f"trained {len(result.losses)} steps of {view['title']}, "
              f"last loss {result.losses[-1]:.4f}")
        if args.keep:
            input("press Enter to stop the cluster ")


if __name__ == "__main__":
    main()
