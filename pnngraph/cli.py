"""The ``pnngraph`` command line: train, plan, calibrate, report.

``pnngraph train`` trains a model (a preset or a JSON architecture) on a dataset (``digits``,
``spirals``, ``teacher``, an ``.npz`` file or a directory of MNIST IDX files) on an embedded
local cluster (or the cluster at ``--scheduler-address``), one graph per epoch, and writes a run
directory: ``model.npz``, ``checkpoints/``, ``report.html`` and ``run.json``.
``pnngraph plan`` builds and schedules without running, on a live cluster or on one described in
a YAML file. ``pnngraph calibrate`` measures a cluster. ``pnngraph report RUN_DIR`` re-renders.

Exit codes: 0 success, 2 bad usage, 1 the run failed. Errors are one line on stderr;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sys
import time
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
}
TINY_STEP_FLOPS = 1e8  # below this a step is ~10 ms: one fused shard beats any split


class _Told(KeyboardInterrupt):
    """Ctrl-C, after the command said what it saved."""


def _fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One-line errors and exit codes: 2 for bad usage, 1 for a failed run, 130 interrupted."""

    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit):
            raise
        except KeyboardInterrupt as err:
            if not isinstance(err, _Told):
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


def _cluster_options(fn: Callable[..., Any]) -> Callable[..., Any]:
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
        click.option("--dashboard-address", default="127.0.0.1:0", show_default=True,
                     help="Dashboard of the embedded cluster (port 0: any free port)."),
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
def _flags() -> Iterator[None]:
    """Errors about library arguments name the command-line flags that set them."""
    try:
        yield
    except ConfigError as err:
        if err.name not in FLAGS:
            raise
        raise ConfigError(FLAGS[err.name], err.expected, err.got) from None


@contextlib.contextmanager
def _client(opts: dict[str, Any]) -> Iterator[Any]:
    from pnngraph.run.session import open_client

    if opts["workers"] is None:
        opts["workers"] = 2
    if opts["scheduler_address"] is None and opts["workers"] + opts["gpu_workers"] == 0:
        raise ConfigError("--workers", "at least one worker (or --gpu-workers)", 0)
    with _flags(), open_client(
        opts["scheduler_address"], workers=opts["workers"], threads=opts["threads"],
        gpu_workers=opts["gpu_workers"], host=opts["host"],
        dashboard_address=opts["dashboard_address"],
        tls=(opts["tls_ca_file"], opts["tls_cert"], opts["tls_key"]),
        timeout=opts["timeout"],
    ) as client:
        yield client


def _n_workers(client: Any) -> int:
    from pnngraph.run.session import live_workers

    return len(live_workers(client))


def _cluster_model(client: Any, opts: dict[str, Any], strategy: Any,
                   refresh: bool = False) -> Any:
    """The measured cluster when the placement needs one (``None`` otherwise)."""
    from pnngraph.plan.placement import PlacementOptions, needs_cluster_model
    from pnngraph.run.calibrate import calibrate

    if strategy is not None and not needs_cluster_model(PlacementOptions(opts["scheduler"]),
                                                        strategy):
        return None
    return calibrate(client, gpu_backend="emulated" if opts["emulate_gpu"] else "auto",
                     refresh=refresh)


def _received_bytes(dask_worker: Any) -> int:
    """Bytes this worker has fetched from other workers (its recent transfer log)."""
    return int(sum(t.get("total", 0) for t in dask_worker.transfer_incoming_log))


@click.group()
@click.version_option(package_name="pnngraph")
def main() -> None:
    """Train neural networks in parallel as scheduled Dask task graphs."""


# ----------------------------------------------------------------------------- model and data
def _model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--data", default="digits", show_default=True,
                     help="digits, spirals, teacher, an .npz file or an MNIST IDX directory."),
        click.option("--model", "model_spec", default="mlp", show_default=True,
                     help="A preset (mlp, cnn) or a JSON architecture file."),
        click.option("--hidden", default="64", show_default=True,
                     help="Hidden widths of the mlp preset, comma-separated."),
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
                     type=click.Choice(["sgd", "adam"])),
        click.option("--lr", default=0.1, show_default=True, type=float, help="Learning rate."),
        click.option("--momentum", default=0.9, show_default=True, type=float,
                     help="SGD momentum."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _load_model(spec: str, input_shape: tuple[int, ...], n_outputs: int, **opts: Any) -> Any:
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
    except json.JSONDecodeError as err:
        raise ConfigError("--model", "a valid JSON architecture", f"{spec}: {err}") from None
    model = Sequential.from_config(config)
    if model.input_shape is None:
        model.build(input_shape)
    return model


def _prepare(opts: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """(model, train set, test set, optimizer) from the command's options."""
    from pnngraph import data as datasets
    from pnngraph.nn.optimizers import get_optimizer

    dataset = datasets.load(opts["data"])
    train, test = dataset.split(opts["test_fraction"], opts["seed"])
    n_classes = dataset.n_classes or int(np.max(dataset.y)) + 1
    spec = opts["model_spec"]
    kw: dict[str, Any] = {"seed": opts["seed"], "dtype": opts["dtype"]}
    shape = tuple(train.X.shape[1:])
    if spec == "mlp":
        try:
            kw["hidden"] = tuple(int(h) for h in opts["hidden"].split(","))
            if any(h <= 0 for h in kw["hidden"]):
                raise ValueError
        except ValueError:
            raise ConfigError("--hidden", "comma-separated positive integers",
                              opts["hidden"]) from None
    if spec == "cnn" and len(shape) == 1:
        side = round(shape[0] ** 0.5)
        if side * side != shape[0]:
            raise ConfigError("--model cnn", "square images or (C, H, W) samples", shape)
        shape = (1, side, side)
        kw = {"seed": opts["seed"], "dtype": opts["dtype"]}
    model = _load_model(spec, shape, n_classes, **kw)
    extra = {"momentum": opts["momentum"]} if opts["optimizer"] == "sgd" else {}
    optimizer = get_optimizer(opts["optimizer"], lr=opts["lr"], **extra)
    return model, train, test, optimizer


def _parse_shards(text: str | None) -> Any:
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


def _strategy(opts: dict[str, Any], model: Any, n_workers: int) -> Any:
    import pnngraph

    name = opts["strategy"]
    shards = _parse_shards(opts["shards"])
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


# ------------------------------------------------------------------------------------- train
RUN_OPTIONS = ("data", "model_spec", "hidden", "dtype", "seed", "test_fraction", "strategy",
               "shards", "stages", "microbatches", "replicas", "local_steps", "batch_size",
               "optimizer", "lr", "momentum")
"""Options that define a run: ``--resume`` reads them from run.json and refuses other values."""
RESUMED_UNLESS_GIVEN = ("epochs", "scheduler")
"""Options ``--resume`` reads from run.json unless given again (more epochs, another plan)."""


@main.command()
@_model_options
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--output-dir", default=None, type=click.Path(file_okay=False),
              help="Run directory (default: runs/<date-time>).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --output-dir (default: the newest run in runs/) from "
                   "its newest checkpoint, with the options recorded in its run.json.")
@click.option("--no-report", is_flag=True, help="Do not write report.html.")
@_cluster_options
@_fail_cleanly
def train(**opts: Any) -> None:
    """Train a model on the cluster and report loss and accuracy per epoch."""
    from pnngraph.nn.train import steps_per_epoch

    run_dir = _run_dir(opts)
    if opts["resume"]:
        _resumed_options(opts, run_dir)
    _check_devices(opts)
    model, train_set, test_set, optimizer = _prepare(opts)
    per_epoch = steps_per_epoch(len(train_set.X), opts["batch_size"])
    if opts["workers"] is None:
        tiny = 3.0 * sum(model.layer_flops()) * opts["batch_size"] < TINY_STEP_FLOPS
        opts["workers"] = 1 if tiny and opts["gpu_workers"] == 0 else 2
    _check_run(opts, model, train_set, optimizer, run_dir)  # before any process starts
    click.echo(
        f"model: {opts['model_spec']}, {model.n_params} parameters; data: "
        f"{train_set.name}, {len(train_set.X)} train / {len(test_set.X)} test samples"
    )
    run = _train_serial if opts["strategy"] == "serial" else _train_cluster
    run(opts, model, train_set, test_set, optimizer, per_epoch, run_dir)


def _run_dir(opts: dict[str, Any]) -> Path:
    """--output-dir; else with --resume the newest run in runs/, else a new runs/<date-time>."""
    if opts["output_dir"]:
        return Path(opts["output_dir"])
    runs = Path("runs")
    if opts["resume"]:
        found = sorted((p for p in runs.glob("*") if (p / "run.json").is_file()
                        or (p / "checkpoints").is_dir()), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError("--resume", "a run to continue in runs/ (or --output-dir)", "none")
        return found[-1]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir, n = runs / stamp, 1
    while run_dir.exists():  # two runs in one second
        n += 1
        run_dir = runs / f"{stamp}-{n}"
    return run_dir


def _flag(name: str) -> str:
    """The command-line flag of the option ``name``."""
    for param in click.get_current_context().command.params:
        if param.name == name and param.opts:
            return max(param.opts, key=len)
    return name


def _resumed_options(opts: dict[str, Any], run_dir: Path) -> None:
    """Fill ``opts`` from the run.json of the run being resumed: the options that define the
    run must agree where given again; the others are taken from it where not given."""
    from click.core import ParameterSource

    from pnngraph.record import RunRecord

    path = run_dir / "run.json"
    if not path.is_file():
        return  # a run stopped before it wrote run.json: the flags as given
    recorded = RunRecord.load(path).options
    ctx = click.get_current_context()
    given = {name for name in opts if ctx.get_parameter_source(name) not in
             (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}
    differ = [n for n in RUN_OPTIONS if n in given and n in recorded and opts[n] != recorded[n]]
    if differ:
        was = ", ".join(f"{_flag(n)} {recorded[n]}" for n in differ)
        raise ConfigError(", ".join(_flag(n) for n in differ),
                          f"the run's own options ({was}, in {path})",
                          ", ".join(str(opts[n]) for n in differ))
    for name in (*RUN_OPTIONS, *RESUMED_UNLESS_GIVEN):
        if name in recorded and name not in given:
            opts[name] = recorded[name]
    click.echo(f"resuming {run_dir} with its options from run.json")


ADDRESS = re.compile(r"^((tcp|tls|ws|wss|ucx)://)?(\[[0-9a-fA-F:]+\]|[\w.-]+):\d{1,5}$")


def _check_devices(opts: dict[str, Any]) -> None:
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


def _check_run(opts: dict[str, Any], model: Any, train_set: Any, optimizer: Any,
               run_dir: Path) -> None:
    """What can be refused without a cluster: a run directory in use, a strategy the model or
    the batches cannot be split for, a checkpoint of another run."""
    from pnngraph.run.checkpoint import CheckpointPolicy

    checkpoints = run_dir / "checkpoints"
    used = (run_dir / "run.json").exists() or (checkpoints.is_dir()
                                               and any(checkpoints.iterdir()))
    if used and not opts["resume"]:
        raise ConfigError("--output-dir", "a new run directory (or --resume to continue the "
                          "run in it)", str(run_dir))
    if opts["strategy"] == "serial":
        if opts["resume"]:
            raise ConfigError("--resume", "a run on a cluster (serial runs keep no checkpoints)",
                              "--strategy serial")
        return
    spec = _check_strategy(opts, model, train_set, optimizer, epochs=opts["epochs"])
    if spec is not None:
        with _flags():
            CheckpointPolicy(checkpoints, resume=opts["resume"]).resume_point(model, spec)


def _check_strategy(opts: dict[str, Any], model: Any, train_set: Any, optimizer: Any,
                    **steps: Any) -> Any:
    """The run's spec, validated, where its strategy is known before the cluster is (``None``
    where the shards are one per worker of a cluster not yet joined)."""
    from pnngraph.run.pipeline import prepare_inputs

    embedded = opts["scheduler_address"] is None
    if not embedded and opts["shards"] is None and opts["strategy"] in ("data", "hybrid"):
        return None
    workers = opts["workers"] + opts["gpu_workers"] if embedded else 1
    with _flags():
        return prepare_inputs(model, train_set, strategy=_strategy(opts, model, workers),
                              batch_size=opts["batch_size"], optimizer=optimizer,
                              seed=opts["seed"], **steps).spec


def _train_serial(opts: dict[str, Any], model: Any, train_set: Any, test_set: Any,
                  optimizer: Any, per_epoch: int, run_dir: Path) -> None:
    from pnngraph.compile.reference import train_serial
    from pnngraph.record import RunRecord

    record = RunRecord(meta={"strategy": "serial", "steps per epoch": per_epoch},
                       options=_options(opts))
    state, epoch = None, 0
    try:
        for epoch in range(opts["epochs"]):
            label = f"epoch {epoch + 1}/{opts['epochs']}"
            began = time.perf_counter()
            with click.progressbar(length=per_epoch, label=label) as bar:
                result = train_serial(
                    model, train_set.X, train_set.y, steps=per_epoch,
                    batch_size=opts["batch_size"], optimizer=optimizer, seed=opts["seed"],
                    start_step=epoch * per_epoch, opt_state=state,
                    callback=lambda s, v: bar.update(1),
                )
            model, state = result.model, result.opt_state
            record.losses.extend(result.losses.tolist())
            scores = model.evaluate(test_set.X, test_set.y)
            record.accuracy.append((epoch + 1, scores["accuracy"]))
            record.meta["final test loss"] = scores["loss"]
            _epoch_line(epoch + 1, result.losses, scores,
                        len(train_set.X) / (time.perf_counter() - began))
    except KeyboardInterrupt:
        if not record.accuracy:
            raise
        _finish(run_dir, model, record, opts, interrupted=epoch)
        raise _Told from None
    _finish(run_dir, model, record, opts)


def _options(opts: dict[str, Any]) -> dict[str, Any]:
    """The options of ``opts`` that run.json keeps for ``--resume``."""
    return {name: opts[name] for name in (*RUN_OPTIONS, *RESUMED_UNLESS_GIVEN)}


def _epoch_line(epoch: int, losses: Any, scores: dict[str, float],
                rate: float | None = None) -> None:
    speed = "" if rate is None else f", {rate:,.0f} samples/s"
    click.echo(f"epoch {epoch}: mean train loss {float(np.mean(losses)):.4f}, test loss "
               f"{scores['loss']:.4f}, test accuracy {scores['accuracy']:.4f}{speed}")


class _EpochBars:
    """On a terminal, one click progress bar per epoch, opened by the first step that finishes
    in it, with the loss and samples per second of the newest chunk beside it (chunks last
    about a second, so it moves within long epochs). Elsewhere nothing: the epoch lines say
    it all."""

    def __init__(self, per_epoch: int, epochs: int, first_epoch: int) -> None:
        self.per_epoch, self.epochs, self.epoch = per_epoch, epochs, first_epoch
        self.bar: Any = None
        self.shown = sys.stdout.isatty()
        self.figures = ""

    def update(self, n: int) -> None:
        if not self.shown:
            return
        if self.bar is None:
            label = f"epoch {self.epoch + 1}/{self.epochs}"
            self.bar = click.progressbar(length=self.per_epoch, label=label,
                                         item_show_func=lambda text: text)
            self.bar.__enter__()
        self.bar.update(n, self.figures)

    def chunk(self, loss: float, rate: float) -> None:
        """The figures of the chunk that just ended."""
        self.figures = f"loss {loss:.4f}, {rate:,.0f} samples/s"
        if self.bar is not None:
            self.bar.update(0, self.figures)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
        self.epoch += 1


def _train_cluster(opts: dict[str, Any], model: Any, train_set: Any, test_set: Any,
                   optimizer: Any, per_epoch: int, run_dir: Path) -> None:
    """Train with :func:`pnngraph.fit`, one chunk per epoch, checkpoints every epoch."""
    import pnngraph
    from pnngraph.run import dashboard

    first_epoch = _resume_epoch(opts, run_dir / "checkpoints", per_epoch)
    clock = _Clock()
    epochs: _Epochs | None = None
    try:
        with _client(opts) as client:
            clock.lap("cluster start")
            n_workers = _n_workers(client)
            if opts["strategy"] in ("data", "hybrid") and opts["shards"] is None:
                opts["shards"] = str(max(n_workers, 1))  # kept: a resumed run splits alike
            strategy = _strategy(opts, model, n_workers)
            cluster = _cluster_model(client, opts,
                                     pnngraph.compile.strategies.as_strategy(strategy))
            clock.lap("calibration")
            plural = "s" if n_workers != 1 else ""
            page = dashboard.attach(client)  # the run's live page, where the scheduler has one
            click.echo(f"cluster: {n_workers} worker{plural}; dashboard {client.dashboard_link}"
                       + (f" (this run: {page})" if page else "")
                       + f"; scheduler {opts['scheduler']}")
            epochs = _Epochs(client, opts, test_set, per_epoch, first_epoch,
                             _earlier_record(run_dir, opts, first_epoch, per_epoch),
                             len(train_set.X))
            epochs.record.meta.update({"workers": n_workers, "steps per epoch": per_epoch})
            run_dir.mkdir(parents=True, exist_ok=True)
            epochs.record.save(run_dir / "run.json")  # the options, for --resume after a crash
            received_before = client.run(_received_bytes)
            with _flags():
                result = pnngraph.fit(
                    model, train_set, strategy=strategy, epochs=opts["epochs"],
                    batch_size=opts["batch_size"], optimizer=optimizer, seed=opts["seed"],
                    chunk_steps=per_epoch, chunk_seconds=1.0, client=client,
                    scheduler=opts["scheduler"],
                    cluster=cluster, progress=False, checkpoint_dir=run_dir / "checkpoints",
                    checkpoint_every=per_epoch, resume=opts["resume"],
                    on_graph=epochs.on_graph, on_chunk=epochs.on_chunk,
                    on_steps=epochs.bars.update, learn=cluster is not None,
                )
            clock.lap("training", minus=epochs.evaluation)
            clock.laps["evaluation"] = epochs.evaluation
            epochs.remember()
            received = client.run(_received_bytes)
    except KeyboardInterrupt:
        if epochs is None or epochs.last is None:
            raise
        epochs.bars.close()
        epochs.record.losses = epochs.last.losses.tolist()
        _finish(run_dir, epochs.last.model, epochs.record, opts, interrupted=epochs.epoch)
        raise _Told from None
    clock.lap("cluster stop")
    record = epochs.record
    record.meta["strategy"] = epochs.strategy or repr(strategy)
    record.losses = result.losses.tolist()
    record.bytes_moved = {w: max(received[w] - received_before.get(w, 0), 0) for w in received}
    _finish(run_dir, result.model, record, opts, clock)


def _earlier_record(run_dir: Path, opts: dict[str, Any], epoch: int, per_epoch: int) -> Any:
    """The record a run starts with: its options; a resumed run keeps the epochs and chunks
    its run.json holds up to ``epoch``, where it continues."""
    from pnngraph.record import RunRecord

    record = RunRecord(options=_options(opts))
    path = run_dir / "run.json"
    if opts["resume"] and path.is_file():
        earlier = RunRecord.load(path)
        record.accuracy = [(e, a) for e, a in earlier.accuracy if e <= epoch]
        record.chunks = [c for c in earlier.chunks if c.get("step", 0) <= epoch * per_epoch]
        record.meta = {k: v for k, v in earlier.meta.items() if k == "strategy"}
    return record


def _resume_epoch(opts: dict[str, Any], checkpoints: Path, per_epoch: int) -> int:
    """The epoch a resumed run starts at (0 for a new run)."""
    from pnngraph.run.checkpoint import list_checkpoints

    if not opts["resume"]:
        return 0
    found = list_checkpoints(checkpoints)
    if not found:
        raise ConfigError("--resume", f"a checkpoint in {checkpoints}", "none")
    step, path = found[-1]
    click.echo(f"resuming from {path} (epoch {step // per_epoch})")
    return step // per_epoch


class _Clock:
    """Wall time of each phase of a command, for the breakdown it prints at the end."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, name: str, minus: float = 0.0) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.last - minus
        self.last = now

    def line(self) -> str:
        parts = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.laps.items())
        return f"time: {parts}"


class _Epochs:
    """What the CLI does around each epoch of a cluster run: progress bars, evaluation, the
    records for the report, the refined cluster model cached."""

    def __init__(self, client: Any, opts: dict[str, Any], test_set: Any, per_epoch: int,
                 first_epoch: int, record: Any, n_samples: int) -> None:
        self.client, self.opts, self.test_set, self.per_epoch = client, opts, test_set, per_epoch
        self.n_samples = n_samples
        self.bars = _EpochBars(per_epoch, opts["epochs"], first_epoch)
        self.record = record
        self.epoch = first_epoch  # epochs done
        self.last: Any = None  # the result at the end of the newest epoch
        self.stream: list[dict[str, Any]] = []
        self.origin = time.time()  # the run's clock starts as fit starts: nothing is moved
        self.predicted = 0.0  # predicted seconds of the chunks so far
        self.done = first_epoch * per_epoch
        self.evaluation = 0.0
        self.strategy: str | None = None
        self.cluster: Any = None

    def remember(self) -> None:
        """Cache the cluster model as the run refined it: the next run starts there."""
        from pnngraph.run.calibrate import remember

        if self.cluster is not None:
            remember(self.client, self.cluster,
                     gpu_backend="emulated" if self.opts["emulate_gpu"] else "auto")

    def on_graph(self, graph: Any) -> None:
        if self.strategy is None:  # the first chunk: say what runs, and why
            self.strategy = repr(graph.strategy)
            plan = graph.plan
            why = ""
            if plan is not None and len(plan.alternatives) > 1:
                (_, best), (runner, seconds) = plan.alternatives[0], plan.alternatives[1]
                why = (f" (predicted {best:.2f} s for the run; runner-up {runner}, "
                       f"{seconds:.2f} s)")
            click.echo(f"strategy: {self.strategy}{why}")

    def on_chunk(self, report: Any) -> None:
        from pnngraph.record import TaskRecord, records_from_slots, records_from_task_stream

        plan = report.graph.plan
        lo, hi = self.done, report.step
        measured = float(np.sum(report.result.step_seconds[lo:hi]))
        self.done = hi
        self.bars.chunk(float(np.mean(report.result.losses[lo:hi])),
                        self._samples(lo, hi) / max(measured, 1e-9))
        if plan is not None:  # the plan where it was predicted to run: after the ones before
            shift = self.predicted + plan.terms.get("submit", 0.0)
            self.record.planned += [
                TaskRecord(r.key, r.phase, r.worker, r.start + shift, r.stop + shift, r.step)
                for r in records_from_slots(plan.predicted.slots)]
            self.predicted += plan.wall_seconds
        self.record.chunks.append({"step": report.step, "measured": measured,
                                   "predicted": None if plan is None else plan.wall_seconds})
        self.stream.extend(report.stream)
        self.cluster = report.cluster  # refined by this epoch: cached at the end of the run
        if hi % self.per_epoch and hi < self.opts["epochs"] * self.per_epoch:
            return  # within an epoch
        self.bars.close()
        epoch = -(-hi // self.per_epoch)
        t0 = time.perf_counter()
        scores = report.result.model.evaluate(self.test_set.X, self.test_set.y)
        self.evaluation += time.perf_counter() - t0
        self.record.accuracy.append((epoch, scores["accuracy"]))
        self.record.meta["final test loss"] = scores["loss"]
        self.epoch, self.last = epoch, report.result
        start = (epoch - 1) * self.per_epoch
        seconds = float(np.sum(report.result.step_seconds[start:hi]))
        _epoch_line(epoch, report.result.losses[start:hi], scores,
                    self._samples(start, hi) / seconds if seconds > 0 else None)
        self.record.measured = (records_from_task_stream(self.stream, origin=self.origin)
                                if self.stream else [])

    def _samples(self, lo: int, hi: int) -> int:
        """Samples in the batches of steps ``[lo, hi)``."""
        size, n = self.opts["batch_size"], self.n_samples
        return sum(min(size, n - (step % self.per_epoch) * size) for step in range(lo, hi))


def _finish(run_dir: Path, model: Any, record: Any, opts: dict[str, Any],
            clock: _Clock | None = None, interrupted: int | None = None) -> None:
    """Write model.npz, run.json and report.html; say where. ``interrupted``: the epochs done
    when Ctrl-C stopped the run, which can go on with ``--resume``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "model.npz")
    record.options = _options(opts)
    record.meta.update(_meta(opts, model, record))
    if clock is not None:
        record.meta["wall seconds"] = round(sum(clock.laps.values()), 3)
        record.meta["time"] = {k: round(v, 3) for k, v in clock.laps.items()}
    record.save(run_dir / "run.json")
    report = None if opts.get("no_report") else _render(run_dir)
    if interrupted is not None:
        written = "model.npz, run.json" + (", report.html" if report else "")
        click.echo(f"interrupted after epoch {interrupted} of {opts['epochs']}: {written} in "
                   f"{run_dir}; continue with: pnngraph train --output-dir {run_dir} --resume",
                   err=True)
        return
    if report is not None:
        click.echo(f"report written to {report}")
    if clock is not None:
        clock.lap("report")
        click.echo(clock.line())
    final = record.accuracy[-1][1] if record.accuracy else float("nan")
    click.echo(f"done: {opts['epochs']} epochs; mean train loss of the last epoch "
               f"{record.meta.get('final train loss', float('nan')):.4f}, test accuracy "
               f"{final:.4f}; model, report and checkpoints in {run_dir}")


def _meta(opts: dict[str, Any], model: Any, record: Any) -> dict[str, Any]:
    """The run's settings and final figures, for the report's table."""
    meta: dict[str, Any] = {"model": opts["model_spec"], "parameters": model.n_params}
    if opts["model_spec"] == "mlp":
        meta["widths"] = opts["hidden"]
    meta.update({"data": opts["data"], "dtype": opts["dtype"], "epochs": opts["epochs"],
                 "batch size": opts["batch_size"], "optimizer": opts["optimizer"],
                 "learning rate": opts["lr"]})
    if opts["optimizer"] == "sgd":
        meta["momentum"] = opts["momentum"]
    meta.update({"seed": opts["seed"], "scheduler": opts["scheduler"]})
    per_epoch = record.meta.get("steps per epoch")
    if record.losses and per_epoch:
        meta["final train loss"] = round(float(np.mean(record.losses[-per_epoch:])), 6)
    if record.accuracy:
        meta["final test accuracy"] = round(record.accuracy[-1][1], 6)
    if "final test loss" in record.meta:
        meta["final test loss"] = round(float(record.meta["final test loss"]), 6)
    return meta


def _render(run_dir: Path) -> Path:
    from pnngraph.record import RunRecord
    from pnngraph.report import render_run

    record = RunRecord.load(run_dir / "run.json")
    return render_run(run_dir / "report.html", record, title=f"pnngraph run {run_dir.name}")


# -------------------------------------------------------------------------------------- plan
@main.command()
@_model_options
@click.option("--steps", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--cluster-file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Plan for the cluster this YAML file describes instead of a live one.")
@click.option("--output", default="plan.html", show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the Gantt chart.")
@_cluster_options
@_fail_cleanly
def plan(**opts: Any) -> None:
    """Build and schedule a training graph without running it."""
    import yaml

    import pnngraph
    from pnngraph.plan.cluster import cluster_from_spec
    from pnngraph.record import records_from_slots
    from pnngraph.report import render_report

    if opts["strategy"] == "serial":
        raise ConfigError("--strategy", "a parallel strategy to plan", "serial")
    if not opts["cluster_file"]:
        _check_devices(opts)
    model, train_set, _, optimizer = _prepare(opts)
    if not opts["cluster_file"]:  # before the cluster starts
        if opts["workers"] is None:
            opts["workers"] = 2
        _check_strategy(opts, model, train_set, optimizer, steps=opts["steps"])
    kw = {"steps": opts["steps"], "batch_size": opts["batch_size"], "optimizer": optimizer,
          "seed": opts["seed"], "scheduler": opts["scheduler"]}
    if opts["cluster_file"]:
        try:
            spec = yaml.safe_load(Path(opts["cluster_file"]).read_text())
        except yaml.YAMLError as err:
            raise ConfigError("--cluster-file", "a YAML cluster description", str(err)) from None
        cluster = cluster_from_spec(spec)
        strategy = _strategy(opts, model, len(cluster.workers))
        with _flags():
            graph = pnngraph.build(model, train_set, strategy=strategy, cluster=cluster, **kw)
    else:
        with _client(opts) as client:
            strategy = _strategy(opts, model, _n_workers(client))
            cluster = _cluster_model(client, opts, None)  # a prediction needs the speeds
            with _flags():
                graph = pnngraph.build(model, train_set, strategy=strategy, client=client,
                                       cluster=cluster, **kw)
    click.echo(f"{graph!r}; strategy {strategy!r}")
    if graph.plan is None:
        click.echo(f"scheduler {opts['scheduler']!r}: no cluster model, nothing to predict")
        return
    click.echo(graph.plan.summary())
    steps = graph.plan.step_makespans()
    if steps:
        click.echo(f"predicted seconds per step: {np.mean(list(steps.values())):.4f}")
    out = render_report(opts["output"], title="pnngraph plan",
                        planned=records_from_slots(graph.plan.predicted.slots),
                        meta={"strategy": repr(strategy), "scheduler": graph.plan.algorithm})
    click.echo(f"Gantt chart written to {out}")


# --------------------------------------------------------------------------------- calibrate
@main.command()
@click.option("--refresh", is_flag=True,
              help="Measure again even when this cluster's calibration is cached.")
@_cluster_options
@_fail_cleanly
def calibrate(refresh: bool, **opts: Any) -> None:
    """Measure the cluster's speeds and Dask's costs, and cache them."""
    _check_devices(opts)
    with _client(opts) as client:
        model = _cluster_model(client, opts, None, refresh=refresh)
    def spread(name: str) -> str:
        return f" (spread {100 * model.spread[name]:.0f} %)" if name in model.spread else ""

    click.echo(f"graph {model.graph_seconds * 1e3:.2f} ms{spread('graph_seconds')}, task "
               f"{model.task_overhead_seconds * 1e3:.2f} ms{spread('task_overhead_seconds')}, "
               f"dependent hop {model.hop_latency_seconds * 1e3:.2f} ms"
               f"{spread('hop_latency_seconds')}")
    click.echo(f"network {model.network_bytes_per_s / 1e9:.2f} GB/s"
               f"{spread('network_bytes_per_s')}, data in a graph "
               f"{model.send_bytes_per_s / 1e9:.2f} GB/s{spread('send_bytes_per_s')}, results "
               f"{model.result_bytes_per_s / 1e9:.2f} GB/s{spread('result_bytes_per_s')}")
    for w in model.workers:
        click.echo(f"{w.address}  {w.backend:<8} {w.threads} threads  GEMM float32 "
                   f"{w.flops_per_s('float32') / 1e9:8.1f} GFLOP/s, float64 "
                   f"{w.flops_per_s('float64') / 1e9:8.1f} GFLOP/s, memory "
                   f"{w.memory_bytes_per_s / 1e9:6.1f} GB/s")


# ------------------------------------------------------------------------------------ report
@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@_fail_cleanly
def report(run_dir: str) -> None:
    """Render RUN_DIR/report.html again from RUN_DIR/run.json."""
    click.echo(f"report written to {_render(Path(run_dir))}")
