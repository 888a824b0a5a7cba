"""CuPy on a real GPU: layers, training and a GPU worker. Skipped without CuPy and a device."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _cupy_or_skip():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as err:  # no driver, no device
        pytest.skip(f"no CUDA device: {err}")
    return cupy


def test_layer_gradients_on_cupy_match_numpy():
    _cupy_or_skip()
    from pnngraph.nn import Context, Conv2D, Dense, MaxPool2D, get_backend

    gpu, cpu = get_backend("cupy"), get_backend("numpy")
    rng = np.random.default_rng(0)
    for layer, shape in ((Dense(6, 4), (6,)), (Conv2D(2, 3, 3, stride=2, padding=1), (2, 7, 7)),
                         (MaxPool2D(2), (2, 6, 6))):
        params = layer.init_params(shape, rng, np.float64)
        x = rng.standard_normal((5, *shape))
        y_cpu, c_cpu = layer.forward(cpu.xp, params, x, Context())
        y_gpu, c_gpu = layer.forward(gpu.xp, gpu.tree_asarray(params), gpu.asarray(x), Context())
        np.testing.assert_allclose(gpu.to_numpy(y_gpu), y_cpu, rtol=1e-12, atol=1e-12)
        dy = rng.standard_normal(y_cpu.shape)
        dx_cpu, g_cpu = layer.backward(cpu.xp, params, c_cpu, dy)
        dx_gpu, g_gpu = layer.backward(gpu.xp, gpu.tree_asarray(params), c_gpu, gpu.asarray(dy))
        np.testing.assert_allclose(gpu.to_numpy(dx_gpu), dx_cpu, rtol=1e-10, atol=1e-12)
        for k in g_cpu:
            np.testing.assert_allclose(gpu.to_numpy(g_gpu[k]), g_cpu[k], rtol=1e-10, atol=1e-12)


def test_training_on_cupy_equals_numpy_in_float32():
    _cupy_or_skip()
    import pnngraph
    from pnngraph.nn.presets import mlp

    rng = np.random.default_rng(0)
    X = rng.standard_normal((512, 64)).astype(np.float32)
    y = rng.integers(0, 10, 512)
    model = mlp((64,), 10, hidden=(128, 128), dtype="float32")
    kw = {"steps": 5, "batch_size": 128, "optimizer": "adam", "lr": 1e-3}
    cpu = pnngraph.train_serial(model, X, y, **kw)
    gpu = pnngraph.train_serial(model, X, y, backend="cupy", **kw)
    for a, b in zip(cpu.params, gpu.params, strict=True):
        for k in a:
            assert np.max(np.abs(a[k] - b[k])) <= 1e-4 * max(1.0, float(np.max(np.abs(a[k]))))


@pytest.mark.cluster
def test_gpu_worker_trains_like_the_cpu():
    _cupy_or_skip()
    import dask
    from distributed import Client

    import pnngraph
    from pnngraph.run.calibrate import calibrate
    from pnngraph.run.cluster import local_cluster
    from tests.graph.conftest import make_data, make_mlp, max_rel_diff

    X, y = make_data("mlp")
    kw = {"steps": 5, "batch_size": 20, "optimizer": "adam", "lr": 0.01}
    with local_cluster(1, 1, dashboard_address=None) as cluster, Client(cluster) as client:
        model = calibrate(client, gpu_backend="cupy", cache=False)
        graph = pnngraph.build(make_mlp(), (X, y), strategy=pnngraph.Pipeline(2, 2),
                               client=client, cluster=model, **kw)
        result = client.compute(graph).result()
    (reference,) = dask.compute(pnngraph.build(make_mlp(), (X, y),
                                               strategy=pnngraph.Pipeline(2, 2), **kw),
                                scheduler="sync")
    assert "cupy" in set(graph.plan.backends.values())
    assert max_rel_diff(result.params, reference.params) <= 1e-10
