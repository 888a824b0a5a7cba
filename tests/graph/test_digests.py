"""Bits that must not move: digests of the final state of every equivalence case.

``digests.json`` holds, for every case below, a digest of the final parameters, losses and
optimizer state, recorded once; a change to the compiler, the kernels or the run layer that is
meant to keep results bitwise must keep every digest. The digests depend on how this machine's
BLAS rounds, so the file also holds a fingerprint of the numpy operations the cases use: on a
machine that rounds differently the comparison is skipped (and says why), on a matching one it
is exact. Threads, fit in chunks and a process cluster must all give the recorded digest.

    python -m tests.graph.test_digests --write      # record (only when the bits may change)
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest

from pnngraph import (
    Dropout,
    ModelAveraging,
    build,
    fit,
    train_averaging_serial,
    train_serial,
)
from pnngraph.nn import Dense, ReLU, Sequential, Tanh
from tests.graph.conftest import LAYOUTS, make_cnn, make_data, make_mlp

FILE = Path(__file__).with_name("digests.json")
T, BATCH = 5, 20
OPTIMIZERS = {
    "sgd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
    "adam": {"optimizer": "adam", "lr": 0.01},
}
STRATEGIES: dict[str, Any] = {
    **LAYOUTS,
    "avg2x1": ModelAveraging(2, 1),
    "avg3x4": ModelAveraging(3, 4),
    "avg-unequal": ModelAveraging((2.0, 1.0), 3),
}


def make_dropout(seed: int = 0) -> Sequential:
    return Sequential([Dense(5, 12), ReLU(), Dropout(0.3), Dense(12, 8), Tanh(), Dropout(0.2),
                       Dense(8, 3)], input_shape=(5,), seed=seed)


MODELS = {"mlp": make_mlp, "cnn": make_cnn, "dropout": make_dropout}


def cases() -> list[tuple[str, str, str]]:
    out = [(s, m, o) for s in STRATEGIES for m in ("mlp", "cnn") for o in OPTIMIZERS]
    out += [(s, "dropout", "adam") for s in ("dp3", "pipe3x2", "hybrid2x2", "avg3x4")]
    return out


def steps_of(strategy: str) -> int:
    return 7 if strategy.startswith("avg") else T


def digest(result: Any) -> str:
    """blake2b of parameters, losses and optimizer arrays, in order."""
    h = hashlib.blake2b(digest_size=12)

    def put(a: Any) -> None:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype)).encode())
        h.update(a.view(np.uint8).data)

    for layer in result.params:
        for k in sorted(layer):
            put(layer[k])
    put(np.asarray(result.losses, dtype=np.float64))
    for name in sorted(result.opt_state):
        value = result.opt_state[name]
        if isinstance(value, list):
            for layer in value:
                for k in sorted(layer):
                    put(layer[k])
        else:
            h.update(repr((name, value)).encode())
    return h.hexdigest()


def platform_fingerprint() -> str:
    """How this machine rounds the operations the cases use (matmul shapes, tanh, exp, sums)."""
    rng = np.random.default_rng(7)
    h = hashlib.blake2b(digest_size=12)
    for m, k, n in ((20, 5, 12), (12, 20, 8), (8, 3, 20), (6, 9, 3), (54, 9, 3), (10, 27, 3),
                    (3, 10, 27), (20, 12, 8), (4, 4, 4)):
        a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        h.update((a @ b).tobytes())
        h.update((a.T @ a).tobytes())
    x = rng.standard_normal((20, 12))
    for out in (np.tanh(x), np.exp(x), np.sum(x, axis=0), np.sqrt(np.abs(x)), np.max(x, axis=1)):
        h.update(np.ascontiguousarray(out).tobytes())
    return h.hexdigest()


def run_threads(strategy: str, model: str, opt: str) -> Any:
    X, y = make_data("mlp" if model == "dropout" else model)
    graph = build(MODELS[model](), (X, y), strategy=STRATEGIES[strategy],
                  steps=steps_of(strategy), batch_size=BATCH, **OPTIMIZERS[opt])
    (result,) = dask.compute(graph, scheduler="threads")
    return result


def run_serial(model: str, opt: str, strategy: str = "dp1") -> Any:
    X, y = make_data("mlp" if model == "dropout" else model)
    kw = {"steps": steps_of(strategy), "batch_size": BATCH, **OPTIMIZERS[opt]}
    s = STRATEGIES[strategy]
    if isinstance(s, ModelAveraging):
        return train_averaging_serial(MODELS[model](), X, y, replicas=list(s.weights),
                                      local_steps=s.local_steps, **kw)
    return train_serial(MODELS[model](), X, y, **kw)


def record() -> dict[str, Any]:
    digests = {"|".join(c): digest(run_threads(*c)) for c in cases()}
    for model in MODELS:
        for opt in OPTIMIZERS:
            digests[f"serial|{model}|{opt}"] = digest(run_serial(model, opt))
            digests[f"averaging-serial|{model}|{opt}"] = digest(run_serial(model, opt, "avg3x4"))
    return {"platform": platform_fingerprint(), "digests": digests}


def recorded() -> dict[str, str]:
    data = json.loads(FILE.read_text())
    if data["platform"] != platform_fingerprint():
        pytest.skip("this machine's BLAS rounds differently from the one the digests were "
                    "recorded on (tests/graph/digests.json): bitwise digests do not apply")
    return data["digests"]


@pytest.mark.parametrize(("strategy", "model", "opt"), cases(), ids=["|".join(c) for c in cases()])
def test_threads_give_the_recorded_bits(strategy, model, opt):
    expected = recorded()["|".join((strategy, model, opt))]
    assert digest(run_threads(strategy, model, opt)) == expected


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_serial_oracles_give_the_recorded_bits(model, opt):
    digests = recorded()
    assert digest(run_serial(model, opt)) == digests[f"serial|{model}|{opt}"]
    averaged = digest(run_serial(model, opt, "avg3x4"))
    assert averaged == digests[f"averaging-serial|{model}|{opt}"]


@pytest.mark.parametrize("strategy", ["dp2", "pipe3x2", "hybrid2x2", "avg3x4", "dp1"])
def test_fit_in_chunks_gives_the_recorded_bits(strategy):
    expected = recorded()[f"{strategy}|mlp|adam"]
    X, y = make_data("mlp")
    result = fit(make_mlp(), (X, y), strategy=STRATEGIES[strategy], steps=steps_of(strategy),
                 batch_size=BATCH, chunk_steps=2, progress=False, **OPTIMIZERS["adam"])
    assert digest(result) == expected


@pytest.mark.slow
@pytest.mark.cluster
def test_a_process_cluster_gives_the_recorded_bits(cluster_client):
    digests = recorded()
    wrong = []
    for strategy, model, opt in cases():
        X, y = make_data("mlp" if model == "dropout" else model)
        graph = build(MODELS[model](), (X, y), strategy=STRATEGIES[strategy],
                      steps=steps_of(strategy), batch_size=BATCH, client=cluster_client,
                      **OPTIMIZERS[opt])
        result = cluster_client.compute(graph).result()
        if digest(result) != digests["|".join((strategy, model, opt))]:
            wrong.append((strategy, model, opt))
    assert wrong == []


@pytest.mark.cluster
@pytest.mark.parametrize("strategy", ["dp3", "avg3x4"])
def test_fit_on_a_process_cluster_gives_the_recorded_bits(cluster_client, strategy):
    expected = recorded()[f"{strategy}|mlp|sgd"]
    X, y = make_data("mlp")
    result = fit(make_mlp(), (X, y), strategy=STRATEGIES[strategy], steps=steps_of(strategy),
                 batch_size=BATCH, chunk_steps=3, client=cluster_client, progress=False,
                 **OPTIMIZERS["sgd"])
    assert digest(result) == expected


if __name__ == "__main__" and "--write" in sys.argv:
    FILE.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FILE}")
