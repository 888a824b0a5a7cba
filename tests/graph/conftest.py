from __future__ import annotations

import numpy as np
import pytest

from pnngraph import DataParallel, Hybrid, Pipeline
from pnngraph.nn import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, Tanh

LAYOUTS = {
    "dp1": DataParallel(1),
    "dp2": DataParallel(2),
    "dp3": DataParallel(3),
    "dp5": DataParallel(5),
    "dp-unequal": DataParallel([1, 2, 4]),
    "pipe2x1": Pipeline(2, 1),
    "pipe2x2": Pipeline(2, 2),
    "pipe2x4": Pipeline(2, 4),
    "pipe3x1": Pipeline(3, 1),
    "pipe3x2": Pipeline(3, 2),
    "pipe3x4": Pipeline(3, 4),
    "hybrid2x2": Hybrid(DataParallel(2), Pipeline(2, 2)),
}
"""Every large-batch SGD layout the equivalence and digest tests cover."""


def max_rel_diff(a_params, b_params) -> float:
    """Largest |a - b| / max|b| over every parameter array."""
    worst = 0.0
    for pa, pb in zip(a_params, b_params, strict=True):
        assert sorted(pa) == sorted(pb)
        for k in pa:
            scale = max(float(np.max(np.abs(pb[k]))), 1e-300)
            worst = max(worst, float(np.max(np.abs(pa[k] - pb[k]))) / scale)
    return worst


def bitwise_equal(a_params, b_params) -> bool:
    return all(
        np.array_equal(pa[k], pb[k]) for pa, pb in zip(a_params, b_params, strict=True) for k in pa
    )


def make_mlp(seed=0):
    return Sequential(
        [Dense(5, 12), ReLU(), Dense(12, 8), Tanh(), Dense(8, 3)], input_shape=(5,), seed=seed
    )


def make_cnn(seed=0):
    return Sequential(
        [Conv2D(1, 3, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(27, 3)],
        input_shape=(1, 6, 6),
        seed=seed,
    )


def make_data(kind: str, n: int = 46, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5) if kind == "mlp" else (n, 1, 6, 6))
    flat = X.reshape(n, -1)
    y = (flat[:, 0] > 0).astype(int) + (flat[:, 1] > 0.5).astype(int)
    return X, y


@pytest.fixture(scope="module")
def cluster_client():
    """A real LocalCluster with two worker processes (so every task is pickled); its
    dashboard on a free port (``dashboard_address=None`` alone still tries 8787 and warns
    when another cluster holds it)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        host="127.0.0.1", scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    ) as cluster, distributed.Client(cluster) as client:
        yield client
