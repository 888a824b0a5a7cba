"""Checkpoint files round-trip bitwise and refuse anything else; a resumed fit ends with the
same bits as a run that never stopped."""

from __future__ import annotations

import json
import pickle
import struct
import zipfile

import numpy as np
import pytest

from pnngraph import DataParallel, ModelAveraging, Pipeline, fit
from pnngraph.compile.kernels import StageState
from pnngraph.compile.strategies import strategy_from_repr
from pnngraph.exceptions import ConfigError, ModelFileError
from pnngraph.nn import Dense, Sequential
from pnngraph.nn.optimizers import SGD, Adam
from pnngraph.npzfile import META
from pnngraph.plan.cluster import simulated_cluster
from pnngraph.run.checkpoint import (
    checkpoint_name,
    data_fingerprint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from tests.graph.conftest import bitwise_equal, make_data, make_mlp
from tests.run.clusters import client_of, local_cluster

BATCH = 20  # 46 samples: batches of 20, 20, 6
RUN = {"batch_size": BATCH, "optimizer": "adam", "lr": 0.01, "progress": False}
STRATEGIES = {
    "data": DataParallel(2),
    "pipeline": Pipeline(2, 2),
    "averaging": ModelAveraging(2, 2),  # steps 3 and 6 fall mid-period
}


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("distributed")
    with local_cluster() as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    with client_of(cluster) as client:
        yield client


def trained_state(optimizer):
    """A model and an optimizer state with non-trivial arrays."""
    model = make_mlp()
    rng = np.random.default_rng(1)
    state = optimizer.init(model.params)
    grads = [{k: rng.standard_normal(v.shape) for k, v in layer.items()} for layer in model.params]
    model.params, state = optimizer.update(model.params, grads, state)
    return model, state


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], list):
            assert bitwise_equal(a[k], b[k])
        else:
            assert a[k] == b[k] and type(a[k]) is type(b[k])


# ---------------------------------------------------------------------------------- files
@pytest.mark.parametrize("optimizer", [Adam(0.01), SGD(0.1, momentum=0.9), SGD(0.1)])
def test_round_trip_is_bitwise(tmp_path, optimizer):
    model, state = trained_state(optimizer)
    losses = np.random.default_rng(2).random(5)
    replicas = [StageState(model.params, state, tuple(losses / 2))] * 2
    config = {"strategy": "x", "nested": {"a": [1, 2.5, None]}}
    path = save_checkpoint(tmp_path, model=model, opt_state=state, step=5, seed=7,
                           losses=losses, config=config, replicas=replicas)
    assert path == tmp_path / "ckpt-00000005.npz"
    ckpt = load_checkpoint(path)
    assert bitwise_equal(ckpt.model.params, model.params)
    assert ckpt.model.config() == model.config()
    assert_same_state(ckpt.opt_state, state)
    assert (ckpt.step, ckpt.seed, ckpt.config, ckpt.path) == (5, 7, config, path)
    np.testing.assert_array_equal(ckpt.losses, losses)
    assert len(ckpt.replicas) == 2
    for r in ckpt.replicas:
        assert bitwise_equal(r.params, model.params)
        assert_same_state(r.opt_state, state)
        assert r.losses == tuple(losses / 2)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_keep_prunes_the_oldest_and_a_directory_means_its_newest(tmp_path):
    model, state = trained_state(SGD(0.1))
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "absent") is None
    for step in (1, 12, 3, 7, 5):  # out of order: "newest" is the highest step
        save_checkpoint(tmp_path, model=model, opt_state=state, step=step, seed=0,
                        losses=np.zeros(step), config={}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [7, 12]
    assert latest_checkpoint(tmp_path) == tmp_path / checkpoint_name(12)
    assert load_checkpoint(tmp_path).step == 12
    save_checkpoint(tmp_path, model=model, opt_state=state, step=13, seed=0,
                    losses=np.zeros(13), config={}, keep=None)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [7, 12, 13]


def test_a_failed_write_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    model, state = trained_state(SGD(0.1))
    kw = {"model": model, "opt_state": state, "seed": 0, "config": {}}
    save_checkpoint(tmp_path, step=4, losses=np.arange(4.0), **kw)
    before = (tmp_path / checkpoint_name(4)).read_bytes()

    def fail_midway(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, step=4, losses=np.ones(4), **kw)
    assert (tmp_path / checkpoint_name(4)).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint_name(4)]


class Boom:
    """Unpickling this would create a file: loading must never get that far."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def damaged(path):
    """One flipped bit in the middle of the stored losses: the member's CRC no longer fits."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("losses.npy")
    at = info.header_offset
    name_len, extra_len = struct.unpack("<HH", data[at + 26 : at + 30])
    data[at + 30 + name_len + extra_len + info.compress_size - 8] ^= 0x01
    path.write_bytes(bytes(data))


def truncated(path):
    path.write_bytes(path.read_bytes()[:-200])


def foreign_npz(path):
    np.savez(path.with_suffix(""), w=np.zeros(3))  # np.savez appends .npz


def model_file(path):
    Sequential([Dense(2, 2)], input_shape=(2,)).save(path)


def wrong_shapes(path):
    with np.load(path) as z:
        arrays = dict(z.items())
    arrays["param/0/W"] = np.zeros((1, 1))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def text(path):
    path.write_text("step 3: all fine\n")


def pickled(path):
    path.write_bytes(pickle.dumps(Boom(path.with_name("pwned"))))


@pytest.mark.parametrize("spoil", [damaged, truncated, foreign_npz, model_file, wrong_shapes,
                                   text, pickled])
def test_anything_but_a_whole_checkpoint_is_a_model_file_error(tmp_path, spoil):
    model, state = trained_state(Adam(0.01))
    path = save_checkpoint(tmp_path, model=model, opt_state=state, step=3, seed=0,
                           losses=np.arange(3.0), config={})
    spoil(path)
    with pytest.raises(ModelFileError) as err:
        load_checkpoint(path)
    assert err.value.path == str(path) and err.value.reason
    assert not (tmp_path / "pwned").exists()


def test_missing_files_and_empty_directories_are_model_file_errors(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load_checkpoint(tmp_path / checkpoint_name(3))
    with pytest.raises(ModelFileError, match="holds no checkpoint"):
        load_checkpoint(tmp_path)


# ---------------------------------------------------------------------------------- resume
def resumed_equals_whole(tmp_path, strategy, stop, client=None):
    """Stop a 7-step run (checkpoints every 3) after ``stop`` steps, resume it, compare."""
    X, y = make_data("mlp")
    kw = {"strategy": strategy, "checkpoint_every": 3, "client": client, **RUN}
    if client is not None:
        kw["scheduler"] = "static"
        # fit scatters the data hashed: held here, one fit's release of those keys cannot race
        # the next fit's scatter of the same keys (which loses them on the workers)
        held = client.scatter([X, y], broadcast=True, hash=True)  # noqa: F841
    whole = fit(make_mlp(), (X, y), steps=7, **{**kw, "checkpoint_every": None})
    folder = tmp_path / "ckpt"
    if stop == 3:  # a run of 3 steps, then the same run asked for 7
        fit(make_mlp(), (X, y), steps=3, checkpoint_dir=folder, **kw)
    else:  # a run of 7 steps that died after writing its checkpoint of step 6
        fit(make_mlp(), (X, y), steps=7, checkpoint_dir=folder, **kw)
        assert [s for s, _ in list_checkpoints(folder)] == [3, 6, 7]
        (folder / checkpoint_name(7)).unlink()
    assert load_checkpoint(folder).step == stop
    resumed = fit(make_mlp(seed=99), (X, y), steps=7, checkpoint_dir=folder, resume=True, **kw)
    assert bitwise_equal(resumed.params, whole.params)
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    assert_same_state(resumed.opt_state, whole.opt_state)
    assert np.all(resumed.step_seconds[:stop] == 0) and np.all(resumed.step_seconds[stop:] > 0)
    assert load_checkpoint(folder).step == 7


@pytest.mark.parametrize("stop", [3, 6])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_resumed_run_is_bitwise_identical(tmp_path, name, stop):
    resumed_equals_whole(tmp_path, STRATEGIES[name], stop)


@pytest.mark.cluster
@pytest.mark.parametrize(("name", "stop"), [("data", 3), ("pipeline", 6), ("averaging", 3),
                                            ("averaging", 6)])
def test_resumed_run_on_a_cluster_is_bitwise_identical(tmp_path, client, name, stop):
    resumed_equals_whole(tmp_path, STRATEGIES[name], stop, client=client)


def test_averaging_checkpoint_mid_period_holds_the_model_of_a_run_that_stopped_there(tmp_path):
    X, y = make_data("mlp")
    kw = {"strategy": ModelAveraging(3, 4), **RUN}
    fit(make_mlp(), (X, y), steps=7, checkpoint_dir=tmp_path, checkpoint_every=3, **kw)
    ckpt = load_checkpoint(tmp_path / checkpoint_name(6))
    stopped = fit(make_mlp(), (X, y), steps=6, **kw)  # its last chunk averages at step 6
    assert bitwise_equal(ckpt.model.params, stopped.params)
    np.testing.assert_array_equal(ckpt.losses, stopped.losses)
    assert len(ckpt.replicas) == 3
    assert not bitwise_equal(ckpt.replicas[0].params, ckpt.replicas[1].params)


def test_chunks_end_on_checkpoints(tmp_path):
    X, y = make_data("mlp")
    fit(make_mlp(), (X, y), steps=10, chunk_steps=4, checkpoint_dir=tmp_path,
        checkpoint_every=3, **RUN)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [6, 9, 10]  # 3 pruned: keep 3
    default = tmp_path / "every-chunk"
    fit(make_mlp(), (X, y), steps=5, chunk_steps=2, checkpoint_dir=default, **RUN)
    assert [s for s, _ in list_checkpoints(default)] == [2, 4, 5]


def test_resume_at_the_end_returns_the_checkpoint(tmp_path):
    X, y = make_data("mlp")
    done = fit(make_mlp(), (X, y), steps=4, checkpoint_dir=tmp_path, **RUN)
    again = fit(make_mlp(), (X, y), steps=4, checkpoint_dir=tmp_path, resume=True, **RUN)
    assert bitwise_equal(again.params, done.params)
    np.testing.assert_array_equal(again.losses, done.losses)
    with pytest.raises(ConfigError, match="at least the 4 steps") as err:
        fit(make_mlp(), (X, y), steps=3, checkpoint_dir=tmp_path, resume=True, **RUN)
    assert err.value.name == "steps"


@pytest.mark.parametrize(("field", "change"), [
    ("model", {"model": Sequential([Dense(5, 3)], input_shape=(5,))}),
    ("batch_size", {"batch_size": 10}),
    ("seed", {"seed": 1}),
    ("shuffle", {"shuffle": False}),
    ("optimizer", {"lr": 0.02}),
    ("optimizer", {"optimizer": "sgd", "lr": 0.01}),
    ("loss", {"loss": "mse", "one_hot": True}),
    ("strategy", {"strategy": Pipeline(2, 2)}),
    ("fan_in", {"fan_in": 3}),
    ("n_samples", {"n_samples": 40}),
])
def test_a_checkpoint_of_another_run_is_refused(tmp_path, field, change):
    X, y = make_data("mlp")
    fit(make_mlp(), (X, y), steps=3, strategy=DataParallel(2), checkpoint_dir=tmp_path, **RUN)
    kw = {"model": make_mlp(), "strategy": DataParallel(2), **RUN, **change}
    if kw.pop("one_hot", False):
        y = np.eye(3)[y]
    n = kw.pop("n_samples", len(X))
    with pytest.raises(ConfigError) as err:
        fit(kw.pop("model"), (X[:n], y[:n]), steps=7, checkpoint_dir=tmp_path, resume=True,
            **kw)
    assert err.value.name == field
    assert "as in checkpoint" in str(err.value)


def perturbed(X, y):
    X = X.copy()
    X[17, 2] = np.nextafter(X[17, 2], np.inf)  # one value, one bit
    return X, y


@pytest.mark.parametrize("other", [
    lambda X, y: (X[::-1], y[::-1]),  # the same samples in another order
    perturbed,
    lambda X, y: (X, np.roll(y, 1)),  # other labels
])
def test_a_checkpoint_of_other_data_of_the_same_shape_is_refused(tmp_path, other):
    X, y = make_data("mlp")
    kw = {"strategy": DataParallel(2), "checkpoint_dir": tmp_path, **RUN}
    fit(make_mlp(), (X, y), steps=3, **kw)
    assert load_checkpoint(tmp_path).fingerprint == data_fingerprint(X, y)
    with pytest.raises(ConfigError, match=r"^data: expected the same X and y \(fingerprint "
                                          r"blake2b:[0-9a-f]{32}\) as in checkpoint .*ckpt-"
                                          r"00000003.npz, got 'other data") as err:
        fit(make_mlp(), other(X, y), steps=6, resume=True, **kw)
    assert err.value.name == "data"


def test_checkpoints_written_without_a_data_fingerprint_still_resume(tmp_path):
    """Files of versions before the fingerprint was recorded resume as they did, unchecked."""
    from tests.npzfiles import members_of

    X, y = make_data("mlp")
    kw = {"strategy": DataParallel(2), **RUN}
    whole = fit(make_mlp(), (X, y), steps=6, **kw)
    fit(make_mlp(), (X, y), steps=3, checkpoint_dir=tmp_path, **kw)
    path = tmp_path / checkpoint_name(3)
    arrays = members_of(path)
    meta = json.loads(arrays[META].tobytes())
    del meta["fingerprint"]
    arrays[META] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    assert load_checkpoint(path).fingerprint is None
    resumed = fit(make_mlp(), (X, y), steps=6, checkpoint_dir=tmp_path, resume=True, **kw)
    assert bitwise_equal(resumed.params, whole.params)
    assert load_checkpoint(tmp_path).fingerprint == data_fingerprint(X, y)  # the new ones record it


def test_the_fingerprint_of_dask_arrays_is_their_token_and_computes_nothing():
    da = pytest.importorskip("dask.array")
    X, y = make_data("mlp")
    a = data_fingerprint(da.from_array(X, chunks=10), da.from_array(y, chunks=10))
    assert a == data_fingerprint(da.from_array(X.copy(), chunks=10), da.from_array(y, chunks=10))
    assert a != data_fingerprint(da.from_array(X[::-1], chunks=10), da.from_array(y, chunks=10))
    assert a.startswith("dask:")
    unknown = da.map_blocks(_never, da.from_array(X, chunks=10), dtype=float)
    assert data_fingerprint(unknown, y).startswith("dask:")  # _never did not run


def _never(block):
    raise AssertionError("the fingerprint of a dask array computed it")


def test_checkpoint_options_are_checked(tmp_path):
    X, y = make_data("mlp")
    for every in (0, -3, 1.5, True):
        with pytest.raises(ConfigError, match="checkpoint_every"):
            fit(make_mlp(), (X, y), steps=3, checkpoint_dir=tmp_path, checkpoint_every=every,
                **RUN)
    with pytest.raises(ConfigError, match="checkpoint_dir to write to"):
        fit(make_mlp(), (X, y), steps=3, checkpoint_every=2, **RUN)
    with pytest.raises(ConfigError, match="checkpoint_dir to resume from"):
        fit(make_mlp(), (X, y), steps=3, resume=True, **RUN)
    fresh = fit(make_mlp(), (X, y), steps=3, checkpoint_dir=tmp_path, resume=True, **RUN)
    assert fresh.losses.shape == (3,)  # nothing to resume from: a fresh start
    with pytest.raises(ConfigError, match="resumed run") as err:  # never mix two runs' files
        fit(make_mlp(), (X, y), steps=3, checkpoint_dir=tmp_path, **RUN)
    assert err.value.name == "checkpoint_dir"


def test_an_auto_run_resumes_with_the_strategy_it_chose(tmp_path):
    """The checkpoint records the strategy "auto" chose; the resumed run takes it, so its
    steps have the same bits even where the choice would fall otherwise now."""
    X, y = make_data("mlp")
    kw = {"strategy": "auto", "cluster": simulated_cluster(cpus=2, gpus=0), **RUN}
    whole = fit(make_mlp(), (X, y), steps=6, **kw)
    fit(make_mlp(), (X, y), steps=3, checkpoint_dir=tmp_path, **kw)
    chosen = strategy_from_repr(load_checkpoint(tmp_path).config["strategy"])
    assert not chosen.chooses
    resumed = fit(make_mlp(), (X, y), steps=6, checkpoint_dir=tmp_path, resume=True, **kw)
    assert bitwise_equal(resumed.params, whole.params)
    np.testing.assert_array_equal(resumed.losses, whole.losses)


def test_a_damaged_newest_checkpoint_is_skipped_for_the_one_before(tmp_path):
    """A resume falls back to the newest checkpoint that loads, says which it skipped, and
    ends with the bits of a run never stopped; temporary files of killed writes are removed."""
    from pnngraph.run.checkpoint import SkippedCheckpointWarning

    X, y = make_data("mlp")
    kw = {"strategy": DataParallel(2), **RUN}
    whole = fit(make_mlp(), (X, y), steps=9, **kw)
    fit(make_mlp(), (X, y), steps=6, checkpoint_dir=tmp_path, checkpoint_every=3, **kw)
    (tmp_path / checkpoint_name(6)).write_bytes(b"PK\x03\x04 not a whole zip")
    stale = tmp_path / f".{checkpoint_name(9)}.4242.tmp"  # a write killed midway
    stale.write_bytes(b"half")
    with pytest.warns(SkippedCheckpointWarning, match=r"skipped checkpoint .*ckpt-00000006"):
        resumed = fit(make_mlp(), (X, y), steps=9, checkpoint_dir=tmp_path, resume=True,
                      checkpoint_every=3, **kw)
    assert bitwise_equal(resumed.params, whole.params)
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    assert not stale.exists()
    assert load_checkpoint(tmp_path).step == 9


def test_when_no_checkpoint_loads_the_newest_ones_error_is_raised(tmp_path):
    for step in (3, 6):
        (tmp_path / checkpoint_name(step)).write_bytes(b"garbage")
    X, y = make_data("mlp")
    with pytest.warns(UserWarning), pytest.raises(ModelFileError, match="ckpt-00000006"):
        fit(make_mlp(), (X, y), steps=9, checkpoint_dir=tmp_path, resume=True,
            strategy=DataParallel(1), **RUN)


def test_metadata_nested_too_deep_is_a_model_file_error(tmp_path):
    """100,000 nested JSON arrays would exhaust the parser's recursion: a one-line
    ModelFileError, as for any other bad metadata (a model file too)."""
    from pnngraph.npzfile import write_npz
    from pnngraph.run.checkpoint import META

    deep = np.frombuffer(("[" * 100_000 + "]" * 100_000).encode(), np.uint8)
    write_npz(tmp_path / checkpoint_name(3), {META: deep})
    with pytest.raises(ModelFileError, match="bad metadata"):
        load_checkpoint(tmp_path)
    write_npz(tmp_path / "model.npz", {"__pnngraph__": deep})
    with pytest.raises(ModelFileError):
        Sequential.load(tmp_path / "model.npz")
