"""``.npz`` archives written whole or not at all, and read without ever unpickling, decompressing
more than they declare, or reading an array before its caller has seen what it is.

``write_npz(path, arrays)`` writes to a temporary file in the same folder, syncs it and renames
it over ``path`` (then syncs the folder), so a crash leaves the old file or the new one, never
half of one.

``NpzArchive(path)`` opens an archive for reading in two steps. Opening reads only the zip's
directory and each member's ``.npy`` header (a few hundred bytes): every member must be a plain
``<name>.npy`` array, appear once, hold no Python objects, and be as long as its header says
(header plus ``prod(shape) * itemsize`` bytes, the zip entry's uncompressed size, which the zip
reader never reads past); their declared sizes together must stay within ``max_bytes``
(:data:`MAX_BYTES` by default). ``archive.members`` then holds each member's name, dtype and
shape, for the caller to check against what it expects (a checkpoint: the shapes its metadata
and architecture imply) before ``archive.read()`` decompresses anything. So a zip bomb, or a
member of the wrong shape, is refused for the price of its header. Every failure is a one-line
:class:`ModelFileError`; arrays are read with ``allow_pickle=False``. ``read_npz(path)`` reads
every member of an archive that passes.

pnngraph's own files (models, checkpoints) carry one JSON document as the uint8 member
``__pnngraph__`` (:data:`META`); ``archive.metadata()`` reads it.

>>> import tempfile, pathlib, numpy as np
>>> with tempfile.TemporaryDirectory() as folder:
...     path = write_npz(pathlib.Path(folder) / "a.npz", {"x": np.arange(3)})
...     with NpzArchive(path) as archive:
...         print(archive.members["x"])
...         print(archive.read()["x"].tolist())
x: int64[3]
[0, 1, 2]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from pnngraph.exceptions import ModelFileError

MAX_BYTES = 2 << 30
"""Default bound on the bytes the arrays of one archive may declare (2 GiB); a caller passes
``max_bytes`` to read more, or raises this for every reader (``fit``'s resume included)."""
META = "__pnngraph__"
"""The member of pnngraph's own files that holds their JSON metadata."""
META_MAX_BYTES = 64 << 20
"""Bound on the metadata member (64 MiB), read before anything else is checked."""
_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError,
           NotImplementedError)  # what zipfile and numpy raise for damaged, encrypted, odd data


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


@dataclass(frozen=True)
class Member:
    """One array of an archive as its ``.npy`` header declares it; ``nbytes`` counts its data."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype}{list(self.shape)}"


class NpzArchive:
    """An ``.npz`` archive open for reading, its members' headers checked (module docstring).

    Parameters
    ----------
    path : path
    max_bytes : int, optional
        Bound on the bytes all arrays together declare; :data:`MAX_BYTES` by default.

    Raises
    ------
    ModelFileError
        No such file, not a zip archive, a member that is not a plain ``.npy`` array, holds
        Python objects, is longer or shorter than its header says, or arrays that declare more
        than ``max_bytes`` in all.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int | None = None) -> None:
        self.path = Path(path)
        limit = MAX_BYTES if max_bytes is None else max_bytes
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(4)
        except FileNotFoundError:
            raise ModelFileError(self.path, "no such file") from None
        except OSError as err:
            raise ModelFileError(self.path, f"cannot be read: {err}") from None
        if head[:2] != b"PK":  # not a zip: nothing else is asked to parse it
            raise ModelFileError(self.path,
                                 "not an .npz archive (it does not start like a zip file)")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except _DAMAGE as err:
            raise ModelFileError(self.path, f"not an .npz archive: {err}") from None
        try:
            self._infos: dict[str, zipfile.ZipInfo] = {}
            self.members: dict[str, Member] = {}
            for info in self._zip.infolist():
                member = self._header(info)
                self._infos[member.name] = info
                self.members[member.name] = member
            total = sum(m.nbytes for m in self.members.values())
            if total > limit:
                biggest = max(self.members.values(), key=lambda m: m.nbytes)
                raise ModelFileError(
                    self.path, f"its arrays declare {total} bytes, more than max_bytes={limit} "
                               f"(the largest, {biggest}, {biggest.nbytes} bytes)")
        except BaseException:
            self._zip.close()
            raise

    def _header(self, info: zipfile.ZipInfo) -> Member:
        """The member ``info`` as its header declares it, checked against the zip entry."""
        if info.is_dir() or not info.filename.endswith(".npy"):
            raise ModelFileError(self.path, f"member {info.filename!r} is not a .npy array")
        name = info.filename[: -len(".npy")]
        if name in self.members:
            raise ModelFileError(self.path, f"member {info.filename!r} appears twice")
        try:
            with self._zip.open(info) as fp:
                version = np.lib.format.read_magic(fp)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
                else:
                    raise ValueError(f"format version {version[0]}.{version[1]} (this reads "
                                     "1.0 and 2.0)")
                header = fp.tell()
        except _DAMAGE as err:
            raise ModelFileError(self.path, f"member {info.filename!r}: not a .npy array "
                                            f"({' '.join(str(err).split())[:200]})") from None
        member = Member(name, dtype, tuple(shape))
        if dtype.hasobject:
            raise ModelFileError(self.path, f"member {info.filename!r} holds Python objects "
                                            f"(dtype {dtype}), which are never unpickled")
        if header + member.nbytes != info.file_size:
            raise ModelFileError(
                self.path, f"member {info.filename!r} declares {dtype}{list(shape)}, "
                           f"{header + member.nbytes} bytes with its header, but holds "
                           f"{info.file_size}")
        return member

    def read(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """The arrays ``names`` (every member by default), decompressed now."""
        wanted = list(self.members if names is None else names)
        out = {}
        try:
            for name in wanted:
                with self._zip.open(self._infos[name]) as fp:
                    out[name] = np.lib.format.read_array(fp, allow_pickle=False)
        except _DAMAGE as err:  # a damaged member: bad CRC, truncated data, ...
            raise ModelFileError(self.path, f"damaged archive: {err}") from None
        return out

    def metadata(self, name: str = META) -> dict[str, Any]:
        """The JSON object stored as the uint8 member ``name``."""
        member = self.members.get(name)
        if member is None:
            raise ModelFileError(self.path, "it holds no pnngraph metadata")
        if member.dtype != np.uint8 or len(member.shape) != 1 or \
                member.nbytes > META_MAX_BYTES:
            raise ModelFileError(self.path, f"bad metadata: expected at most {META_MAX_BYTES} "
                                            f"bytes (uint8), got {member}")
        try:
            meta = json.loads(self.read([name])[name].tobytes().decode())
            if not isinstance(meta, dict):
                raise ValueError("the metadata is not a JSON object")
        except (ValueError, UnicodeDecodeError, RecursionError) as err:  # Recursion: nesting
            raise ModelFileError(self.path, f"bad metadata: {err}") from None
        return meta

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_npz(path: str | os.PathLike[str], *, max_bytes: int | None = None
             ) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive at ``path`` (see :class:`NpzArchive`)."""
    with NpzArchive(path, max_bytes=max_bytes) as archive:
        return archive.read()
