"""Hostile and damaged ``.npz`` files for the loader tests: zip bombs written without ever
holding their data, and archives whose members say one thing and hold another."""

from __future__ import annotations

import io
import math
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np

MiB = 1 << 20
GiB = 1 << 30


def npy_header(dtype, shape) -> bytes:
    """The ``.npy`` header (format 1.0) of an array of ``dtype`` and ``shape``."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
        "shape": tuple(shape)})
    return out.getvalue()


def npy_bytes(array) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, np.asarray(array), allow_pickle=True)
    return out.getvalue()


def zip_bomb(path: Path, name: str, shape, dtype=np.float64, others=None) -> Path:
    """An ``.npz`` whose member ``name`` is an array of ``shape`` of zeros, whole and valid
    (its CRC included), that takes about a thousandth of its size on disk; ``others`` (name ->
    array) are added after it.

    The data is never in memory: after a full flush a deflate stream starts afresh, so the
    compressed form of every MiB of zeros is one block, written again and again. The zip
    entry is written by hand (one local header, the stream, the central directory, the end
    record; sizes below 4 GiB, so no zip64) and the other members appended with zipfile.
    """
    header = npy_header(dtype, shape)
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes % MiB or len(header) + nbytes >= 4 * GiB:
        raise ValueError(f"a whole number of MiB under 4 GiB, got {nbytes} bytes")
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as zip stores it
    head = squeeze.compress(header) + squeeze.flush(zlib.Z_FULL_FLUSH)
    block = squeeze.compress(bytes(MiB)) + squeeze.flush(zlib.Z_FULL_FLUSH)
    tail = squeeze.flush()
    crc, zeros = zlib.crc32(header), bytes(MiB)
    for _ in range(nbytes // MiB):
        crc = zlib.crc32(zeros, crc)
    size = len(header) + nbytes
    packed = len(head) + len(block) * (nbytes // MiB) + len(tail)
    fname = f"{name}.npy".encode()
    date = (1980 - 1980) << 9 | 1 << 5 | 1  # 1980-01-01, time 00:00
    with open(path, "wb") as fh:
        fh.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, zipfile.ZIP_DEFLATED, 0, date,
                             crc, packed, size, len(fname), 0) + fname + head)
        for _ in range(nbytes // MiB):
            fh.write(block)
        fh.write(tail)
        directory = fh.tell()
        entry = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, zipfile.ZIP_DEFLATED, 0,
                            date, crc, packed, size, len(fname), 0, 0, 0, 0, 0, 0) + fname
        fh.write(entry)
        fh.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(entry), directory, 0))
    with zipfile.ZipFile(path, "a") as z:
        for key, value in (others or {}).items():
            z.writestr(f"{key}.npy", npy_bytes(value))
    return path


def npz_of(path: Path, members: dict[str, bytes]) -> Path:
    """An archive of raw members (file name -> bytes), stored uncompressed."""
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    return path


def members_of(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return dict(z.items())


def peak_bytes(fn) -> int:
    """The most memory that Python objects and numpy arrays took at once while ``fn`` ran,
    above what they took before (tracemalloc sees both)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
