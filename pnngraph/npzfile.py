"""``.npz`` archives written whole or not at all, and read without ever unpickling.

``write_npz(path, arrays)`` writes to a temporary file in the same folder, syncs it and renames
it over ``path`` (then syncs the folder), so a crash leaves the old file or the new one, never
half of one. ``read_npz(path)`` refuses anything that does not start like a zip archive before
numpy is asked (``np.load`` would try to unpickle other files), reads with
``allow_pickle=False``, and turns every failure into a one-line :class:`ModelFileError`.

>>> import tempfile, pathlib, numpy as np
>>> with tempfile.TemporaryDirectory() as folder:
...     path = write_npz(pathlib.Path(folder) / "a.npz", {"x": np.arange(3)})
...     read_npz(path)["x"].tolist()
[0, 1, 2]
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pnngraph.exceptions import ModelFileError


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``path`` atomically (see the module docstring); returns the path."""
    target = Path(path)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError, AttributeError):  # make the rename durable where we can
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return target


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive at ``path`` (see the module docstring)."""
    where = Path(path)
    try:
        with open(where, "rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise ModelFileError(where, "no such file") from None
    except OSError as err:
        raise ModelFileError(where, f"cannot be read: {err}") from None
    if head[:2] != b"PK":  # not a zip: np.load is not even asked (it would try pickle)
        raise ModelFileError(where, "not an .npz archive (it does not start like a zip file)")
    try:
        loaded = np.load(where, allow_pickle=False)
    except Exception as err:
        raise ModelFileError(where, f"not an .npz archive: {err}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ModelFileError(where, "a single .npy array, not an .npz archive")
    try:
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    except Exception as err:  # a damaged member: bad CRC, truncated data, ...
        raise ModelFileError(where, f"damaged archive: {err}") from None
