"""Validation, early stopping and the best model on disk, in the Keras style, on a local cluster.

    python examples/early_stopping.py [--epochs 60] [--patience 3]

Trains an MLP on scikit-learn's digits with DataParallel(2) and ``pnngraph.fit``, holding out
a validation set. After every epoch fit computes the validation loss and accuracy;
EarlyStopping ends the run once the validation loss has not improved for ``--patience`` epochs
(giving back the best epoch's model) and BestCheckpoint keeps that model in a file. Labels go
in one-hot, as Keras users have them, and the optimizer is named as they name it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from distributed import Client, LocalCluster

import pnngraph
from pnngraph import data
from pnngraph.nn.presets import mlp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--patience", type=int, default=3)
    args = parser.parse_args(argv)

    train, test = data.digits().split(0.2, seed=0)
    train, val = train.split(0.2, seed=1)
    one_hot = np.eye(10)[train.y]  # one-hot labels: turned into class labels once, up front
    model = mlp((64,), 10, hidden=(64,))
    with tempfile.TemporaryDirectory() as folder:
        best_file = Path(folder) / "best.npz"
        stop = pnngraph.EarlyStopping(monitor="val_loss", patience=args.patience,
                                      restore_best=True)
        keep = pnngraph.BestCheckpoint(best_file, monitor="val_loss")
        with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            result = pnngraph.fit(model, (train.X, one_hot), strategy=pnngraph.DataParallel(2),
                                  epochs=args.epochs, batch_size=64, optimizer="Adam", lr=3e-3,
                                  validation_data=(val.X, val.y), callbacks=[stop, keep],
                                  client=client, progress=False)
        history = result.history.as_dict()
        for epoch, loss, val_loss, val_accuracy in zip(
                history["epoch"], history["loss"], history["val_loss"], history["val_accuracy"],
                strict=True):
            print(f"epoch {epoch:3d}: train loss {loss:.4f}, val_loss {val_loss:.4f}, "
                  f"val_accuracy {val_accuracy:.3f}")
        ran = "stopped early at epoch" if stop.stopped_epoch is not None else "ran every epoch to"
        print(f"{ran} {history['epoch'][-1]} ({len(result.losses)} steps); best epoch "
              f"{stop.best_epoch}, best val_loss {stop.best:.4f}")
        saved = pnngraph.Sequential.load(best_file)
        same = all(np.array_equal(a[k], b[k])
                   for a, b in zip(saved.params, result.params, strict=True) for k in a)
        print(f"{best_file.name} holds the model fit returned: {same}")
    probabilities = result.model.predict_proba(test.X[:3])
    print("class probabilities of three test digits:", np.round(probabilities.max(axis=1), 3),
          "labels", test.y[:3])
    print(f"test accuracy {result.model.evaluate(test.X, test.y)['accuracy']:.3f}")


if __name__ == "__main__":
    main()
