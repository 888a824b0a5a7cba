"""AdamW, learning-rate schedules, gradient clipping and label smoothing, one rule at a time,
against a direct computation of their definitions."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from pnngraph.exceptions import ConfigError
from pnngraph.nn.losses import SoftmaxCrossEntropy, get_loss, softmax_cross_entropy
from pnngraph.nn.optimizers import SGD, Adam, AdamW, accepted_options, get_optimizer
from pnngraph.nn.schedules import (
    Constant,
    Cosine,
    StepDecay,
    Warmup,
    schedule_from_config,
)
from tests.nn.test_gradients import numeric_grad, rel_error

SCHEDULES = [
    Constant(0.1),
    StepDecay(0.1, every=3, gamma=0.5),
    Cosine(0.1, total_steps=10, floor=0.01),
    Warmup(Cosine(0.2, total_steps=5), steps=4),
    Warmup(StepDecay(0.3, every=2), steps=1),
]


def test_schedules_follow_their_formulas():
    assert [Constant(0.1)(t) for t in (0, 7)] == [0.1, 0.1]
    assert [StepDecay(1.0, 3, 0.5)(t) for t in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    cos = Cosine(1.0, total_steps=4, floor=0.2)
    assert cos(0) == 1.0 and cos(2) == pytest.approx(0.6) and cos(4) == cos(40) == 0.2
    warm = Warmup(Cosine(1.0, total_steps=4), steps=4)
    assert [warm(t) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert [warm(4 + t) for t in range(6)] == [Cosine(1.0, total_steps=4)(t) for t in range(6)]
    assert Warmup(0.5, steps=2)(0) == 0.25  # a number warms up to itself


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_schedules_round_trip_through_config_json_and_pickle(schedule):
    import json

    config = json.loads(json.dumps(schedule.config()))
    again = schedule_from_config(config)
    assert again == schedule and again.config() == config
    assert pickle.loads(pickle.dumps(schedule)) == schedule
    assert [again(t) for t in range(12)] == [schedule(t) for t in range(12)]


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Constant(-0.1), "Constant lr: expected a finite number > 0.0, got -0.1"),
    (lambda: Cosine(0.1, total_steps=0), "Cosine total_steps: expected a positive integer"),
    (lambda: Cosine(0.1, total_steps=5, floor=0.2), "Cosine floor: expected a number <= lr"),
    (lambda: StepDecay(0.1, every=2, gamma=1.5), "StepDecay gamma: expected a number in (0, 1]"),
    (lambda: Warmup(Constant(0.1), steps=0), "Warmup steps: expected a positive integer"),
    (lambda: Warmup(-1.0, steps=2), "Constant lr: expected a finite number > 0.0, got -1.0"),
    (lambda: schedule_from_config({"kind": "warmup", "steps": 2}),
     "schedule config: expected the arguments of Warmup, got {'kind': 'warmup', 'steps': 2}"),
    (lambda: schedule_from_config({"lr": 0.1}), "schedule config: expected a dict with a 'kind'"),
    (lambda: SGD(0.1, clip_norm=-1.0), "clip_norm: expected a finite number > 0.0, got -1.0"),
    (lambda: SoftmaxCrossEntropy(1.0), "label_smoothing: expected a number in [0, 1), got 1.0"),
    (lambda: get_loss("mse", label_smoothing=0.1), "label_smoothing: expected loss="),
])
def test_bad_options_are_config_errors(make, message):
    with pytest.raises(ConfigError) as err:
        make()
    assert str(err.value).startswith(message)


def test_adamw_decays_the_parameters_apart_from_the_moments():
    rng = np.random.default_rng(0)
    p, lr, wd, b1, b2, eps = rng.standard_normal(5), 0.01, 0.1, 0.9, 0.999, 1e-8
    opt = get_optimizer("AdamW", lr=lr, weight_decay=wd)
    params, state = [{"w": p}], opt.init([{"w": p}])
    m, v, ref = np.zeros(5), np.zeros(5), p.copy()
    for t in range(1, 4):
        g = rng.standard_normal(5)
        params, state = opt.update(params, [{"w": g}], state)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        ref = ref - lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * ref)
    np.testing.assert_allclose(params[0]["w"], ref, rtol=1e-14)
    np.testing.assert_array_equal(state["m"][0]["w"], m)  # the decay never reaches m
    assert "weight_decay" in accepted_options("adamw") and AdamW().weight_decay == 0.01


def test_adam_without_decay_is_adamw_without_decay_bitwise():
    rng = np.random.default_rng(1)
    p, g = [{"w": rng.standard_normal(4)}], [{"w": rng.standard_normal(4)}]
    a, _ = Adam(0.1).update(p, g, Adam(0.1).init(p))
    b, _ = AdamW(0.1, weight_decay=0.0).update(p, g, AdamW(0.1).init(p))
    np.testing.assert_array_equal(a[0]["w"], b[0]["w"])


def test_the_rate_of_each_update_is_the_schedules_at_the_state_step():
    schedule = Warmup(StepDecay(0.1, every=2, gamma=0.5), steps=3)
    opt = SGD(schedule)
    params = [{"w": np.array([0.0])}]
    state = opt.init(params)
    moved = []
    for _ in range(8):  # from 0 each time, a gradient of -1 moves the parameter by the rate
        new, state = opt.update(params, [{"w": np.array([-1.0])}], state)
        moved.append(float(new[0]["w"][0]))
    assert moved == [schedule(t) for t in range(8)] and state["step"] == 8


def test_clipping_rescales_by_the_global_norm_of_every_array():
    grads = [{"W": np.array([[3.0, 0.0]]), "b": np.array([0.0])}, {"W": np.array([[4.0]])}]
    params = [{k: np.zeros_like(v) for k, v in layer.items()} for layer in grads]
    clipped, _ = SGD(1.0, clip_norm=1.0).update(params, grads, SGD(1.0).init(params))
    np.testing.assert_allclose(clipped[0]["W"], [[-0.6, 0.0]], rtol=1e-15)
    np.testing.assert_allclose(clipped[1]["W"], [[-0.8]], rtol=1e-15)
    below, _ = SGD(1.0, clip_norm=5.0).update(params, grads, SGD(1.0).init(params))
    assert below[1]["W"].tolist() == [[-4.0]]  # a norm of exactly clip_norm is not touched
    # a stage that sees only its own layers clips by the norm it is given
    stage, _ = SGD(1.0, clip_norm=1.0).update(params[1:], grads[1:], {"step": 0,
                                                                        "velocity": None},
                                               grad_norm=5.0)
    np.testing.assert_array_equal(stage[0]["W"], clipped[1]["W"])


def test_new_options_leave_recorded_configs_and_reprs_as_they_were():
    assert SGD(0.1).config() == {"lr": 0.1, "momentum": 0.0, "nesterov": False,
                                 "weight_decay": 0.0}
    assert "clip_norm" not in repr(Adam()) and "clip_norm=2.0" in repr(Adam(clip_norm=2.0))
    assert repr(SoftmaxCrossEntropy()) == "SoftmaxCrossEntropy()"
    assert SGD(Cosine(0.1, total_steps=3)).config()["lr"] == {
        "kind": "cosine", "lr": 0.1, "total_steps": 3, "floor": 0.0}


def test_label_smoothing_matches_its_definition():
    rng = np.random.default_rng(2)
    z, t, eps, n_global = rng.standard_normal((5, 4)) * 3, rng.integers(0, 4, 5), 0.2, 8
    loss, _ = softmax_cross_entropy(np, z, t, n_global, eps)
    target = (1 - eps) * np.eye(4)[t] + eps / 4
    log_softmax = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    assert float(loss) == pytest.approx(-np.sum(target * log_softmax) / n_global, rel=1e-13)
    plain, _ = softmax_cross_entropy(np, z, t, n_global)
    assert float(plain) == float(softmax_cross_entropy(np, z, t, n_global, 0.0)[0])


def test_label_smoothing_gradient_matches_finite_differences(backend, rng):
    n, c, n_global = 6, 4, 10
    out, t = rng.standard_normal((n, c)) * 3, rng.integers(0, c, n)
    loss_fn = SoftmaxCrossEntropy(label_smoothing=0.15)

    def loss() -> float:
        v, _ = loss_fn.value_and_grad(backend.xp, backend.asarray(out), backend.asarray(t),
                                      n_global)
        return float(backend.to_numpy(v))

    _, g = loss_fn.value_and_grad(backend.xp, backend.asarray(out), backend.asarray(t), n_global)
    assert rel_error(backend.to_numpy(g), numeric_grad(loss, out)) < 1e-6
    # the smoothed loss is shift invariant too, and its gradient rows sum to zero
    shifted, _ = loss_fn.value_and_grad(backend.xp, backend.asarray(out + 1e4),
                                        backend.asarray(t), n_global)
    assert math.isclose(float(backend.to_numpy(shifted)), loss(), rel_tol=1e-9)
    np.testing.assert_allclose(np.sum(backend.to_numpy(g), axis=1), 0.0, atol=1e-15)
