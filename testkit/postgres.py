"""A throwaway PostgreSQL 15 cluster: initdb in a temporary directory, loopback, free port."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from deploys import support, tls
from sparkops import layout
from sparkops.wait import wait_until
from testkit.proc import (
    chown_to_service_user,
    free_port,
    make_workdir,
    run_as_service_user,
    tail_file,
)
from testkit.tls import TlsFiles, client_params

SUPERUSER = "postgres"

LOG_NAME = "postgres.log"


def conninfo(host: str, port: int, user: str, password: str, dbname: str, **extra) -> str:
    parts = {"host": host, "port": port, "user": user, "password": password, "dbname": dbname}
    parts.update(extra)
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})


@dataclass
class PgCluster:
    """A PostgreSQL cluster we own from initdb to removal.

    `settings` go to postgresql.auto.conf-style `-c` flags at start, so a test can ask for
    WAL archiving or a small `max_connections` without touching files.
    """

    host: str = "127.0.0.1"
    port: int = 0
    bindir: str = layout.POSTGRES_BINDIR
    settings: dict[str, str] = field(default_factory=dict)
    # Durability is not what the app's tests check; turning fsync off keeps them quick.
    durable: bool = False
    workdir: Path | None = None
    superuser_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    # With TLS files: ssl on, the deploy's pg_hba.conf template with hostssl rules only (a
    # connection without TLS matches no line), and every conninfo here is verify-full.
    tls: TlsFiles | None = None

    @property
    def datadir(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "data"

    @property
    def logfile(self) -> Path:
        assert self.workdir is not None
        return self.workdir / LOG_NAME

    def superuser_conninfo(self, dbname: str = "postgres") -> str:
        return conninfo(
            self.host, self.port, SUPERUSER, self.superuser_password, dbname, **self.tls_params()
        )

    def tls_params(self) -> dict[str, str]:
        return client_params(self.tls) if self.tls else {}

    def init(self) -> PgCluster:
        self.workdir = make_workdir("pg")
        if not self.port:
            self.port = free_port(self.host)
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        chown_to_service_user(pwfile)
        run_as_service_user(
            [
                f"{self.bindir}/initdb",
                "-D", str(self.datadir),
                "-U", SUPERUSER,
                "--pwfile", str(pwfile),
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--data-checksums",
            ]
        )  # fmt: skip
        pwfile.unlink()
        (self.workdir / "sock").mkdir()
        chown_to_service_user(self.workdir / "sock")
        if self.tls:
            self._write_hostssl_hba()
        return self

    def _write_hostssl_hba(self) -> None:
        rules = [
            {"type": "local", "database": "all", "user": "all", "method": "scram-sha-256"},
            {
                "type": "hostssl",
                "database": "all",
                "user": "all",
                "address": f"{self.host}/32",
                "method": "scram-sha-256",
            },
        ]
        path = self.workdir / "pg_hba.conf"
        path.write_text(support.render("postgresql/pg_hba.conf.j2", rules=rules))
        chown_to_service_user(path)

    def _start_options(self) -> str:
        options = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.workdir / "sock"),
            "password_encryption": "scram-sha-256",
            "max_connections": "200",
            "shared_preload_libraries": "",
        }
        if not self.durable:
            options.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        if self.tls:
            options.update(
                ssl="on",
                ssl_cert_file=str(self.tls.cert),
                ssl_key_file=str(self.tls.key),
                ssl_min_protocol_version=tls.TLS_MIN_PROTOCOL,
                hba_file=str(self.workdir / "pg_hba.conf"),
            )
        options.update(self.settings)
        return " ".join(f"-c {k}={_quote_option(v)}" for k, v in options.items())

    def start(self, timeout: float = 30.0) -> PgCluster:
        run_as_service_user(
            [
                f"{self.bindir}/pg_ctl",
                "-D", str(self.datadir),
                "-l", str(self.logfile),
                "-o", self._start_options(),
                "-w", "-t", str(int(timeout)),
                "start",
            ]
        )  # fmt: skip
        wait_until(self._accepts_connections, timeout=timeout, what="PostgreSQL to accept logins")
        return self

    def _accepts_connections(self) -> bool:
        with psycopg.connect(self.superuser_conninfo(), connect_timeout=2) as conn:
            conn.execute("select 1")
        return True

    def pid(self) -> int | None:
        pidfile = self.datadir / "postmaster.pid"
        if not pidfile.exists():
            return None
        return int(pidfile.read_text().splitlines()[0])

    def is_running(self) -> bool:
        result = run_as_service_user(
            [f"{self.bindir}/pg_ctl", "-D", str(self.datadir), "status"], check=False
        )
        return result.returncode == 0

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Stop the postmaster of this data directory (pg_ctl signals the pid in its pidfile)."""
        if self.workdir is None or not self.is_running():
            return
        run_as_service_user(
            [f"{self.bindir}/pg_ctl", "-D", str(self.datadir), "-m", mode, "-w",
             "-t", str(int(timeout)), "stop"]
        )  # fmt: skip

    def remove(self) -> None:
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL through psql as the superuser; for set-up steps, not for tests' assertions."""
        result = subprocess.run(
            [f"{self.bindir}/psql", "-X", "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql,
             self.superuser_conninfo(dbname)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return result.stdout

    def log_tail(self, lines: int = 40) -> str:
        return tail_file(self.workdir, LOG_NAME, lines)

    def __enter__(self) -> PgCluster:
        return self.init().start()

    def __exit__(self, *exc) -> None:
        self.remove()


def _quote_option(value: str) -> str:
    if value == "" or any(c in value for c in " '\\"):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return value
