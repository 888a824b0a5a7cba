"""What fit shows while it runs, and chunks cut to about a second so that it moves: a line per
epoch on a pipe, a moving line on a terminal; chunk ends never change the bits."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pnngraph import DataParallel, Pipeline, fit
from pnngraph.exceptions import ConfigError
from pnngraph.plan.cluster import simulated_cluster
from tests.graph.conftest import bitwise_equal, make_data, make_mlp

RUN = {"batch_size": 8, "lr": 0.1, "epochs": 3}  # 46 samples: 6 steps an epoch


@pytest.mark.parametrize("strategy", [DataParallel(2), Pipeline(2, 2)])
def test_chunks_of_a_few_seconds_change_nothing_in_the_results(strategy):
    X, y = make_data("mlp")
    whole = fit(make_mlp(), (X, y), strategy=strategy, progress=False, **RUN)
    ends: list[int] = []
    cut = fit(make_mlp(), (X, y), strategy=strategy, progress=False, chunk_seconds=1e-6,
              on_chunk=lambda report: ends.append(report.step), **RUN)
    # after the first two (submitted before anything was measured) a chunk is one step
    assert ends[:2] == [6, 12] and ends[2:] == list(range(13, 19))
    assert bitwise_equal(cut.params, whole.params)
    np.testing.assert_array_equal(cut.losses, whole.losses)


def test_the_first_chunk_is_cut_where_its_plan_predicts_it_long():
    """A cluster 10^8 times slower than this machine: the plan of one epoch predicts far more
    than a second, so the first chunk is shorter than an epoch."""
    X, y = make_data("mlp")
    slow = simulated_cluster(cpus=2, gpus=0, cpu_gflops=1e-6)
    ends: list[int] = []
    fit(make_mlp(), (X, y), strategy=DataParallel(2), cluster=slow, progress=False,
        chunk_seconds=1.0, on_chunk=lambda report: ends.append(report.step), **RUN)
    assert ends[0] < 6 and ends[-1] == 18


def test_chunk_seconds_must_be_positive():
    X, y = make_data("mlp")
    with pytest.raises(ConfigError, match="chunk_seconds: expected a number of seconds > 0"):
        fit(make_mlp(), (X, y), strategy=DataParallel(1), chunk_seconds=0, **RUN)


def test_a_pipe_gets_one_line_per_epoch(capsys):
    X, y = make_data("mlp")
    result = fit(make_mlp(), (X, y), strategy=DataParallel(2), progress=True, **RUN)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    for epoch, line in enumerate(lines, start=1):
        mean = np.mean(result.losses[(epoch - 1) * 6 : epoch * 6])
        assert line.startswith(f"epoch {epoch}/3: mean loss {mean:.4f}, ")
        assert line.endswith(" samples/s")


SCRIPT = textwrap.dedent("""
    from pnngraph import DataParallel, fit
    from tests.graph.conftest import make_data, make_mlp
    X, y = make_data("mlp")
    fit(make_mlp(), (X, y), strategy=DataParallel(2), batch_size=8, lr=0.1, epochs=3,
        chunk_seconds=1e-6)
""")


def test_a_terminal_gets_a_line_that_moves():
    """fit on a real pseudo-terminal: the line is redrawn in place (carriage returns) with the
    steps done, the loss of the newest chunk and the samples per second."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=root, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the terminal closed: the process ended
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    text = b"".join(chunks).decode()
    assert "\rtraining: 13/18 steps, epoch 3/3, loss " in text
    assert "samples/s" in text and "epoch 3/3: mean loss " in text
