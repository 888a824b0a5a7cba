"""The cluster model: what the planner knows about the workers, in seconds and bytes per second.

Plain data, saved as JSON. ``pnngraph.calibrate(client)`` measures it on a live cluster;
:func:`simulated_cluster` describes one that need not exist (for planning ahead and for benchmarks
of placement on hardware this machine lacks)::

    ClusterModel
      workers: WorkerModel(address, threads, backend, gemm_flops_per_s{dtype}, memory_bytes_per_s,
                           host_device_bytes_per_s, memory_limit_bytes, device_memory_bytes)
      task_overhead_seconds    Dask's cost of one task (scheduling, messages)
      hop_latency_seconds      a dependent task starts this long after its input is done
      network_bytes_per_s      worker-to-worker bandwidth
      shared_links             each worker's link carries one transfer at a time each way (the
                               prediction serializes them); False: every transfer at once
      graph_seconds            fixed cost of one client.compute(...).result(): submission, the
                               first dispatch, the result coming back
      send_bytes_per_s         data inside a graph, client -> scheduler -> worker
      result_bytes_per_s       a result, worker -> client
      kernels                  measured kernel times per (kernel and stage, worker): seconds =
                               a * calls + b * rows (:func:`pnngraph.run.calibrate.profile`)
      history                  measured/predicted correction per (phase, worker), refined per run,
                               and per (kernel signature, worker): the shape of a node, which
                               wins over its phase's where both are known

>>> cluster = simulated_cluster(cpus=2, gpus=1, gpu_speedup=20.0)
>>> [w.backend for w in cluster.workers]
['numpy', 'numpy', 'cupy']
>>> ClusterModel.from_json(cluster.to_json()) == cluster
True
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pnngraph.exceptions import ConfigError, check_int

DEFAULT_TASK_OVERHEAD_SECONDS = 0.7e-3  # measured here: a pinned independent task
DEFAULT_HOP_LATENCY_SECONDS = 6e-3  # measured here: one dependent hop on the critical path
DEFAULT_NETWORK_BYTES_PER_S = 1.5e9  # measured here: worker-to-worker over TCP
DEFAULT_GRAPH_SECONDS = 0.03  # measured here: a one-task graph, submitted and gathered
DEFAULT_SEND_BYTES_PER_S = 0.5e9  # measured here: in-graph data, client to the worker using it
DEFAULT_RESULT_BYTES_PER_S = 0.5e9  # measured here: a result, worker to client


@dataclass(frozen=True)
class WorkerModel:
    """One worker: where it is, what it runs on and how fast.

    ``gemm_flops_per_s`` maps a dtype name ("float32", "float64") to matrix-multiply speed;
    ``memory_bytes_per_s`` is elementwise bandwidth; ``host_device_bytes_per_s`` the host <->
    device copy speed of a GPU worker (``None`` on CPU workers). ``memory_limit_bytes`` is the
    worker's memory limit (Dask's ``memory_limit``; ``None``: unknown, plans are not checked
    against it) and ``device_memory_bytes`` a GPU worker's device memory (``None`` elsewhere):
    :mod:`pnngraph.plan.memory` keeps every plan's predicted peak below them.
    """

    address: str
    threads: int
    backend: str
    gemm_flops_per_s: Mapping[str, float]
    memory_bytes_per_s: float
    host_device_bytes_per_s: float | None = None
    memory_limit_bytes: float | None = None
    device_memory_bytes: float | None = None

    @property
    def gpu(self) -> bool:
        return self.backend != "numpy"

    def flops_per_s(self, dtype: str) -> float:
        """GEMM speed for ``dtype`` (the float32 figure when that dtype was not measured)."""
        rates = self.gemm_flops_per_s
        return float(rates.get(dtype, rates.get("float32", next(iter(rates.values())))))


@dataclass(frozen=True)
class ClusterModel:
    """Workers and the costs of Dask itself; see the module docstring."""

    workers: tuple[WorkerModel, ...]
    task_overhead_seconds: float = DEFAULT_TASK_OVERHEAD_SECONDS
    hop_latency_seconds: float = DEFAULT_HOP_LATENCY_SECONDS
    network_bytes_per_s: float = DEFAULT_NETWORK_BYTES_PER_S
    graph_seconds: float = DEFAULT_GRAPH_SECONDS
    send_bytes_per_s: float = DEFAULT_SEND_BYTES_PER_S
    result_bytes_per_s: float = DEFAULT_RESULT_BYTES_PER_S
    kernels: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    history: Mapping[str, float] = field(default_factory=dict)
    spread: Mapping[str, float] = field(default_factory=dict)
    shared_links: bool = False

    def __post_init__(self) -> None:
        if not self.workers:
            raise ConfigError("cluster", "at least one worker", "no workers")
        seen = set()
        for w in self.workers:
            if w.address in seen:
                raise ConfigError("cluster workers", "unique addresses", w.address)
            seen.add(w.address)
            for rate in (*w.gemm_flops_per_s.values(), w.memory_bytes_per_s):
                if not (math.isfinite(rate) and rate > 0):
                    raise ConfigError(f"worker {w.address} speed", "a positive number", rate)
            for size in (w.memory_limit_bytes, w.device_memory_bytes):
                if size is not None and not (math.isfinite(size) and size > 0):
                    raise ConfigError(f"worker {w.address} memory", "a positive number of bytes",
                                      size)
        for name in ("task_overhead_seconds", "hop_latency_seconds", "graph_seconds"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(name, "a number >= 0", v)
        for name in ("network_bytes_per_s", "send_bytes_per_s", "result_bytes_per_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(name, "a positive number", v)

    @property
    def addresses(self) -> list[str]:
        return [w.address for w in self.workers]

    def usable(self, devices: str = "any") -> list[str]:
        """Addresses of the workers of kind ``devices`` ("any", "cpu" or "gpu"), in order."""
        return [w.address for w in self.workers if devices == "any" or (devices == "gpu") == w.gpu]

    def worker(self, address: str) -> WorkerModel:
        for w in self.workers:
            if w.address == address:
                return w
        raise ConfigError("worker", "one of " + ", ".join(self.addresses), address)

    def correction(self, phase: str, address: str, sig: str | None = None) -> float:
        """Measured/predicted duration factor for ``phase`` tasks on ``address`` (1 if unknown);
        with ``sig`` (a kernel signature: the node's shape), that kernel's own factor there
        where one was learned.

        >>> c = simulated_cluster(cpus=1, gpus=0).with_history({"grad|sim-cpu-0": 2.0,
        ...                                                     "grad:ab|sim-cpu-0": 3.0})
        >>> c.correction("grad", "sim-cpu-0"), c.correction("grad", "sim-cpu-0", "grad:ab")
        (2.0, 3.0)
        """
        if sig is not None and f"{sig}|{address}" in self.history:
            return float(self.history[f"{sig}|{address}"])
        return float(self.history.get(f"{phase}|{address}", 1.0))

    def with_history(self, history: Mapping[str, float]) -> ClusterModel:
        return replace(self, history=dict(history))

    def kernel_seconds(self, sig: str, address: str, rows: float, count: int) -> float | None:
        """Measured seconds of kernel ``sig`` on ``address`` for ``rows`` rows in ``count``
        calls (``None`` when that kernel was not measured there)."""
        ab = self.kernels.get(f"{sig}|{address}")
        return None if ab is None else max(0.0, ab[0] * count + ab[1] * rows)

    def with_kernels(self, kernels: Mapping[str, tuple[float, float]]) -> ClusterModel:
        return replace(self, kernels={**self.kernels, **kernels})

    def without(self, gone: Iterable[str]) -> ClusterModel:
        """The cluster less the workers at ``gone`` (with their kernel times and history).

        >>> c = simulated_cluster(cpus=2, gpus=0).without(["sim-cpu-0"])
        >>> c.addresses
        ['sim-cpu-1']
        """
        drop = set(gone)

        def kept(key: str) -> bool:
            return key.rpartition("|")[2] not in drop

        return replace(self, workers=tuple(w for w in self.workers if w.address not in drop),
                       kernels={k: v for k, v in self.kernels.items() if kept(k)},
                       history={k: v for k, v in self.history.items() if kept(k)})

    def readdressed(self, mapping: Mapping[str, str]) -> ClusterModel:
        """The same cluster with workers renamed (``mapping``: old address -> new), their
        kernel times and history with them.

        >>> c = simulated_cluster(cpus=1, gpus=0).readdressed({"sim-cpu-0": "tcp://127.0.0.1:1"})
        >>> c.addresses
        ['tcp://127.0.0.1:1']
        """
        def rename(key: str) -> str:
            head, sep, address = key.rpartition("|")
            return f"{head}|{mapping.get(address, address)}" if sep else key

        return replace(
            self,
            workers=tuple(replace(w, address=mapping.get(w.address, w.address))
                          for w in self.workers),
            kernels={rename(k): v for k, v in self.kernels.items()},
            history={rename(k): v for k, v in self.history.items()},
        )

    # -------------------------------------------------------------------------------- files
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ClusterModel:
        try:
            raw = json.loads(text)
            workers = tuple(
                WorkerModel(**{**w, "gemm_flops_per_s": dict(w["gemm_flops_per_s"])})
                for w in raw.pop("workers")
            )
            kernels = {k: (float(v[0]), float(v[1])) for k, v in raw.pop("kernels", {}).items()}
            return cls(workers=workers, **{**raw, "history": dict(raw.get("history", {})),
                                           "spread": dict(raw.get("spread", {})),
                                           "kernels": kernels})
        except (KeyError, TypeError, ValueError, RecursionError) as err:
            raise ConfigError("cluster model", "JSON from ClusterModel.to_json", err) from None


def simulated_cluster(
    cpus: int = 4,
    gpus: int = 1,
    *,
    cpu_gflops: float = 100.0,
    gpu_speedup: float = 20.0,
    cpu_memory_gb_per_s: float = 10.0,
    gpu_memory_gb_per_s: float = 1000.0,
    pcie_gb_per_s: float = 12.0,
    network_gb_per_s: float = 1.5,
    gpu_backend: str = "cupy",
    task_overhead_seconds: float = DEFAULT_TASK_OVERHEAD_SECONDS,
    hop_latency_seconds: float = DEFAULT_HOP_LATENCY_SECONDS,
    memory_gb: float | None = None,
    gpu_memory_gb: float | None = None,
) -> ClusterModel:
    """A cluster on paper: ``cpus`` one-thread CPU workers and ``gpus`` GPU workers whose GEMM is
    ``gpu_speedup`` times a CPU worker's, behind a PCIe-like host link. Addresses are
    ``sim-cpu-0``, ..., ``sim-gpu-0``, ...; float64 runs at half the float32 speed.
    ``memory_gb`` is every worker's memory limit and ``gpu_memory_gb`` a GPU's device memory
    (``None``: unknown, not checked)."""
    def rates(gflops: float) -> dict[str, float]:
        return {"float32": gflops * 1e9, "float64": gflops * 0.5e9}

    limit = None if memory_gb is None else memory_gb * 1e9
    device = None if gpu_memory_gb is None else gpu_memory_gb * 1e9
    workers = [
        WorkerModel(f"sim-cpu-{i}", 1, "numpy", rates(cpu_gflops), cpu_memory_gb_per_s * 1e9,
                    memory_limit_bytes=limit)
        for i in range(cpus)
    ] + [
        WorkerModel(f"sim-gpu-{i}", 1, gpu_backend, rates(cpu_gflops * gpu_speedup),
                    gpu_memory_gb_per_s * 1e9, pcie_gb_per_s * 1e9, limit, device)
        for i in range(gpus)
    ]
    return ClusterModel(
        tuple(workers),
        task_overhead_seconds=task_overhead_seconds,
        hop_latency_seconds=hop_latency_seconds,
        network_bytes_per_s=network_gb_per_s * 1e9,
    )


def robust_factor(ratios: Iterable[float]) -> float | None:
    """Median of measured/predicted ratios after dropping outliers (beyond 3 MADs); ``None``
    when fewer than three ratios remain.

    >>> robust_factor([1.0, 1.1, 0.9, 1.05, 40.0])
    1.025
    """
    values = [r for r in ratios if math.isfinite(r) and r > 0]
    if len(values) < 3:
        return None
    med = statistics.median(values)
    mad = statistics.median(abs(v - med) for v in values) or 1e-12
    kept = [v for v in values if abs(v - med) <= 3 * 1.4826 * mad]
    return statistics.median(kept) if len(kept) >= 3 else med


def refine(
    cluster: ClusterModel, samples: Sequence[tuple[Any, ...]], *, weight: float = 0.5,
    by_shape: bool = False,
) -> ClusterModel:
    """Fold measured task durations into the history (StarPU-style, per phase and worker).

    ``samples`` holds ``(phase, address, predicted_seconds, measured_seconds)``, optionally
    with the node's kernel signature fifth; each (phase, worker) factor moves ``weight`` of the
    way to the robust ratio of this run. With ``by_shape``, a sample with a signature refines
    that kernel's factor on its worker instead (:meth:`ClusterModel.correction`).
    """
    groups: dict[str, list[float]] = {}
    for phase, address, predicted, measured, *rest in samples:
        sig = rest[0] if rest and by_shape else None
        if predicted > 0:
            base = cluster.correction(phase, address, sig)
            key = f"{sig or phase}|{address}"
            groups.setdefault(key, []).append(measured / (predicted / base))
    history: dict[str, Any] = dict(cluster.history)
    for key, ratios in groups.items():
        factor = robust_factor(ratios)
        if factor is None and by_shape and "|" in key and ":" in key.partition("|")[0]:
            factor = statistics.median(ratios)  # a kernel's own few runs there: all there is
        if factor is not None:
            old = float(history.get(key, factor))
            history[key] = (1 - weight) * old + weight * factor
    return cluster.with_history(history)


CLUSTER_KEYS = ("workers", "task_overhead_ms", "hop_latency_ms", "network_gb_per_s",
                "network_gbit_per_s", "shared_links")
WORKER_KEYS = ("name", "count", "backend", "gflops", "threads", "memory_gb_per_s",
               "host_device_gb_per_s", "memory_gb", "device_memory_gb")
MAX_FILE_WORKERS = 100_000  # a file describing more is a typo, not a cluster


def cluster_from_spec(spec: Mapping[str, Any]) -> ClusterModel:
    """A cluster from a small description (a parsed YAML or JSON file)::

        task_overhead_ms: 0.7        # optional, these three: Dask's cost of a task,
        hop_latency_ms: 6            #   the delay of a dependent task (a per-hop latency)
        network_gbit_per_s: 10       #   and the network (or network_gb_per_s, in GB/s: 1.5)
        shared_links: true           # optional: a worker's link moves one transfer at a time
        workers:
          - {name: cpu, gflops: 100, count: 1000, memory_gb: 4}   # float32 GFLOP/s; float64 half;
                                                                  #   memory limit (optional)
          - {name: gpu, backend: cupy, gflops: {float32: 2000, float64: 1000},
             memory_gb_per_s: 1000, host_device_gb_per_s: 12, device_memory_gb: 80, count: 24}

    A worker group with ``count`` N becomes N workers named ``name-0`` ... ``name-(N-1)`` (a
    group of one keeps its name). Every key and value is checked: a bad one is a
    :class:`ConfigError` naming it, e.g. ``workers[1].count: expected a positive integer, got
    0``.

    >>> cluster = cluster_from_spec({"network_gbit_per_s": 10, "hop_latency_ms": 0.05,
    ...     "workers": [{"name": "cpu", "gflops": 100, "count": 1000},
    ...                 {"name": "gpu", "backend": "cupy", "gflops": 2000, "count": 24}]})
    >>> len(cluster.workers), cluster.workers[-1].address, cluster.network_bytes_per_s
    (1024, 'gpu-23', 1250000000.0)
    """
    if not isinstance(spec, Mapping) or not isinstance(spec.get("workers"), list):
        raise ConfigError("cluster file", "a mapping with a list of 'workers'", spec)
    _known_keys("cluster file", spec, CLUSTER_KEYS)
    if "network_gb_per_s" in spec and "network_gbit_per_s" in spec:
        raise ConfigError("cluster file", "one of network_gb_per_s and network_gbit_per_s",
                          "both")
    groups = [_worker_group(i, w) for i, w in enumerate(spec["workers"])]
    total = sum(count for count, _ in groups)
    if total > MAX_FILE_WORKERS:
        raise ConfigError("cluster file", f"at most {MAX_FILE_WORKERS} workers in all", total)
    workers = []
    for count, worker in groups:
        workers += [worker] if count == 1 else [replace(worker, address=f"{worker.address}-{j}")
                                                for j in range(count)]
    if "network_gbit_per_s" in spec:
        network = _number("network_gbit_per_s", spec["network_gbit_per_s"]) * 1e9 / 8
    else:
        network = _number("network_gb_per_s", spec.get("network_gb_per_s", 1.5)) * 1e9
    return ClusterModel(
        tuple(workers),
        task_overhead_seconds=_number("task_overhead_ms", spec.get("task_overhead_ms", 0.7),
                                      zero=True) * 1e-3,
        hop_latency_seconds=_number("hop_latency_ms", spec.get("hop_latency_ms", 6.0),
                                    zero=True) * 1e-3,
        network_bytes_per_s=network,
        shared_links=_flag("shared_links", spec.get("shared_links", True)),
    )


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(name, "true or false", value)
    return value


def _worker_group(i: int, w: Any) -> tuple[int, WorkerModel]:
    """``workers[i]`` of a cluster file: its count and its worker (the group's name)."""
    where = f"workers[{i}]"
    if not isinstance(w, Mapping) or "gflops" not in w:
        raise ConfigError(where, "a mapping with at least 'gflops'", w)
    _known_keys(where, w, WORKER_KEYS)
    g = w["gflops"]
    if isinstance(g, Mapping):
        gflops = {str(k): _number(f"{where}.gflops.{k}", v) for k, v in g.items()}
        if not gflops:
            raise ConfigError(f"{where}.gflops", "a number or dtype -> number", {})
    else:
        g = _number(f"{where}.gflops", g)
        gflops = {"float32": g, "float64": g / 2}
    backend = w.get("backend", "numpy")
    if backend not in ("numpy", "cupy"):
        raise ConfigError(f"{where}.backend", "'numpy' or 'cupy'", backend)
    name = w.get("name", f"worker-{i}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name", "a non-empty string", name)
    count = check_int(f"{where}.count", w.get("count", 1))
    threads = check_int(f"{where}.threads", w.get("threads", 1))
    memory = _number(f"{where}.memory_gb_per_s",
                     w.get("memory_gb_per_s", 10.0 if backend == "numpy" else 1000.0))
    copy = w.get("host_device_gb_per_s", None if backend == "numpy" else 12.0)
    sizes = {key: None if w.get(key) is None else _number(f"{where}.{key}", w[key]) * 1e9
             for key in ("memory_gb", "device_memory_gb")}
    return count, WorkerModel(
        name, threads, backend, {k: v * 1e9 for k, v in gflops.items()}, memory * 1e9,
        None if copy is None else _number(f"{where}.host_device_gb_per_s", copy) * 1e9,
        sizes["memory_gb"], sizes["device_memory_gb"],
    )


def _known_keys(where: str, mapping: Mapping[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(str(k) for k in mapping if k not in known)
    if unknown:
        raise ConfigError(where, "keys among " + ", ".join(known), unknown[0])


def _number(name: str, value: Any, *, zero: bool = False) -> float:
    """``value`` as a float when it is a finite number > 0 (>= 0 with ``zero``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not zero):
        raise ConfigError(name, "a number >= 0" if zero else "a positive number", value)
    return float(value)
