"""Certificates for throwaway servers, from the deploy's own CA code (deploys/tlsca.py).

A `TlsFiles` is a CA certificate and one server key pair in a directory the servers' user
can read (the key 0600, owned by that user, as PostgreSQL demands). The server certificate
names `localhost` and 127.0.0.1 unless told otherwise, so verify-full passes on loopback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deploys import tlsca
from testkit.proc import chown_to_service_user, make_workdir

ENVIRONMENT = "testkit"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    workdir: Path


@contextmanager
def scratch_ca(directory: Path) -> Iterator[None]:
    """deploys/tlsca.py's CA (and what it issues) kept under `directory` meanwhile, never in
    the user's secrets directory."""
    before = os.environ.get("SPARKOPS_SECRETS_DIR")
    os.environ["SPARKOPS_SECRETS_DIR"] = str(directory)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SPARKOPS_SECRETS_DIR", None)
        else:
            os.environ["SPARKOPS_SECRETS_DIR"] = before


def make_tls_files(
    dns_names: tuple[str, ...] = ("localhost",), ip_addresses: tuple[str, ...] = ("127.0.0.1",)
) -> TlsFiles:
    """A fresh CA and a server certificate for these names, in a new work directory."""
    workdir = make_workdir("tls")
    with scratch_ca(workdir / "ca"):
        issued = tlsca.issue(ENVIRONMENT, "server", dns_names=dns_names, ip_addresses=ip_addresses)
    files = TlsFiles(workdir / "ca.crt", workdir / "server.crt", workdir / "server.key", workdir)
    for path, text, mode in (
        (files.ca, issued.ca_pem, 0o644),
        (files.cert, issued.chain_pem, 0o644),
        (files.key, issued.key_pem, 0o600),
    ):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        chown_to_service_user(path)
    return files


def client_params(files: TlsFiles) -> dict[str, str]:
    """libpq's parameters for a client that checks the server as the deploy's clients do."""
    return {"sslmode": "verify-full", "sslrootcert": str(files.ca)}
