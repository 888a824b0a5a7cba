"""What every pnngraph benchmark does first: its options, the environment, the import path.

``python bench/NAME.py`` puts bench/ first on ``sys.path``, and bench/ holds a script named
``schedulers.py``: the repository root goes in front so ``import schedulers`` finds the package.
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE slow numpy on some processors here; ``--unset-openblas``
removes both for this process and the workers it starts (before numpy is imported), and every
table says which way it ran.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def arguments(doc: str, *, steps: int, rounds: int = 3,
              more: Callable[[argparse.ArgumentParser], Any] | None = None) -> argparse.Namespace:
    """The options every benchmark takes: --steps, --rounds, --batch, --hidden,
    --unset-openblas (and those ``more`` adds)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    if more is not None:
        more(parser)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--unset-openblas", action="store_true")
    return parser.parse_args()


def settle(args: argparse.Namespace) -> dict[str, str | None]:
    """Apply ``--unset-openblas`` and quiet one warning; returns the OPENBLAS variables as set.

    The initial parameters travel inside each graph (so Dask can recompute after a lost
    worker), and for the large model distributed warns about the graph's size every time.
    """
    if args.unset_openblas:
        for var in OPENBLAS_VARS:
            os.environ.pop(var, None)
    warnings.filterwarnings("ignore", message="Sending large graph")
    return {v: os.environ.get(v) for v in OPENBLAS_VARS}
