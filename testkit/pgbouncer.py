"""A throwaway pgBouncer in transaction pooling mode with SCRAM auth, in front of a PgCluster.

Authentication is the production shape: clients authenticate with SCRAM; pgBouncer looks
their verifier up through `auth_query` as the auth role (whose own auth-file entry is a
plain password: a SCRAM entry for the auth_user makes clients hang until
`query_wait_timeout`); the admin and stats users live in the auth file as SCRAM verifiers.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from deploys.pgbouncer import tls_settings
from sparkops import defaults
from sparkops.scram import make_verifier
from sparkops.wait import wait_until
from testkit.postgres import PgCluster, conninfo
from testkit.proc import (
    chown_to_service_user,
    free_port,
    make_workdir,
    popen_as_service_user,
    stop_process,
    tail_file,
)
from testkit.tls import TlsFiles, client_params


@dataclass
class PgBouncer:
    upstream: PgCluster
    dbname: str
    auth_password: str
    host: str = "127.0.0.1"
    port: int = 0
    pool_size: int = defaults.PGBOUNCER_DEFAULT_POOL_SIZE
    max_client_conn: int = defaults.PGBOUNCER_MAX_CLIENT_CONN
    admin_user: str = defaults.ROLE_PGBOUNCER_ADMIN
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    stats_user: str = defaults.ROLE_PGBOUNCER_STATS
    stats_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    extra: dict[str, str] = field(default_factory=dict)
    # With TLS files: the deploy's TLS settings (clients must use TLS; verify-full to the
    # upstream, which then needs TLS too) and verify-full in every conninfo here.
    tls: TlsFiles | None = None
    workdir: Path | None = None
    proc: subprocess.Popen | None = None

    def render_ini(self) -> str:
        assert self.workdir is not None
        settings = {
            "listen_addr": self.host,
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "scram-sha-256",
            "auth_file": str(self.workdir / "userlist.txt"),
            "auth_user": defaults.ROLE_PGBOUNCER_AUTH,
            "auth_query": "SELECT uname, phash FROM pgbouncer.user_lookup($1)",
            "pool_mode": defaults.PGBOUNCER_POOL_MODE,
            "default_pool_size": str(self.pool_size),
            "max_client_conn": str(self.max_client_conn),
            "admin_users": self.admin_user,
            "stats_users": self.stats_user,
            "pidfile": str(self.workdir / "pgbouncer.pid"),
            "logfile": str(self.workdir / "pgbouncer.log"),
            "ignore_startup_parameters": "extra_float_digits,options",
            "server_reset_query": "",
            "query_wait_timeout": "30",
            "idle_transaction_timeout": str(defaults.PGBOUNCER_IDLE_TRANSACTION_TIMEOUT_SECONDS),
            "server_login_retry": str(defaults.PGBOUNCER_SERVER_LOGIN_RETRY_SECONDS),
        }
        if self.tls:
            settings.update(tls_settings(str(self.tls.cert), str(self.tls.key), str(self.tls.ca)))
        settings.update(self.extra)
        db_line = (
            f"{self.dbname} = host={self.upstream.host} port={self.upstream.port} "
            f"dbname={self.dbname}"
        )
        lines = ["[databases]", db_line, "", "[pgbouncer]"]
        lines += [f"{k} = {v}" for k, v in settings.items()]
        return "\n".join(lines) + "\n"

    def render_userlist(self) -> str:
        entries = [
            (defaults.ROLE_PGBOUNCER_AUTH, self.auth_password),
            (self.admin_user, make_verifier(self.admin_password)),
            (self.stats_user, make_verifier(self.stats_password)),
        ]
        return "".join(f'"{user}" "{secret}"\n' for user, secret in entries)

    def start(self, timeout: float = 20.0) -> PgBouncer:
        self.workdir = make_workdir("pgbouncer")
        if not self.port:
            self.port = free_port(self.host)
        for name, text in (("pgbouncer.ini", self.render_ini()),
                           ("userlist.txt", self.render_userlist())):  # fmt: skip
            path = self.workdir / name
            path.write_text(text)
            path.chmod(0o600)
            chown_to_service_user(path)
        self.proc = popen_as_service_user(
            ["pgbouncer", str(self.workdir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._admin_answers, timeout=timeout, what="pgBouncer to answer")
        return self

    def _admin_answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"pgBouncer exited:\n{self.log_tail()}")
        self.admin("SHOW VERSION")
        return True

    def conninfo(self, user: str, password: str, **extra) -> str:
        return conninfo(
            self.host, self.port, user, password, self.dbname, **{**self.tls_params(), **extra}
        )

    def tls_params(self) -> dict[str, str]:
        return client_params(self.tls) if self.tls else {}

    def admin(self, command: str, *, user: str | None = None) -> list[tuple]:
        """Run a command on pgBouncer's admin console (SHOW POOLS, PAUSE, RESUME, ...)."""
        user = user or self.admin_user
        password = self.admin_password if user == self.admin_user else self.stats_password
        info = conninfo(
            self.host, self.port, user, password, defaults.PGBOUNCER_ADMIN_DB, **self.tls_params()
        )
        with psycopg.connect(info, autocommit=True, connect_timeout=3) as conn:
            cur = conn.execute(command, prepare=False)
            return cur.fetchall() if cur.description else []

    def log_tail(self, lines: int = 40) -> str:
        return tail_file(self.workdir, "pgbouncer.log", lines)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def remove(self) -> None:
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
