"""The command line, run in-process with click's runner."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from pnngraph.cli import main
from pnngraph.nn import Sequential


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_train_on_digits_reports_epochs_and_writes_the_model(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "model.npz"
    result = run("train", "--epochs", "2", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "epoch 2: train loss" in result.output and "test accuracy" in result.output
    model = Sequential.load(out)
    assert model.input_shape == (64,)


def test_train_cnn_preset_on_an_npz(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 1, 6, 6))
    y = (X[:, 0, 0, 0] > 0).astype(int)
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y)
    result = run("train", "--data", str(path), "--model", "cnn", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "model: cnn" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "nope"], "ConfigError: data: expected"),
        (["--model", "resnet"], "ConfigError: --model: expected a preset"),
        (["--hidden", "a,b"], "--hidden: expected comma-separated integers"),
        (["--test-fraction", "1.5"], "test_fraction"),
        (["--lr", "-1"], "learning rate: expected a finite number > 0"),
    ],
)
def test_bad_usage_is_one_line_and_exit_code_2(args, message):
    pytest.importorskip("sklearn")
    result = run("train", "--epochs", "1", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output


def test_click_level_usage_errors_exit_2():
    assert run("train", "--epochs", "0").exit_code == 2
    assert run("train", "--optimizer", "rmsprop").exit_code == 2
