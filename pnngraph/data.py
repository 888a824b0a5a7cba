"""Datasets: validated arrays in memory, read from files or generated.

The data passed around is a :class:`Dataset` ``(X, y, n_classes, name)``: ``X`` a float array of
shape ``(n_samples, *sample_shape)``, a sample being at least a vector; ``y`` int64 labels in
``[0, n_classes)`` of shape ``(n_samples,)``, or float targets with ``n_classes=None`` (regression).

Every loader passes its arrays through :func:`check_arrays`, so a model never sees NaN, mismatched
lengths or out-of-range labels: bad data raises :class:`~pnngraph.exceptions.DataError` naming the
array or file, bad options :class:`~pnngraph.exceptions.ConfigError`. Sources are ``.npz`` files,
MNIST IDX files (plain or gzipped), scikit-learn's digits (the optional ``pnngraph[digits]`` extra)
and seeded synthetic sets; :func:`load` maps a command-line string to one of them.

    >>> ds = spirals(n_samples=6, n_classes=3, seed=0)
    >>> ds
    Dataset(name='spirals', X=float64(6, 2), y=int64(6,), n_classes=3)
    >>> train, test = ds.split(0.5, seed=0)
    >>> len(train), len(test)
    (3, 3)
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import numbers
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from pnngraph.exceptions import ConfigError, DataError, ModelFileError, check_int
from pnngraph.npzfile import NpzArchive

Task = Literal["classification", "regression"]
PathLike = str | Path


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """``X``, labels or targets ``y``, ``n_classes`` (``None``: regression), a name; see above."""

    X: np.ndarray
    y: np.ndarray
    n_classes: int | None
    name: str

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, X={self.X.dtype}{self.X.shape}, "
            f"y={self.y.dtype}{self.y.shape}, n_classes={self.n_classes})"
        )

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Shuffled ``(train, test)`` parts, a share ``test_fraction`` in (0, 1) going to test."""
        if not (isinstance(test_fraction, numbers.Real) and 0.0 < test_fraction < 1.0):
            raise ConfigError("test_fraction", "a number strictly between 0 and 1", test_fraction)
        n = len(self)
        if n < 2:
            raise DataError(self.name, f"cannot split {n} sample(s) into train and test")
        n_test = min(max(round(n * test_fraction), 1), n - 1)
        order = np.random.default_rng(seed).permutation(n)
        test, train = order[:n_test], order[n_test:]
        return (
            Dataset(self.X[train], self.y[train], self.n_classes, f"{self.name}-train"),
            Dataset(self.X[test], self.y[test], self.n_classes, f"{self.name}-test"),
        )


def _numeric(what: str, a: ArrayLike) -> np.ndarray:
    """``a`` as an array of bools, integers or floats, or a DataError saying what it is instead."""
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as err:
        raise DataError(what, f"not a rectangular numeric array ({err})") from None
    if arr.dtype.kind not in "biuf":
        raise DataError(what, f"expected numbers, got dtype {arr.dtype}")
    return arr


def _check_finite(what: str, a: np.ndarray) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        at = first[0] if len(first) == 1 else first
        raise DataError(what, f"{int(bad.sum())} NaN or inf value(s), the first at index {at}")


def _check_labels(y: np.ndarray, n_classes: int | None) -> np.ndarray:
    """``y`` as int64 class labels, or a DataError naming the first bad label and its index."""
    if y.ndim != 1:
        hint = " (one-hot? use y.argmax(axis=1))" if y.ndim == 2 else ""
        raise DataError("y", f"expected 1-D labels of shape (n_samples,), got {y.shape}{hint}")
    if y.dtype.kind == "f":
        _check_finite("y", y)
        fractional = y != np.round(y)
        if fractional.any():
            i = int(np.flatnonzero(fractional)[0])
            raise DataError("y", f"labels must be integers, got {y[i]} at index {i}")
    if y.min() < 0:
        i = int(np.argmin(y))
        raise DataError("y", f"labels must be >= 0, got {y[i]} at index {i}")
    top = n_classes if n_classes is not None else np.iinfo(np.int64).max
    if y.max() >= top:
        i = int(np.argmax(y))
        raise DataError("y", f"label {y[i]} at index {i} is outside the range [0, {top})")
    return y.astype(np.int64)


def check_arrays(
    X: ArrayLike, y: ArrayLike, *, n_classes: int | None = None, task: Task = "classification"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate features and labels and return them in the dtypes models expect.

    Parameters
    ----------
    X : array_like
        Features of shape ``(n_samples, *sample_shape)``, at least 2-D.
    y : array_like
        Classification: integer labels of shape ``(n_samples,)``; integral floats like ``3.0``
        are accepted. Regression: float targets with ``n_samples`` rows.
    n_classes : int, optional
        When given, labels must lie in ``[0, n_classes)``.
    task : {"classification", "regression"}

    Returns
    -------
    tuple of numpy.ndarray
        ``X`` as floats (float inputs keep their precision, others become float64) and ``y`` as
        int64 (classification) or floats (regression). Bad data raises DataError.

    Examples
    --------
    >>> X, y = check_arrays([[0, 1], [2, 3]], [1.0, 0.0], n_classes=2)
    >>> X.dtype, y.tolist()
    (dtype('float64'), [1, 0])
    """
    if task not in ("classification", "regression"):
        raise ConfigError("task", "'classification' or 'regression'", task)
    if n_classes is not None:
        check_int("n_classes", n_classes)
    X_arr, y_arr = _numeric("X", X), _numeric("y", y)
    if X_arr.ndim >= 1 and X_arr.size == 0:
        raise DataError("X", f"empty: shape {X_arr.shape}")
    if X_arr.ndim < 2:
        hint = "a sample must be a vector at least: X.reshape(-1, 1) makes one feature"
        raise DataError("X", f"expected (n_samples, n_features, ...), got {X_arr.shape}; {hint}")
    if y_arr.ndim == 0 or X_arr.shape[0] != y_arr.shape[0]:
        n_y = "a scalar" if y_arr.ndim == 0 else f"{y_arr.shape[0]} samples"
        raise DataError("X, y", f"X has {X_arr.shape[0]} samples but y has {n_y}")
    X_arr = X_arr if X_arr.dtype.kind == "f" else X_arr.astype(np.float64)
    _check_finite("X", X_arr)
    if task == "classification":
        return X_arr, _check_labels(y_arr, n_classes)
    y_float = y_arr if y_arr.dtype.kind == "f" else y_arr.astype(np.float64)
    _check_finite("y", y_float)
    return X_arr, y_float


def _dataset(X: ArrayLike, y: ArrayLike, n_classes: int | None, name: str) -> Dataset:
    """A checked Dataset; ``n_classes=None`` with integer labels means ``max(y) + 1`` classes."""
    if n_classes is None and np.asarray(y).dtype.kind in "biu":
        X_arr, y_arr = check_arrays(X, y, task="classification")
        return Dataset(X_arr, y_arr, int(y_arr.max()) + 1, name)
    task: Task = "regression" if n_classes is None else "classification"
    X_arr, y_arr = check_arrays(X, y, n_classes=n_classes, task=task)
    return Dataset(X_arr, y_arr, n_classes, name)


_X_KEYS = ("X", "x", "images", "data", "x_train")  # x_train, y_train: Keras' mnist.npz
_Y_KEYS = ("y", "labels", "targets", "y_train")


def save_npz(path: PathLike, X: ArrayLike, y: ArrayLike, *, n_classes: int | None = None) -> Path:
    """Write ``X``, ``y`` and ``n_classes`` (if given) to a compressed ``.npz``; return its path."""
    out = Path(path) if str(path).endswith(".npz") else Path(f"{path}.npz")
    extra: dict[str, Any] = {} if n_classes is None else {"n_classes": np.int64(n_classes)}
    np.savez_compressed(out, X=np.asarray(X), y=np.asarray(y), **extra)
    return out


def load_npz(path: PathLike, *, x_key: str = "X", y_key: str = "y",
             max_bytes: int | None = None) -> Dataset:
    """Read a Dataset from an ``.npz`` archive, unpickling nothing.

    Integer labels make a classification set of ``max(y) + 1`` classes unless the archive stores
    ``n_classes``; float ``y`` without ``n_classes`` makes a regression set. Only those arrays
    are read, and only once the headers of all have been checked
    (:class:`~pnngraph.npzfile.NpzArchive`: plain arrays, no Python objects, each as long as its
    header says).

    Parameters
    ----------
    path : str or Path
    x_key, y_key : str
        Names of the features and labels in the archive. When absent, the common names
        ``X``, ``x``, ``images``, ``data`` and ``y``, ``labels``, ``targets`` are tried.
    max_bytes : int, optional
        Bound on the bytes the archive's arrays may declare in all
        (:data:`pnngraph.npzfile.MAX_BYTES` by default): more is refused before any is read.
    """
    where = str(path)
    if not Path(path).is_file():
        raise DataError(where, "no such file")
    if not zipfile.is_zipfile(path):
        raise DataError(where, "not an .npz archive (a zip of .npy arrays)")
    try:
        with NpzArchive(path, max_bytes=max_bytes) as archive:
            found = list(archive.members)
            xk = next((k for k in (x_key, *_X_KEYS) if k in found), None)
            yk = next((k for k in (y_key, *_Y_KEYS) if k in found), None)
            if xk is None or yk is None:
                raise DataError(where, f"needs arrays {x_key!r} and {y_key!r}; found keys "
                                       f"{found[:20]}")
            arrays = archive.read([xk, yk, *(["n_classes"] if "n_classes" in found else [])])
    except ModelFileError as err:
        raise DataError(where, f"cannot read the archive ({err.reason})") from None
    n_classes = int(arrays["n_classes"]) if "n_classes" in arrays else None
    return _dataset(arrays[xk], arrays[yk], n_classes, Path(path).stem)


# IDX type code -> big-endian dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {np.dtype(d).newbyteorder("="): code for code, d in _IDX_DTYPES.items()}


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, into a native-endian array.

    The layout: two zero bytes, a type code (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16,
    ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions in one byte,
    each dimension as a big-endian uint32, then the data, big-endian, in C order.

    Examples
    --------
    >>> import os, tempfile
    >>> raw = b"\\x00\\x00\\x08\\x01" + struct.pack(">I", 3) + bytes([7, 8, 9])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = Path(tmp, "three-idx1-ubyte").write_bytes(raw)
    ...     read_idx(os.path.join(tmp, "three-idx1-ubyte")).tolist()
    [7, 8, 9]
    """
    where = str(path)
    try:
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip's magic bytes
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(where, f"cannot read ({err})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise DataError(where, f"not an IDX file: bad magic number {raw[:4].hex()!r}")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise DataError(where, f"unknown IDX type code 0x{code:02X}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(where, f"truncated header: {len(raw)} bytes, need {header}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected, found = math.prod(shape) * dtype.itemsize, len(raw) - header
    if found != expected:
        raise DataError(where, f"shape {shape} needs {expected} data bytes, found {found}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: PathLike, array: ArrayLike) -> Path:
    """Write ``array`` (an IDX dtype) as an IDX file, gzipped if ``path`` ends in ``.gz``."""
    arr = np.asarray(array)
    code = _IDX_CODES.get(arr.dtype.newbyteorder("="))
    if code is None:
        raise ConfigError("array dtype", "uint8, int8, int16, int32, float32 or float64", arr.dtype)
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(np.dtype(_IDX_DTYPES[code])).tobytes()
    out = Path(path)
    out.write_bytes(gzip.compress(raw) if out.suffix == ".gz" else raw)
    return out


def _find_idx(directory: Path, stem: str) -> Path:
    """``stem`` in ``directory``, plain, gzipped, or spelt ``.idx`` as some mirrors do."""
    for name in (stem, f"{stem}.gz", stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    raise DataError(str(directory), f"no {stem}[.gz] found; files present: {present}")


def load_mnist(directory: PathLike, *, kind: Literal["train", "test"] = "train") -> Dataset:
    """Read MNIST, or any IDX set laid out like it, from a directory of the standard files.

    ``directory`` holds ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``
    (``kind="train"``) or ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``
    (``kind="test"``), each possibly gzipped. Returns ``X`` float32 in ``[0, 1]`` of shape
    ``(N, 1, rows, cols)``, ``y`` int64 and 10 classes.
    """
    if kind not in ("train", "test"):
        raise ConfigError("kind", "'train' or 'test'", kind)
    prefix = "train" if kind == "train" else "t10k"
    images_path = _find_idx(Path(directory), f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx(Path(directory), f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        got = f"{images.dtype}{images.shape}"
        raise DataError(str(images_path), f"expected uint8 images (N, rows, cols), got {got}")
    X = (images.astype(np.float32) / 255.0)[:, None, :, :]
    return _dataset(X, labels, 10, f"mnist-{kind}")


def spirals(
    n_samples: int = 300, n_classes: int = 3, *, noise: float = 0.2, seed: int = 0
) -> Dataset:
    """Interleaved 2-D spiral arms, one per class: not linearly separable, learnt by a small MLP.

    Arm ``k`` runs at radius ``r`` in ``[0, 1]`` and angle ``4 (k + r)`` plus Gaussian noise of
    standard deviation ``noise``. Samples are shuffled; the same ``seed`` gives the same set.

    References
    ----------
    .. [1] A. Karpathy, "CS231n: Minimal neural network case study",
       https://cs231n.github.io/neural-networks-case-study/
    """
    check_int("n_samples", n_samples)
    check_int("n_classes", n_classes, low=2)
    if not noise >= 0:
        raise ConfigError("noise", "a number >= 0", noise)
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples) % n_classes
    r = np.zeros(n_samples)
    for k in range(n_classes):
        r[y == k] = np.linspace(0.0, 1.0, int(np.count_nonzero(y == k)))
    theta = 4.0 * (y + r) + rng.normal(0.0, noise, n_samples)
    X = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
    order = rng.permutation(n_samples)
    return _dataset(X[order], y[order], n_classes, "spirals")


def teacher(
    n_samples: int, n_features: int, n_classes: int, *, hidden: int = 32, seed: int = 0
) -> Dataset:
    """Gaussian inputs labelled by the argmax of a random fixed ``tanh`` MLP, the "teacher".

    A student network at least the teacher's size can fit the labels exactly, so the set checks
    that training works. Classes need not be balanced; ``n_classes`` is kept as given.
    """
    for name, value in (("n_samples", n_samples), ("n_features", n_features), ("hidden", hidden)):
        check_int(name, value)
    check_int("n_classes", n_classes, low=2)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_features))
    # Weights of variance 1 / fan-in keep the pre-activations near unit variance.
    w1 = rng.normal(0.0, 1.0 / math.sqrt(n_features), (n_features, hidden))
    w2 = rng.normal(0.0, 1.0 / math.sqrt(hidden), (hidden, n_classes))
    logits = np.tanh(X @ w1 + rng.normal(0.0, 0.1, hidden)) @ w2
    return _dataset(X, logits.argmax(axis=1), n_classes, "teacher")


def digits(*, flatten: bool = True) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits: 1797 samples, 10 classes, ``X`` in ``[0, 1]``.

    ``X`` is float64 of shape ``(1797, 64)``, or ``(1797, 1, 8, 8)`` when ``flatten`` is false.
    Needs the optional extra: ``pip install 'pnngraph[digits]'``.
    """
    found = importlib.util.find_spec("sklearn")  # found without importing it (seconds)
    if found is None or not found.submodule_search_locations:
        raise ImportError("digits() needs scikit-learn: pip install 'pnngraph[digits]'")
    path = Path(found.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():  # the file scikit-learn's load_digits reads: 64 pixels, then the label
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",")
        images, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images, target = np.asarray(bunch.images, dtype=np.float64), np.asarray(bunch.target)
    images = images / 16.0
    X = images.reshape(len(images), -1) if flatten else images[:, None, :, :]
    return _dataset(X, target, 10, "digits")


TEXT_SYMBOLS = "\n" + "".join(chr(c) for c in range(32, 127))
"""The characters of :func:`python_source`: newline and printable ASCII, ids 0 to 95; id 96
stands for every other character."""


def encode(text: str) -> np.ndarray:
    """Character ids of ``text`` (int64), as :func:`python_source` numbers them."""
    table = np.full(128, len(TEXT_SYMBOLS), dtype=np.int64)
    table[[ord(c) for c in TEXT_SYMBOLS]] = np.arange(len(TEXT_SYMBOLS))
    codes = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8)
    return table[np.minimum(codes, 127)]


def decode(ids: ArrayLike) -> str:
    """The text of character ids (``"?"`` for the id of other characters)."""
    symbols = TEXT_SYMBOLS + "?"
    return "".join(symbols[int(i)] for i in np.asarray(ids).ravel())


def python_source(*, context: int = 64, max_chars: int = 1_000_000,
                  root: PathLike | None = None) -> Dataset:
    """A character-level language-model set from the Python standard library's own source
    (every machine with Python has it, offline): the top-level ``*.py`` files of ``root``
    (default: this interpreter's standard library), in name order, joined and cut to
    ``max_chars`` characters, then cut into windows of ``context`` characters.

    ``X[i]`` is window ``i`` as character ids (floats; :data:`TEXT_SYMBOLS`), ``y[i]`` the same
    window shifted by one: the next character at every position. ``n_classes`` is 97. The text
    depends on the Python version, so figures differ a little between versions.
    """
    import sysconfig

    check_int("context", context)
    check_int("max_chars", max_chars)
    folder = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in sorted(folder.glob("*.py")):
        if size >= max_chars:
            break
        parts.append(path.read_text(encoding="utf-8", errors="replace"))
        size += len(parts[-1])
    ids = encode("".join(parts)[: max_chars])
    n = (len(ids) - 1) // context
    if n < 2:
        raise DataError(str(folder), f"{len(ids)} characters of Python source make fewer than "
                        f"2 windows of {context}")
    X = ids[: n * context].reshape(n, context).astype(np.float64)
    y = ids[1 : n * context + 1].reshape(n, context)
    return Dataset(X, y, len(TEXT_SYMBOLS) + 1, "python-source")


_NAMED: dict[str, Callable[[], Dataset]] = {
    "digits": digits,
    "python-source": partial(python_source, max_chars=200_000),
    "spirals": spirals,
    "teacher": partial(teacher, 1000, 20, 5),
}


def load(spec: str) -> Dataset:
    """The Dataset a command-line string names.

    Accepted: ``"digits"``, ``"spirals"``, ``"teacher"`` (1000 samples, 20 features, 5 classes),
    ``"python-source"`` (:func:`python_source`, 200,000 characters in windows of 64),
    a path to an ``.npz`` file, or a directory of MNIST IDX files (its training part is read).
    """
    if spec in _NAMED:
        return _NAMED[spec]()
    path = Path(spec)
    if path.suffix == ".npz":
        return load_npz(path)
    if spec and path.is_dir():  # Path("") is the current directory
        return load_mnist(path, kind="train")
    names = ", ".join(repr(k) for k in _NAMED)
    raise ConfigError("data", f"{names}, a path to an .npz file or an MNIST directory", spec)
