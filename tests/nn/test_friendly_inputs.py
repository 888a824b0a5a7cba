"""What users of other libraries type: names in any case, one-hot labels, a misspelt keyword,
class probabilities."""

from __future__ import annotations

import dask
import numpy as np
import pytest

import pnngraph
from pnngraph import DataParallel, ModelAveraging, Pipeline, build, fit, train_serial
from pnngraph.exceptions import ConfigError, DataError, OptionError, UnknownNameError
from pnngraph.nn import (
    SGD,
    Adam,
    Conv2D,
    Dense,
    MeanSquaredError,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
    activation,
    get_loss,
    get_optimizer,
)
from pnngraph.nn.layers import GELU, Sigmoid, Tanh
from tests.graph.conftest import bitwise_equal, make_data, make_mlp

X, Y = make_data("mlp")
RUN = {"batch_size": 20, "lr": 0.05, "progress": False}


# ------------------------------------------------------------------------------ names
@pytest.mark.parametrize(("name", "cls"), [("SGD", SGD), ("Adam", Adam), ("ADAM", Adam)])
def test_optimizer_names_in_any_case(name, cls):
    assert type(get_optimizer(name, lr=0.1)) is cls


@pytest.mark.parametrize(("name", "cls"), [("Cross_Entropy", SoftmaxCrossEntropy),
                                           ("CROSS_ENTROPY", SoftmaxCrossEntropy),
                                           ("MSE", MeanSquaredError), ("Mse", MeanSquaredError)])
def test_loss_names_in_any_case(name, cls):
    assert type(get_loss(name)) is cls


@pytest.mark.parametrize(("name", "cls"), [("ReLU", ReLU), ("TANH", Tanh), ("Sigmoid", Sigmoid),
                                           ("GeLU", GELU)])
def test_activation_names_in_any_case(name, cls):
    assert type(activation(name)) is cls


def test_unknown_names_still_list_the_choices():
    for fn, bad, kind in [(get_optimizer, "RMSprop", "optimizer"), (get_loss, "Hinge", "loss"),
                          (activation, "Swish", "activation"), (get_optimizer, 3, "optimizer")]:
        with pytest.raises(UnknownNameError) as err:
            fn(bad)
        assert err.value.kind == kind and err.value.got == bad and len(err.value.choices) >= 2


def test_a_run_named_in_capitals_is_the_same_run(tmp_path):
    lower = fit(make_mlp(), (X, Y), steps=4, optimizer="adam", loss="cross_entropy",
                checkpoint_dir=tmp_path, **RUN)
    upper = fit(make_mlp(), (X, Y), steps=4, optimizer="Adam", loss="Cross_Entropy", **RUN)
    assert bitwise_equal(lower.params, upper.params)
    # the checkpoint records the canonical names: the capitalised run may resume it
    more = fit(make_mlp(), (X, Y), steps=6, optimizer="ADAM", loss="CROSS_ENTROPY",
               checkpoint_dir=tmp_path, resume=True, **RUN)
    assert more.losses.shape == (6,)


# ------------------------------------------------------------------------------ keywords
def test_an_unknown_keyword_to_fit_names_fit_and_lists_the_optimizer_options():
    graphs = []
    with pytest.raises(TypeError) as err:
        fit(make_mlp(), (X, Y), epoch=3, on_graph=graphs.append, **RUN)
    assert isinstance(err.value, OptionError)
    assert (err.value.function, err.value.name) == ("fit", "epoch")
    assert err.value.accepted == ("lr", "momentum", "nesterov", "weight_decay",
                                  "clip_norm")
    assert str(err.value).startswith("fit() got an unexpected keyword argument 'epoch'")
    assert "__init__" not in str(err.value) and graphs == []


def test_an_unknown_keyword_to_build_names_build():
    with pytest.raises(OptionError) as err:
        build(make_mlp(), (X, Y), steps=2, optimizer="Adam", momentum=0.9)
    assert (err.value.function, err.value.name) == ("build", "momentum")
    assert err.value.accepted == ("lr", "beta1", "beta2", "eps", "weight_decay",
                                  "clip_norm")
    assert "optimizer 'adam'" in str(err.value)


def test_keywords_with_an_optimizer_instance():
    with pytest.raises(OptionError) as err:
        fit(make_mlp(), (X, Y), steps=2, optimizer=Adam(0.01), shufle=False, progress=False)
    assert err.value.name == "shufle" and err.value.accepted == ()
    with pytest.raises(ConfigError, match="none with an Optimizer instance"):
        fit(make_mlp(), (X, Y), steps=2, optimizer=Adam(0.01), lr=0.1, progress=False)


def test_the_serial_trainers_name_themselves():
    with pytest.raises(OptionError, match=r"^train_serial\(\)"):
        train_serial(make_mlp(), X, Y, steps=1, learning_rate=0.1)
    with pytest.raises(OptionError, match=r"^train_averaging_serial\(\)"):
        pnngraph.train_averaging_serial(make_mlp(), X, Y, steps=1, lrate=0.1)


def test_every_known_option_still_reaches_the_optimizer():
    a = fit(make_mlp(), (X, Y), steps=3, optimizer="sgd", momentum=0.9, nesterov=True,
            weight_decay=1e-3, batch_size=20, lr=0.05, progress=False)
    b = fit(make_mlp(), (X, Y), steps=3, optimizer=SGD(0.05, momentum=0.9, nesterov=True,
                                                       weight_decay=1e-3),
            batch_size=20, progress=False)
    assert bitwise_equal(a.params, b.params)


# ------------------------------------------------------------------------------ numbers
def test_numpy_numbers_are_numbers_everywhere():
    """Numbers that come out of numpy (a config read with np.load, a grid from np.linspace)
    train exactly like the Python numbers of the same value."""
    a = fit(make_mlp(), (X, Y), strategy=DataParallel([1.0, 2]), steps=3, batch_size=20,
            momentum=0.5, lr=float(np.float32(0.05)), progress=False, chunk_seconds=1)
    b = fit(make_mlp(), (X, Y), strategy=DataParallel([np.float32(1), np.int64(2)]), steps=3,
            batch_size=np.int64(20), momentum=np.float64(0.5), lr=np.float32(0.05),
            progress=False, chunk_seconds=np.float32(1))
    assert bitwise_equal(a.params, b.params)
    assert Adam(np.float32(0.01), beta1=np.float16(0.5), eps=np.int32(1)).eps == 1.0
    assert pnngraph.Dropout(np.float32(0.25)).rate == 0.25
    assert pnngraph.EarlyStopping(min_delta=np.float64(0.5))._monitor.min_delta == 0.5


@pytest.mark.parametrize("make", [
    lambda v: SGD(v), lambda v: SGD(0.1, momentum=v), lambda v: Adam(eps=v),
    lambda v: pnngraph.Dropout(v), lambda v: pnngraph.EarlyStopping(min_delta=v),
    lambda v: DataParallel([1.0, v]),
    lambda v: fit(make_mlp(), (X, Y), steps=1, chunk_seconds=v, **RUN),
])
@pytest.mark.parametrize("value", [True, np.bool_(True)])
def test_a_bool_is_not_a_number(make, value):
    with pytest.raises(ConfigError, match=r"got .*True"):
        make(value)


# ------------------------------------------------------------------------------ one-hot labels
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, bool])
def test_one_hot_labels_train_exactly_like_class_labels(dtype):
    one_hot = np.eye(3, dtype=dtype)[Y]
    a = train_serial(make_mlp(), X, Y, steps=4, batch_size=20, lr=0.05)
    b = train_serial(make_mlp(), X, one_hot, steps=4, batch_size=20, lr=0.05)
    assert bitwise_equal(a.params, b.params)
    np.testing.assert_array_equal(a.losses, b.losses)


@pytest.mark.parametrize("strategy", [DataParallel(2), Pipeline(2, 2), ModelAveraging(2, 2)])
def test_one_hot_labels_in_every_strategy(strategy):
    one_hot = np.eye(3)[Y]
    a = fit(make_mlp(), (X, Y), strategy=strategy, steps=4, **RUN)
    b = fit(make_mlp(), (X, one_hot), strategy=strategy, steps=4, **RUN)
    assert bitwise_equal(a.params, b.params)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert make_mlp().evaluate(X, one_hot) == make_mlp().evaluate(X, Y)


def test_rows_that_are_not_one_hot_name_the_first_bad_row():
    one_hot = np.eye(3)[Y]
    for spoil in ([0.5, 0.5, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [np.nan, 1.0, 0.0]):
        bad = one_hot.copy()
        bad[7] = spoil
        bad[9] = spoil
        with pytest.raises(DataError) as err:
            train_serial(make_mlp(), X, bad, steps=1)
        assert err.value.what == "y" and err.value.problem.endswith("in row 7")
    with pytest.raises(DataError, match="one-hot rows of 3 classes, got shape"):
        train_serial(make_mlp(), X, np.eye(2)[Y % 2], steps=1)
    with pytest.raises(DataError, match="one-hot rows of numbers"):
        train_serial(make_mlp(), X, np.eye(3)[Y].astype(str), steps=1)


def test_one_hot_labels_as_a_dask_array_are_refused():
    da = pytest.importorskip("dask.array")
    with pytest.raises(DataError, match="class labels as a dask array"):
        build(make_mlp(), (da.from_array(X), da.from_array(np.eye(3)[Y])), steps=1)
    graph = build(make_mlp(), (da.from_array(X), da.from_array(np.eye(3)[Y])), steps=1,
                  loss="mse")  # mean squared error takes 2-D targets as they are
    (result,) = dask.compute(graph, scheduler="sync")
    assert result.losses.shape == (1,)


# ------------------------------------------------------------------------------ predict_proba
def test_predict_proba_is_the_softmax_of_the_logits():
    model = make_mlp()
    logits = model.predict(X)
    p = model.predict_proba(X)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(p > 0)
    np.testing.assert_array_equal(np.argmax(p, axis=1), np.argmax(logits, axis=1))
    # log-probabilities differ from the logits by one constant per row
    gaps = np.log(p) - logits
    np.testing.assert_allclose(gaps, gaps[:, :1] * np.ones((1, 3)), rtol=0, atol=1e-12)


def test_predict_proba_is_stable_for_huge_logits():
    model = Sequential([Dense(5, 3)], input_shape=(5,))
    model.params[0]["b"] = model.params[0]["b"] + np.array([1e4, 1e4 - 1.0, -1e4])
    p = model.predict_proba(np.zeros((2, 5)))  # warnings are errors: no overflow happens
    np.testing.assert_allclose(p[0], [1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(1.0)), 0.0])


def test_predict_proba_needs_a_classifier():
    model = Sequential([Conv2D(1, 2, 3, padding=1), ReLU()], input_shape=(1, 4, 4))
    with pytest.raises(ConfigError, match="a classifier with outputs of shape"):
        model.predict_proba(np.zeros((1, 1, 4, 4)))
