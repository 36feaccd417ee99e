"""A database host as the runbooks see it: where it runs, its data directory, how to control
PostgreSQL, pgBackRest's configuration and stanza, and pgBouncer's admin console.

SQL goes through `psql` on the target host as the PostgreSQL OS user over the local socket
(peer authentication, as the deploy's pg_hba.conf allows), so no database password is needed
for the database itself; pgBouncer's admin console takes a password, passed in the
environment.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, replace

from runbooks.executor import CommandFailed, Executor
from runbooks.services import ServiceControl
from sparkops import defaults, layout


class TargetError(RuntimeError):
    """The target cannot be used; the message says what is wrong and what to do."""


@dataclass
class Bouncer:
    """pgBouncer's admin console, reached from the target host."""

    host: str
    port: int
    user: str
    password: str
    database: str = defaults.DATABASE_NAME

    def conninfo(self) -> str:
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"dbname={defaults.PGBOUNCER_ADMIN_DB} connect_timeout=5"
        )


@dataclass
class DbTarget:
    executor: Executor
    data_dir: str
    service: ServiceControl
    socket_dir: str = layout.SOCKET_DIR
    port: int = defaults.POSTGRES_PORT
    dbname: str = defaults.DATABASE_NAME
    os_user: str = "postgres"
    bindir: str = layout.POSTGRES_BINDIR
    pgbackrest_config: str | None = None  # None: pgBackRest's default /etc/pgbackrest/...
    stanza: str = defaults.PGBACKREST_STANZA
    bouncer: Bouncer | None = None
    label: str = "db"

    # --- SQL ----------------------------------------------------------------------------
    def psql(
        self, sql: str | tuple[str, ...], *, dbname: str | None = None, timeout: float = 600.0
    ) -> str:
        """One statement, or several (a tuple), each sent on its own (`psql -c ... -c ...`):
        so each is its own transaction, as ALTER SYSTEM needs."""
        commands = [arg for one in ((sql,) if isinstance(sql, str) else sql) for arg in ("-c", one)]
        result = self.executor.run(
            [
                f"{self.bindir}/psql",
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.socket_dir,
                "-p",
                str(self.port),
                "-d",
                dbname or self.dbname,
                *commands,
            ],
            user=self.os_user,
            timeout=timeout,
        )
        return result.stdout.strip()

    def psql_command(self) -> str:
        """psql on this server as an operator types it on its host (as root)."""
        return (
            f"runuser -u {self.os_user} -- {self.bindir}/psql -h {shlex.quote(self.socket_dir)} "
            f"-p {self.port} -d {shlex.quote(self.dbname)}"
        )

    def psql_script(self, script: str, *, dbname: str | None = None, timeout: float = 60.0):
        """A psql script (backslash commands allowed) on psql's standard input; the Result."""
        return self.executor.run(
            [f"{self.bindir}/psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
             "-h", self.socket_dir, "-p", str(self.port), "-d", dbname or self.dbname, "-f", "-"],
            user=self.os_user, input=script, timeout=timeout, check=False,
        )  # fmt: skip

    def query_json(self, sql: str, **kwargs):
        """Rows of `sql` as a list of dicts (through json_agg, so types survive psql)."""
        text = self.psql(f"SELECT coalesce(json_agg(q), '[]') FROM ({sql}) AS q", **kwargs)
        return json.loads(text or "[]")

    def role(self) -> str | None:
        """ "primary", "recovery" (replaying WAL: a standby, or a restore still running), or
        None when the server does not answer."""
        try:
            value = self.psql("SELECT pg_is_in_recovery()", dbname="postgres", timeout=10)
        except CommandFailed:
            return None
        return "recovery" if value == "t" else "primary"

    def is_up(self) -> bool:
        try:
            self.psql("SELECT 1", dbname="postgres", timeout=10)
            return True
        except CommandFailed:
            return False

    # --- pgBackRest ---------------------------------------------------------------------
    def pgbackrest_argv(self, command: str, *options: str, args: tuple[str, ...] = ()):
        argv = ["pgbackrest"]
        if self.pgbackrest_config:
            argv.append(f"--config={self.pgbackrest_config}")
        return [*argv, f"--stanza={self.stanza}", *options, command, *args]

    def pgbackrest(
        self,
        command: str,
        *options: str,
        args: tuple[str, ...] = (),
        timeout: float = 3600.0,
        check=True,
    ):
        return self.executor.run(
            self.pgbackrest_argv(command, *options, args=args),
            user=self.os_user,
            timeout=timeout,
            check=check,
        )

    def clear_archive_get_queue(self) -> None:
        """Empty the stanza's async archive-get queue (`<spool-path>/archive/<stanza>/in`).

        Segments and status files left there by a recovery that was cut short make the next
        recovery's archive-get wait out archive-timeout (60 s) for an async process that is
        gone (pgBackRest issue #1357; its maintainer's advice: clean the spool after the
        restore, before the start). Only for a stopped server's restore."""
        config = self.pgbackrest_config or layout.PGBACKREST_CONF
        script = (
            f"spool=$(sed -n 's/^spool-path=//p' {shlex.quote(config)} | tail -n 1); "
            "spool=${spool:-/var/spool/pgbackrest}; "
            f'rm -rf -- "$spool/archive/{self.stanza}/in"'
        )
        self.executor.run(["sh", "-c", script], user=self.os_user)

    # --- pgBouncer ----------------------------------------------------------------------
    def bouncer_admin(self, command: str, *, timeout: float = 30.0, check: bool = True):
        """One admin console command; the Result (so a bounded PAUSE can be told apart)."""
        return self.executor.run(
            self._bouncer_psql("-t", "-c", command),
            env={"PGPASSWORD": self._bouncer().password},
            timeout=timeout,
            check=check,
        )

    def bouncer_rows(self, command: str, *, timeout: float = 30.0) -> list[dict[str, str]]:
        """A SHOW command's rows as dicts by column name."""
        result = self.executor.run(
            self._bouncer_psql("-F", "\t", "-P", "footer=off", "-c", command),
            env={"PGPASSWORD": self._bouncer().password},
            timeout=timeout,
        )
        lines = result.stdout.splitlines()
        if not lines:
            return []
        header = lines[0].split("\t")
        return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]

    def _bouncer(self) -> Bouncer:
        if self.bouncer is None:
            raise TargetError("no pgBouncer admin console configured for this target")
        return self.bouncer

    def _bouncer_psql(self, *args: str) -> list[str]:
        return [
            "psql",
            "-X",
            "-A",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            *args,
            self._bouncer().conninfo(),
        ]

    def elsewhere(self, **changes) -> DbTarget:
        """A copy pointing at another data directory / port / service (restore --to-host)."""
        return replace(self, **changes)
