"""Sessions: a client on an embedded or existing cluster, and running a graph with progress.

``open_client()`` starts an embedded cluster on this machine (bound to 127.0.0.1, the pnngraph
dashboard page enabled) or connects to ``scheduler_address`` (with TLS when ``security`` is
given). ``run_graph`` computes a TrainingGraph, reports each finished step to a callback and
records the task stream for the report::

    with open_client(workers=2) as client:
        result, stream = run_graph(client, graph, on_steps=bar.update)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from distributed import Client, as_completed, get_task_stream
from distributed.security import Security

from pnngraph.exceptions import ConfigError
from pnngraph.run import dashboard
from pnngraph.run.cluster import local_cluster

PROGRESS_KINDS = {"update", "steps", "local", "average"}


@contextlib.contextmanager
def open_client(
    scheduler_address: str | None = None,
    *,
    workers: int = 2,
    threads: int = 1,
    gpu_workers: int = 0,
    host: str = "127.0.0.1",
    dashboard_address: str | None = "127.0.0.1:0",
    tls: tuple[str | None, str | None, str | None] = (None, None, None),
    timeout: float = 30.0,
) -> Iterator[Client]:
    """A client on an embedded ``local_cluster`` or on the cluster at ``scheduler_address``.

    ``tls`` is (CA file, client certificate, client key): all three, or none.
    """
    security = tls_security(*tls)
    if scheduler_address is not None:
        try:
            client = Client(scheduler_address, security=security, timeout=timeout)
        except OSError as err:
            raise ConfigError(
                "--scheduler-address", "the address of a running Dask scheduler",
                f"{scheduler_address} ({err})",
            ) from None
        with client:
            yield client
        return
    dashboard.enable()
    with local_cluster(
        workers, gpu_workers, threads_per_worker=threads, host=host,
        dashboard_address=dashboard_address,
    ) as cluster, Client(cluster) as client:
        yield client


def tls_security(ca_file: str | None, cert: str | None, key: str | None) -> Security | None:
    """A ``Security`` requiring encryption from the three TLS files (``None`` without them)."""
    given = [x for x in (ca_file, cert, key) if x]
    if not given:
        return None
    if len(given) != 3:
        raise ConfigError("--tls-*", "all of --tls-ca-file, --tls-cert and --tls-key", given)
    return Security(tls_ca_file=ca_file, tls_client_cert=cert, tls_client_key=key,
                    require_encryption=True)


def progress_steps(graph: Any) -> dict[Any, int]:
    """Nodes whose completion marks training progress, with the steps each one completes."""
    g = graph.to_networkx()
    last_stage = g.graph.get("layout", (1, 1, 1))[1] - 1
    marks = {}
    for key, node in g.nodes(data=True):
        kind = node["kind"]
        if kind not in PROGRESS_KINDS:
            continue
        if kind == "update" and node["stage"] != last_stage:
            continue
        if kind == "local" and node["shard"] != 0:
            continue
        if kind in ("steps", "local"):
            marks[key] = node["n_steps"]
        elif kind == "update":
            marks[key] = 1
    return marks


def run_graph(
    client: Client, graph: Any, *, on_steps: Callable[[int], Any] | None = None
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Compute ``graph`` on ``client``; call ``on_steps(n)`` as steps finish. Returns the
    graph's outputs gathered to the host (stage states, for ``finalize``) and the task stream
    records of the run."""
    keys = list(graph.__dask_keys__())
    marks = progress_steps(graph) if on_steps is not None else {}
    tracked = [k for k in marks if k not in keys]  # outputs are counted when gathered
    with get_task_stream(client=client) as stream:
        futures = client.get(graph.__dask_graph__(), keys + tracked, sync=False)
        outputs, trackers = futures[: len(keys)], futures[len(keys) :]
        for future in as_completed(trackers):
            assert on_steps is not None
            on_steps(marks[future.key])
            future.release()  # only a reference: the state stays where the next step needs it
        results = client.gather(outputs)
        if on_steps is not None:
            on_steps(sum(marks.get(k, 0) for k in keys))
    return list(results), list(stream.data)
