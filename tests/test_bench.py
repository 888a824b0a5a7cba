"""The benchmark scripts run end to end at toy sizes (their numbers are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
TOY = ["--rounds", "1", "--steps", "1", "--hidden", "32", "--batch", "256"]


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.cluster
def test_throughput_benchmark_prints_its_table():
    pytest.importorskip("sklearn")
    out = run("throughput.py", *TOY)
    assert "OPENBLAS variables" in out and "(b )DataParallel(2)" in out and "(d )" in out
    assert "(e )DataParallel(2), LocalCluster 2x1 (transformer)" in out


@pytest.mark.slow
@pytest.mark.cluster
def test_placement_benchmark_prints_its_tables():
    out = run("placement.py", *TOY)
    assert "HEFT/Dask" in out and "mixed, HEFT, shards='auto'" in out


@pytest.mark.slow
def test_periodic_benchmark_prints_both_tables():
    out = run("periodic.py", "--quick", "--rounds", "1", "--steps", "20")
    assert "| ModelAveraging(4, 5) | 100 |" in out and "| periodic | 323 |" in out


@pytest.mark.slow
def test_schedulers_benchmark_quick():
    out = run("schedulers.py", "--quick")
    assert "heft" in out and "best" in out


@pytest.mark.slow
@pytest.mark.cluster
def test_honest_benchmark_prints_a_row_per_candidate():
    out = run("honest.py", "--sizes", "tiny", "--steps", "3", "--rounds", "1")
    assert "numpy loop" in out and "vs loop" in out
    for row in ("serial reference trainer", "DataParallel(1)", "DataParallel(2)", "auto"):
        assert row in out, row


@pytest.mark.slow
@pytest.mark.cluster
def test_step_profile_splits_a_data_parallel_step():
    out = run("step_profile.py", "--hidden", "32", "--batch", "256", "--steps", "3",
              "--rounds", "1")
    assert "compute: grad" in out and "waiting" in out and "submission" in out


@pytest.mark.slow
def test_finite_check_benchmark_prints_its_table():
    out = run("finite_check.py", *TOY)
    assert "on/off" in out and "(d) MLP 784-32-32-10" in out and "check alone, MLP" in out


@pytest.mark.slow
def test_loaders_benchmark_prints_a_row_per_loader():
    out = run("loaders.py", "--gib", "0.0625")
    assert "memory ratio" in out and "expected float64[3]" in out
    for row in ("checkpoint", "Sequential.load", "data.load_npz"):
        assert row in out, row


@pytest.mark.slow
@pytest.mark.cluster
def test_faults_benchmark_prints_a_row_per_case():
    out = run("faults.py", "--rounds", "1", "--steps", "30", "--only", "DataParallel(3)",
              "--faults", "state")
    assert "DataParallel(3)          compute  state" in out and " fit " in out
    assert "1/1" in out


@pytest.mark.slow
@pytest.mark.cluster
def test_long_run_benchmark_prints_memory_rows():
    out = run("long_run.py", "--steps", "40", "--every", "20")
    assert "scheduler MB" in out and "after" in out and "40 steps in" in out


@pytest.mark.slow
def test_recurrent_benchmark_prints_its_ratios():
    out = run("recurrent.py", "--rounds", "1", "--steps", "2", "--hidden", "8", "--batch", "16")
    assert "LSTM(8), T=2, batch 16" in out and "batch 1 / batch 16" in out and "LSTM / Dense" in out


@pytest.mark.slow
def test_scaling_benchmark_prints_its_tables():
    out = run("scaling.py", "--sizes", "4", "--models", "digits", "--kinds", "cpu,mixed",
              "--gbit", "10")
    assert "predictions only" in out and "ring ms" in out and "digits cpu" in out
    assert "seconds to make one plan" in out and "strategy='auto' at 10 Gbit/s" in out


@pytest.mark.slow
@pytest.mark.cluster
def test_memory_benchmark_prints_predicted_and_measured_peaks():
    out = run("memory.py", "--quick", "--steps", "1")
    assert "predicted / measured" in out and "within 20 %" in out
    assert "Pipeline(2, 4)" in out and "auto near the limit" in out


def test_stragglers_benchmark_prints_its_tables():
    out = run("stragglers.py", "--quick")
    assert "| equal split, DataParallel(3) |" in out and "adaptive / best split" in out
    assert "scenario 2" in out and "samples per worker per chunk" in out
    assert "scenario 3" in out and "after the change, adaptive / equal split" in out
