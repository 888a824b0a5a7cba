"""What every ``pnngraph`` command shares: its options (model and data, cluster), turning them
into a model, data, a strategy and a client, the checks that need no cluster, and one-line
errors with exit codes (2 bad usage, 1 a failed run, 130 interrupted).

    @click.command()
    @model_options
    @cluster_options
    @fail_cleanly
    def command(**opts): model, train, test, optimizer = prepare(opts)
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np

from pnngraph.exceptions import ConfigError, PnngraphError
from pnngraph.plan.planner import SCHEDULERS

STRATEGIES = ("auto", "serial", "data", "pipeline", "hybrid", "averaging")
FLAGS = {  # library arguments -> the flags that set them, for errors a user can act on
    "scheduler_address": "--scheduler-address",
    "tls": "--tls-ca-file/--tls-cert/--tls-key",
    "resume": "--resume",
    "checkpoint_dir": "--output-dir",
    "shards": "--shards",
    "stages": "--stages",
    "microbatches": "--microbatches",
    "batch_size": "--batch-size",
    "data": "--data",
    "adapt_threshold": "--adapt-threshold",
}
TINY_STEP_FLOPS = 1e8  # below this a step is ~10 ms: one fused shard beats any split


class Told(KeyboardInterrupt):
    """Ctrl-C, after the command said what it saved."""


def _one_line(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    click.echo(f"warning: {' '.join(str(message).split())}", err=True)


def fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One-line errors and exit codes: 2 for bad usage, 1 for a failed run, 130 interrupted."""

    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("once")  # a warning the run meets twice is said once
                warnings.showwarning = _one_line
                return fn(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit):
            raise
        except KeyboardInterrupt as err:
            if not isinstance(err, Told):
                click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as err:
            if debug:
                raise
            # typed input errors (ConfigError, DataError, ShapeError, ...) are bad usage
            usage = isinstance(err, FileNotFoundError) or (
                isinstance(err, PnngraphError) and isinstance(err, ValueError)
            )
            message = " ".join(str(err).split())
            click.echo(f"Error: {type(err).__name__}: {message}", err=True)
            sys.exit(2 if usage else 1)

    return click.option("--debug", is_flag=True, help="Show the full traceback on errors.")(
        wrapper
    )


def cluster_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--scheduler-address", default=None,
                     help="Join a running cluster (tcp://host:8786) instead of starting one."),
        click.option("--timeout", default=30.0, show_default=True, type=float,
                     help="Seconds to wait for the scheduler at --scheduler-address."),
        click.option("--workers", default=None, type=click.IntRange(min=0),
                     help="CPU workers of the embedded cluster (default: one for a model whose "
                          "step is tiny, which a second worker cannot speed up; else two)."),
        click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
                     help="Threads per worker of the embedded cluster."),
        click.option("--gpu-workers", default=0, show_default=True, type=click.IntRange(min=0),
                     help="GPU workers (resource GPU=1) of the embedded cluster."),
        click.option("--emulate-gpu", is_flag=True,
                     help="GPU workers compute on the emulated device (no GPU needed)."),
        click.option("--host", default="127.0.0.1", show_default=True,
                     help="Interface the embedded cluster and its dashboard bind to."),
        click.option("--dashboard-address", default="127.0.0.1:8787", show_default=True,
                     help="Dashboard of the embedded cluster (a free port when this one is "
                          "taken; port 0: any free port)."),
        click.option("--tls-ca-file", default=None, type=click.Path(exists=True),
                     help="With --tls-cert and --tls-key: join a tls:// scheduler."),
        click.option("--tls-cert", default=None, type=click.Path(exists=True),
                     help="Client certificate (PEM) for TLS."),
        click.option("--tls-key", default=None, type=click.Path(exists=True),
                     help="Client private key (PEM) for TLS."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@contextlib.contextmanager
def flags() -> Iterator[None]:
    """Errors about library arguments name the command-line flags that set them."""
    try:
        yield
    except ConfigError as err:
        if err.name not in FLAGS:
            raise
        raise ConfigError(FLAGS[err.name], err.expected, err.got) from None


@contextlib.contextmanager
def cluster_client(opts: dict[str, Any]) -> Iterator[Any]:
    from pnngraph.run.session import open_client

    if opts["workers"] is None:
        opts["workers"] = 2
    if opts["scheduler_address"] is None and opts["workers"] + opts["gpu_workers"] == 0:
        raise ConfigError("--workers", "at least one worker (or --gpu-workers)", 0)
    with flags(), open_client(
        opts["scheduler_address"], workers=opts["workers"], threads=opts["threads"],
        gpu_workers=opts["gpu_workers"], host=opts["host"],
        dashboard_address=opts["dashboard_address"],
        tls=(opts["tls_ca_file"], opts["tls_cert"], opts["tls_key"]),
        timeout=opts["timeout"],
    ) as client:
        yield client


def count_workers(client: Any) -> int:
    from pnngraph.run.session import live_workers

    return len(live_workers(client))


def cluster_model(client: Any, opts: dict[str, Any], strategy: Any,
                   refresh: bool = False) -> Any:
    """The measured cluster when the placement needs one (``None`` otherwise)."""
    from pnngraph.plan.placement import PlacementOptions, needs_cluster_model
    from pnngraph.run.calibrate import calibrate

    if strategy is not None and not needs_cluster_model(PlacementOptions(opts["scheduler"]),
                                                        strategy):
        return None
    return calibrate(client, gpu_backend="emulated" if opts["emulate_gpu"] else "auto",
                     refresh=refresh)


def received_bytes(dask_worker: Any) -> int:
    """Bytes this worker has fetched from other workers (its recent transfer log)."""
    return int(sum(t.get("total", 0) for t in dask_worker.transfer_incoming_log))


# ----------------------------------------------------------------------------- model and data
def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--data", default="digits", show_default=True,
                     help="digits, spirals, teacher, python-source, an .npz file or an MNIST "
                          "IDX directory."),
        click.option("--model", "model_spec", default="mlp", show_default=True,
                     help="A preset (mlp, cnn, resnet, lstm, transformer) or a JSON "
                          "architecture file."),
        click.option("--hidden", default="64", show_default=True,
                     help="Hidden widths of the mlp and lstm presets, comma-separated."),
        click.option("--dtype", default="float64", show_default=True,
                     type=click.Choice(["float64", "float32"])),
        click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0)),
        click.option("--test-fraction", default=0.2, show_default=True, type=float),
        click.option("--strategy", default="auto", show_default=True, type=click.Choice(STRATEGIES),
                     help="auto: one fused shard for tiny models, else one shard per worker."),
        click.option("--shards", default=None,
                     help="Data-parallel shards: a count, 'auto' (by worker speed) or weights."),
        click.option("--stages", default=2, show_default=True, type=click.IntRange(min=1)),
        click.option("--microbatches", default=4, show_default=True, type=click.IntRange(min=1)),
        click.option("--replicas", default=2, show_default=True, type=click.IntRange(min=1)),
        click.option("--local-steps", default=4, show_default=True, type=click.IntRange(min=1)),
        click.option("--scheduler", default="heft", show_default=True,
                     type=click.Choice(SCHEDULERS), help="How tasks are placed."),
        click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1)),
        click.option("--optimizer", default="sgd", show_default=True,
                     type=click.Choice(["sgd", "adam", "adamw"])),
        click.option("--lr", default=0.1, show_default=True, type=float, help="Learning rate."),
        click.option("--momentum", default=0.9, show_default=True, type=float,
                     help="SGD momentum."),
        click.option("--weight-decay", default=None, type=float,
                     help="L2 penalty (sgd, adam) or decoupled decay (adamw; 0.01 unless given)."),
        click.option("--lr-schedule", default="constant", show_default=True,
                     help="constant, cosine (down to 0 over the run's epochs; a resumed run "
                          "keeps its first part's) or "
                          "step:EPOCHS[:GAMMA] (times GAMMA, 0.1 unless given, every EPOCHS)."),
        click.option("--warmup-steps", default=0, show_default=True, type=click.IntRange(min=0),
                     help="Linear warm-up of the learning rate over this many steps first."),
        click.option("--clip-norm", default=None, type=float,
                     help="Clip the summed gradient to this global L2 norm."),
        click.option("--label-smoothing", default=0.0, show_default=True, type=float,
                     help="Cross-entropy label smoothing in [0, 1)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def load_model(spec: str, input_shape: tuple[int, ...], n_outputs: int, **opts: Any) -> Any:
    from pnngraph.nn.model import Sequential
    from pnngraph.nn.presets import PRESETS, preset

    if spec in PRESETS:
        return preset(spec, input_shape, n_outputs, **opts)
    path = Path(spec)
    if path.suffix != ".json" or not path.exists():
        raise ConfigError(
            "--model", f"a preset ({', '.join(sorted(PRESETS))}) or an existing .json file", spec
        )
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, RecursionError) as err:
        raise ConfigError("--model", "a valid JSON architecture", f"{spec}: {err}") from None
    model = Sequential.from_config(config)
    if model.input_shape is None:
        model.build(input_shape)
    return model


def prepare(opts: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """(model, train set, test set, optimizer) from the command's options."""
    from pnngraph import data as datasets
    from pnngraph.nn.losses import get_loss
    from pnngraph.nn.optimizers import get_optimizer
    from pnngraph.nn.train import steps_per_epoch

    dataset = datasets.load(opts["data"])
    train, test = dataset.split(opts["test_fraction"], opts["seed"])
    n_classes = dataset.n_classes or int(np.max(dataset.y)) + 1
    spec = opts["model_spec"]
    kw: dict[str, Any] = {"seed": opts["seed"], "dtype": opts["dtype"]}
    shape = tuple(train.X.shape[1:])
    if spec in ("mlp", "lstm"):
        try:
            kw["hidden"] = tuple(int(h) for h in opts["hidden"].split(","))
            if any(h <= 0 for h in kw["hidden"]):
                raise ValueError
        except ValueError:
            raise ConfigError("--hidden", "comma-separated positive integers",
                              opts["hidden"]) from None
    if spec in ("cnn", "resnet") and len(shape) == 1:
        side = round(shape[0] ** 0.5)
        if side * side != shape[0]:
            raise ConfigError(f"--model {spec}", "square images or (C, H, W) samples", shape)
        shape = (1, side, side)
    if spec == "lstm" and len(shape) == 1:  # an image's rows as a sequence
        side = round(shape[0] ** 0.5)
        if side * side != shape[0]:
            raise ConfigError("--model lstm", "square images or (T, features) samples", shape)
        shape = (side, side)
    model = load_model(spec, shape, n_classes, **kw)
    extra: dict[str, Any] = {"momentum": opts["momentum"]} if opts["optimizer"] == "sgd" else {}
    if opts["weight_decay"] is not None:
        extra["weight_decay"] = opts["weight_decay"]
    lr = learning_rate(opts, steps_per_epoch(len(train.X), opts["batch_size"]))
    optimizer = get_optimizer(opts["optimizer"], lr=lr, clip_norm=opts["clip_norm"], **extra)
    opts["loss"] = get_loss("cross_entropy", label_smoothing=opts["label_smoothing"] or None)
    return model, train, test, optimizer


def learning_rate(opts: dict[str, Any], per_epoch: int) -> Any:
    """--lr with --lr-schedule and --warmup-steps: a number or a schedule of the step."""
    from pnngraph.nn.schedules import Cosine, StepDecay, Warmup

    text, lr = opts["lr_schedule"], opts["lr"]
    # train: the epochs of the run (of its first part, when resumed); plan: its steps
    total = opts["schedule_epochs"] * per_epoch if "schedule_epochs" in opts else opts["steps"]
    rate: Any = lr
    if text == "cosine":
        rate = Cosine(lr, total_steps=max(1, total - opts["warmup_steps"]))
    elif text.startswith("step:"):
        try:
            every, *gamma = text[len("step:"):].split(":")
            if len(gamma) > 1 or int(every) < 1:
                raise ValueError
            rate = StepDecay(lr, every=int(every) * per_epoch,
                             gamma=float(gamma[0]) if gamma else 0.1)
        except ValueError:
            raise ConfigError("--lr-schedule", "constant, cosine or step:EPOCHS[:GAMMA] with "
                              "EPOCHS a positive integer", text) from None
    elif text != "constant":
        raise ConfigError("--lr-schedule", "constant, cosine or step:EPOCHS[:GAMMA]", text)
    return Warmup(rate, opts["warmup_steps"]) if opts["warmup_steps"] else rate


def parse_shards(text: str | None) -> Any:
    """--shards: None, 'auto', a count or comma-separated weights."""
    if text is None or text == "auto":
        return text
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError("--shards", "a count, 'auto' or comma-separated weights", text) from None
    if len(values) == 1 and values[0].is_integer():
        return int(values[0])
    return values


def strategy_of(opts: dict[str, Any], model: Any, n_workers: int) -> Any:
    import pnngraph

    name = opts["strategy"]
    shards = parse_shards(opts["shards"])
    if name == "auto":
        if shards is None:
            return "auto"  # every candidate planned on the cluster, the fastest kept
        name = "data"
    if name == "serial":
        return None
    parsed: Any = max(n_workers, 1) if shards is None else shards
    pipe = pnngraph.Pipeline(opts["stages"], opts["microbatches"])
    if name == "data":
        return pnngraph.DataParallel(parsed)
    if name == "pipeline":
        return pipe
    if name == "hybrid":
        return pnngraph.Hybrid(pnngraph.DataParallel(parsed), pipe)
    return pnngraph.ModelAveraging(opts["replicas"], opts["local_steps"])


ADDRESS = re.compile(r"^((tcp|tls|ws|wss|ucx)://)?(\[[0-9a-fA-F:]+\]|[\w.-]+):\d{1,5}$")


def check_devices(opts: dict[str, Any]) -> None:
    """The cluster options make sense, before any process starts: a scheduler address that is
    one, TLS files only for a tls:// scheduler and all three for one, GPU workers of the
    embedded cluster that can compute (CuPy and enough CUDA devices, or the emulated device)."""
    from pnngraph.nn.backend import check_backend

    address = opts["scheduler_address"]
    embedded = address is None
    tls = [opts[k] for k in ("tls_ca_file", "tls_cert", "tls_key") if opts[k]]
    if address is not None and not ADDRESS.match(address):
        raise ConfigError("--scheduler-address", "an address like tcp://scheduler-host:8786",
                          address)
    if tls and (embedded or not address.startswith("tls://")):
        raise ConfigError("--tls-ca-file/--tls-cert/--tls-key",
                          "a tls:// --scheduler-address to use them with",
                          address or "no --scheduler-address")
    if address is not None and address.startswith("tls://") and not tls:
        raise ConfigError("--scheduler-address", "--tls-ca-file, --tls-cert and --tls-key with "
                          "a tls:// address", address)
    if tls and len(tls) != 3:
        raise ConfigError("--tls-ca-file/--tls-cert/--tls-key",
                          "all of the CA file, the client certificate and its key", tls)
    if opts["emulate_gpu"]:
        if embedded and opts["gpu_workers"] == 0:
            raise ConfigError("--emulate-gpu", "--gpu-workers N (the GPU workers to emulate)",
                              "no GPU workers")
        backend, flag = "emulated", "--emulate-gpu"
    elif embedded and opts["gpu_workers"]:
        backend, flag = "cupy", "--gpu-workers"
    else:
        return
    try:
        check_backend(backend, opts["gpu_workers"] if backend == "cupy" else 1)
    except ConfigError as err:
        hint = " (or --emulate-gpu)" if backend == "cupy" else ""
        raise ConfigError(flag, err.expected + hint, err.got) from None


def check_strategy(opts: dict[str, Any], model: Any, train_set: Any, optimizer: Any,
                    **steps: Any) -> Any:
    """The run's inputs (its spec, validated, and the data as it trains on it), where its
    strategy is known before the cluster is (``None`` where the shards are one per worker of a
    cluster not yet joined)."""
    from pnngraph.run.pipeline import prepare_inputs

    embedded = opts["scheduler_address"] is None
    if not embedded and opts["shards"] is None and opts["strategy"] in ("data", "hybrid"):
        return None
    workers = opts["workers"] + opts["gpu_workers"] if embedded else 1
    with flags():
        return prepare_inputs(model, train_set, strategy=strategy_of(opts, model, workers),
                              batch_size=opts["batch_size"], optimizer=optimizer,
                              loss=opts["loss"], seed=opts["seed"], **steps)


