"""Every example runs (short settings) and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CASES = {
    "dashboard.py": (["--epochs", "1"], "pnngraph page: http://127.0.0.1:"),
    "data_parallel.py": (["--epochs", "1"], "max |parallel - serial|"),
    "pipeline.py": (["--epochs", "1"], "max |pipeline - serial|"),
    "hybrid.py": (["--epochs", "1"], "test accuracy"),
    "model_averaging.py": (["--epochs", "2"], "averaging (serial)"),
    "early_stopping.py": (["--epochs", "3"], "holds the model fit returned: True"),
    "resnet.py": (["--epochs", "1"], "max |Pipeline(2, 4) - serial|"),
    "lstm.py": (["--epochs", "1"], "max |parallel - serial|"),
    "transformer_lm.py": (["--epochs", "1", "--chars", "20000", "--generate", "20"],
                          "held-out loss"),
}


def test_every_example_has_a_smoke_test():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(CASES)


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs(name):
    pytest.importorskip("sklearn")
    args, expected = CASES[name]
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expected in proc.stdout
