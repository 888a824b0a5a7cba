"""Bad usage across the API and the command line: each case gets one typed, one-line error that
says what was expected and what came. docs/errors.md lists every case with its message."""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from click.testing import CliRunner

import pnngraph
from pnngraph import exceptions as ex
from pnngraph.cli import main
from pnngraph.compile.strategies import strategy_from_repr
from pnngraph.data import load_npz
from pnngraph.nn import Dense, Dropout, ReLU, Sequential, activation, get_loss, get_optimizer
from pnngraph.nn.schedules import Cosine, StepDecay, Warmup
from pnngraph.plan.cluster import cluster_from_spec, simulated_cluster
from pnngraph.plan.planner import make_plan
from pnngraph.record import RunRecord
from pnngraph.testing import slow_down
from tests.npzfiles import npy_bytes, npy_header

DOCS = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
rng = np.random.default_rng(0)
X = rng.standard_normal((30, 4))
Y = (X[:, 0] > 0).astype(int)
ONE = {"steps": 1, "batch_size": 10}  # one step of a third of the data


def mlp():
    return Sequential([Dense(4, 8), ReLU(), Dense(8, 2)], input_shape=(4,))


def language_model(max_len=6, heads=2):
    from pnngraph.nn import Embedding, LayerNorm, MultiHeadSelfAttention, PositionalEmbedding

    return Sequential([Embedding(11, 8), PositionalEmbedding(max_len),
                       MultiHeadSelfAttention(heads, causal=True), LayerNorm(), Dense(8, 11)],
                      input_shape=(6,))


TOKENS = rng.integers(0, 11, (30, 6)).astype(float)


def api(fn, *args, **kwargs):
    return lambda: fn(*args, **kwargs)


def run_until_not_finite(model, X_run, **options):
    """Two data-parallel steps on the synchronous scheduler (shards in order)."""
    import dask

    graph = pnngraph.build(model, (X_run, Y), strategy=pnngraph.DataParallel(2), steps=2,
                           batch_size=10, **options)
    with np.errstate(all="ignore"):
        dask.compute(graph, scheduler="sync")


def nan_loss():
    model = Sequential([Dense(4, 2)], input_shape=(4,))
    model.params[0]["W"] = np.full((4, 2), 1e308)  # finite, but every logit overflows
    run_until_not_finite(model, np.abs(X) + 1.0)


def inf_gradient():
    # inputs of 1e200 through a first layer of 1e-200 give outputs of about 1 and a finite loss
    # of about 1e200; the first layer's gradient is inputs x (1e200-size weights): inf
    model = Sequential([Dense(4, 3), Dense(3, 2)], input_shape=(4,))
    model.params[0]["W"] = model.params[0]["W"] * 1e-200
    model.params[1]["W"] = model.params[1]["W"] * 1e200
    run_until_not_finite(model, X * 1e200)


def inf_parameters():
    run_until_not_finite(Sequential([Dense(4, 2)], input_shape=(4,)), X * 1e200, lr=1e200)


def dask_data(X_data=X, y_data=Y):
    import dask.array as da

    return da.from_array(X_data, chunks=(10, 4)), da.from_array(y_data, chunks=10)


def with_value(a, index, value):
    a = a.astype(float)
    a[index] = value
    return a


def unknown_chunk_sizes():
    dX, dy = dask_data()
    keep = dX[:, 0] > -10  # a boolean mask: dask cannot know how many rows stay
    pnngraph.build(mlp(), (dX[keep], dy[keep]), **ONE)


def checkpoint_dir_a_file(tmp: Path):
    (tmp / "file").write_text("not a folder")
    pnngraph.fit(mlp(), (X, Y), **ONE, checkpoint_dir=tmp / "file", progress=False)


def momentum_state_of(model):
    return pnngraph.SGD(0.1, momentum=0.9).init(model.params)


def one_hot_as_dask_array():
    import dask.array as da

    pnngraph.build(mlp(), (da.from_array(X), da.from_array(np.eye(2)[Y])), steps=1)


def not_a_model(tmp: Path):
    np.savez(tmp / "other.npz", a=np.zeros(2))
    Sequential.load(tmp / "other.npz")


def load_members(members):
    """Sequential.load of an archive of these raw members (file name -> bytes)."""
    def load(tmp: Path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns of a duplicate name
            with zipfile.ZipFile(tmp / "a.npz", "w") as z:
                for name, raw in members:
                    z.writestr(name, raw)
        Sequential.load(tmp / "a.npz")
    return load


def model_file(tmp: Path) -> Path:
    Sequential([Dense(16, 8)], input_shape=(16,)).save(tmp / "m.npz")
    return tmp / "m.npz"


def wrong_shape(tmp: Path):
    path = model_file(tmp)
    with np.load(path) as z:
        arrays = dict(z.items()) | {"param/0/W": np.zeros((3, 3))}
    np.savez(path, **arrays)
    Sequential.load(path)


def checkpoint_with(tmp: Path, **meta_entries):
    from pnngraph.run.checkpoint import META, load_checkpoint, save_checkpoint

    model = mlp()
    path = save_checkpoint(tmp, model=model, opt_state=pnngraph.SGD(0.1).init(model.params),
                           step=3, seed=0, losses=[0.3] * 3, config={})
    with np.load(path) as z:
        arrays = dict(z.items())
    meta = json.loads(arrays[META].tobytes()) | meta_entries
    np.savez(path, **arrays | {META: np.frombuffer(json.dumps(meta).encode(), np.uint8)})
    load_checkpoint(path)


def resumed_on_other_data(tmp: Path):
    kw = {"steps": 3, "checkpoint_dir": tmp, "progress": False, "batch_size": 10}
    pnngraph.fit(mlp(), (X, Y), **kw)
    pnngraph.fit(mlp(), (X[::-1], Y[::-1]), resume=True, **kw)


class Unregistered(pnngraph.Layer):
    """The identity, as a layer class of one's own."""

    kind = "errors-unregistered"

    def forward(self, xp, params, x, ctx):
        return x, None

    def backward(self, xp, params, cache, dy):
        return dy, {}


class WrongShapes(Unregistered):
    kind = "errors-wrong-shapes"

    def backward(self, xp, params, cache, dy):
        return dy[:, :1], {}


def data_file(tmp: Path, **arrays) -> Path:
    np.savez(tmp / "d.npz", **arrays)
    return tmp / "d.npz"


API_CASES = {
    "an adaptive run without a client": (ex.ConfigError, api(
        pnngraph.fit, mlp(), (X, Y), **ONE, adapt=True, progress=False)),
    "adapt not a bool": (ex.ConfigError, api(pnngraph.fit, mlp(), (X, Y), **ONE, adapt="yes",
                                             progress=False)),
    "a drift threshold not above 0": (ex.ConfigError, api(
        pnngraph.fit, mlp(), (X, Y), **ONE, adapt_threshold=0, progress=False)),
    "an emulated slow-down below 1": (ex.ConfigError, lambda: slow_down(None, "w", 0.5)),
    "layer size not positive": (ex.ConfigError, api(Dense, 0, 3)),
    "layer shapes do not chain": (ex.ShapeError, api(Sequential, [Dense(4, 8), Dense(7, 2)],
                                                      input_shape=(4,))),
    "input of the wrong shape": (ex.ShapeError, lambda: mlp().predict(np.zeros((2, 5)))),
    "recurrent layer size not positive": (ex.ConfigError, api(pnngraph.LSTM, 0)),
    "return_sequences not a bool": (ex.ConfigError, api(pnngraph.LSTM, 3, return_sequences="yes")),
    "a recurrent layer on samples that are not sequences": (ex.ShapeError, api(
        Sequential, [pnngraph.LSTM(3)], input_shape=(4,))),
    "a pooling window larger than its input": (ex.ShapeError, api(
        Sequential, [pnngraph.AvgPool2D(5)], input_shape=(1, 4, 4))),
    "global pooling of samples that are not images": (ex.ShapeError, api(
        Sequential, [pnngraph.GlobalAvgPool2D()], input_shape=(4, 3))),
    "BatchNorm on samples that are neither vectors nor images": (ex.ShapeError, api(
        Sequential, [pnngraph.BatchNorm()], input_shape=(4, 3))),
    "labels out of range": (ex.DataError, api(pnngraph.train_serial, mlp(), X, Y + 5, steps=1)),
    "labels not integers": (ex.DataError, api(pnngraph.train_serial, mlp(), X, Y + 0.5,
                                              steps=1)),
    "NaN in the inputs": (ex.DataError, api(pnngraph.train_serial, mlp(),
                                            np.where(X > 1.5, np.nan, X), Y, steps=1)),
    "no samples": (ex.DataError, api(pnngraph.train_serial, mlp(), X[:0], Y[:0], steps=1)),
    "X and y lengths differ": (ex.DataError, api(pnngraph.train_serial, mlp(), X, Y[:-1],
                                                 steps=1)),
    "learning rate not positive": (ex.ConfigError, api(pnngraph.train_serial, mlp(), X, Y,
                                                       steps=1, lr=0.0)),
    "gradient clipping norm not positive": (ex.ConfigError, api(
        pnngraph.train_serial, mlp(), X, Y, steps=1, clip_norm=-1.0)),
    "a schedule with a negative learning rate": (ex.ConfigError, api(Cosine, -0.1,
                                                                     total_steps=10)),
    "a cosine floor above its learning rate": (ex.ConfigError, api(Cosine, 0.1, total_steps=10,
                                                                   floor=0.2)),
    "a step decay that grows": (ex.ConfigError, api(StepDecay, 0.1, every=2, gamma=1.5)),
    "a warm-up of no steps": (ex.ConfigError, api(Warmup, Cosine(0.1, total_steps=10), 0)),
    "label smoothing of 1": (ex.ConfigError, api(pnngraph.train_serial, mlp(), X, Y, steps=1,
                                                 label_smoothing=1.0)),
    "label smoothing of a loss that is not cross-entropy": (ex.ConfigError, api(
        pnngraph.train_serial, mlp(), X, Y, steps=1, loss="mse", label_smoothing=0.1)),
    "batch size not positive": (ex.ConfigError, api(pnngraph.train_serial, mlp(), X, Y, steps=1,
                                                    batch_size=0)),
    "unknown activation": (ex.UnknownNameError, api(activation, "swish")),
    "unknown loss": (ex.UnknownNameError, api(get_loss, "hinge")),
    "unknown optimizer": (ex.UnknownNameError, api(get_optimizer, "rmsprop")),
    "steps and epochs both given": (ex.ConfigError, api(pnngraph.train_serial, mlp(), X, Y,
                                                        steps=1, epochs=1)),
    "dropout rate of 1": (ex.ConfigError, api(Dropout, 1.0)),
    "more shards than samples in a batch": (ex.ConfigError, api(
        pnngraph.build, mlp(), (X, Y), strategy=pnngraph.DataParallel(11), steps=1,
        batch_size=10)),
    "more micro-batches than samples in a shard": (ex.ConfigError, api(
        pnngraph.build, mlp(), (X, Y), strategy=pnngraph.Pipeline(2, 11), steps=1,
        batch_size=10)),
    "more stages than layers": (ex.ConfigError, api(
        pnngraph.build, mlp(), (X, Y), strategy=pnngraph.Pipeline(4), steps=1)),
    "a token id outside the vocabulary": (ex.DataError, api(
        pnngraph.train_serial, language_model(), with_value(TOKENS, (3, 2), 11), TOKENS,
        steps=1)),
    "a token id that is not an integer": (ex.DataError, lambda: language_model().predict(
        with_value(TOKENS, (0, 5), 2.5))),
    "a sequence longer than max_len": (ex.ShapeError, api(language_model, max_len=4)),
    "a width not a multiple of the heads": (ex.ShapeError, api(language_model, heads=3)),
    "labels of a sequence model of the wrong shape": (ex.DataError, api(
        pnngraph.train_serial, language_model(), TOKENS, Y, steps=1)),
    "a label per position out of range": (ex.DataError, api(
        pnngraph.train_serial, language_model(), TOKENS, with_value(TOKENS, (4, 1), 11),
        steps=1)),
    "LayerNorm eps not positive": (ex.ConfigError, lambda: pnngraph.LayerNorm(0.0)),
    "BatchNorm momentum outside (0, 1]": (ex.ConfigError, lambda: pnngraph.BatchNorm(1.5)),
    "BatchNorm eps not positive": (ex.ConfigError, lambda: pnngraph.BatchNorm(eps=0.0)),
    "BatchNorm in a pipeline": (ex.ConfigError, api(
        pnngraph.build, Sequential([Dense(4, 8), pnngraph.BatchNorm(), Dense(8, 2)],
                                   input_shape=(4,)), (X, Y), strategy=pnngraph.Pipeline(2, 2),
        **ONE)),
    "BatchNorm with a shard of one sample": (ex.ConfigError, api(
        pnngraph.build, Sequential([Dense(4, 8), pnngraph.BatchNorm(), Dense(8, 2)],
                                   input_shape=(4,)), (X, Y), strategy=pnngraph.DataParallel(10),
        **ONE)),
    "unknown strategy": (ex.UnknownNameError, api(pnngraph.build, mlp(), (X, Y),
                                                  strategy="zero-bubble", steps=1)),
    "unknown scheduler": (ex.UnknownNameError, api(pnngraph.build, mlp(), (X, Y), **ONE,
                                                   strategy="data", scheduler="magic")),
    "GPU plan on a cluster without GPUs": (ex.ConfigError, api(
        pnngraph.build, mlp(), (X, Y), **ONE, strategy="data",
        cluster=simulated_cluster(2, 0), devices="gpu")),
    "shards='auto' without a cluster": (ex.ConfigError, api(
        pnngraph.build, mlp(), (X, Y), **ONE, strategy=pnngraph.DataParallel("auto"))),
    "a list scheduler with nothing to plan on": (ex.ConfigError, api(
        pnngraph.build, mlp(), (X, Y), **ONE, strategy="data", scheduler="heft")),
    "a seed that is not an integer >= 0": (ex.ConfigError, api(pnngraph.train_serial, mlp(), X, Y,
                                                              steps=1, seed=-1)),
    "loss becomes NaN during a run": (ex.TrainingError, nan_loss),
    "a recorded strategy that is not one": (ex.ConfigError, api(strategy_from_repr, "Dense(3)")),
    "unknown keyword argument": (ex.OptionError, api(pnngraph.fit, mlp(), (X, Y), **ONE,
                                                     epoch=3)),
    "unknown keyword with an optimizer instance": (ex.OptionError, api(
        pnngraph.build, mlp(), (X, Y), **ONE, optimizer=pnngraph.Adam(), lr_decay=0.1)),
    "one-hot rows that are not one-hot": (ex.DataError, api(
        pnngraph.train_serial, mlp(), X, np.where(np.arange(30)[:, None] == 4, 0.5,
                                                  np.eye(2)[Y]), steps=1)),
    "one-hot rows of the wrong width": (ex.DataError, api(pnngraph.train_serial, mlp(), X,
                                                          np.eye(3)[Y], steps=1)),
    "one-hot rows that are not numbers": (ex.DataError, api(
        pnngraph.train_serial, mlp(), X, np.eye(2)[Y].astype(str), steps=1)),
    "one-hot labels as a dask array": (ex.DataError, one_hot_as_dask_array),
    "validation data that is not a pair": (ex.ConfigError, api(
        pnngraph.fit, mlp(), (X, Y), **ONE, validation_data=X)),
    "validation X and y lengths differ": (ex.DataError, api(
        pnngraph.fit, mlp(), (X, Y), **ONE, validation_data=(X, Y[:-1]))),
    "validation labels out of range": (ex.DataError, api(
        pnngraph.fit, mlp(), (X, Y), **ONE, validation_data=(X, Y + 5))),
    "callback monitors a metric the run does not log": (ex.ConfigError, api(
        pnngraph.fit, mlp(), (X, Y), **ONE, callbacks=[pnngraph.EarlyStopping("val_loss")])),
    "callbacks not a list": (ex.ConfigError, api(pnngraph.fit, mlp(), (X, Y), **ONE,
                                                 callbacks=pnngraph.EarlyStopping("loss"))),
    "a callback that is not a Callback": (ex.ConfigError, api(pnngraph.fit, mlp(), (X, Y), **ONE,
                                                              callbacks=[print])),
    "unknown EarlyStopping mode": (ex.UnknownNameError, api(pnngraph.EarlyStopping,
                                                            mode="up")),
    "EarlyStopping patience negative": (ex.ConfigError, api(pnngraph.EarlyStopping,
                                                            patience=-1)),
    "EarlyStopping min_delta negative": (ex.ConfigError, api(pnngraph.EarlyStopping,
                                                             min_delta=-0.5)),
    "EarlyStopping restore_best not a bool": (ex.ConfigError, api(
        pnngraph.EarlyStopping, restore_best="yes")),
    "a monitor that is not a name": (ex.ConfigError, api(pnngraph.BestCheckpoint, "m.npz",
                                                         monitor=3)),
    "predict_proba of a model that is not a classifier": (ex.ConfigError, lambda: Sequential(
        [pnngraph.Conv2D(1, 2, 3)], input_shape=(1, 4, 4)).predict_proba(np.zeros((1, 1, 4, 4)))),
    "inputs of complex numbers": (ex.DataError, api(pnngraph.train_serial, mlp(), X + 1j, Y,
                                                    **ONE)),
    "batch larger than the data": (ex.ConfigError, api(pnngraph.fit, mlp(), (X, Y), steps=1,
                                                       batch_size=10**9)),
    "a bool where a number goes": (ex.ConfigError, api(pnngraph.train_serial, mlp(), X, Y, **ONE,
                                                       lr=True)),
    "checkpoint_dir naming a file": (ex.ConfigError, checkpoint_dir_a_file),
    "a dask array of unknown chunk sizes": (ex.DataError, unknown_chunk_sizes),
    "a window of blocks below 1": (ex.ConfigError, api(pnngraph.build, mlp(), dask_data(), **ONE,
                                                       window=0)),
    "block rows that do not add up to the data": (ex.ConfigError, api(
        pnngraph.train_serial, mlp(), X, Y, **ONE, block_rows=(10, 10))),
    "NaN in a dask array": (ex.DataError, api(pnngraph.build, mlp(), dask_data(
        with_value(X, (13, 1), np.nan)), **ONE)),
    "labels out of range in a dask array": (ex.DataError, api(pnngraph.build, mlp(), dask_data(
        y_data=with_value(Y, 17, 9)), **ONE)),
    "labels not integers in a dask array": (ex.DataError, api(pnngraph.build, mlp(), dask_data(
        y_data=with_value(Y, 23, 1.5)), **ONE)),
    "an optimizer state that is not one": (ex.ConfigError, api(pnngraph.build, mlp(), (X, Y),
                                                               **ONE, opt_state={"foo": 1})),
    "an optimizer state of another model": (ex.ConfigError, api(
        pnngraph.build, mlp(), (X, Y), **ONE, momentum=0.9, opt_state=momentum_state_of(
            Sequential([Dense(4, 7), ReLU(), Dense(7, 2)], input_shape=(4,))))),
    "GPU plan with nothing to place on": (ex.ConfigError, api(pnngraph.fit, mlp(), (X, Y), **ONE,
                                                              devices="gpu", progress=False)),
    "GPU plan with the dask scheduler": (ex.ConfigError, api(
        pnngraph.build, mlp(), (X, Y), **ONE, cluster=simulated_cluster(1, 1), devices="gpu",
        scheduler="dask")),
    "a Keras-style Conv2D without its kernel size": (ex.ConfigError, api(pnngraph.Conv2D, 3)),
    "branches of an added block disagree": (ex.ShapeError, api(
        Sequential, [pnngraph.Parallel([[Dense(3)], [Dense(2)]])], input_shape=(4,))),
    "a layer inside a block does not fit": (ex.ShapeError, api(
        Sequential, [pnngraph.Residual([Dense(3, 3)])], input_shape=(4,))),
    "a residual block of one layer, not a list": (ex.ConfigError, api(pnngraph.Residual,
                                                                      Dense(2))),
    "a block merged by an unknown rule": (ex.UnknownNameError, api(pnngraph.Parallel,
                                                                   [[Dense(2)]], merge="mul")),
    "registering what is not a layer class": (ex.ConfigError, api(pnngraph.register_layer, int)),
    "registering a layer under a built-in kind": (ex.ConfigError, api(
        pnngraph.register_layer, type("Clash", (pnngraph.Layer,), {"kind": "dense"}))),
    "saving a layer class that is not registered": (ex.ConfigError, lambda tmp: Sequential(
        [Unregistered()], input_shape=(3,)).save(tmp / "m.npz")),
    "a registered layer whose backward returns wrong shapes": (ex.ConfigError, lambda: Sequential(
        [pnngraph.register_layer(WrongShapes)()], input_shape=(3,))),
    "gradient becomes NaN or inf during a run": (ex.TrainingError, inf_gradient),
    "parameters become NaN or inf in an update": (ex.TrainingError, inf_parameters),
}

def cluster_file(**change):
    return api(cluster_from_spec, {"workers": [{"name": "cpu", "gflops": 100, "count": 4}],
                                   **change})


def worker_group(**change):
    return cluster_file(workers=[{"name": "cpu", "gflops": 100, **change}])


API_CASES |= {
    "a cluster file key not known": (ex.ConfigError, cluster_file(bandwidth=10)),
    "a cluster file with the network speed twice": (ex.ConfigError, cluster_file(
        network_gb_per_s=1, network_gbit_per_s=10)),
    "a cluster file latency not a number": (ex.ConfigError, cluster_file(hop_latency_ms="fast")),
    "a cluster file's shared_links not true or false": (ex.ConfigError, cluster_file(
        shared_links="yes")),
    "a cluster file of too many workers": (ex.ConfigError, worker_group(count=200_000)),
    "a worker group of no workers": (ex.ConfigError, worker_group(count=0)),
    "a worker group key not known": (ex.ConfigError, worker_group(colour="red")),
    "a worker group speed not a positive number": (ex.ConfigError, worker_group(gflops=-1)),
    "a worker group backend not known": (ex.ConfigError, worker_group(backend="tpu")),
    "unknown check of a tiled plan": (ex.UnknownNameError, api(
        make_plan, nx.DiGraph(), simulated_cluster(1, 0), verify="none")),
    "a worker group memory limit not a positive number": (ex.ConfigError, worker_group(
        memory_gb=0)),
    "a memory limit too small for any plan": (ex.MemoryPlanError, api(
        pnngraph.build, mlp(), (X, Y), **ONE, strategy=pnngraph.DataParallel(2),
        cluster=simulated_cluster(2, 0, memory_gb=0.05))),
}

FILE_CASES = {  # built in a temporary folder, named TMP in the messages
    "an archive member that is not an array": (ex.ModelFileError, load_members(
        [("notes.txt", b"hello")])),
    "an archive member twice": (ex.ModelFileError, load_members(
        [("x.npy", npy_bytes([1])), ("x.npy", npy_bytes([2]))])),
    "an archive member with a bad .npy header": (ex.ModelFileError, load_members(
        [("x.npy", b"hello")])),
    "an archive member of Python objects": (ex.ModelFileError, load_members(
        [("x.npy", npy_bytes(np.array([None], dtype=object)))])),
    "an archive member shorter than its header says": (ex.ModelFileError, load_members(
        [("x.npy", npy_header(np.float64, (10,)) + bytes(40))])),
    "arrays that declare more than max_bytes": (ex.ModelFileError, lambda tmp: Sequential.load(
        model_file(tmp), max_bytes=1000)),
    "metadata that is not bytes": (ex.ModelFileError, load_members(
        [("__pnngraph__.npy", npy_bytes(np.zeros(3)))])),
    "a model parameter of another shape": (ex.ModelFileError, wrong_shape),
    "a checkpoint's data fingerprint not a string": (ex.ModelFileError, lambda tmp:
                                                     checkpoint_with(tmp, fingerprint=5)),
    "a data file that declares more than max_bytes": (ex.DataError, lambda tmp: load_npz(
        data_file(tmp, X=X, y=Y), max_bytes=100)),
    "a data file of Python objects": (ex.DataError, lambda tmp: load_npz(data_file(
        tmp, X=np.array([None], dtype=object), y=Y[:1]))),
    "a run resumed on other data of the same shape": (ex.ConfigError, resumed_on_other_data),
}

CLI_CASES = {
    "unknown dataset": ["train", "--data", "nope"],
    "unknown model preset": ["train", "--model", "vgg"],
    "a learning-rate schedule not known": ["train", "--lr-schedule", "linear"],
    "hidden widths not integers": ["train", "--hidden", "a,b"],
    "no scheduler at the address": ["train", "--scheduler-address", "tcp://127.0.0.1:9",
                                    "--timeout", "1"],
    "resume without a checkpoint": ["train", "--resume", "--output-dir", "{tmp}/empty"],
    "TLS options incomplete": ["train", "--tls-ca-file", "{tmp}/ca.pem", "--scheduler-address",
                               "tls://127.0.0.1:9"],
    "shards not a count or weights": ["train", "--strategy", "data", "--shards", "x,y",
                                      "--workers", "1"],
    "report of a folder that is not a run": ["report", "{tmp}"],
    "cluster file that is not a cluster": ["plan", "--cluster-file", "{tmp}/bad.yaml"],
    "cluster file with a bad worker group": ["plan", "--cluster-file", "{tmp}/groups.yaml"],
    "more stages than layers": ["train", "--strategy", "pipeline", "--stages", "5"],
    "more shards than samples in the smallest batch": ["train", "--strategy", "data", "--shards",
                                                       "100"],
    "emulated GPUs without GPU workers": ["train", "--emulate-gpu"],
    "a run directory in use": ["train", "--output-dir", "{tmp}/used"],
    "resumed with another option": ["train", "--resume", "--output-dir", "{tmp}/done", "--lr",
                                    "0.5"],
    "a scheduler address that is not one": ["train", "--scheduler-address", "notaurl"],
    "a tls:// scheduler without TLS files": ["train", "--scheduler-address",
                                             "tls://127.0.0.1:9"],
    "TLS files without a tls:// scheduler": ["train", "--tls-ca-file", "{tmp}/ca.pem"],
    "hidden widths empty or not positive": ["train", "--hidden", "0,4"],
    "a serial run resumed": ["train", "--strategy", "serial", "--resume", "--output-dir",
                             "{tmp}/empty"],
}


def message_of(fn, tmp: Path | None = None) -> tuple[type, str]:
    """The type and message of the error ``fn`` raises (``fn(tmp)`` when it takes a folder),
    the folder written TMP and a scheduler's address as the docs' placeholder."""
    try:
        fn(tmp) if fn.__code__.co_argcount else fn()
    except ex.PnngraphError as err:
        message = str(err) if tmp is None else str(err).replace(str(tmp), "TMP")
        return type(err), re.sub(r"tcp://127\.0\.0\.1:\d+", "tcp://scheduler-host:8786", message)
    raise AssertionError("no error raised")


def check_documented(kind, got, message):
    assert got is kind and isinstance(message, str)
    assert "\n" not in message and len(message) < 300
    assert "expected" in message or "became" in message or "outside" in message or \
        "samples" in message or "NaN" in message
    assert f"`{message}`" in DOCS.read_text(), f"docs/errors.md lacks: {message}"


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_api_errors_are_typed_one_line_and_documented(case, tmp_path):
    kind, fn = API_CASES[case]
    check_documented(kind, *message_of(fn, tmp_path))


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes (the checks of dask blocks travel pickled)."""
    import distributed

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster:
        yield cluster


def closed_client(cluster):
    import distributed

    client = distributed.Client(cluster)
    client.close()
    pnngraph.fit(mlp(), (X, Y), **ONE, client=client, progress=False)


def no_workers(cluster):
    import distributed

    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp", host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0") as empty, \
            distributed.Client(empty) as c:
        pnngraph.fit(mlp(), (X, Y), **ONE, client=c, scheduler="dask", progress=False)


def on_client(data=(X, Y), **options):
    def run(cluster):
        import distributed

        with distributed.Client(cluster) as client:
            pnngraph.fit(mlp(), data, **ONE, client=client, progress=False, **options)
    return run


CLUSTER_CASES = {
    "a closed client": (ex.ConfigError, closed_client),
    "a cluster without workers": (ex.ConfigError, no_workers),
    "GPU plan on a client without GPU workers": (ex.ConfigError, on_client(devices="gpu")),
    "NaN in a dask array on a cluster": (ex.DataError, on_client(data=dask_data(
        with_value(X, (13, 1), np.nan)))),
}


@pytest.mark.cluster
@pytest.mark.parametrize("case", sorted(CLUSTER_CASES))
def test_cluster_errors_come_before_any_work_on_it(case, cluster, monkeypatch):
    """Each is refused before the cluster is measured, the data placed or a plan made."""
    from pnngraph.run import pipeline

    def no_work(*args, **kwargs):
        raise AssertionError("work on the cluster began")

    for name in ("calibrate", "_place_data", "place", "profile"):
        monkeypatch.setattr(pipeline, name, no_work)
    kind, fn = CLUSTER_CASES[case]
    check_documented(kind, *message_of(lambda: fn(cluster)))


def test_foreign_model_file_error(tmp_path):
    got, message = message_of(not_a_model, tmp_path)
    assert got is ex.ModelFileError and "no pnngraph metadata" in message


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_file_errors_are_typed_one_line_and_documented(case, tmp_path):
    kind, fn = FILE_CASES[case]
    got, message = message_of(lambda: fn(tmp_path))
    message = re.sub(r"blake2b:[0-9a-f]{32}", "blake2b:HASH",
                     message.replace(str(tmp_path), "TMP"))
    assert got is kind and "\n" not in message and len(message) < 300
    assert f"`{message}`" in DOCS.read_text(), f"docs/errors.md lacks: {message}"


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_errors_are_one_line_with_exit_code_2(case, tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "bad.yaml").write_text("just: text\n")
    (tmp_path / "groups.yaml").write_text("workers:\n  - {name: cpu, gflops: 100, count: -4}\n")
    for run_dir in ("used", "done"):  # a finished run's directory
        (tmp_path / run_dir).mkdir()
        RunRecord(options={"lr": 0.1}).save(tmp_path / run_dir / "run.json")
    args = [a.replace("{tmp}", str(tmp_path)) for a in CLI_CASES[case]]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    line = lines[0].replace(str(tmp_path), "TMP")
    assert "expected" in line
    assert f"`{line}`" in DOCS.read_text(), f"docs/errors.md lacks: {line}"


def test_more_than_twenty_cases():
    assert len(API_CASES) + len(CLI_CASES) + len(FILE_CASES) + 1 >= 20
