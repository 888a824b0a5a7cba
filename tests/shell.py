"""A Dask cluster started from the shell, as a user starts one: ``dask scheduler`` and ``dask
worker`` processes on 127.0.0.1, joined through the scheduler's file (port 0, so two test runs
on one machine never race for a port), optionally over TLS with files from a throwaway CA::

    ca = make_ca(tmp_path / "ca")
    with shell_cluster(tmp_path, workers=1, tls=ca) as address:
        ...  # tls://127.0.0.1:PORT, its worker connected

Every process is stopped when the block ends, however it ends.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 120.0  # only fails a hung test: nothing is asserted about how long it took


def wait_for(condition: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
    """Poll ``condition()`` until it returns something true."""
    end = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.05)


@contextlib.contextmanager
def port_taken(port: int) -> Iterator[None]:
    """``port`` of 127.0.0.1 is held for the block, as another cluster (or another test run)
    would hold it; when it is held already, it stays so."""
    with socket.socket() as sock:
        with contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            sock.listen()
        yield


# ------------------------------------------------------------------------------- TLS files
@dataclass(frozen=True)
class TLSFiles:
    """A CA's certificate and one key and certificate it signed (PEM files)."""

    ca_file: Path
    cert: Path
    key: Path

    def dask_args(self) -> list[str]:
        return ["--tls-ca-file", str(self.ca_file), "--tls-cert", str(self.cert),
                "--tls-key", str(self.key)]

    def security(self) -> Any:
        from distributed.security import Security

        return Security(tls_ca_file=str(self.ca_file), tls_client_cert=str(self.cert),
                        tls_client_key=str(self.key), require_encryption=True)


def make_ca(directory: Path) -> TLSFiles:
    """A new CA in ``directory`` and a certificate it signs for 127.0.0.1 and localhost, good
    for a server and a client alike (the scheduler, its workers and the client share it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def certificate(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> Any:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ), critical=False).add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ), critical=False)
        return builder.sign(signer, hashes.SHA256())

    def pem(path: Path, data: bytes) -> Path:
        path.write_bytes(data)
        return path

    directory.mkdir(parents=True, exist_ok=True)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    name = f"pnngraph test CA {directory.name}"
    ca_cert = certificate(name, ca_key, name, ca_key, ca=True)
    cert = certificate("localhost", key, name, ca_key, ca=False)
    encoding = serialization.Encoding.PEM
    return TLSFiles(
        ca_file=pem(directory / "ca.pem", ca_cert.public_bytes(encoding)),
        cert=pem(directory / "cert.pem", cert.public_bytes(encoding)),
        key=pem(directory / "key.pem", key.private_bytes(
            encoding, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
    )


# ------------------------------------------------------------------------------ the cluster
@contextlib.contextmanager
def shell_cluster(directory: Path, workers: int = 1,
                  tls: TLSFiles | None = None) -> Iterator[str]:
    """The scheduler's address, once ``workers`` worker processes have joined it."""
    file = directory / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    security = [] if tls is None else ["--protocol", "tls", *tls.dask_args()]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the workers run this checkout's pnngraph
    quiet: dict[str, Any] = {"env": env, "stdout": subprocess.DEVNULL,
                             "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--dashboard-address", "127.0.0.1:0", "--scheduler-file",
                               str(file), *security], **quiet)]
    try:
        address = wait_for(lambda: _address(file, procs[0]), "the scheduler's file")
        procs += [subprocess.Popen([*dask, "worker", "--scheduler-file", str(file),
                                    "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                                    *([] if tls is None else tls.dask_args())], **quiet)
                  for _ in range(workers)]
        from distributed import Client

        with Client(address, security=None if tls is None else tls.security(),
                    timeout=DEADLINE_S) as client:
            client.wait_for_workers(workers, timeout=DEADLINE_S)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _address(file: Path, scheduler: subprocess.Popen[bytes]) -> str | None:
    assert scheduler.poll() is None, f"the scheduler exited with {scheduler.returncode}"
    try:  # the scheduler writes its file once it listens; it may be half-written here
        return str(json.loads(file.read_text())["address"])
    except (FileNotFoundError, ValueError, KeyError):
        return None
