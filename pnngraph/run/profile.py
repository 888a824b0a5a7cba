"""Kernel profiles: the time of each kernel of a training graph, measured on every worker.

The roofline of a node's FLOPs and bytes says little about a small model (Python and Dask cost
more than its arithmetic) and is off by tens of percent for a large one (GEMM speed depends on
the shapes, elementwise passes and allocation add up). So before planning, :func:`profile`
runs the kernels the graph will run, at the graph's own sizes, on every worker at once (as they
will run: side by side), and stores each as a line ``seconds = a * calls + b * rows`` in the
cluster model (:meth:`~pnngraph.plan.cluster.ClusterModel.kernel_seconds`)::

    grad, forward, backward, loss_backward   rows = samples            two sizes: n/4 and n
    train_steps, local_steps                 rows = samples in all     2 steps at each size
    update, aggregate, average               rows = parts summed       two part counts

Each figure is the median of repeats after a warm-up; inputs are random arrays of the stage's
shapes (the time of these kernels does not depend on the values). A signature measured before
(the same kernel on the same stage of the same model, on the same worker) is not measured
again, so a long run or a second candidate plan pays nothing more.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import networkx as nx
import numpy as np

from pnngraph.compile import kernels
from pnngraph.compile.kernels import Partial, StageState
from pnngraph.exceptions import DataError
from pnngraph.nn.model import Sequential
from pnngraph.plan.cluster import ClusterModel

REPEATS = 5  # at most, and for about REPEAT_SECONDS in all
REPEAT_SECONDS = 1.0
PROFILED = ("grad", "forward", "backward", "loss_backward", "train_steps", "local_steps",
            "update", "aggregate", "average")


def wanted(abstract: nx.DiGraph, cluster: ClusterModel) -> dict[str, dict[str, Any]]:
    """The kernels of ``abstract`` some worker of ``cluster`` has no time for: signature ->
    the stage it runs on and the largest rows and calls seen."""
    out: dict[str, dict[str, Any]] = {}
    for _, node in abstract.nodes(data=True):
        sig = node.get("sig")
        if sig is None or sig.split(":", 1)[0] not in PROFILED:
            continue
        if all(f"{sig}|{a}" in cluster.kernels for a in cluster.addresses):
            continue
        entry = out.setdefault(sig, {"stage": node["stage"] or 0, "rows": 0.0, "count": 1})
        entry["rows"] = max(entry["rows"], float(node["rows"]))
        entry["count"] = max(entry["count"], int(node["count"]))
    return out


def profile(client: Any, cluster: ClusterModel, abstract: nx.DiGraph,
            model: Sequential) -> ClusterModel:
    """``cluster`` with the kernel times of ``abstract`` (an abstract training graph of
    ``model``) measured on every worker that lacks them (each kernel a worker lacks is measured
    on every worker lacking one, the others keep theirs).

    A worker of ``cluster`` that is gone (it left or died since the model was made, or while
    it measured) is measured nothing: the planner prices its nodes by the roofline, and an
    adaptive run drops it from the model after the chunk (:mod:`pnngraph.run.adapt`)."""
    from pnngraph.run.session import live_workers

    todo = wanted(abstract, cluster)
    if not todo:
        return cluster
    specs = _stage_specs(abstract)
    jobs = {sig: (specs[entry["stage"]], entry) for sig, entry in todo.items()}
    backends = {w.address: w.backend for w in cluster.workers}
    live = live_workers(client)
    lacking = [a for a in cluster.addresses  # a worker that joined a run, say: only it
               if a in live and any(f"{sig}|{a}" not in cluster.kernels for sig in todo)]
    if not lacking:
        return cluster
    results = client.run(_measure, model.config(), jobs, backends, workers=lacking,
                         on_error="return")
    lines = {}
    for address, found in results.items():
        if isinstance(found, OSError):  # the connection to a worker that died while measured
            continue
        if isinstance(found, BaseException):
            raise found
        lines.update({f"{sig}|{address}": ab for sig, ab in found.items()})
    return cluster.with_kernels(lines)


def _stage_specs(abstract: nx.DiGraph) -> dict[int, kernels.StageSpec]:
    """The StageSpec of each stage, as the graph's nodes carry them."""
    out: dict[int, kernels.StageSpec] = {}
    for _, node in abstract.nodes(data=True):
        for a in node.get("args", ()):
            if isinstance(a, kernels.StageSpec):
                out.setdefault(node["stage"] or 0, a)
    return out


def _measure(config: dict[str, Any], jobs: dict[str, tuple[kernels.StageSpec, dict[str, Any]]],
             backends: dict[str, str], dask_worker: Any = None) -> dict[str, tuple[float, float]]:
    """On a worker: ``(a, b)`` of every job's kernel (see the module docstring)."""
    model = Sequential.from_config(config)  # parameters of the right shapes, seeded
    backend = backends.get(dask_worker.address, "numpy") if dask_worker is not None else "numpy"
    rng = np.random.default_rng(0)
    out = {}
    for sig, (spec, entry) in jobs.items():
        spec = replace(spec, backend=backend)
        kernel = sig.split(":", 1)[0]
        n = max(2, int(entry["rows"]) // max(entry["count"], 1)) if kernel.endswith("steps") \
            else max(1, int(entry["rows"]))
        inputs = _Inputs(model, spec, rng, n)
        out[sig] = _line(kernel, inputs, n, _sync(backend))
    return out


def _sync(backend: str) -> Callable[[], Any]:
    """Waits for the device to finish (CuPy runs kernels asynchronously)."""
    if backend == "cupy":
        import cupy

        return cupy.cuda.get_current_stream().synchronize
    return lambda: None


class _Inputs:
    """Random inputs of the shapes stage ``spec`` sees, ``n`` samples at most."""

    def __init__(self, model: Sequential, spec: kernels.StageSpec, rng: Any, n: int) -> None:
        a, z = spec.start, spec.stop
        shapes, dtype = model.shapes, model.dtype
        self.spec = spec
        self.X = rng.standard_normal((n, *shapes[0])).astype(dtype)
        try:
            model.check_values(self.X)
        except DataError:  # inputs the first layer refuses (token ids, say): zeros
            self.X = np.zeros_like(self.X)
        out_shape = shapes[-1]
        if spec.loss is not None and spec.loss.task == "classification":
            self.Y: Any = rng.integers(0, out_shape[-1], (n, *out_shape[:-1]))
        else:
            self.Y = rng.standard_normal((n, *out_shape))
        self.x_in = rng.standard_normal((n, *shapes[a])).astype(dtype)
        self.dy = rng.standard_normal((n, *shapes[z])).astype(dtype)
        params = model.params[a:z]
        self.state = StageState(params, spec.optimizer.init(params), ())

    def partial(self) -> Partial:
        grads = [{k: v * 0.5 for k, v in layer.items()} for layer in self.state.params]
        return Partial(grads, 0.0)


def _line(kernel: str, inp: _Inputs, n: int, sync: Callable[[], Any]) -> tuple[float, float]:
    """Fit ``seconds = a * calls + b * rows`` for ``kernel`` from two measured sizes."""
    spec, state = inp.spec, inp.state
    small = max(1, n // 4)

    def rows_fn(m: int) -> Callable[[], Any]:
        idx = np.arange(m)
        if kernel == "grad":
            return lambda: kernels.grad(spec, state, inp.X, inp.Y, idx, m, 0, 0)
        if kernel in ("train_steps", "local_steps"):
            return lambda: kernels.train_steps(spec, state, inp.X, inp.Y, (idx, idx), 0)
        x_in = None if spec.start == 0 else (inp.x_in[:m], None)
        if kernel == "forward":
            return lambda: kernels.forward(spec, state, x_in, inp.X, idx, 0)
        if kernel == "loss_backward":
            return lambda: kernels.loss_backward(spec, state, x_in, inp.X, inp.Y, idx, m, 0, 0)
        fwd = kernels.forward(spec, state, x_in, inp.X, idx, 0)
        return lambda: kernels.backward(spec, state, fwd, (inp.dy[:m],))

    def parts_fn(p: int) -> Callable[[], Any]:
        part = inp.partial()
        if kernel == "update":
            return lambda: kernels.update(spec, state, 0, *[part] * p)
        if kernel == "aggregate":
            return lambda: kernels.aggregate(spec.backend, *[part] * p)
        return lambda: kernels.average(spec.backend, (1.0 / p,) * p, *[state] * p)

    if kernel in ("update", "aggregate", "average"):
        lo, hi = (1, 2) if kernel == "update" else (2, 3)
        t_lo, t_hi = _seconds(parts_fn(lo), sync), _seconds(parts_fn(hi), sync)
        b = max(t_hi - t_lo, 0.0)
        return max(t_lo - b * lo, 0.0), b
    calls = 2 if kernel.endswith("steps") else 1
    t_lo, t_hi = _seconds(rows_fn(small), sync), _seconds(rows_fn(n), sync)
    if n == small:
        return t_hi / calls, 0.0
    b = max((t_hi - t_lo) / (calls * (n - small)), 0.0)
    return max((t_lo - b * calls * small) / calls, 0.0), b


def _seconds(fn: Callable[[], Any], sync: Callable[[], Any]) -> float:
    fn()  # warm up: allocations, first use of each code path
    sync()
    times: list[float] = []
    while len(times) < 2 or (len(times) < REPEATS and sum(times) < REPEAT_SECONDS):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
