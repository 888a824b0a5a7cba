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

from pathlib import Path
from typing import Any

import click
import numpy as np

from pnngraph.cli.options import (
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
    strategy_of,
)
from pnngraph.cli.training import log_changes, render, train
from pnngraph.exceptions import ConfigError


@click.group()
@click.version_option(package_name="pnngraph")
def main() -> None:
    """Train neural networks in parallel as scheduled Dask task graphs."""


main.add_command(train)


# -------------------------------------------------------------------------------------- plan
@main.command()
@model_options
@click.option("--steps", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--cluster-file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Plan for the cluster this YAML file describes instead of a live one.")
@click.option("--output", default="plan.html", show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the Gantt chart.")
@cluster_options
@fail_cleanly
def plan(**opts: Any) -> None:
    """Build and schedule a training graph without running it."""
    import yaml

    import pnngraph
    from pnngraph.plan.cluster import cluster_from_spec
    from pnngraph.record import records_from_slots
    from pnngraph.report import render_report

    if opts["strategy"] == "serial":
        raise ConfigError("--strategy", "a parallel strategy to plan", "serial")
    log_changes()  # what the memory guard changed so that the plan fits
    if not opts["cluster_file"]:
        check_devices(opts)
    model, train_set, _, optimizer = prepare(opts)
    if not opts["cluster_file"]:  # before the cluster starts
        if opts["workers"] is None:
            opts["workers"] = 2
        check_strategy(opts, model, train_set, optimizer, steps=opts["steps"])
    kw = {"steps": opts["steps"], "batch_size": opts["batch_size"], "optimizer": optimizer,
          "loss": opts["loss"], "seed": opts["seed"], "scheduler": opts["scheduler"],
          "fan_in": "auto"}  # predictions only: the planner may choose the tree
    if opts["cluster_file"]:
        try:
            spec = yaml.safe_load(Path(opts["cluster_file"]).read_text())
        except yaml.YAMLError as err:
            raise ConfigError("--cluster-file", "a YAML cluster description", str(err)) from None
        cluster = cluster_from_spec(spec)
        strategy = strategy_of(opts, model, len(cluster.workers))
        with flags():
            graph = pnngraph.build(model, train_set, strategy=strategy, cluster=cluster, **kw)
    else:
        with cluster_client(opts) as client:
            strategy = strategy_of(opts, model, count_workers(client))
            cluster = cluster_model(client, opts, None)  # a prediction needs the speeds
            with flags():
                graph = pnngraph.build(model, train_set, strategy=strategy, client=client,
                                       cluster=cluster, **kw)
    click.echo(f"{graph!r}; strategy {graph.strategy!r}")
    if graph.plan is None:
        click.echo(f"scheduler {opts['scheduler']!r}: no cluster model, nothing to predict")
        return
    click.echo(graph.plan.summary())
    steps = graph.plan.step_makespans()
    if steps:
        click.echo(f"predicted seconds per step: {np.mean(list(steps.values())):.4f}")
    if isinstance(graph.strategy, pnngraph.DataParallel) and graph.strategy.shards > 1:
        _echo_ring_bound(graph, model, opts["batch_size"], cluster, optimizer)
    out = render_report(opts["output"], title="pnngraph plan",
                        planned=records_from_slots(graph.plan.predicted.slots),
                        meta={"strategy": repr(graph.strategy),
                              "scheduler": graph.plan.algorithm})
    click.echo(f"Gantt chart written to {out}")


def _echo_ring_bound(graph: Any, model: Any, batch_size: int, cluster: Any,
                     optimizer: Any) -> None:
    """The ring all-reduce lower bound of a step of ``model`` on the workers the plan uses."""
    from pnngraph.plan.scaling import ring_bound

    used = sorted(set(graph.plan.placement.values()))
    bound = ring_bound(model, batch_size, cluster, optimizer, addresses=used)
    click.echo(f"ring all-reduce lower bound per step on {bound.workers} workers: "
               f"{bound.seconds:.4g} s (compute {bound.compute_seconds:.4g} s, all-reduce "
               f"{bound.allreduce_seconds:.4g} s; its hops would add "
               f"{bound.latency_seconds:.4g} s)")


# --------------------------------------------------------------------------------- calibrate
@main.command()
@click.option("--refresh", is_flag=True,
              help="Measure again even when this cluster's calibration is cached.")
@cluster_options
@fail_cleanly
def calibrate(refresh: bool, **opts: Any) -> None:
    """Measure the cluster's speeds and Dask's costs, and cache them."""
    check_devices(opts)
    with cluster_client(opts) as client:
        model = cluster_model(client, opts, None, refresh=refresh)
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
@fail_cleanly
def report(run_dir: str) -> None:
    """Render RUN_DIR/report.html again from RUN_DIR/run.json."""
    click.echo(f"report written to {render(Path(run_dir))}")
