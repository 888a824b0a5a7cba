"""Tests of pnngraph.data: validation errors, file round trips, the IDX spec, synthetic sets."""

from __future__ import annotations

import gzip
import pickle
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import ArrayLike

from pnngraph.data import (
    Dataset,
    check_arrays,
    digits,
    load,
    load_mnist,
    load_npz,
    read_idx,
    save_npz,
    spirals,
    teacher,
    write_idx,
)
from pnngraph.exceptions import ConfigError, DataError

# --------------------------------------------------------------------------- Dataset


def small() -> Dataset:
    X, y = check_arrays(np.arange(20.0).reshape(10, 2), np.arange(10) % 3, n_classes=3)
    return Dataset(X, y, 3, "small")


def test_dataset_len_and_repr() -> None:
    ds = small()
    assert len(ds) == 10
    assert repr(ds) == "Dataset(name='small', X=float64(10, 2), y=int64(10,), n_classes=3)"


def test_split_partitions_samples_and_is_seeded() -> None:
    ds = small()
    train, test = ds.split(0.3, seed=1)
    assert (len(train), len(test)) == (7, 3)
    assert (train.name, test.name) == ("small-train", "small-test")
    assert sorted(np.concatenate([train.X[:, 0], test.X[:, 0]]).tolist()) == ds.X[:, 0].tolist()
    assert np.array_equal(train.y, train.X[:, 0] // 2 % 3)  # rows stay paired with their labels
    again, _ = ds.split(0.3, seed=1)
    other, _ = ds.split(0.3, seed=2)
    assert np.array_equal(train.X, again.X)
    assert not np.array_equal(train.X, other.X)


def test_split_keeps_one_sample_on_each_side() -> None:
    train, test = small().split(0.01)
    assert (len(train), len(test)) == (9, 1)


@pytest.mark.parametrize("fraction", [0, 1, 1.0, -0.2, 1.5, float("nan"), "0.2", True])
def test_split_rejects_fraction_outside_open_unit_interval(fraction: object) -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        small().split(fraction)  # type: ignore[arg-type]


def test_split_of_one_sample_is_a_data_error() -> None:
    ds = Dataset(np.zeros((1, 2)), np.zeros(1, dtype=np.int64), 2, "one")
    with pytest.raises(DataError, match="cannot split 1"):
        ds.split(0.5)


def test_dataset_survives_pickle() -> None:
    ds = small()
    back = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(back.X, ds.X) and np.array_equal(back.y, ds.y)
    assert (back.n_classes, back.name) == (3, "small")


# --------------------------------------------------------------------------- check_arrays


def test_check_arrays_casts_to_model_dtypes() -> None:
    X, y = check_arrays([[0, 1], [2, 3], [4, 5]], np.array([2, 0, 1], dtype=np.uint8))
    assert X.dtype == np.float64 and y.dtype == np.int64
    X32, y_int = check_arrays(np.zeros((2, 3), np.float32), [3.0, 1.0], n_classes=4)
    assert X32.dtype == np.float32  # float inputs keep their precision
    assert y_int.dtype == np.int64 and y_int.tolist() == [3, 1]
    _, targets = check_arrays(np.zeros((2, 1)), [1, 2], task="regression")
    assert targets.dtype == np.float64


def test_check_arrays_accepts_images() -> None:
    X, y = check_arrays(np.ones((4, 1, 5, 5), np.uint8), [0, 1, 0, 1], n_classes=2)
    assert X.shape == (4, 1, 5, 5) and y.shape == (4,)


def test_empty_data() -> None:
    with pytest.raises(DataError, match=r"X: empty: shape \(0, 3\)"):
        check_arrays(np.zeros((0, 3)), np.zeros(0, dtype=int))


def test_length_mismatch_names_both_lengths() -> None:
    with pytest.raises(DataError, match="X has 5 samples but y has 4 samples"):
        check_arrays(np.zeros((5, 2)), np.zeros(4, dtype=int))


def test_scalar_y_is_a_length_mismatch() -> None:
    with pytest.raises(DataError, match="y has a scalar"):
        check_arrays(np.zeros((5, 2)), 3)


def test_nan_in_X_counts_and_locates() -> None:
    X = np.zeros((4, 3))
    X[1, 2] = np.nan
    X[3, 0] = np.inf
    with pytest.raises(DataError, match=r"2 NaN or inf value\(s\), the first at index \(1, 2\)"):
        check_arrays(X, [0, 1, 0, 1])


def test_inf_in_regression_targets() -> None:
    with pytest.raises(DataError, match=r"^y: 1 NaN or inf value\(s\), the first at index 2"):
        check_arrays(np.zeros((3, 1)), [0.0, 1.0, -np.inf], task="regression")


@pytest.mark.parametrize(
    ("labels", "bad"), [([0, 1.5, 2], "1.5 at index 1"), (np.array([0.0, 2.0, 0.25]), "0.25")]
)
def test_non_integer_labels(labels: ArrayLike, bad: str) -> None:
    with pytest.raises(DataError, match=f"labels must be integers, got {bad}"):
        check_arrays(np.zeros((3, 2)), labels)


def test_nan_label() -> None:
    with pytest.raises(DataError, match="^y: 1 NaN"):
        check_arrays(np.zeros((2, 2)), [0.0, np.nan])


def test_labels_out_of_range_name_value_and_range() -> None:
    with pytest.raises(DataError, match=r"label 3 at index 2 is outside the range \[0, 3\)"):
        check_arrays(np.zeros((3, 2)), [0, 2, 3], n_classes=3)


def test_huge_float_label_is_rejected_before_casting() -> None:
    with pytest.raises(DataError, match="outside the range"):
        check_arrays(np.zeros((2, 2)), [0.0, 1e30])


def test_negative_labels() -> None:
    with pytest.raises(DataError, match="labels must be >= 0, got -1 at index 1"):
        check_arrays(np.zeros((3, 2)), [0, -1, 1])


def test_one_hot_labels_are_not_1d() -> None:
    with pytest.raises(DataError, match=r"expected 1-D labels .* got \(3, 2\) \(one-hot\?"):
        check_arrays(np.zeros((3, 2)), np.eye(2)[[0, 1, 1]])


def test_one_dimensional_X_is_rejected() -> None:
    with pytest.raises(DataError, match=r"got \(4,\); a sample must be a vector"):
        check_arrays(np.arange(4.0), [0, 1, 0, 1])


def test_scalar_X_is_rejected() -> None:
    with pytest.raises(DataError, match=r"got \(\)"):
        check_arrays(1.0, [0])


@pytest.mark.parametrize(
    ("X", "message"),
    [([["a", "b"]], "expected numbers, got dtype <U1"), ([[1.0, 2.0], [3.0]], "not a rectangular")],
)
def test_non_numeric_X(X: ArrayLike, message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_arrays(X, [0])


def test_string_labels() -> None:
    with pytest.raises(DataError, match="^y: expected numbers"):
        check_arrays(np.zeros((2, 2)), ["cat", "dog"])


@pytest.mark.parametrize(
    ("option", "kwargs"),
    [
        ("task", {"task": "ranking"}),
        ("n_classes", {"n_classes": 0}),
        ("n_classes", {"n_classes": 2.5}),
    ],
)
def test_bad_options_are_config_errors(option: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=f"^{option}: expected"):
        check_arrays(np.zeros((2, 2)), [0, 1], **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- .npz files


def test_npz_round_trip_keeps_n_classes(tmp_path: Path) -> None:
    X, y = np.random.default_rng(0).normal(size=(6, 3)), np.array([0, 1, 2, 0, 1, 2])
    path = save_npz(tmp_path / "set", X, y, n_classes=5)
    assert path == tmp_path / "set.npz"
    ds = load_npz(path)
    assert np.array_equal(ds.X, X) and np.array_equal(ds.y, y)
    assert (ds.n_classes, ds.name, ds.y.dtype) == (5, "set", np.int64)


def test_npz_infers_classes_from_integer_labels_and_regression_from_floats(tmp_path: Path) -> None:
    assert load_npz(save_npz(tmp_path / "c.npz", np.ones((3, 2)), [0, 3, 1])).n_classes == 4
    reg = load_npz(save_npz(tmp_path / "r.npz", np.ones((3, 2)), [0.5, 3.0, 1.0]))
    assert reg.n_classes is None and reg.y.dtype == np.float64


@pytest.mark.parametrize(("x_name", "y_name"), [("images", "labels"), ("data", "targets")])
def test_npz_common_key_names(tmp_path: Path, x_name: str, y_name: str) -> None:
    path = tmp_path / "alt.npz"
    arrays: dict[str, Any] = {x_name: np.ones((2, 4)), y_name: np.array([1, 0])}
    np.savez(path, **arrays)
    assert load_npz(path).y.tolist() == [1, 0]


def test_npz_custom_keys(tmp_path: Path) -> None:
    path = tmp_path / "custom.npz"
    np.savez(path, feats=np.ones((2, 4)), cls=np.array([1, 0]))
    assert load_npz(path, x_key="feats", y_key="cls").X.shape == (2, 4)


def test_npz_missing_keys_lists_keys_found(tmp_path: Path) -> None:
    path = tmp_path / "odd.npz"
    np.savez(path, features=np.ones((2, 2)), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"odd\.npz: needs arrays 'X' and 'y'; found keys \["):
        load_npz(path)


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothing.npz: no such file"):
        load_npz(tmp_path / "nothing.npz")


def test_npz_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "text.npz"
    path.write_text("X,y\n1,0\n")
    with pytest.raises(DataError, match=r"text\.npz: not an \.npz archive"):
        load_npz(path)


def test_npy_file_is_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "single.npy"
    np.save(path, np.ones((2, 2)))
    with pytest.raises(DataError, match="not an .npz archive"):
        load_npz(path)


def test_npz_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, X=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(DataError, match="cannot read the archive"):
        load_npz(path)


# --------------------------------------------------------------------------- IDX files

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", IDX_DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, dtype: type, suffix: str) -> None:
    array: np.ndarray = (np.arange(24) - 5).reshape(2, 3, 4).astype(dtype)
    back = read_idx(write_idx(tmp_path / f"a-idx3{suffix}", array))
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert np.array_equal(back, array)


def test_idx_gz_file_is_really_gzipped(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "a.gz", np.arange(3, dtype=np.uint8))
    assert gzip.decompress(path.read_bytes())[:4] == b"\x00\x00\x08\x01"


def hand_written_int32() -> bytes:
    """A 2x2 int32 IDX file built from the spec: magic 0x00000C02, dims, big-endian data."""
    return b"\x00\x00\x0c\x02" + struct.pack(">II", 2, 2) + struct.pack(">4i", 1, -2, 300000, -4)


def test_read_hand_written_idx(tmp_path: Path) -> None:
    path = tmp_path / "m-idx2-int"
    path.write_bytes(hand_written_int32())
    assert read_idx(path).tolist() == [[1, -2], [300000, -4]]
    gz = tmp_path / "m-idx2-int.gz"
    gz.write_bytes(gzip.compress(hand_written_int32()))
    assert read_idx(gz).tolist() == [[1, -2], [300000, -4]]


def test_read_hand_written_float64_idx(tmp_path: Path) -> None:
    path = tmp_path / "f-idx1"
    path.write_bytes(b"\x00\x00\x0e\x01" + struct.pack(">I", 3) + struct.pack(">3d", 0.5, -1, 2e9))
    assert read_idx(path).tolist() == [0.5, -1.0, 2e9]


def test_writer_matches_the_spec_byte_for_byte(tmp_path: Path) -> None:
    array = np.array([[1, -2], [300000, -4]], dtype=np.int32)
    assert write_idx(tmp_path / "w", array).read_bytes() == hand_written_int32()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "bad magic number ''"),
        (b"\x08\x03\x00\x00" + bytes(20), "bad magic number '08030000'"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated header: 8 bytes, need 16"),
        (hand_written_int32()[:-3], r"shape \(2, 2\) needs 16 data bytes, found 13"),
        (hand_written_int32() + b"\x00", "needs 16 data bytes, found 17"),
    ],
)
def test_bad_idx_files(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_corrupt_gzip_idx(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(hand_written_int32())[:-6])
    with pytest.raises(DataError, match=r"bad\.gz: cannot read"):
        read_idx(path)


def test_missing_idx_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "absent")


def test_write_idx_rejects_dtypes_idx_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="array dtype: expected uint8"):
        write_idx(tmp_path / "x", np.arange(3, dtype=np.int64))


# --------------------------------------------------------------------------- MNIST


def fake_mnist(directory: Path, prefix: str = "train", n: int = 5, gz: str = "") -> np.ndarray:
    """Write ``n`` random 28x28 images and labels 0..n-1 under MNIST's file names."""
    images = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    write_idx(directory / f"{prefix}-images-idx3-ubyte{gz}", images)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte{gz}", np.arange(n, dtype=np.uint8))
    return images


@pytest.mark.parametrize(("kind", "prefix"), [("train", "train"), ("test", "t10k")])
@pytest.mark.parametrize("gz", ["", ".gz"])
def test_load_mnist(tmp_path: Path, kind: str, prefix: str, gz: str) -> None:
    images = fake_mnist(tmp_path, prefix, gz=gz)
    ds = load_mnist(tmp_path, kind=kind)  # type: ignore[arg-type]
    assert ds.X.shape == (5, 1, 28, 28) and ds.X.dtype == np.float32
    assert (ds.X.min(), ds.X.max()) == (0.0, 1.0)
    assert np.allclose(ds.X[:, 0] * 255, images)
    assert ds.y.dtype == np.int64 and ds.y.tolist() == [0, 1, 2, 3, 4]
    assert (ds.n_classes, ds.name) == (10, f"mnist-{kind}")


def test_load_mnist_missing_files_lists_what_is_there(tmp_path: Path) -> None:
    fake_mnist(tmp_path, "train")
    with pytest.raises(DataError, match=r"no t10k-images-idx3-ubyte\[\.gz\] found; .*train-images"):
        load_mnist(tmp_path, kind="test")


def test_load_mnist_bad_labels(tmp_path: Path) -> None:
    fake_mnist(tmp_path, n=12)
    with pytest.raises(DataError, match=r"label 11 at index 11 is outside the range \[0, 10\)"):
        load_mnist(tmp_path)


def test_load_mnist_images_must_be_uint8_3d(tmp_path: Path) -> None:
    fake_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 784), np.float32))
    with pytest.raises(DataError, match=r"expected uint8 images \(N, rows, cols\), got float32"):
        load_mnist(tmp_path)


def test_load_mnist_truncated_file(tmp_path: Path) -> None:
    fake_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte: shape"):
        load_mnist(tmp_path)


def test_load_mnist_bad_kind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kind: expected 'train' or 'test', got 'valid'"):
        load_mnist(tmp_path, kind="valid")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- synthetic sets


def test_spirals_shape_and_balance() -> None:
    ds = spirals(n_samples=301, n_classes=3)
    assert ds.X.shape == (301, 2) and ds.X.dtype == np.float64
    assert np.bincount(ds.y).tolist() == [101, 100, 100]
    assert ds.n_classes == 3 and np.abs(ds.X).max() <= 1.0 + 1e-12  # radius at most 1


@pytest.mark.parametrize("make", [spirals, lambda seed: teacher(200, 6, 4, seed=seed)])
def test_synthetic_sets_are_seeded(make: Callable[..., Dataset]) -> None:
    a, b, c = make(seed=0), make(seed=0), make(seed=1)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.X, c.X)


def test_teacher_labels_are_learnable_classes() -> None:
    ds = teacher(500, 8, 4, hidden=16)
    assert ds.X.shape == (500, 8) and ds.n_classes == 4
    assert len(np.unique(ds.y)) >= 3  # a random teacher uses most of its classes
    assert set(np.unique(ds.y)) <= {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda: spirals(n_samples=0), "n_samples"),
        (lambda: spirals(n_classes=1), "n_classes"),
        (lambda: spirals(noise=-1.0), "noise"),
        (lambda: teacher(10, 0, 3), "n_features"),
        (lambda: teacher(10, 3, 3, hidden=2.5), "hidden"),  # type: ignore[arg-type]
    ],
)
def test_synthetic_options_are_checked(make: Callable[[], Dataset], option: str) -> None:
    with pytest.raises(ConfigError, match=f"^{option}: expected"):
        make()


# --------------------------------------------------------------------------- digits


def test_digits() -> None:
    pytest.importorskip("sklearn")
    flat, images = digits(), digits(flatten=False)
    assert flat.X.shape == (1797, 64) and images.X.shape == (1797, 1, 8, 8)
    assert flat.X.dtype == np.float64 and (flat.X.min(), flat.X.max()) == (0.0, 1.0)
    assert flat.y.dtype == np.int64 and flat.n_classes == 10
    assert np.array_equal(flat.X, images.X.reshape(1797, 64))


def test_digits_read_without_importing_scikit_learn_equal_its_loader() -> None:
    """The bundled file is read directly (importing scikit-learn takes seconds); the arrays
    are the ones ``load_digits`` gives."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    bunch, ours = load_digits(), digits(flatten=False)
    assert np.array_equal(ours.X[:, 0], bunch.images / 16.0)
    assert np.array_equal(ours.y, bunch.target)


def test_digits_without_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'pnngraph\[digits\]'"):
        digits()


# --------------------------------------------------------------------------- load()


def test_load_named_sets() -> None:
    assert load("spirals").X.shape == (300, 2)
    assert (len(load("teacher")), load("teacher").n_classes) == (1000, 5)


def test_load_digits() -> None:
    pytest.importorskip("sklearn")
    assert load("digits").name == "digits"


def test_load_npz_and_mnist_paths(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", np.ones((3, 2)), [0, 1, 1])
    assert len(load(str(path))) == 3
    fake_mnist(tmp_path)
    assert load(str(tmp_path)).name == "mnist-train"


def test_load_missing_npz_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load(str(tmp_path / "gone.npz"))


@pytest.mark.parametrize("spec", ["cifar", "data.csv", ""])
def test_load_unknown_spec_lists_what_is_accepted(spec: str) -> None:
    with pytest.raises(
        ConfigError,
        match=r"data: expected 'digits', 'python-source', 'spirals', 'teacher', .*\.npz",
    ):
        load(spec)


def test_python_source_windows_are_the_next_characters(tmp_path) -> None:
    from pnngraph.data import decode, encode, python_source

    (tmp_path / "b.py").write_text("print('hello')\n")
    (tmp_path / "a.py").write_text("x = 1  # é\n")
    (tmp_path / "c.txt").write_text("not python\n")
    ds = python_source(context=4, root=tmp_path)
    text = "x = 1  # é\nprint('hello')\n"  # a.py then b.py, c.txt left out
    assert ds.n_classes == 97 and ds.X.shape == ((len(text) - 1) // 4, 4)
    assert decode(ds.X[0]) == "x = " and decode(ds.y[0]) == " = 1"
    assert decode(ds.X.ravel()) == text.replace("é", "?")[: ds.X.size]
    assert np.array_equal(ds.y.ravel()[:-1], ds.X.ravel()[1:])
    assert decode(encode("def f():\n\treturn")) == "def f():\n?return"
    with pytest.raises(DataError, match="make fewer than 2 windows of 64"):
        python_source(context=64, root=tmp_path)
