"""Sessions: a client on an embedded or existing cluster, and the workers it has right now.

``open_client()`` starts an embedded cluster on this machine (bound to 127.0.0.1) or connects
to ``scheduler_address`` (with TLS when the three TLS files are given; a handshake that either
side refuses is a ``ConfigError`` naming the address and OpenSSL's reason).
``live_workers(client)`` asks the scheduler which workers are running::

    with open_client(workers=2) as client:
        addresses = list(live_workers(client))

Every part of pnngraph that needs the worker list asks :func:`live_workers`, never
``client.scheduler_info()``: in distributed 2026.8 that call stores the scheduler's reply in a
field of the client which the client's own periodic refresh overwrites with an empty worker
list, so a caller may see no workers on a healthy cluster.
"""

from __future__ import annotations

import contextlib
import re
import signal
import ssl
import threading
from collections.abc import Iterator
from typing import Any

from distributed import Client
from distributed.comm.core import FatalCommClosedError
from distributed.security import Security

from pnngraph.exceptions import ConfigError
from pnngraph.run.cluster import local_cluster

LIVE = ("running", "paused")  # a paused worker (memory pressure) is still there


def live_workers(client: Any) -> dict[str, dict[str, Any]]:
    """Address -> the scheduler's record (``nthreads``, ``resources``, ...) of every worker
    that is running now, in address order, from the scheduler itself."""
    info = client.sync(client.scheduler.identity, n_workers=-1)
    workers = info.get("workers", {})
    return {a: workers[a] for a in sorted(workers) if workers[a].get("status", "running") in LIVE}


@contextlib.contextmanager
def open_client(
    scheduler_address: str | None = None,
    *,
    workers: int = 2,
    threads: int = 1,
    gpu_workers: int = 0,
    host: str = "127.0.0.1",
    dashboard_address: str | None = "127.0.0.1:8787",
    tls: tuple[str | None, str | None, str | None] = (None, None, None),
    timeout: float = 30.0,
) -> Iterator[Client]:
    """A client on an embedded ``local_cluster`` or on the cluster at ``scheduler_address``.

    ``tls`` is (CA file, client certificate, client key): all three, or none. The embedded
    cluster's dashboard falls back to a free port when ``dashboard_address`` is taken (Dask
    warns, naming the port); ``client.dashboard_link`` is where it is.
    """
    security = tls_security(*tls)
    if scheduler_address is not None:
        try:
            client = Client(scheduler_address, security=security, timeout=timeout)
        except OSError as err:
            refused = handshake_failure(err) if security is not None else None
            if refused is not None:
                raise ConfigError("tls", f"TLS files from the CA of the scheduler at "
                                  f"{scheduler_address}", refused) from None
            raise ConfigError(
                "scheduler_address", "the address of a running Dask scheduler",
                f"{scheduler_address} ({err})",
            ) from None
        with client:
            yield client
        return
    with _uninterrupted_children():
        cluster = local_cluster(workers, gpu_workers, threads_per_worker=threads, host=host,
                                dashboard_address=dashboard_address)
    with cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _uninterrupted_children() -> Iterator[None]:
    """Processes started inside ignore Ctrl-C (SIGINT), which reaches every process of the
    terminal's group: this process alone is interrupted and stops its workers in order,
    instead of each worker printing its own traceback. Nothing changes off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


SSL_REASON = re.compile(r"\[SSL: \w+\] ([^(]{1,200})")


def handshake_failure(err: BaseException) -> str | None:
    """``'TLS handshake failed: REASON'`` where a connection error comes from TLS refusing
    the other side's certificate, on either side (``None`` otherwise).

    distributed raises ``FatalCommClosedError`` for such a failure (an ``OSError`` it never
    retries), with OpenSSL's reason in its message or in the ``SSLError`` behind it. A scheduler
    that refuses the client's certificate sends that reason in an alert and closes: the client
    reads either the alert or, when the close comes first, only the end of the connection.
    """
    chain: list[BaseException] = []
    cause: BaseException | None = err
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if not any(isinstance(e, (FatalCommClosedError, ssl.SSLError)) for e in chain):
        return None
    reasons = [m.group(1).strip() for e in chain if (m := SSL_REASON.search(str(e)))]
    if not reasons and any(isinstance(e, ssl.SSLEOFError) for e in chain):
        reasons = ["the scheduler closed the connection (as it does for a client certificate "
                   "that its CA did not sign)"]
    return "TLS handshake failed" + (f": {reasons[-1]}" if reasons else "")


def tls_security(ca_file: str | None, cert: str | None, key: str | None) -> Security | None:
    """A ``Security`` requiring encryption from the three TLS files (``None`` without them)."""
    given = [x for x in (ca_file, cert, key) if x]
    if not given:
        return None
    if len(given) != 3:
        raise ConfigError("tls", "all of the CA file, the client certificate and its key",
                          given)
    return Security(tls_ca_file=ca_file, tls_client_cert=cert, tls_client_key=key,
                    require_encryption=True)
