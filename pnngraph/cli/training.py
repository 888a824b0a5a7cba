"""``pnngraph train``: a run directory (``model.npz``, ``checkpoints/``, ``run.json``,
``report.html``) from the options, on the embedded cluster or a running one; resumed from its
run.json; one line per epoch, a progress bar on a terminal; Ctrl-C keeps what finished.

    opts -> checks (no cluster) -> fit(on_chunk=_Epochs.on_chunk) -> _finish(run_dir, ...)
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import numpy as np

from pnngraph.cli.options import (
    TINY_STEP_FLOPS,
    Told,
    check_devices,
    check_strategy,
    cluster_client,
    cluster_model,
    cluster_options,
    count_workers,
    fail_cleanly,
    flags,
    model_options,
    prepare,
    received_bytes,
    strategy_of,
)
from pnngraph.exceptions import ClusterLostError, ConfigError

RUN_OPTIONS = ("data", "model_spec", "hidden", "dtype", "seed", "test_fraction", "strategy",
               "shards", "stages", "microbatches", "replicas", "local_steps", "batch_size",
               "optimizer", "lr", "momentum", "weight_decay", "lr_schedule", "warmup_steps",
               "clip_norm", "label_smoothing", "schedule_epochs")
"""Options that define a run: ``--resume`` reads them from run.json and refuses other values."""
RESUMED_UNLESS_GIVEN = ("epochs", "scheduler")
"""Options ``--resume`` reads from run.json unless given again (more epochs, another plan)."""


@click.command()
@model_options
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--output-dir", default=None, type=click.Path(file_okay=False),
              help="Run directory (default: runs/<date-time>).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --output-dir (default: the newest run in runs/) from "
                   "its newest checkpoint, with the options recorded in its run.json.")
@click.option("--no-report", is_flag=True, help="Do not write report.html.")
@click.option("--adapt", is_flag=True,
              help="Re-plan every chunk from the live cluster: workers that join or leave, "
                   "shards re-sized for a worker that drifts from its predicted speed.")
@click.option("--adapt-threshold", default=0.25, show_default=True, type=float,
              help="With --adapt: how far (a fraction) a worker may drift before a re-size, "
                   "and what of a step a re-size must be predicted to save where none drifted.")
@cluster_options
@fail_cleanly
def train(**opts: Any) -> None:
    """Train a model on the cluster and report loss and accuracy per epoch."""
    from pnngraph.nn.train import steps_per_epoch

    run_dir = _run_dir(opts)
    log_changes()  # what the memory guard changed, and each re-plan of an adaptive run
    if opts["resume"]:
        _resumed_options(opts, run_dir)
    opts.setdefault("schedule_epochs", opts["epochs"])  # a cosine spans the first run's epochs
    check_devices(opts)
    model, train_set, test_set, optimizer = prepare(opts)
    per_epoch = steps_per_epoch(len(train_set.X), opts["batch_size"])
    if opts["workers"] is None:
        tiny = 3.0 * sum(model.layer_flops()) * opts["batch_size"] < TINY_STEP_FLOPS
        opts["workers"] = 1 if tiny and opts["gpu_workers"] == 0 else 2
    start = _check_run(opts, model, train_set, optimizer, run_dir, per_epoch)  # no cluster yet
    click.echo(
        f"model: {opts['model_spec']}, {model.n_params} parameters; data: "
        f"{train_set.name}, {len(train_set.X)} train / {len(test_set.X)} test samples"
    )
    if opts["strategy"] == "serial":
        _train_serial(opts, model, train_set, test_set, optimizer, per_epoch, run_dir)
    else:
        _train_cluster(opts, model, train_set, test_set, optimizer, per_epoch, run_dir,
                       start // per_epoch)


def log_changes() -> None:
    """The ``pnngraph`` logger's INFO lines on standard error: what the memory guard changed
    so that a plan fits, and an adaptive run's changes."""
    log = logging.getLogger("pnngraph")
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        log.addHandler(_Stderr())
    log.setLevel(logging.INFO)


class _Stderr(logging.Handler):
    """``pnngraph: <message>`` on the standard error of the moment (``click.echo``: one
    process may run several commands, each with its own streams)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"pnngraph: {record.getMessage()}", err=True)


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


def _check_run(opts: dict[str, Any], model: Any, train_set: Any, optimizer: Any,
               run_dir: Path, per_epoch: int) -> int:
    """What can be refused without a cluster: a drift threshold not above 0, a run directory
    in use, a strategy the model or the batches cannot be split for, a checkpoint of another
    run (or of other data). Returns the step a resumed run continues from (0 for a new run)."""
    from pnngraph.run.adapt import check_threshold
    from pnngraph.run.checkpoint import CheckpointPolicy, data_fingerprint, newest_usable

    with flags():
        check_threshold(opts["adapt_threshold"])
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
        return 0
    inputs = check_strategy(opts, model, train_set, optimizer, epochs=opts["epochs"])
    if not opts["resume"]:
        return 0
    if inputs is None:  # one shard per worker of a cluster not joined yet: fit checks the spec
        ckpt = newest_usable(checkpoints)
    else:
        policy = CheckpointPolicy(checkpoints, resume=True,
                                  fingerprint=data_fingerprint(inputs.X, inputs.y))
        with flags():
            ckpt = policy.resume_point(model, inputs.spec, opts.get("adapt", False))
    if ckpt is None:
        raise ConfigError("--resume", f"a checkpoint in {checkpoints}", "none")
    click.echo(f"resuming from {ckpt.path} (epoch {ckpt.step // per_epoch})")
    return ckpt.step


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
                    loss=opts["loss"], start_step=epoch * per_epoch, opt_state=state,
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
        raise Told from None
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
                   optimizer: Any, per_epoch: int, run_dir: Path, first_epoch: int) -> None:
    """Train with :func:`pnngraph.fit`, one chunk per epoch, checkpoints every epoch."""
    import pnngraph
    from pnngraph.run import dashboard

    clock = _Clock()
    epochs: _Epochs | None = None
    try:
        with _quiet_reconnects(), cluster_client(opts) as client:
            clock.lap("cluster start")
            n_workers = count_workers(client)
            if opts["strategy"] in ("data", "hybrid") and opts["shards"] is None:
                opts["shards"] = str(max(n_workers, 1))  # kept: a resumed run splits alike
            strategy = strategy_of(opts, model, n_workers)
            cluster = cluster_model(client, opts,
                                     pnngraph.compile.strategies.as_strategy(strategy))
            clock.lap("calibration")
            plural = "s" if n_workers != 1 else ""
            page = dashboard.attach(client)  # the run's live page, where the scheduler has one
            click.echo(f"cluster: {n_workers} worker{plural}; dashboard {client.dashboard_link}"
                       + (f" (this run: {page})" if page else "")
                       + f"; scheduler {opts['scheduler']}")
            epochs = _Epochs(client, opts, test_set, per_epoch, first_epoch,
                             _earlier_record(run_dir, opts, first_epoch, per_epoch),
                             len(train_set.X), run_dir)
            epochs.record.meta.update({"workers": n_workers, "steps per epoch": per_epoch})
            run_dir.mkdir(parents=True, exist_ok=True)
            epochs.record.save(run_dir / "run.json")  # the options, for --resume after a crash
            received_before = client.run(received_bytes)
            with flags():
                result = pnngraph.fit(
                    model, train_set, strategy=strategy, epochs=opts["epochs"],
                    batch_size=opts["batch_size"], optimizer=optimizer, seed=opts["seed"],
                    loss=opts["loss"], chunk_steps=per_epoch, chunk_seconds=1.0, client=client,
                    scheduler=opts["scheduler"],
                    cluster=cluster, progress=False, checkpoint_dir=run_dir / "checkpoints",
                    checkpoint_every=per_epoch, resume=opts["resume"],
                    on_graph=epochs.on_graph, on_chunk=epochs.on_chunk,
                    on_steps=epochs.bars.update, learn=cluster is not None,
                    adapt=opts["adapt"], adapt_threshold=opts["adapt_threshold"],
                )
            clock.lap("training", minus=epochs.evaluation)
            clock.laps["evaluation"] = epochs.evaluation
            epochs.remember()
            received = client.run(received_bytes)
    except (KeyboardInterrupt, ClusterLostError) as err:
        if epochs is None or epochs.last is None:
            raise
        epochs.bars.close()
        epochs.record.losses = epochs.last.losses.tolist()
        lost = isinstance(err, ClusterLostError)
        _finish(run_dir, epochs.last.model, epochs.record, opts, interrupted=epochs.epoch,
                why="the cluster was lost" if lost else "interrupted")
        if lost:
            raise
        raise Told from None
    clock.lap("cluster stop")
    record = epochs.record
    record.meta["strategy"] = epochs.strategy or repr(strategy)
    record.losses = result.losses.tolist()
    record.bytes_moved = {w: max(received[w] - received_before.get(w, 0), 0) for w in received}
    _finish(run_dir, result.model, record, opts, clock)


@contextlib.contextmanager
def _quiet_reconnects() -> Iterator[None]:
    """Hide the client's own log of its attempts to reach a lost scheduler (a traceback per
    attempt): the command says in one line what was lost and how to go on."""
    logs = [logging.getLogger(f"distributed.{name}") for name in ("client", "batched")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for log, level in zip(logs, levels, strict=True):
            log.setLevel(level)


def _earlier_record(run_dir: Path, opts: dict[str, Any], epoch: int, per_epoch: int) -> Any:
    """The record a run starts with: its options; a resumed run keeps the epochs, chunks and
    task records its run.json holds up to ``epoch``, where it continues."""
    from pnngraph.record import RunRecord

    record = RunRecord(options=_options(opts))
    path = run_dir / "run.json"
    if opts["resume"] and path.is_file():
        earlier = RunRecord.load(path)
        record.accuracy = [(e, a) for e, a in earlier.accuracy if e <= epoch]
        done = epoch * per_epoch
        record.chunks = [c for c in earlier.chunks if c.get("step", 0) <= done]
        record.planned = [r for r in earlier.planned if r.step is not None and r.step < done]
        record.measured = [r for r in earlier.measured if r.step is not None and r.step < done]
        record.meta = {k: v for k, v in earlier.meta.items() if k in ("strategy", "fan_in")}
    return record


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
                 first_epoch: int, record: Any, n_samples: int, run_dir: Path) -> None:
        self.client, self.opts, self.test_set, self.per_epoch = client, opts, test_set, per_epoch
        self.run_dir = run_dir
        self.n_samples = n_samples
        self.bars = _EpochBars(per_epoch, opts["epochs"], first_epoch)
        self.record = record
        self.epoch = first_epoch  # epochs done
        self.last: Any = None  # the result at the end of the newest epoch
        self.stream: list[dict[str, Any]] = []
        self.origin = time.time()  # the run's clock starts as fit starts: nothing is moved
        # a resumed run's records go on after the earlier runs' ones
        self.predicted = max((r.stop for r in record.planned), default=0.0)
        self.earlier = list(record.measured)
        self.shift = max((r.stop for r in self.earlier), default=0.0)
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
            if plan is not None and plan.peak_bytes:  # the report shows it with the run's meta
                top = max(plan.peak_bytes.values()) / 2**20
                self.record.meta["predicted_peak_mib"] = round(top)
                click.echo(f"predicted peak memory: {top:.0f} MiB on the busiest worker")
            if plan is not None and plan.fan_ins:  # fan_in="auto": the planner's choice
                self.record.meta["fan_in"] = plan.fan_ins[0][0]
                click.echo(f"gradient tree fan-in {plan.fan_ins[0][0]} (predicted fastest of "
                           + ", ".join(str(f) for f, _ in plan.fan_ins) + ")")

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
        entry = {"step": report.step, "measured": measured,
                 "predicted": None if plan is None else plan.wall_seconds}
        if report.result.shards and report.result.shards[-1]["sizes"]:  # samples per worker
            entry["shards"] = dict(report.result.shards[-1]["sizes"])
        self.record.chunks.append(entry)
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
        self.record.losses = report.result.losses.tolist()
        self.record.save(self.run_dir / "run.json")  # a run lost later resumes with these
        start = (epoch - 1) * self.per_epoch
        seconds = float(np.sum(report.result.step_seconds[start:hi]))
        _epoch_line(epoch, report.result.losses[start:hi], scores,
                    self._samples(start, hi) / seconds if seconds > 0 else None)
        self.record.measured = self.earlier + [
            replace(r, start=r.start + self.shift, stop=r.stop + self.shift)
            for r in (records_from_task_stream(self.stream, origin=self.origin)
                      if self.stream else [])]

    def _samples(self, lo: int, hi: int) -> int:
        from pnngraph.nn.train import batch_samples

        return batch_samples(self.n_samples, self.opts["batch_size"], lo, hi)


def _finish(run_dir: Path, model: Any, record: Any, opts: dict[str, Any],
            clock: _Clock | None = None, interrupted: int | None = None,
            why: str = "interrupted") -> None:
    """Write model.npz, run.json and report.html; say where. ``interrupted``: the epochs done
    when the run stopped early (``why``: Ctrl-C, a lost cluster), which can go on with
    ``--resume``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "model.npz")
    record.options = _options(opts)
    record.meta.update(_meta(opts, model, record))
    if clock is not None:
        record.meta["wall seconds"] = round(sum(clock.laps.values()), 3)
        record.meta["time"] = {k: round(v, 3) for k, v in clock.laps.items()}
    record.save(run_dir / "run.json")
    report = None if opts.get("no_report") else render(run_dir)
    if interrupted is not None:
        written = "model.npz, run.json" + (", report.html" if report else "")
        click.echo(f"{why} after epoch {interrupted} of {opts['epochs']}: {written} in "
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
    if opts["model_spec"] in ("mlp", "lstm"):
        meta["widths"] = opts["hidden"]
    meta.update({"data": opts["data"], "dtype": opts["dtype"], "epochs": opts["epochs"],
                 "batch size": opts["batch_size"], "optimizer": opts["optimizer"],
                 "learning rate": opts["lr"]})
    if opts["optimizer"] == "sgd":
        meta["momentum"] = opts["momentum"]
    for name in ("weight_decay", "clip_norm", "label_smoothing", "warmup_steps"):
        if opts[name]:
            meta[name.replace("_", " ")] = opts[name]
    if opts["lr_schedule"] != "constant":
        meta["learning-rate schedule"] = opts["lr_schedule"]
    meta.update({"seed": opts["seed"], "scheduler": opts["scheduler"]})
    per_epoch = record.meta.get("steps per epoch")
    if record.losses and per_epoch:
        meta["final train loss"] = round(float(np.mean(record.losses[-per_epoch:])), 6)
    if record.accuracy:
        meta["final test accuracy"] = round(record.accuracy[-1][1], 6)
    if "final test loss" in record.meta:
        meta["final test loss"] = round(float(record.meta["final test loss"]), 6)
    return meta


def render(run_dir: Path) -> Path:
    from pnngraph.record import RunRecord
    from pnngraph.report import render_run

    record = RunRecord.load(run_dir / "run.json")
    return render_run(run_dir / "report.html", record, title=f"pnngraph run {run_dir.name}")


