"""What a zip bomb costs each loader: peak memory and seconds, against reading every member.

    python bench/loaders.py [--gib 3] [--rounds 1]

One bomb per loader, a few MB on disk whose largest member declares ``--gib`` GiB of zeros (and
decompresses to them): a checkpoint whose ``losses`` is the bomb, a model file whose first
weight matrix is, a data file whose ``X`` is. The baseline is what every loader did before it
checked headers: ``numpy.load`` of the file and every member read (``allow_pickle=False``).
Each row gives, for the baseline and for the loader, the peak memory that Python objects and
numpy arrays take while it runs (tracemalloc, which sees both) and the wall time, medians over
rounds that alternate the two, and the loader's outcome. Above ``pnngraph.npzfile.MAX_BYTES``
(2 GiB) every loader refuses the bomb from its headers; below it the checkpoint and the model
refuse it by its shape, and the data file is read (its arrays may be that large).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _setup  # noqa: F401  (the repository root on sys.path)
import numpy as np

from pnngraph.data import load_npz
from pnngraph.nn import Dense, Sequential
from pnngraph.nn.optimizers import Adam
from pnngraph.run.checkpoint import load_checkpoint, save_checkpoint
from tests.npzfiles import MiB, members_of, zip_bomb


def bombs(folder: Path, nbytes: int) -> dict[str, tuple[Path, Callable[[Path], Any]]]:
    """name -> (bomb file, its loader)."""
    model = Sequential([Dense(4, 3)], input_shape=(4,))
    ckpt = save_checkpoint(folder, model=model, opt_state=Adam(0.01).init(model.params), step=3,
                           seed=0, losses=[0.9, 0.8, 0.7], config={})
    others = {k: v for k, v in members_of(ckpt).items() if k != "losses"}
    zip_bomb(ckpt, "losses", (nbytes // 8,), others=others)
    saved = folder / "m.npz"
    model.save(saved)
    others = {k: v for k, v in members_of(saved).items() if k != "param/0/W"}
    zip_bomb(saved, "param/0/W", (nbytes // 32, 4), others=others)
    data = zip_bomb(folder / "d.npz", "X", (nbytes // 64, 8), others={"y": np.zeros(4)})
    return {"checkpoint": (ckpt, load_checkpoint), "Sequential.load": (saved, Sequential.load),
            "data.load_npz": (data, load_npz)}


def read_every_member(path: Path) -> None:
    with np.load(path, allow_pickle=False) as archive:
        {k: archive[k] for k in archive.files}


def measure(fn: Callable[[], Any]) -> tuple[int, float, str]:
    """Peak traced bytes, seconds, and what came of ``fn()``."""
    tracemalloc.start()
    began = time.perf_counter()
    try:
        fn()
        outcome = "read"
    except Exception as err:
        outcome = f"{type(err).__name__}: {str(err).split('(', 1)[-1][:70]}"
    seconds = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, seconds, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    nbytes = max(MiB, int(args.gib * 1024) * MiB)
    print(f"bomb: {nbytes / 2**30:.3g} GiB of zeros declared; rounds: {args.rounds}")
    print(f"{'loader':<16} {'file MB':>8} {'baseline MiB':>13} {'s':>7} {'loader MiB':>11} "
          f"{'s':>7} {'memory ratio':>13}  outcome")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (path, load) in bombs(Path(tmp), nbytes).items():
            base, new = [], []
            for _ in range(args.rounds):
                base.append(measure(lambda p=path: read_every_member(p)))
                new.append(measure(lambda p=path, f=load: f(p)))
            b_mib = statistics.median(m[0] for m in base) / MiB
            n_mib = statistics.median(m[0] for m in new) / MiB
            print(f"{name:<16} {path.stat().st_size / 1e6:>8.1f} {b_mib:>13.0f} "
                  f"{statistics.median(m[1] for m in base):>7.2f} {n_mib:>11.2f} "
                  f"{statistics.median(m[1] for m in new):>7.3f} "
                  f"{b_mib / max(n_mib, 1e-3):>12.0f}x  {new[-1][2]}")


if __name__ == "__main__":
    main()
