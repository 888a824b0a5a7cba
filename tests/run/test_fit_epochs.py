"""fit's epochs: validation data, the History (surviving a resume), callbacks that watch and stop
a run, and the promise that none of them changes a bit of what the steps compute."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pnngraph import (
    BestCheckpoint,
    Callback,
    DataParallel,
    EarlyStopping,
    EpochRecord,
    History,
    ModelAveraging,
    Pipeline,
    Sequential,
    fit,
)
from pnngraph.exceptions import ConfigError, DataError, UnknownNameError
from pnngraph.npzfile import read_npz, write_npz
from pnngraph.run.checkpoint import META, checkpoint_name, list_checkpoints, load_checkpoint
from tests.graph.conftest import bitwise_equal, make_data, make_mlp
from tests.run.clusters import client_of, local_cluster

BATCH = 20  # 46 samples: batches of 20, 20, 6; three steps an epoch
PER_EPOCH = 3
RUN = {"batch_size": BATCH, "optimizer": "adam", "lr": 0.01, "progress": False}
X, Y = make_data("mlp")
XV, YV = make_data("mlp", n=17, seed=1)
STRATEGIES = {"data": DataParallel(2), "pipeline": Pipeline(2, 2),
              "averaging": ModelAveraging(2, 2)}


class Recorder(Callback):
    """Every call, with the logs and the model's first weight at that point; stops the run at
    epoch ``stop_at`` when given."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls: list[tuple[str, object, dict[str, float]]] = []
        self.weights: list[np.ndarray] = []
        self.stop_at = stop_at

    def on_train_begin(self, logs):
        self.calls.append(("begin", None, logs))

    def on_epoch_end(self, epoch, logs):
        self.calls.append(("epoch", epoch, logs))
        self.weights.append(np.array(self.model.params[0]["W"]))
        if epoch == self.stop_at:
            self.stop_training = True

    def on_train_end(self, logs):
        self.calls.append(("end", None, logs))


def assert_same_run(a, b):
    assert bitwise_equal(a.params, b.params)
    np.testing.assert_array_equal(a.losses, b.losses)


# ------------------------------------------------------------------------------ validation
def test_validation_metrics_are_those_of_the_model_at_each_epoch_end():
    result = fit(make_mlp(), (X, Y), epochs=3, validation_data=(XV, YV), **RUN)
    history = result.history
    assert [r.epoch for r in history] == [0, 1, 2]
    assert history["step"] == [3, 6, 9]
    for k in (1, 2, 3):
        shorter = fit(make_mlp(), (X, Y), epochs=k, **RUN)
        scores = shorter.model.evaluate(XV, YV)
        assert history["val_loss"][k - 1] == scores["loss"]
        assert history["val_accuracy"][k - 1] == scores["accuracy"]
        first = (k - 1) * PER_EPOCH
        assert history["loss"][k - 1] == float(np.mean(result.losses[first : k * PER_EPOCH]))
    assert all(r.seconds > 0 and r.samples_per_s > 0 for r in history)


def test_validation_without_accuracy_for_mean_squared_error():
    targets = np.eye(3)[Y]
    result = fit(make_mlp(), (X, targets), epochs=2, loss="mse",
                 validation_data=(XV, np.eye(3)[YV]), **RUN)
    assert sorted(result.history.as_dict()) == ["epoch", "loss", "samples_per_s", "seconds",
                                                "step", "val_loss"]
    assert result.history["val_accuracy"] == [None, None]


def test_epoch_ends_are_chunk_ends_with_validation_whatever_chunk_steps():
    reached = []
    result = fit(make_mlp(), (X, Y), steps=8, chunk_steps=5, validation_data=(XV, YV),
                 on_chunk=lambda report: reached.append(report.step), **RUN)
    assert reached == [3, 6, 8]  # every epoch end, and the run's end mid-epoch
    assert result.history["step"] == [3, 6, 8]
    assert result.history.records[-1].epoch == 2
    plain = fit(make_mlp(), (X, Y), steps=8, chunk_steps=5, **RUN)
    assert_same_run(result, plain)


def test_validation_data_is_checked_up_front():
    graphs = []
    with pytest.raises(DataError, match="validation_data: X has 17 samples but y has 16"):
        fit(make_mlp(), (X, Y), epochs=1, validation_data=(XV, YV[:-1]),
            on_graph=graphs.append, **RUN)
    with pytest.raises(DataError, match="validation_data y: label 7"):
        fit(make_mlp(), (X, Y), epochs=1, validation_data=(XV, YV + 5), **RUN)
    with pytest.raises(ConfigError, match="validation_data: expected an"):
        fit(make_mlp(), (X, Y), epochs=1, validation_data=XV, **RUN)
    assert graphs == []


def test_one_hot_validation_labels_give_the_same_metrics():
    a = fit(make_mlp(), (X, Y), epochs=2, validation_data=(XV, YV), **RUN)
    b = fit(make_mlp(), (X, Y), epochs=2, validation_data=(XV, np.eye(3)[YV]), **RUN)
    assert a.history.as_dict() | {"seconds": 0, "samples_per_s": 0} == \
        b.history.as_dict() | {"seconds": 0, "samples_per_s": 0}


# ------------------------------------------------------------------------------ history
def test_history_without_validation_comes_from_the_losses():
    result = fit(make_mlp(), (X, Y), steps=7, chunk_steps=2, **RUN)
    h = result.history.as_dict()
    assert h["epoch"] == [0, 1, 2] and h["step"] == [3, 6, 7]
    assert h["loss"] == [float(np.mean(result.losses[a:b])) for a, b in [(0, 3), (3, 6), (6, 7)]]
    assert "val_loss" not in h
    assert result.history.records[0].val_loss is None


def test_history_round_trips_through_json_with_values_that_are_not_finite():
    history = History(fit(make_mlp(), (X, Y), epochs=1, validation_data=(XV, YV),
                          **RUN).history.records)
    spoilt = History([EpochRecord(**{**history.to_json()[0], "val_loss": float("inf")})])
    text = json.dumps(spoilt.to_json(), allow_nan=False)
    again = History.from_json(json.loads(text))
    assert again.records == spoilt.records
    assert History.from_json(history.to_json()).records == history.records


def test_history_survives_a_resume(tmp_path):
    whole = fit(make_mlp(), (X, Y), epochs=4, validation_data=(XV, YV), **RUN)
    first = fit(make_mlp(), (X, Y), epochs=2, validation_data=(XV, YV), checkpoint_dir=tmp_path,
                **RUN)
    assert load_checkpoint(tmp_path).history.records == first.history.records
    resumed = fit(make_mlp(seed=99), (X, Y), epochs=4, validation_data=(XV, YV),
                  checkpoint_dir=tmp_path, resume=True, **RUN)
    assert_same_run(resumed, whole)
    assert resumed.history.records[:2] == first.history.records
    for metric in ("epoch", "step", "loss", "val_loss", "val_accuracy"):
        assert resumed.history[metric] == whole.history[metric]


def test_a_resumed_run_completes_the_epoch_it_stopped_in(tmp_path):
    fit(make_mlp(), (X, Y), steps=7, checkpoint_dir=tmp_path, **RUN)
    assert load_checkpoint(tmp_path).history["step"] == [3, 6, 7]
    resumed = fit(make_mlp(), (X, Y), steps=9, checkpoint_dir=tmp_path, resume=True, **RUN)
    whole = fit(make_mlp(), (X, Y), steps=9, **RUN)
    assert resumed.history["step"] == [3, 6, 9]
    assert resumed.history["loss"] == whole.history["loss"]


def test_old_checkpoints_without_history_still_load_and_resume(tmp_path):
    fit(make_mlp(), (X, Y), epochs=2, checkpoint_dir=tmp_path, **RUN)
    path = tmp_path / checkpoint_name(2 * PER_EPOCH)
    files = read_npz(path)
    meta = json.loads(files[META].tobytes().decode())
    del meta["history"]  # what the files of earlier versions hold
    files[META] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    write_npz(path, files)
    assert len(load_checkpoint(path).history) == 0
    resumed = fit(make_mlp(), (X, Y), epochs=3, checkpoint_dir=tmp_path, resume=True, **RUN)
    whole = fit(make_mlp(), (X, Y), epochs=3, **RUN)
    assert_same_run(resumed, whole)
    assert resumed.history["loss"] == whole.history["loss"]  # rebuilt from the losses
    assert resumed.history["seconds"][:2] == [0.0, 0.0]


# ------------------------------------------------------------------------------ callbacks
def test_callbacks_see_every_epoch_and_the_model_at_its_end():
    recorder = Recorder()
    fit(make_mlp(), (X, Y), epochs=3, validation_data=(XV, YV), callbacks=[recorder], **RUN)
    kinds = [kind for kind, _, _ in recorder.calls]
    assert kinds == ["begin", "epoch", "epoch", "epoch", "end"]
    assert [e for kind, e, _ in recorder.calls if kind == "epoch"] == [0, 1, 2]
    logs = recorder.calls[1][2]
    assert sorted(logs) == ["loss", "samples_per_s", "seconds", "step", "val_accuracy",
                            "val_loss"]
    assert recorder.calls[-1][2] == recorder.calls[-2][2]  # on_train_end: the last epoch's logs
    for k, weight in enumerate(recorder.weights, start=1):
        np.testing.assert_array_equal(
            weight, fit(make_mlp(), (X, Y), epochs=k, **RUN).params[0]["W"])


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_callbacks_and_validation_leave_the_bits_alone(name):
    kw = {"strategy": STRATEGIES[name], "steps": 8, "chunk_steps": 4, **RUN}
    watched = fit(make_mlp(), (X, Y), validation_data=(XV, YV), callbacks=[Recorder()], **kw)
    plain = fit(make_mlp(), (X, Y), **kw)
    assert_same_run(watched, plain)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_stopped_run_equals_a_run_of_the_steps_it_ran(name):
    kw = {"strategy": STRATEGIES[name], **RUN}
    stopped = fit(make_mlp(), (X, Y), epochs=5, callbacks=[Recorder(stop_at=1)], **kw)
    shorter = fit(make_mlp(), (X, Y), epochs=2, **kw)
    assert_same_run(stopped, shorter)
    assert stopped.losses.shape == stopped.step_seconds.shape == (2 * PER_EPOCH,)
    assert len(stopped.history) == 2


def test_early_stopping_waits_patience_epochs():
    # min_delta so large that only the first epoch improves: the run stops `patience` later
    stop = EarlyStopping(monitor="loss", patience=2, min_delta=1e9)
    result = fit(make_mlp(), (X, Y), epochs=10, callbacks=[stop], **RUN)
    assert (stop.best_epoch, stop.stopped_epoch, stop.wait) == (0, 2, 2)
    assert stop.best == result.history["loss"][0]
    assert_same_run(result, fit(make_mlp(), (X, Y), epochs=3, **RUN))


def test_early_stopping_on_validation_accuracy_and_restoring_the_best_model():
    stop = EarlyStopping(monitor="val_accuracy", patience=1, min_delta=2.0, restore_best=True)
    assert stop._monitor.mode == "max"  # auto: accuracies go up
    result = fit(make_mlp(), (X, Y), epochs=10, validation_data=(XV, YV), callbacks=[stop],
                 **RUN)
    assert (stop.best_epoch, stop.stopped_epoch) == (0, 1)
    best = fit(make_mlp(), (X, Y), epochs=1, **RUN)
    last = fit(make_mlp(), (X, Y), epochs=2, **RUN)
    assert bitwise_equal(result.params, best.params)  # the model of the best epoch
    np.testing.assert_array_equal(result.losses, last.losses)  # the steps that ran


def test_early_stopping_that_never_fires_runs_every_epoch():
    stop = EarlyStopping(monitor="loss", patience=100)
    result = fit(make_mlp(), (X, Y), epochs=3, callbacks=[stop], **RUN)
    assert stop.stopped_epoch is None and len(result.history) == 3


def test_best_checkpoint_holds_the_model_of_the_best_epoch(tmp_path):
    target = tmp_path / "best" / "model.npz"
    best = BestCheckpoint(target, monitor="val_loss")
    result = fit(make_mlp(), (X, Y), epochs=4, validation_data=(XV, YV), callbacks=[best], **RUN)
    values = result.history["val_loss"]
    assert best.best_epoch == int(np.argmin(values)) and best.best == min(values)
    expected = fit(make_mlp(), (X, Y), epochs=best.best_epoch + 1, **RUN)
    assert bitwise_equal(Sequential.load(target).params, expected.params)
    assert [p.name for p in target.parent.iterdir()] == ["model.npz"]  # no temporary file left


def test_best_checkpoint_writes_only_on_improvement(tmp_path):
    target = tmp_path / "model.npz"
    best = BestCheckpoint(target, monitor="loss", mode="max")  # only epoch 0 can be the best
    fit(make_mlp(), (X, Y), epochs=3, callbacks=[best], **RUN)
    assert best.best_epoch == 0
    expected = fit(make_mlp(), (X, Y), epochs=1, **RUN)
    assert bitwise_equal(Sequential.load(target).params, expected.params)


def test_a_run_stopped_early_writes_its_last_checkpoint(tmp_path):
    result = fit(make_mlp(), (X, Y), epochs=6, checkpoint_dir=tmp_path, checkpoint_every=4,
                 callbacks=[Recorder(stop_at=1)], **RUN)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 6]
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.history.records == result.history.records
    np.testing.assert_array_equal(ckpt.losses, result.losses)


def test_monitoring_a_metric_that_is_not_logged_is_refused_before_any_work(tmp_path):
    graphs = []
    with pytest.raises(ConfigError) as err:
        fit(make_mlp(), (X, Y), epochs=2, callbacks=[EarlyStopping("val_loss")],
            checkpoint_dir=tmp_path / "never", on_graph=graphs.append, **RUN)
    assert err.value.name == "EarlyStopping monitor" and err.value.got == "val_loss"
    assert "validation_data" in str(err.value)
    assert graphs == [] and not (tmp_path / "never").exists()
    with pytest.raises(ConfigError, match="BestCheckpoint monitor") as err:
        fit(make_mlp(), (X, np.eye(3)[Y]), epochs=1, loss="mse",
            validation_data=(XV, np.eye(3)[YV]),
            callbacks=[BestCheckpoint(tmp_path / "m.npz", monitor="val_accuracy")], **RUN)
    assert err.value.got == "val_accuracy"


def test_callback_options_are_checked():
    with pytest.raises(UnknownNameError, match="EarlyStopping mode"):
        EarlyStopping(mode="up")
    with pytest.raises(ConfigError, match="EarlyStopping patience"):
        EarlyStopping(patience=-1)
    with pytest.raises(ConfigError, match="EarlyStopping min_delta"):
        EarlyStopping(min_delta=-0.1)
    with pytest.raises(ConfigError, match="EarlyStopping restore_best"):
        EarlyStopping(restore_best="yes")
    with pytest.raises(ConfigError, match="BestCheckpoint monitor"):
        BestCheckpoint("m.npz", monitor=3)
    assert EarlyStopping(mode="MIN")._monitor.mode == "min"
    with pytest.raises(ConfigError, match=r"callbacks\[1\]: expected a pnngraph Callback"):
        fit(make_mlp(), (X, Y), epochs=1, callbacks=[Recorder(), print], **RUN)
    with pytest.raises(ConfigError, match="callbacks: expected a list"):
        fit(make_mlp(), (X, Y), epochs=1, callbacks=Recorder(), **RUN)


@pytest.mark.cluster
def test_validation_and_early_stopping_on_a_cluster():
    pytest.importorskip("distributed")
    kw = {"strategy": DataParallel(2), "scheduler": "static", **RUN}
    with local_cluster() as cluster, client_of(cluster) as client:
        held = client.scatter([X, Y], broadcast=True, hash=True)  # noqa: F841 (see test_checkpoint)
        stop = EarlyStopping(monitor="val_loss", patience=1, min_delta=1e9)
        stopped = fit(make_mlp(), (X, Y), epochs=10, client=client, validation_data=(XV, YV),
                      callbacks=[stop], **kw)
        shorter = fit(make_mlp(), (X, Y), epochs=2, client=client, **kw)
    assert stop.stopped_epoch == 1
    assert_same_run(stopped, shorter)
    assert stopped.history["val_loss"][-1] == shorter.model.evaluate(XV, YV)["loss"]
    threaded = fit(make_mlp(), (X, Y), epochs=2, **RUN | {"strategy": DataParallel(2)})
    assert np.allclose(threaded.losses, stopped.losses, rtol=1e-12, atol=0)


def test_a_callback_given_to_a_second_run_starts_afresh():
    stop = EarlyStopping(monitor="loss", patience=1, min_delta=1e9)
    first = fit(make_mlp(), (X, Y), epochs=5, callbacks=[stop], **RUN)
    second = fit(make_mlp(), (X, Y), epochs=5, callbacks=[stop], **RUN)
    assert len(first.history) == len(second.history) == 2 and stop.stopped_epoch == 1
    assert_same_run(first, second)
