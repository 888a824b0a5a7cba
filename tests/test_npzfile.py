"""The .npz readers refuse what a file's headers show to be wrong before decompressing any of
it: zip bombs, members of the wrong shape or name, Python objects, members longer or shorter
than their headers say. Each loader (checkpoints, Sequential.load, data.load_npz) is shown to
refuse a bomb of at least 1 GiB while its memory grows by less than 100 MB."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from pnngraph import npzfile
from pnngraph.data import load_npz
from pnngraph.exceptions import DataError, ModelFileError
from pnngraph.nn import Dense, Sequential
from pnngraph.nn.optimizers import Adam
from pnngraph.npzfile import META, NpzArchive, read_npz
from pnngraph.run.checkpoint import load_checkpoint, save_checkpoint
from tests.npzfiles import GiB, MiB, members_of, npy_bytes, npy_header, npz_of, peak_bytes, zip_bomb

LITTLE = 100 * 1000 * 1000  # bytes a refusal may take: far less than any bomb here


def refused(error, match, fn):
    """``fn()`` raises ``error`` matching ``match``, and its memory stays small."""
    def attempt():
        with pytest.raises(error, match=match):
            fn()
    peak = peak_bytes(attempt)
    assert peak < LITTLE, f"{peak} bytes while refusing"


def test_the_memory_measure_sees_an_archive_read_and_a_bomb_decompresses_whole(tmp_path):
    """The test bombs are valid archives (CRC included) that read as zeros, and reading one
    shows in peak_bytes; without that, the bounds below would show nothing."""
    path = zip_bomb(tmp_path / "small.npz", "x", (16 * MiB // 8,))
    assert path.stat().st_size < 32 * 1024
    box = {}
    peak = peak_bytes(lambda: box.update(read_npz(path)))
    assert box["x"].shape == (2 * MiB,) and not box["x"].any()
    assert peak >= 16 * MiB


# ------------------------------------------------------------------------------- checkpoints
def checkpoint(folder):
    model = Sequential([Dense(4, 3)], input_shape=(4,))
    state = Adam(0.01).init(model.params)
    return save_checkpoint(folder, model=model, opt_state=state, step=3, seed=0,
                           losses=[0.9, 0.8, 0.7], config={})


def test_a_checkpoint_bomb_of_the_wrong_shape_is_refused_unread(tmp_path):
    path = checkpoint(tmp_path)
    others = {k: v for k, v in members_of(path).items() if k != "losses"}
    zip_bomb(path, "losses", (GiB // 8,), others=others)
    assert path.stat().st_size < 2 * MiB
    refused(ModelFileError, r"array 'losses': expected float64\[3\], got float64\[134217728\]",
            lambda: load_checkpoint(path))


def test_a_checkpoint_bomb_under_an_unexpected_name_is_refused_unread(tmp_path):
    path = checkpoint(tmp_path)
    zip_bomb(path, "extra", (GiB // 8,), others=members_of(path))
    refused(ModelFileError, r"unexpected arrays \['extra'\]", lambda: load_checkpoint(path))


def test_a_bomb_over_max_bytes_is_refused_before_the_metadata_is_read(tmp_path):
    path = checkpoint(tmp_path)
    zip_bomb(path, "extra", (3 * GiB // 8,), others=members_of(path))
    refused(ModelFileError, r"its arrays declare 32212\d+ bytes, more than "
                            r"max_bytes=2147483648 \(the largest, extra: float64\[402653184\]",
            lambda: load_checkpoint(path))
    with pytest.raises(ModelFileError, match="more than max_bytes=100 "):
        load_checkpoint(checkpoint(tmp_path / "small"), max_bytes=100)


def test_a_checkpoint_member_holding_objects_is_refused(tmp_path):
    path = checkpoint(tmp_path)
    arrays = {f"{k}.npy": npy_bytes(v) for k, v in members_of(path).items()}
    arrays["losses.npy"] = npy_bytes(np.array([{"a": 1}, 2, 3], dtype=object))
    npz_of(path, arrays)
    with pytest.raises(ModelFileError, match=r"member 'losses.npy' holds Python objects "
                                             r"\(dtype object\), which are never unpickled"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------------ models
def model_file(path):
    Sequential([Dense(4, 3)], input_shape=(4,)).save(path)
    return path


def test_a_model_bomb_of_the_wrong_shape_is_refused_unread(tmp_path):
    path = model_file(tmp_path / "m.npz")
    others = {k: v for k, v in members_of(path).items() if k != "param/0/W"}
    zip_bomb(path, "param/0/W", (GiB // 8 // 4, 4), others=others)
    refused(ModelFileError, r"parameters do not match the architecture: 'param/0/W' is "
                            r"\[33554432, 4\], expected \[4, 3\]", lambda: Sequential.load(path))


def test_a_model_bomb_under_an_unexpected_name_is_refused_unread(tmp_path):
    path = model_file(tmp_path / "m.npz")
    zip_bomb(path, "param/9/W", (GiB // 8,), others=members_of(path))
    refused(ModelFileError, r"parameters \['param/0/W', 'param/0/b', 'param/9/W'\] do not "
                            "match", lambda: Sequential.load(path))


def test_a_model_member_holding_objects_is_refused(tmp_path):
    path = model_file(tmp_path / "m.npz")
    arrays = {f"{k}.npy": npy_bytes(v) for k, v in members_of(path).items()}
    arrays["param/0/b.npy"] = npy_bytes(np.array([None] * 3, dtype=object))
    npz_of(path, arrays)
    with pytest.raises(ModelFileError, match="holds Python objects"):
        Sequential.load(path)


def test_model_metadata_that_is_not_bytes_is_refused_unread(tmp_path):
    path = zip_bomb(tmp_path / "m.npz", META, (GiB // 8,))
    refused(ModelFileError, r"bad metadata: expected at most 67108864 bytes \(uint8\), got "
                            r"__pnngraph__: float64\[134217728\]", lambda: Sequential.load(path))


# -------------------------------------------------------------------------------------- data
def test_a_data_bomb_over_max_bytes_is_refused_unread(tmp_path):
    path = zip_bomb(tmp_path / "d.npz", "X", (3 * GiB // 8 // 8, 8), others={"y": np.zeros(4)})
    assert path.stat().st_size < 4 * MiB
    refused(DataError, r"d\.npz: cannot read the archive \(its arrays declare 32212\d+ bytes, "
                       r"more than max_bytes=2147483648", lambda: load_npz(path))


def test_data_members_not_asked_for_are_not_read(tmp_path):
    """Besides X and y an archive may hold other arrays (Keras' mnist.npz holds the test set):
    they are checked by their headers but not decompressed."""
    path = zip_bomb(tmp_path / "d.npz", "x_test", (GiB // 8,),
                    others={"X": np.ones((4, 2)), "y": np.array([0, 1, 0, 1])})
    box = {}
    assert peak_bytes(lambda: box.update(ds=load_npz(path))) < LITTLE
    assert box["ds"].X.shape == (4, 2) and box["ds"].n_classes == 2


def test_max_bytes_bounds_a_data_file_and_can_be_raised(tmp_path, monkeypatch):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.ones((100, 2)), y=np.zeros(100, dtype=int))
    with pytest.raises(DataError, match="more than max_bytes=1000"):
        load_npz(path, max_bytes=1000)
    monkeypatch.setattr(npzfile, "MAX_BYTES", 1000)  # every reader's default
    with pytest.raises(DataError, match="more than max_bytes=1000"):
        load_npz(path)
    assert load_npz(path, max_bytes=3000).X.shape == (100, 2)


# ------------------------------------------------------------------------ what headers reveal
@pytest.mark.parametrize(("members", "message"), [
    ({"notes.txt": b"hello"}, r"member 'notes.txt' is not a .npy array"),
    ({"x.npy": b"hello, not an array"}, r"member 'x.npy': not a .npy array \(.*magic"),
    ({"x.npy": npy_header(np.float64, (10,)) + bytes(40)},
     r"member 'x.npy' declares float64\[10\], 208 bytes with its header, but holds 168"),
    ({"x.npy": npy_bytes(np.arange(3.0)) + bytes(8)},
     r"member 'x.npy' declares float64\[3\], 152 bytes with its header, but holds 160"),
    ({"x.npy": npy_bytes([{"a": 1}])}, r"member 'x.npy' holds Python objects"),
])
def test_members_are_refused_by_their_headers(tmp_path, members, message):
    path = npz_of(tmp_path / "a.npz", members)
    with pytest.raises(ModelFileError, match=message) as err:
        read_npz(path)
    assert err.value.path == str(path) and "\n" not in str(err.value)


def test_a_member_twice_is_refused(tmp_path):
    path = npz_of(tmp_path / "a.npz", {"x.npy": npy_bytes([1]), "y.npy": npy_bytes([2])})
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "a") as z:
        z.writestr("x.npy", npy_bytes([3]))
    with pytest.raises(ModelFileError, match="member 'x.npy' appears twice"):
        read_npz(path)


def test_headers_are_what_the_archive_shows_before_reading(tmp_path):
    path = tmp_path / "a.npz"
    np.savez_compressed(path, a=np.zeros((2, 3), np.float32), b=np.arange(4))
    with NpzArchive(path) as archive:
        assert {k: (m.dtype, m.shape, m.nbytes) for k, m in archive.members.items()} == {
            "a": (np.dtype(np.float32), (2, 3), 24), "b": (np.dtype(np.int64), (4,), 32)}
        assert archive.read(["b"])["b"].tolist() == [0, 1, 2, 3]
