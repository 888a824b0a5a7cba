"""The resnet and transformer presets (residual blocks, attention with dropout, LayerNorm) train
under every strategy on a real LocalCluster exactly as the serial trainers do (float64, 1e-12)."""

from __future__ import annotations

import numpy as np
import pytest

from pnngraph import (
    DataParallel,
    Hybrid,
    ModelAveraging,
    Pipeline,
    build,
    train_averaging_serial,
    train_serial,
)
from pnngraph.nn.presets import resnet, transformer
from tests.graph.conftest import max_rel_diff

pytestmark = pytest.mark.cluster


def family(name):
    rng = np.random.default_rng(5)
    if name == "resnet":
        model = resnet((1, 4, 4), 3, channels=(2, 3))
        X, y = rng.standard_normal((46, 1, 4, 4)), rng.integers(0, 3, 46)
    else:
        model = transformer((6,), 11, width=8, heads=2, blocks=2, dropout=0.2)
        X = rng.integers(0, 11, (46, 6)).astype(np.float64)
        y = np.roll(X, -1, axis=1).astype(np.int64)
    return model, X, y


STRATEGIES = {
    "dp-unequal": DataParallel([1, 2, 4]),
    "pipe2x2": Pipeline(2, 2),
    "hybrid": Hybrid(DataParallel(2), Pipeline(2, 2)),
}
RUN = {"steps": 4, "batch_size": 20, "optimizer": "adam", "lr": 0.01}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("kind", ["resnet", "transformer"])
def test_family_equals_serial_on_a_local_cluster(cluster_client, kind, name):
    model, X, y = family(kind)
    graph = build(model, (X, y), strategy=STRATEGIES[name], client=cluster_client, **RUN)
    result = cluster_client.compute(graph).result()
    reference = train_serial(family(kind)[0], X, y, **RUN)
    assert max_rel_diff(result.params, reference.params) <= 1e-12


@pytest.mark.parametrize("kind", ["resnet", "transformer"])
def test_family_averages_as_its_serial_definition_on_a_local_cluster(cluster_client, kind):
    model, X, y = family(kind)
    run = {"steps": 4, "batch_size": 20, "optimizer": "sgd", "lr": 0.05}
    graph = build(model, (X, y), strategy=ModelAveraging(2, 1), client=cluster_client, **run)
    result = cluster_client.compute(graph).result()
    reference = train_averaging_serial(family(kind)[0], X, y, replicas=2, local_steps=1, **run)
    assert max_rel_diff(result.params, reference.params) <= 1e-12
