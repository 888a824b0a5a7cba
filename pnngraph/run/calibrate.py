"""Calibration: measure a live cluster into a :class:`~pnngraph.plan.cluster.ClusterModel`.

What is measured, each in a bounded time (the whole call stays under ``budget_seconds``):

- per worker, inside the worker: GEMM FLOP/s for float32 and float64 and elementwise bandwidth
  (numpy; CuPy on GPU workers, with the host <-> device copy speed and the device's memory);
  the worker's memory limit is Dask's own (``memory_limit``, as the scheduler knows it);
- Dask's costs: seconds per pinned independent task, per dependent hop, and worker-to-worker
  bandwidth (an 8 MB array produced on one worker and consumed on another).

A worker is a GPU worker when it offers the resource ``GPU``; it computes with CuPy, or, with
``gpu_backend="emulated"``, with the emulated device (array-api-strict), whose speeds are the
host's times ``emulated_speedup``. Results are cached as JSON under ``cache_dir`` (default
``~/.cache/pnngraph``), named by what the workers' speeds depend on (:func:`worker_fingerprint`:
host, CPU model, threads, memory limit, GPU name, library versions), not by their addresses, so
an embedded cluster started again on random ports finds its calibration. The newest
:data:`CACHE_FILES` calibrations are kept; ``refresh=True`` (``pnngraph calibrate --refresh``)
measures again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from dask.task_spec import DataNode, Task, TaskRef

from pnngraph.exceptions import ConfigError, UnknownNameError
from pnngraph.nn.backend import check_backend
from pnngraph.plan.cluster import ClusterModel, WorkerModel
from pnngraph.run.session import live_workers

GPU_BACKENDS = ("auto", "cupy", "emulated")


def _best_seconds(fn: Any, repeats: int) -> float:
    fn()  # warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return max(best, 1e-9)


def measure_host(n: int = 512, repeats: int = 3) -> dict[str, Any]:
    """GEMM FLOP/s per dtype and elementwise bytes/s of this process, with numpy."""
    rng = np.random.default_rng(0)
    gemm = {}
    for dtype in ("float32", "float64"):
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        gemm[dtype] = 2.0 * n**3 / _best_seconds(lambda a=a, b=b: a @ b, repeats)
    x = np.ones(2_000_000)
    y = np.ones(2_000_000)
    memory = 3 * x.nbytes / _best_seconds(lambda: np.add(x, y), repeats)
    return {"gemm_flops_per_s": gemm, "memory_bytes_per_s": memory, "host_device_bytes_per_s": None}


def measure_cupy(n: int = 2048, repeats: int = 3) -> dict[str, Any]:
    """The same figures on the current CUDA device, plus host <-> device copy bytes/s."""
    check_backend("cupy")  # a GPU worker without CuPy or a device says what to install
    import cupy as cp

    def timed(fn: Any) -> float:
        def run() -> None:
            fn()
            cp.cuda.Device().synchronize()

        return _best_seconds(run, repeats)

    gemm = {}
    for dtype in ("float32", "float64"):
        a = cp.random.standard_normal((n, n)).astype(dtype)
        b = cp.random.standard_normal((n, n)).astype(dtype)
        gemm[dtype] = 2.0 * n**3 / timed(lambda a=a, b=b: a @ b)
    x = cp.ones(16_000_000)
    memory = 3 * x.nbytes / timed(lambda: x + x)
    host = np.ones(16_000_000)
    copy = host.nbytes / timed(lambda: cp.asarray(host))
    return {"gemm_flops_per_s": gemm, "memory_bytes_per_s": memory,
            "host_device_bytes_per_s": copy,
            "device_memory_bytes": float(cp.cuda.Device().mem_info[1])}


def _noop(*args: Any) -> int:
    return 0


def _make_bytes(n: int, salt: int) -> np.ndarray:
    return np.full(n, salt, dtype=np.uint8)


CACHE_FILES = 16  # calibrations kept; the least recently used go first
CACHE_FORMAT = 3  # 3: workers' memory limits and device memory
SPEED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
             "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pnngraph"


def worker_fingerprint(dask_worker: Any) -> dict[str, Any]:
    """What a worker's speeds depend on (run on the worker): its host, CPU model and cores,
    threads, memory limit, resources, GPU name, library versions and the environment
    variables that change BLAS speed. Not its port, which changes with every start."""
    import platform

    import dask
    import distributed

    import pnngraph

    resources = dict(dask_worker.state.total_resources)
    gpu = None
    if "GPU" in resources:
        try:
            import cupy

            gpu = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        except Exception:  # no CuPy or no device: the emulated GPU
            gpu = "none"
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "host": dask_worker.address.rsplit(":", 1)[0], "cpu": cpu, "cores": os.cpu_count(),
        "threads": dask_worker.state.nthreads,
        "memory": dask_worker.memory_manager.memory_limit, "resources": resources, "gpu": gpu,
        "versions": [platform.python_version(), np.__version__, dask.__version__,
                     distributed.__version__, pnngraph.__version__],
        "env": {k: os.environ.get(k) for k in SPEED_ENV},
    }


def _digest(value: Any) -> str:
    raw = json.dumps(value, sort_keys=True, default=str)
    return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


class _Identity(NamedTuple):
    """A cluster as the cache knows it: its name, and each worker's fingerprint digest."""

    name: str
    workers: dict[str, str]  # address -> digest


def cluster_identity(client: Any, gpu_backend: str, emulated_speedup: float) -> _Identity:
    """The cache's name for the cluster behind ``client``: a digest of its workers'
    fingerprints (:func:`worker_fingerprint`), whatever their addresses."""
    prints = client.run(worker_fingerprint)
    workers = {a: _digest(fp) for a, fp in sorted(prints.items())}
    name = _digest([CACHE_FORMAT, sorted(workers.values()), gpu_backend, emulated_speedup])
    return _Identity(name, workers)


def _cache_path(cache_dir: str | os.PathLike[str] | None, identity: _Identity) -> Path:
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / f"cluster-{identity.name}.json"


def _read_cache(path: Path, identity: _Identity) -> ClusterModel | None:
    """The cached model with its workers renamed to the live ones of the same fingerprint
    (``None`` when there is none, or it is damaged or of an older format)."""
    try:
        raw = json.loads(path.read_text())
        cached: dict[str, str] = dict(raw["workers"])
        model = ClusterModel.from_json(raw["model"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError, ConfigError):
        return None
    mapping: dict[str, str] = {}
    for digest in set(identity.workers.values()):
        old = sorted(a for a, d in cached.items() if d == digest)
        new = sorted(a for a, d in identity.workers.items() if d == digest)
        if len(old) != len(new):
            return None
        mapping.update(zip(old, new, strict=True))
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: kept longest
    return model.readdressed(mapping)


def _write_cache(path: Path, identity: _Identity, model: ClusterModel) -> None:
    """Store ``model`` under ``identity``; keep the newest :data:`CACHE_FILES` files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps({"format": CACHE_FORMAT, "workers": identity.workers,
                               "model": model.to_json()}))
    tmp.replace(path)
    files = sorted(path.parent.glob("cluster-*.json"), key=lambda p: p.stat().st_mtime)
    for old in files[:-CACHE_FILES]:
        with contextlib.suppress(OSError):
            old.unlink()


def calibrate(
    client: Any,
    *,
    gpu_backend: str = "auto",
    emulated_speedup: float = 20.0,
    budget_seconds: float = 30.0,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    refresh: bool = False,
) -> ClusterModel:
    """Measure the cluster behind ``client`` (or read the cached measurement).

    Parameters
    ----------
    gpu_backend : {"auto", "cupy", "emulated"}
        What workers with the ``GPU`` resource compute with ("auto": CuPy).
    emulated_speedup : float
        With ``"emulated"``, how many times the host's speed the emulated GPU is assumed to be.
    budget_seconds : float
        Upper bound on the time spent measuring (sizes shrink to fit).
    cache, cache_dir, refresh
        Read and write the JSON cache; ``refresh`` measures again even when cached.

    Raises
    ------
    ConfigError
        When the cluster has no workers.
    """
    if gpu_backend not in GPU_BACKENDS:
        raise UnknownNameError("gpu_backend", gpu_backend, GPU_BACKENDS)
    info = live_workers(client)
    if not info:
        raise ConfigError("cluster", "at least one worker to calibrate", "no workers")
    identity = cluster_identity(client, gpu_backend, emulated_speedup)
    path = _cache_path(cache_dir, identity)
    if cache and not refresh and path.exists():
        cached = _read_cache(path, identity)
        if cached is not None and set(cached.addresses) == set(info):
            return cached  # else damaged or changed: measured again
    deadline = time.perf_counter() + budget_seconds
    addresses = sorted(info)
    per_worker = max(0.5, budget_seconds / (2 * len(addresses) + 4))
    n = 384 if per_worker < 2 else 768
    workers = []
    for address in addresses:
        gpu = "GPU" in (info[address].get("resources") or {})
        backend = "numpy"
        if gpu:
            backend = "emulated" if gpu_backend == "emulated" else "cupy"
        if backend == "cupy":
            figures = client.run(measure_cupy, workers=[address])[address]
        else:
            figures = client.run(measure_host, n, workers=[address])[address]
        if backend == "emulated":
            figures["gemm_flops_per_s"] = {
                k: v * emulated_speedup for k, v in figures["gemm_flops_per_s"].items()
            }
            figures["memory_bytes_per_s"] *= emulated_speedup
            figures["host_device_bytes_per_s"] = 12e9
        limit = info[address].get("memory_limit")  # 0 or None: no limit
        workers.append(WorkerModel(address, int(info[address]["nthreads"]), backend, **figures,
                                   memory_limit_bytes=float(limit) if limit else None))
    model = ClusterModel(tuple(workers), **_measure_dask(client, addresses, deadline))
    if cache:
        _write_cache(path, identity, model)
    return model


def extend(client: Any, cluster: ClusterModel, addresses: list[str]) -> ClusterModel:
    """``cluster`` with the workers at ``addresses`` (which joined it) added: a worker with the
    fingerprint of one the model knows (:func:`worker_fingerprint`: same host, CPU, threads,
    memory limit, libraries) takes that one's figures and kernel times, measuring nothing;
    any other is measured as :func:`calibrate` measures a worker. Dask's own costs stay."""
    if not addresses:
        return cluster
    info = live_workers(client)
    prints = {a: _digest(fp) for a, fp in client.run(
        worker_fingerprint, workers=[*cluster.addresses, *addresses]).items()}
    known = {prints[a]: a for a in reversed(cluster.addresses) if a in prints}
    workers, kernels = list(cluster.workers), dict(cluster.kernels)
    for address in addresses:
        twin = known.get(prints.get(address, ""))
        if twin is not None:
            workers.append(replace(cluster.worker(twin), address=address))
            kernels.update({f"{k.rpartition('|')[0]}|{address}": v
                            for k, v in cluster.kernels.items() if k.rpartition("|")[2] == twin})
            continue
        gpu = "GPU" in (info.get(address, {}).get("resources") or {})
        if gpu:
            figures = client.run(measure_cupy, workers=[address])[address]
        else:
            figures = client.run(measure_host, 384, workers=[address])[address]
        threads = int(info.get(address, {}).get("nthreads", 1))
        workers.append(WorkerModel(address, threads, "cupy" if gpu else "numpy", **figures))
    return replace(cluster, workers=tuple(workers), kernels=kernels)


def remember(
    client: Any,
    model: ClusterModel,
    *,
    gpu_backend: str = "auto",
    emulated_speedup: float = 20.0,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Store ``model`` (say, refined by a run's history) as the cached calibration of the
    cluster behind ``client``: the next :func:`calibrate` returns it."""
    identity = cluster_identity(client, gpu_backend, emulated_speedup)
    path = _cache_path(cache_dir, identity)
    if set(model.addresses) == set(identity.workers):
        _write_cache(path, identity, model)
    return path


def _measure_dask(client: Any, addresses: list[str], deadline: float) -> dict[str, Any]:
    """Dask's own costs, each the median of repeats after a warm-up, measured the way a
    training graph pays them (graphs submitted whole, every key new), and their spread
    ((max - min) / median over the repeats)::

        graph_seconds            a one-task graph, submitted and its result back
        task_overhead_seconds    each further independent task (on one worker)
        hop_latency_seconds      each further task of a chain on one worker
        send_bytes_per_s         8 MB inside a graph, client -> scheduler -> its worker
        result_bytes_per_s       8 MB from a worker to the client
        network_bytes_per_s      8 MB from one worker to another
    """
    a = addresses[0]
    run = _GraphTimer(client, a)
    size = 8_000_000
    payload = np.ones(size, np.uint8)
    one = run.median(lambda u: ({("one", u): Task(("one", u), _noop, 0)}, ("one", u)))
    n_tasks = 50
    many = run.median(lambda u: _fan(u, n_tasks))
    chain = run.median(lambda u: _chain(u, 10))
    send = run.median(lambda u: ({("data", u): DataNode(("data", u), payload),
                                  ("use", u): Task(("use", u), _noop, TaskRef(("data", u)))},
                                 ("use", u)))
    make = run.median(lambda u: ({("make", u): Task(("make", u), _size_of, Task(
        ("bytes", u), _make_bytes, size, 0))}, ("make", u)))
    result = run.median(lambda u: ({("get", u): Task(("get", u), _make_bytes, size, 0)},
                                   ("get", u)))
    g = one.value
    figures: dict[str, Any] = {
        "graph_seconds": g,
        "task_overhead_seconds": max((many.value - g) / n_tasks, 1e-5),
        "hop_latency_seconds": max((chain.value - g) / 9, 1e-5),
        "send_bytes_per_s": size / max(send.value - g, 1e-4),
        "result_bytes_per_s": size / max(result.value - make.value, 1e-4),
    }
    spread = {"graph_seconds": one.spread, "task_overhead_seconds": many.spread,
              "hop_latency_seconds": chain.spread, "send_bytes_per_s": send.spread,
              "result_bytes_per_s": result.spread}
    figures["network_bytes_per_s"], spread["network_bytes_per_s"] = _network(
        client, addresses, size, figures["hop_latency_seconds"], deadline)
    figures["spread"] = spread
    return figures


class _Timed(NamedTuple):
    value: float
    spread: float


class _GraphTimer:
    """Times ``client.get`` of small graphs on one worker, each with keys never used before."""

    def __init__(self, client: Any, worker: str, repeats: int = 5) -> None:
        self.client, self.worker, self.repeats = client, worker, repeats

    def median(self, make: Any) -> _Timed:
        times = []
        for i in range(self.repeats + 1):  # the first is the warm-up
            dsk, key = make(uuid.uuid4().hex)
            t0 = time.perf_counter()
            self.client.get(dsk, key, workers=[self.worker])
            if i:
                times.append(time.perf_counter() - t0)
        mid = statistics.median(times)
        return _Timed(mid, (max(times) - min(times)) / mid if mid > 0 else 0.0)


def _fan(u: str, n: int) -> tuple[dict[Any, Any], Any]:
    dsk: dict[Any, Any] = {("fan", u, i): Task(("fan", u, i), _noop, i) for i in range(n)}
    dsk[("all", u)] = Task(("all", u), _noop, *[TaskRef(("fan", u, i)) for i in range(n)])
    return dsk, ("all", u)


def _chain(u: str, n: int) -> tuple[dict[Any, Any], Any]:
    dsk: dict[Any, Any] = {("hop", u, 0): Task(("hop", u, 0), _noop, 0)}
    for i in range(1, n):
        dsk[("hop", u, i)] = Task(("hop", u, i), _noop, TaskRef(("hop", u, i - 1)))
    return dsk, ("hop", u, n - 1)


def _size_of(a: Any) -> int:
    return int(a.nbytes)


def _network(client: Any, addresses: list[str], size: int, hop: float,
             deadline: float) -> tuple[float, float]:
    """Worker-to-worker bytes/s (median of three) and its spread; the default with one worker."""
    if len(addresses) < 2:
        return 1.5e9, 0.0
    a, b = addresses[0], addresses[1]
    samples = []
    for salt in range(3):
        if time.perf_counter() > deadline:
            break
        src = client.submit(_make_bytes, size, salt, workers=[a], pure=False)
        src.result()
        t0 = time.perf_counter()
        client.submit(_noop, src, workers=[b], pure=False).result()
        elapsed = time.perf_counter() - t0
        samples.append(size / max(elapsed - hop, elapsed / 4))
    if not samples:
        return 1.5e9, 0.0
    mid = statistics.median(samples)
    return mid, (max(samples) - min(samples)) / mid
