"""Local clusters for pnngraph: CPU workers plus GPU workers (real or emulated) on one machine.

``local_cluster(cpu_workers=2, gpu_workers=1)`` starts a ``distributed.SpecCluster`` whose GPU
workers offer the resource ``GPU=1`` (each sees one device through ``CUDA_VISIBLE_DEVICES``), so
calibration and planning tell them apart. Without a GPU, ``gpu_workers`` can still be started
and calibrated with ``gpu_backend="emulated"``: they compute on the emulated device, which
refuses any array that was not explicitly moved to it, so a missing transfer fails as it would
on CuPy. Everything binds to 127.0.0.1 unless ``host`` says otherwise.

Every worker of these clusters keeps freed memory for reuse (:class:`KeepFreedMemory`): Dask's
nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which makes glibc hand every large
array back to the system as soon as it is freed, so a training step that allocates the same
activations each time pays page faults for every one of them again (10-15 % of a step measured
here, see docs/performance.md).

To join GPU workers to an existing cluster: ``dask worker tcp://SCHEDULER:8786 --nthreads 1
--resources GPU=1`` on each GPU machine (one per device, with ``CUDA_VISIBLE_DEVICES``), or
dask-cuda's ``dask cuda worker tcp://SCHEDULER:8786 --resources GPU=1``.

The scheduler of these clusters runs without work stealing: a plan pins every task to a worker
(loosely, so that a lost worker's tasks run elsewhere), and Dask's stealing would move loosely
pinned tasks to whichever worker looks idle by its own per-prefix durations, undoing the plan
and its prediction on a busy machine. On a cluster of your own, set
``distributed.scheduler.work-stealing: false`` in the scheduler's Dask config for the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

from distributed import Nanny, Scheduler, SpecCluster, Worker
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.scheduler import DEFAULT_EXTENSIONS

from pnngraph.exceptions import ConfigError, check_int

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
KEEP_BYTES = 1 << 30  # free memory at the top of the heap kept for reuse, at most
MMAP_BYTES = 1 << 25  # arrays below this come from the heap, so freed ones are reused


class KeepFreedMemory(WorkerPlugin):
    """Tell glibc's allocator in the worker process to keep freed memory for reuse (heap
    allocation up to 32 MiB, trimming only above 1 GiB); nothing happens without glibc."""

    name = "pnngraph-keep-freed-memory"

    def setup(self, worker: Any) -> None:
        path = ctypes.util.find_library("c")
        if path is None:
            return
        try:
            libc = ctypes.CDLL(path)
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)
            libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)
        except (OSError, AttributeError):  # not glibc: leave the allocator as it is
            return


class QuietPeerLoss(WorkerPlugin):
    """Keep the worker's log free of the tracebacks of transfers cut off because the other
    worker went away (it died, or the cluster is closing): Dask recomputes what they carried,
    and the run says what it lost, in one line, where it matters. Every other record stays."""

    name = "pnngraph-quiet-peer-loss"

    def setup(self, worker: Any) -> None:
        logging.getLogger("distributed.worker").addFilter(_not_a_lost_peer)


def _not_a_lost_peer(record: logging.LogRecord) -> bool:
    """False for a record of a connection to another worker that closed (an ``OSError``)."""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, OSError)


def local_cluster(
    cpu_workers: int = 2,
    gpu_workers: int = 0,
    *,
    threads_per_worker: int = 1,
    processes: bool = True,
    host: str = "127.0.0.1",
    dashboard_address: str | None = "127.0.0.1:8787",
    memory_limit: str | int = "auto",
    silence_logs: int | bool = logging.WARNING,
    **options: Any,
) -> SpecCluster:
    """Start ``cpu_workers`` CPU workers and ``gpu_workers`` GPU workers (``GPU=1`` each).

    Worker names are ``cpu-0``, ``cpu-1``, ..., ``gpu-0``, ...; GPU worker i sees device i.
    ``processes=False`` runs workers as threads of this process (faster to start, no pickling).
    Dask's log messages below ``silence_logs`` (default: warnings) are not shown.
    """
    for name, n in (("cpu_workers", cpu_workers), ("gpu_workers", gpu_workers)):
        check_int(name, n, low=0)
    if cpu_workers + gpu_workers == 0:
        raise ConfigError("workers", "at least one worker", 0)
    check_int("threads_per_worker", threads_per_worker)
    cls = Nanny if processes else Worker
    base: dict[str, Any] = {"nthreads": threads_per_worker, "host": host,
                            "memory_limit": memory_limit,
                            "plugins": (KeepFreedMemory(), QuietPeerLoss())}
    if processes:
        base["silence_logs"] = silence_logs
    workers: dict[str, dict[str, Any]] = {
        f"cpu-{i}": {"cls": cls, "options": dict(base)} for i in range(cpu_workers)
    }
    for i in range(gpu_workers):
        opts = {**base, "resources": {"GPU": 1}}
        if processes:
            opts["env"] = {"CUDA_VISIBLE_DEVICES": str(i)}
        workers[f"gpu-{i}"] = {"cls": cls, "options": opts}
    scheduler = {
        "cls": Scheduler,
        "options": {
            "host": host,
            # the scheduler's HTTP server runs even without a dashboard: give it a free port
            "dashboard_address": dashboard_address or f"{host}:0",
            "dashboard": dashboard_address is not None,
            # the plan says where tasks run: no work stealing (see the module docstring)
            "extensions": {k: v for k, v in DEFAULT_EXTENSIONS.items() if k != "stealing"},
        },
    }
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=silence_logs, **options)
