"""The command line: training on the embedded cluster, on a cluster started from the shell,
planning from a cluster file, calibration, re-rendering a report, and one-line errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from pnngraph.cli import main
from pnngraph.nn import Sequential


def run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.cluster
def test_train_short_on_the_embedded_cluster_writes_a_run(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "run"
    result = run("train", "--epochs", "2", "--output-dir", str(out), "--strategy", "data")
    assert result.exit_code == 0, result.output
    assert "epoch 2: train loss" in result.output and "dashboard http://127.0.0.1:" in result.output
    for name in ("model.npz", "report.html", "run.json"):
        assert (out / name).exists(), name
    assert list((out / "checkpoints").glob("ckpt-*.npz"))
    info = json.loads((out / "run.json").read_text())
    assert len(info["losses"]) == 2 * 45 and info["planned"] and info["measured"]
    assert Sequential.load(out / "model.npz").input_shape == (64,)
    again = run("report", str(out))
    assert again.exit_code == 0 and "report written" in again.output


@pytest.mark.cluster
@pytest.mark.parametrize("strategy", ["data", "averaging"])
def test_resume_continues_from_the_last_checkpoint(tmp_path, strategy):
    """Averaging with 4 local steps: epochs of 45 steps end mid-period, and still resume."""
    pytest.importorskip("sklearn")
    out = tmp_path / "run"
    common = ["train", "--no-report", "--strategy", strategy, "--local-steps", "4"]
    assert run(*common, "--output-dir", str(out), "--epochs", "1").exit_code == 0
    resumed = run(*common, "--output-dir", str(out), "--epochs", "2", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from" in resumed.output and "epoch 2: train loss" in resumed.output
    straight = tmp_path / "straight"
    assert run(*common, "--output-dir", str(straight), "--epochs", "2").exit_code == 0
    a, b = Sequential.load(out / "model.npz"), Sequential.load(straight / "model.npz")
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(a.params, b.params, strict=True)
               for k in x)


@pytest.mark.slow
@pytest.mark.cluster
def test_default_train_reaches_95_percent_on_digits(tmp_path, monkeypatch):
    """`pnngraph train` with no options (the README's main job), run from an empty folder."""
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    result = run("train")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["accuracy"][-1][1] >= 0.95
    assert (run_dir / "report.html").exists() and list((run_dir / "checkpoints").iterdir())
    # a tiny model: one worker (a second could not help), the choice said, the time broken down
    assert "cluster: 1 worker;" in result.output and "strategy: DataParallel" in result.output
    (line,) = [t for t in result.output.splitlines() if t.startswith("time: ")]
    for phase in ("cluster start", "calibration", "training", "evaluation", "report"):
        assert f"{phase} " in line
    assert set(info["meta"]["time"]) >= {"cluster start", "calibration", "training"}
    # each epoch's prediction beside its measurement, the planned records end to end
    assert len(info["chunks"]) == 20 and all(c["predicted"] > 0 for c in info["chunks"])
    total = sum(c["predicted"] for c in info["chunks"])
    last_stop = max(r["stop"] for r in info["planned"])
    assert total - info["chunks"][-1]["predicted"] <= last_stop <= total + 1e-9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.cluster
def test_train_on_a_scheduler_and_two_workers_started_from_the_shell(tmp_path):
    pytest.importorskip("sklearn")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    procs = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", "127.0.0.1:0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(1.0)
        procs += [subprocess.Popen([*dask, "worker", address, "--nthreads", "1", "--host",
                                    "127.0.0.1", "--no-dashboard"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for _ in range(2)]
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        proc = subprocess.run(
            [sys.executable, "-m", "pnngraph", "train", "--scheduler-address", address,
             "--epochs", "2", "--strategy", "data", "--output-dir", str(tmp_path / "run")],
            capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "cluster: 2 workers" in proc.stdout and "epoch 2: train loss" in proc.stdout
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_plan_from_a_cluster_file(tmp_path):
    pytest.importorskip("sklearn")
    spec = tmp_path / "cluster.yaml"
    spec.write_text(
        "workers:\n"
        "  - {name: cpu, gflops: 20, count: 4}\n"
        "  - {name: gpu, backend: cupy, gflops: 400, host_device_gb_per_s: 12}\n"
    )
    out = tmp_path / "plan.html"
    result = run("plan", "--cluster-file", str(spec), "--strategy", "data", "--shards", "auto",
                 "--batch-size", "256", "--hidden", "512,512", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "plan: heft, predicted wall time" in result.output and "gpu: " in result.output
    assert out.exists() and "Bokeh" in out.read_text()[:20000]


@pytest.mark.cluster
def test_plan_on_the_embedded_cluster(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "plan.html"
    result = run("plan", "--workers", "2", "--strategy", "data", "--shards", "2", "--steps", "2",
                 "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "plan: heft, predicted wall time" in result.output
    assert "tcp://127.0.0.1:" in result.output
    assert out.exists()


@pytest.mark.cluster
def test_calibrate_prints_the_cluster(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    result = run("calibrate", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "dependent hop" in result.output and "GFLOP/s" in result.output
    assert "spread" in result.output and "data in a graph" in result.output
    assert list((tmp_path / "pnngraph").glob("cluster-*.json"))


def test_train_serially_on_an_npz_with_the_cnn(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 1, 6, 6))
    y = (X[:, 0, 0, 0] > 0).astype(int)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    result = run("train", "--data", str(tmp_path / "d.npz"), "--model", "cnn", "--epochs", "1",
                 "--strategy", "serial", "--output-dir", str(tmp_path / "run"), "--no-report")
    assert result.exit_code == 0, result.output
    assert "model: cnn" in result.output and (tmp_path / "run" / "model.npz").exists()
