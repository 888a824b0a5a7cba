"""The scheduler dies in the middle of `pnngraph train`: the command stops within its --timeout
with one line that names the loss and the way on (--resume), keeping the epochs it finished; a
resumed run on a new scheduler ends with the bits of a run that was never stopped, and its
run.json holds every epoch's records, those before the loss included."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from pnngraph.nn import Sequential

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EPOCHS = 20
PER_EPOCH = 45  # digits' 1437 training samples in batches of 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def shell_cluster() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A `dask scheduler` and one `dask worker` started as processes on 127.0.0.1: (address,
    the scheduler's process)."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{_free_port()}"
    dask = [sys.executable, "-m", "dask"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port",
                               address.rsplit(":", 1)[1], "--dashboard-address", "127.0.0.1:0"],
                              **quiet)]
    try:
        procs.append(subprocess.Popen([*dask, "worker", address, "--nthreads", "1", "--host",
                                       "127.0.0.1", "--no-dashboard"], **quiet))
        with Client(address, timeout=60) as client:  # waits for the scheduler to listen
            client.wait_for_workers(1, timeout=60)
        yield address, procs[0]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=30)


def train(address: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pnngraph", "train", "--scheduler-address", address,
            "--timeout", "10", "--epochs", str(EPOCHS), "--strategy", "data",
            "--output-dir", str(out), *extra]


def test_a_lost_scheduler_stops_the_run_and_resume_goes_on_bitwise(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "run"
    with shell_cluster() as (address, scheduler):
        proc = subprocess.Popen(train(address, out), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            for line in proc.stdout:  # an event, not a clock: two epochs have finished
                if line.startswith("epoch 2:"):
                    break
            scheduler.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("Error: ClusterLostError: the run lost its scheduler at " + address), err
    assert "resume from checkpoint" in last and "--resume" in last, last
    assert "the cluster was lost after epoch" in err, err
    lost_at = json.loads((out / "run.json").read_text())["accuracy"][-1][0]
    assert 2 <= lost_at < EPOCHS

    with shell_cluster() as (address, _):
        resumed = subprocess.run(train(address, out, "--resume"), capture_output=True,
                                 text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        clean = subprocess.run(train(address, tmp_path / "clean"), capture_output=True,
                               text=True, timeout=300)
        assert clean.returncode == 0, clean.stderr[-3000:]

    a, b = (Sequential.load(p / "model.npz") for p in (out, tmp_path / "clean"))
    for la, lb in zip(a.params, b.params, strict=True):
        for k in la:
            np.testing.assert_array_equal(la[k], lb[k])
    info = json.loads((out / "run.json").read_text())
    assert [e for e, _ in info["accuracy"]] == list(range(1, EPOCHS + 1))
    assert len(info["losses"]) == EPOCHS * PER_EPOCH
    steps = {r["step"] for r in info["measured"] if r["step"] is not None}
    assert min(steps) < lost_at * PER_EPOCH <= max(steps), "earlier task records were lost"
    assert any(r["step"] is not None and r["step"] < lost_at * PER_EPOCH
               for r in info["planned"])
