"""The ``pnngraph`` command line.

``pnngraph train`` trains a model (a preset name or a JSON architecture file) on a dataset
(``digits``, ``spirals``, ``teacher``, an ``.npz`` file or a directory of MNIST IDX files) and
prints per-epoch loss and accuracy. Exit codes: 0 success, 2 bad usage, 1 the run failed.
Errors are one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from pnngraph.exceptions import ConfigError, PnngraphError
from pnngraph.nn.model import Sequential
from pnngraph.nn.optimizers import get_optimizer
from pnngraph.nn.presets import PRESETS, preset
from pnngraph.nn.train import steps_per_epoch, train_serial


def _fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn pnngraph's typed errors into one-line messages with exit codes (2 usage, 1 run)."""

    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (PnngraphError, FileNotFoundError, OSError) as err:
            if debug:
                raise
            usage = isinstance(err, ValueError | FileNotFoundError)
            click.echo(f"Error: {type(err).__name__}: {err}", err=True)
            sys.exit(2 if usage else 1)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return click.option("--debug", is_flag=True, help="Show the full traceback on errors.")(wrapper)


@click.group()
@click.version_option(package_name="pnngraph")
def main() -> None:
    """Train neural networks in parallel as scheduled Dask task graphs."""


def _load_model(spec: str, input_shape: tuple[int, ...], n_outputs: int, **opts: Any) -> Sequential:
    if spec in PRESETS:
        return preset(spec, input_shape, n_outputs, **opts)
    path = Path(spec)
    if path.suffix != ".json" or not path.exists():
        raise ConfigError(
            "--model", f"a preset ({', '.join(sorted(PRESETS))}) or an existing .json file", spec
        )
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError("--model", "a valid JSON architecture", f"{spec}: {err}") from None
    model = Sequential.from_config(config)
    if model.input_shape is None:
        model.build(input_shape)
    return model


@main.command()
@click.option(
    "--data",
    default="digits",
    show_default=True,
    help="digits, spirals, teacher, an .npz file or an MNIST IDX directory.",
)
@click.option(
    "--model",
    "model_spec",
    default="mlp",
    show_default=True,
    help="A preset (mlp, cnn) or a JSON architecture file.",
)
@click.option(
    "--hidden",
    default="64",
    show_default=True,
    help="Hidden widths of the mlp preset, comma-separated.",
)
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(["sgd", "adam"]))
@click.option("--lr", default=0.1, show_default=True, type=float, help="Learning rate.")
@click.option("--momentum", default=0.9, show_default=True, type=float, help="SGD momentum.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--test-fraction", default=0.2, show_default=True, type=float)
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the trained model to this .npz file.",
)
@_fail_cleanly
def train(
    data: str,
    model_spec: str,
    hidden: str,
    epochs: int,
    batch_size: int,
    optimizer: str,
    lr: float,
    momentum: float,
    seed: int,
    test_fraction: float,
    output: str | None,
) -> None:
    """Train a model serially and report loss and accuracy per epoch."""
    from pnngraph import data as datasets

    dataset = datasets.load(data)
    train_set, test_set = dataset.split(test_fraction, seed)
    n_classes = dataset.n_classes or int(np.max(dataset.y)) + 1
    opts: dict[str, Any] = {"seed": seed}
    if model_spec == "mlp":
        try:
            opts["hidden"] = tuple(int(h) for h in hidden.split(",") if h.strip())
        except ValueError:
            raise ConfigError("--hidden", "comma-separated integers", hidden) from None
    model = _load_model(model_spec, tuple(train_set.X.shape[1:]), n_classes, **opts)
    if model_spec == "cnn" and train_set.X.ndim == 2:
        side = round(train_set.X.shape[1] ** 0.5)
        model = _load_model(model_spec, (1, side, side), n_classes, **opts)
    extra = {"momentum": momentum} if optimizer == "sgd" else {}
    opt = get_optimizer(optimizer, lr=lr, **extra)
    per_epoch = steps_per_epoch(len(train_set.X), batch_size)
    click.echo(
        f"model: {model_spec}, {model.n_params} parameters; data: {dataset.name}, "
        f"{len(train_set.X)} train / {len(test_set.X)} test samples"
    )
    t0 = time.perf_counter()
    state = None
    for epoch in range(epochs):
        with click.progressbar(length=per_epoch, label=f"epoch {epoch + 1}/{epochs}") as bar:
            result = train_serial(
                model,
                train_set.X,
                train_set.y,
                steps=per_epoch,
                batch_size=batch_size,
                optimizer=opt,
                seed=seed,
                callback=lambda s, v: bar.update(1),
                start_step=epoch * per_epoch,
                opt_state=state,
            )
        model, state = result.model, result.opt_state
        scores = model.evaluate(test_set.X, test_set.y)
        click.echo(
            f"epoch {epoch + 1}: train loss {result.losses.mean():.4f}, "
            f"test loss {scores['loss']:.4f}, test accuracy {scores['accuracy']:.4f}"
        )
    click.echo(f"done in {time.perf_counter() - t0:.1f} s; test accuracy {scores['accuracy']:.4f}")
    if output:
        model.save(output)
        click.echo(f"model written to {output}")
