"""The command line: training on the embedded cluster, on a cluster started from the shell,
planning from a cluster file, calibration, re-rendering a report, and one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pnngraph.cli import main
from pnngraph.nn import Sequential
from pnngraph.record import RunRecord
from tests.shell import make_ca, port_taken, shell_cluster

ERRORS_DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.cluster
def test_train_short_on_the_embedded_cluster_writes_a_run(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "run"
    with port_taken(8787):  # the default dashboard port: another cluster has it
        result = run("train", "--epochs", "2", "--output-dir", str(out), "--strategy", "data")
    assert result.exit_code == 0, result.output
    assert "epoch 2: mean train loss" in result.output and "samples/s" in result.output
    # the dashboard on a free port instead, said in one line, and where it is
    assert "warning: Port 8787 is already in use." in result.output
    (dashboard,) = re.findall(r"dashboard (http://127\.0\.0\.1:\d+)/status", result.output)
    assert not dashboard.endswith(":8787")
    assert "epoch 1/2" not in result.output  # no progress bar where the output is not a terminal
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
    assert run(*common, "--output-dir", str(out), "--epochs", "1", "--lr", "0.05").exit_code == 0
    # the run's options come from its run.json; given again, they must agree
    other = run("train", "--output-dir", str(out), "--epochs", "2", "--resume", "--lr", "0.2")
    assert other.exit_code == 2
    assert "--lr: expected the run's own options (--lr 0.05" in other.output
    resumed = run("train", "--no-report", "--output-dir", str(out), "--epochs", "2", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from" in resumed.output and "epoch 2: mean train loss" in resumed.output
    info = json.loads((out / "run.json").read_text())
    assert [e for e, _ in info["accuracy"]] == [1, 2] and info["options"]["lr"] == 0.05
    # the first epoch's chunks are kept (chunks last about a second: a slow machine cuts an
    # epoch in more of them, and each epoch ends one)
    ends = [c["step"] for c in info["chunks"]]
    assert ends == sorted(set(ends)) and {45, 90} <= set(ends) and ends[-1] == 90
    straight = tmp_path / "straight"
    assert run(*common, "--output-dir", str(straight), "--epochs", "2",
               "--lr", "0.05").exit_code == 0
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
    # each chunk's prediction beside its measurement, the planned records end to end; chunks
    # last about a second, so a slow machine cuts an epoch in more of them, but every epoch
    # ends one (a checkpoint is written there)
    ends = [c["step"] for c in info["chunks"]]
    assert ends == sorted(set(ends)) and set(range(45, 20 * 45 + 1, 45)) <= set(ends)
    assert ends[-1] == 20 * 45 and all(c["predicted"] > 0 for c in info["chunks"])
    total = sum(c["predicted"] for c in info["chunks"])
    last_stop = max(r["stop"] for r in info["planned"])
    assert total - info["chunks"][-1]["predicted"] <= last_stop <= total + 1e-9


@pytest.mark.slow
@pytest.mark.cluster
def test_train_on_a_scheduler_and_two_workers_started_from_the_shell(tmp_path):
    pytest.importorskip("sklearn")
    with shell_cluster(tmp_path, workers=2) as address:
        proc = subprocess.run(
            [sys.executable, "-m", "pnngraph", "train", "--scheduler-address", address,
             "--epochs", "2", "--strategy", "data", "--output-dir", str(tmp_path / "run")],
            capture_output=True, text=True, timeout=300,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cluster: 2 workers" in proc.stdout and "epoch 2: mean train loss" in proc.stdout


# ----------------------------------------------------------------------- a tls:// scheduler
@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """A TLS scheduler and one worker started from the shell, their files from a throwaway
    CA: (address, the CA's files, a folder for the test)."""
    pytest.importorskip("cryptography")
    folder = tmp_path_factory.mktemp("tls")
    ca = make_ca(folder / "ca")
    with shell_cluster(folder, workers=1, tls=ca) as address:
        yield address, ca, folder


@pytest.mark.slow
@pytest.mark.cluster
def test_train_on_a_tls_scheduler(tls_cluster):
    pytest.importorskip("sklearn")
    address, ca, folder = tls_cluster
    assert address.startswith("tls://127.0.0.1:")
    out = folder / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "pnngraph", "train", "--scheduler-address", address,
         *ca.dask_args(), "--epochs", "1", "--hidden", "8", "--no-report",
         "--output-dir", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cluster: 1 worker;" in proc.stdout and "epoch 1: mean train loss" in proc.stdout
    assert Sequential.load(out / "model.npz").input_shape == (64,)


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.parametrize("refused_by", ["client", "scheduler"])
def test_a_foreign_ca_is_refused_in_one_line(tls_cluster, refused_by):
    """A CA file that did not sign the scheduler's certificate (the client refuses the
    scheduler), or a client certificate the scheduler's CA did not sign (the scheduler refuses
    the client): the TLS options and the address named, OpenSSL's reason, exit code 2."""
    address, ca, folder = tls_cluster
    other = make_ca(folder / f"other-{refused_by}")
    ca_file = other.ca_file if refused_by == "client" else ca.ca_file
    result = run("train", "--data", "spirals", "--scheduler-address", address,
                 "--tls-ca-file", str(ca_file),
                 "--tls-cert", str(other.cert), "--tls-key", str(other.key), "--timeout", "60")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = [t for t in result.output.splitlines() if t.startswith("Error:")]
    documented = ("Error: ConfigError: --tls-ca-file/--tls-cert/--tls-key: expected TLS files "
                  "from the CA of the scheduler at tls://127.0.0.1:PORT, got 'TLS handshake "
                  "failed: ")
    assert documented in ERRORS_DOC.read_text()
    assert line.replace(address, "tls://127.0.0.1:PORT").startswith(documented), line
    assert line.endswith("'") and len(line) < len(documented) + 200


def test_handshake_failures_are_told_from_other_connection_errors():
    import ssl

    from distributed.comm.core import CommClosedError, FatalCommClosedError

    from pnngraph.run.session import handshake_failure

    def chained(outer, inner):
        try:
            try:
                raise inner
            except BaseException as err:
                raise outer from err
        except BaseException as err:
            return err

    alert = FatalCommClosedError("in <TLS>: SSLError: [SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert "
                                 "unknown ca (_ssl.c:2580)")
    assert handshake_failure(alert) == "TLS handshake failed: tlsv1 alert unknown ca"
    verify = chained(FatalCommClosedError("TLS certificate does not match."),
                     ssl.SSLCertVerificationError(
                         1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                            "self-signed certificate in certificate chain (_ssl.c:1006)"))
    assert handshake_failure(verify) == ("TLS handshake failed: certificate verify failed: "
                                         "self-signed certificate in certificate chain")
    eof = chained(CommClosedError("in <TLS>: SSLEOFError"), ssl.SSLEOFError(8, "EOF occurred"))
    assert handshake_failure(eof).startswith("TLS handshake failed: the scheduler closed")
    refused = chained(OSError("Timed out trying to connect"), ConnectionRefusedError(111, "no"))
    assert handshake_failure(refused) is None


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


def test_plan_says_what_the_memory_guard_changed(tmp_path):
    spec = tmp_path / "cluster.yaml"
    spec.write_text("workers:\n  - {name: cpu, gflops: 50, count: 2, memory_gb: 0.75}\n")
    args = ("plan", "--cluster-file", str(spec), "--hidden", "1280,1280,1280,1280,1280",
            "--strategy", "pipeline", "--stages", "2", "--microbatches", "4", "--optimizer",
            "adam", "--batch-size", "128", "--output", str(tmp_path / "plan.html"))
    for _ in range(2):  # a second command in the same process writes to its own streams
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert "pnngraph: Pipeline(stages=2, layer_counts=None, microbatches=4) does not fit " \
            "in the workers' memory as planned" in result.stderr
        assert "its stages one per worker (scheduler 'static', not 'heft')" in result.stderr
        assert "plan: static, predicted wall time" in result.stdout


def test_plan_of_a_model_file_with_batchnorm(tmp_path):
    """BatchNorm's rounds and statistics are priced and placed like every other task."""
    pytest.importorskip("sklearn")
    from pnngraph.nn import BatchNorm, Conv2D, Dense, Flatten, ReLU, Residual, Sequential

    model = Sequential([Conv2D(4, 3, padding=1), BatchNorm(), ReLU(),
                        Residual([Conv2D(4, 3, padding=1), BatchNorm(), ReLU()]), Flatten(),
                        Dense(10)], input_shape=(1, 8, 8))
    (tmp_path / "bn.json").write_text(json.dumps(model.config()))
    (tmp_path / "cluster.yaml").write_text("workers:\n  - {name: cpu, gflops: 50, count: 3}\n")
    out = tmp_path / "plan.html"
    result = run("plan", "--model", str(tmp_path / "bn.json"), "--cluster-file",
                 str(tmp_path / "cluster.yaml"), "--strategy", "data", "--shards", "3",
                 "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "segment" in result.output and "stats" in result.output
    assert "plan: heft, predicted wall time" in result.output and out.exists()
    refused = run("plan", "--model", str(tmp_path / "bn.json"), "--cluster-file",
                  str(tmp_path / "cluster.yaml"), "--strategy", "pipeline")
    assert refused.exit_code == 2
    assert "BatchNorm 'batchnorm1' strategy: expected DataParallel" in refused.output


def test_plan_on_a_file_of_sixty_four_workers(tmp_path):
    pytest.importorskip("sklearn")
    spec = tmp_path / "cluster.yaml"
    spec.write_text(
        "network_gbit_per_s: 10\n"
        "hop_latency_ms: 1\n"
        "workers:\n"
        "  - {name: cpu, gflops: 100, count: 56}\n"
        "  - {name: gpu, backend: cupy, gflops: 2000, count: 8}\n"
    )
    out = tmp_path / "plan.html"
    result = run("plan", "--cluster-file", str(spec), "--strategy", "data", "--shards", "64",
                 "--batch-size", "512", "--steps", "1", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "plan: heft, predicted wall time" in result.output
    assert "... and 56 more workers" in result.output  # the busiest 8 of 64 listed
    assert "fan-in " in result.output and "predicted fastest per step (" in result.output
    assert "ring all-reduce lower bound per step on 64 workers" in result.output
    assert out.exists()


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


def test_training_options_reach_the_trainer(tmp_path):
    """--model resnet with AdamW, a warmed-up cosine schedule, clipping and label smoothing: the
    model saved equals the Python API's with the same options."""
    import pnngraph
    from pnngraph.data import load
    from pnngraph.nn.presets import resnet
    from pnngraph.nn.schedules import Cosine, Warmup

    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 1, 4, 4))
    y = (X[:, 0, 0, 0] > 0).astype(int)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    result = run("train", "--data", str(tmp_path / "d.npz"), "--model", "resnet", "--epochs", "2",
                 "--batch-size", "10", "--optimizer", "adamw", "--lr", "0.01",
                 "--weight-decay", "0.05", "--lr-schedule", "cosine", "--warmup-steps", "3",
                 "--clip-norm", "0.5", "--label-smoothing", "0.1", "--strategy", "serial",
                 "--output-dir", str(tmp_path / "run"), "--no-report")
    assert result.exit_code == 0, result.output
    train, _ = load(str(tmp_path / "d.npz")).split(0.2, 0)
    optimizer = pnngraph.AdamW(Warmup(Cosine(0.01, total_steps=2 * 4 - 3), 3),
                               weight_decay=0.05, clip_norm=0.5)
    reference = pnngraph.train_serial(resnet((1, 4, 4), 2), train.X, train.y, epochs=2,
                                      batch_size=10, optimizer=optimizer, label_smoothing=0.1)
    saved = Sequential.load(tmp_path / "run" / "model.npz")
    assert all(np.array_equal(a[k], b[k]) for a, b in
               zip(saved.params, reference.params, strict=True) for k in a)
    options = RunRecord.load(tmp_path / "run" / "run.json").options
    assert options["lr_schedule"] == "cosine" and options["schedule_epochs"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(("args", "model"), [
    (["--data", "python-source", "--model", "transformer", "--optimizer", "adamw",
      "--lr", "0.003"], "transformer"),
    (["--model", "lstm", "--hidden", "16", "--optimizer", "adam", "--lr", "0.01"], "lstm"),
])
def test_sequence_presets_train_from_the_command_line(args, model, tmp_path):
    pytest.importorskip("sklearn")
    result = run("train", *args, "--epochs", "1", "--strategy", "serial", "--output-dir",
                 str(tmp_path / "run"), "--no-report")
    assert result.exit_code == 0, result.output
    assert f"model: {model}" in result.output and "test accuracy" in result.output
    kinds = [layer.kind for layer in Sequential.load(tmp_path / "run" / "model.npz").layers]
    assert kinds[0] == {"transformer": "embedding", "lstm": "lstm"}[model]


# ------------------------------------------------------------------ refused before any cluster
@contextlib.contextmanager
def _no_cluster(opts):
    raise AssertionError("a cluster was started for options that could be checked without one")
    yield


@pytest.mark.parametrize("args, message", [
    (["--strategy", "pipeline", "--stages", "5"],
     "--stages: expected at most the model's 3 layers, got 5"),
    (["--strategy", "data", "--shards", "100"],
     "--shards: expected at most the smallest batch's 30 samples, got 100"),
    (["--strategy", "pipeline", "--microbatches", "64"],
     "--microbatches: expected at most the smallest shard's 30 samples, got 64"),
    (["--emulate-gpu"], "--emulate-gpu: expected --gpu-workers N (the GPU workers to emulate)"),
    (["--adapt-threshold", "0"],
     "--adapt-threshold: expected a fraction > 0 (0.25: 25 % off), got 0"),
    (["--strategy", "serial", "--resume"], "--resume: expected a run on a cluster"),
    (["--lr-schedule", "step:two"],
     "--lr-schedule: expected constant, cosine or step:EPOCHS[:GAMMA] with EPOCHS a positive "
     "integer, got 'step:two'"),
    (["--model", "resnet", "--data", "spirals"],
     "--model resnet: expected square images or (C, H, W) samples, got (2,)"),
])
def test_bad_options_are_refused_before_a_cluster_starts(args, message, tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setattr("pnngraph.cli.training.cluster_client", _no_cluster)
    result = run("train", "--output-dir", str(tmp_path / "run"), *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.parametrize("leftover", ["run.json", "checkpoints/ckpt-00000045.npz"])
def test_a_used_run_directory_needs_resume(leftover, tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setattr("pnngraph.cli.training.cluster_client", _no_cluster)
    path = tmp_path / "run" / leftover
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    result = run("train", "--output-dir", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "--output-dir: expected a new run directory (or --resume to continue the run in it)" \
        in result.output


@pytest.mark.cluster
def test_resume_on_other_data_is_refused_before_a_cluster_starts(tmp_path, monkeypatch):
    """The data file of a run changed in place (the same shapes, another order): --resume
    refuses it by the checkpoint's fingerprint of the data, before a cluster starts."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4))
    y = (X[:, 0] > 0).astype(int)
    data, out = tmp_path / "d.npz", tmp_path / "run"
    np.savez(data, X=X, y=y)
    first = run("train", "--data", str(data), "--epochs", "1", "--strategy", "data",
                "--shards", "2", "--output-dir", str(out), "--no-report")
    assert first.exit_code == 0, first.output
    np.savez(data, X=X[::-1], y=y[::-1])
    monkeypatch.setattr("pnngraph.cli.training.cluster_client", _no_cluster)
    again = run("train", "--output-dir", str(out), "--epochs", "2", "--resume")
    assert again.exit_code == 2, again.output
    (line,) = [x for x in again.output.splitlines() if x.startswith("Error:")]
    line = re.sub(r"blake2b:[0-9a-f]{32}", "blake2b:HASH", line.replace(str(tmp_path), "TMP"))
    assert line == ("Error: ConfigError: --data: expected the same X and y (fingerprint "
                    "blake2b:HASH) as in checkpoint TMP/run/checkpoints/ckpt-00000001.npz, got "
                    "'other data (fingerprint blake2b:HASH)'")
    assert f"`{line}`" in (Path(__file__).parent.parent / "docs" / "errors.md").read_text()


def test_gpu_workers_without_cupy_say_what_to_install(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setattr("pnngraph.cli.training.cluster_client", _no_cluster)
    monkeypatch.setitem(sys.modules, "cupy", None)  # as on a machine without CuPy
    result = run("train", "--gpu-workers", "1", "--output-dir", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert ("--gpu-workers: expected CuPy installed (pip install 'pnngraph[gpu]') (or "
            "--emulate-gpu), got 'cupy'") in result.output


def test_emulated_gpus_without_the_emulator_say_what_to_install(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setattr("pnngraph.cli.training.cluster_client", _no_cluster)
    monkeypatch.setitem(sys.modules, "array_api_strict", None)
    result = run("train", "--gpu-workers", "1", "--emulate-gpu",
                 "--output-dir", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert ("--emulate-gpu: expected the emulated device installed (pip install "
            "'pnngraph[emulate]')") in result.output


def test_resume_without_output_dir_continues_the_newest_run(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("pnngraph.cli.training.cluster_client", _no_cluster)
    none = run("train", "--resume")
    assert none.exit_code == 2 and "--resume: expected a run to continue in runs/" in none.output
    newest, older = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    for d, stamp in ((newest, 2e9), (older, 1e9)):  # "a" was modified last: the newest run
        d.mkdir(parents=True)
        RunRecord(options={"lr": 0.5}).save(d / "run.json")
        os.utime(d, (stamp, stamp))
    result = run("train", "--resume", "--lr", "0.2")
    assert result.exit_code == 2 and f"in {Path('runs') / 'a' / 'run.json'}" in result.output


# ------------------------------------------------------------------------------------ Ctrl-C
@pytest.mark.slow
@pytest.mark.cluster
def test_ctrl_c_stops_quietly_and_keeps_what_finished(tmp_path):
    """SIGINT to the whole process group, as a terminal sends it: one line, exit 130, the
    finished epochs written, and the run goes on with --resume."""
    pytest.importorskip("sklearn")
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pnngraph", "train", "--epochs", "500", "--workers", "2",
         "--strategy", "data", "--output-dir", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for line in proc.stdout:  # an event, not a clock: the first epoch has finished
            if line.startswith("epoch 1:"):
                break
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted after epoch" in err and "--resume" in err
    for name in ("model.npz", "run.json", "report.html"):
        assert (out / name).exists(), name
    info = json.loads((out / "run.json").read_text())
    assert info["accuracy"] and len(info["losses"]) == 45 * info["accuracy"][-1][0]
    assert Sequential.load(out / "model.npz").input_shape == (64,)
