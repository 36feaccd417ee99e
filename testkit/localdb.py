"""A throwaway database with WAL archiving through a real pgBackRest (posix repository in a
temporary directory), described as a `DbTarget`: what the runbooks' tests and benchmark use
before (or instead of) the lab.

The shape is the db host's: the app's roles and schema (DbStack), pgBouncer in front, the
`postgres` OS user reaching PostgreSQL over the local socket by peer authentication, and
`archive_command` pushing to the stanza.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from runbooks.executor import LocalExecutor
from runbooks.services import PgCtlService
from runbooks.target import Bouncer, DbTarget
from sparkops import defaults
from testkit.proc import chown_to_service_user, free_port, make_workdir
from testkit.stack import DbStack


def write_pgbackrest_config(
    path: Path,
    base: Path,
    stanza: str,
    datadir: Path,
    port: int,
    socket_dir: Path,
    cipher_pass: str | None = None,
    repo: str = "repo",
    options: dict[str, str] | None = None,
) -> None:
    """`cipher_pass`: an encrypted repository (aes-256-cbc), as the deploy makes it;
    `repo`: the repository's directory under `base` (two configurations, two repositories);
    `options`: more [global] options (a benchmark's variant)."""
    for sub in (repo, "log", "lock", "spool"):
        (base / sub).mkdir(exist_ok=True)
        chown_to_service_user(base / sub)
    cipher = (
        f"repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={cipher_pass}\n" if cipher_pass else ""
    )
    path.write_text(
        "[global]\n"
        f"repo1-path={base / repo}\n"
        f"{cipher}"
        "repo1-retention-full=8\n"
        f"log-path={base / 'log'}\n"
        f"lock-path={base / 'lock'}\n"
        f"spool-path={base / 'spool'}\n"
        "log-level-console=warn\n"
        "log-level-file=detail\n"
        "start-fast=y\n"
        "compress-type=lz4\n"
        "process-max=2\n"
        # As the deploy configures it: archive-push through the spool, and archive-get
        # fetching the next segments ahead of recovery (parallel, queued).
        "archive-async=y\n"
        "archive-get-queue-max=1GiB\n"
        + "".join(f"{name}={value}\n" for name, value in (options or {}).items())
        + f"\n[{stanza}]\n"
        f"pg1-path={datadir}\n"
        f"pg1-port={port}\n"
        f"pg1-socket-path={socket_dir}\n"
    )
    path.chmod(0o640)  # the passphrase, when there is one: as the deploy's 0640 file
    chown_to_service_user(path)


@dataclass
class LocalBackedUpDb:
    stanza: str = defaults.PGBACKREST_STANZA
    durable: bool = False
    extra_settings: dict[str, str] = field(default_factory=dict)
    # An encrypted repository with this passphrase (the deploy's default); None: plaintext.
    cipher_pass: str | None = None
    # More pgBackRest [global] options (bench/restore_schedule.py --block-incremental).
    pgbackrest_options: dict[str, str] = field(default_factory=dict)
    stack: DbStack | None = None
    workdir: Path | None = None
    target: DbTarget | None = None

    @property
    def config(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "pgbackrest.conf"

    def start(self, *, stanza: bool = True, backup: bool = True) -> LocalBackedUpDb:
        self.workdir = make_workdir("pgbackrest")
        archive = f"pgbackrest --config={self.config} --stanza={self.stanza} archive-push %p"
        settings = {
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": archive,
            "archive_timeout": str(defaults.ARCHIVE_TIMEOUT_SECONDS),
            **self.extra_settings,
        }
        self.stack = DbStack(pg_settings=settings, durable=self.durable)
        try:
            self.stack.start()
            pg = self.stack.pg
            assert pg is not None and pg.workdir is not None
            self._allow_peer_for_postgres()
            write_pgbackrest_config(
                self.config,
                self.workdir,
                self.stanza,
                pg.datadir,
                pg.port,
                pg.workdir / "sock",
                cipher_pass=self.cipher_pass,
                options=self.pgbackrest_options,
            )
            bouncer = self.stack.bouncer
            assert bouncer is not None
            executor = LocalExecutor()
            self.target = DbTarget(
                executor=executor,
                data_dir=str(pg.datadir),
                service=PgCtlService(
                    executor, str(pg.datadir), str(pg.logfile), options=_start_options(pg)
                ),
                socket_dir=str(pg.workdir / "sock"),
                port=pg.port,
                dbname=self.stack.dbname,
                pgbackrest_config=str(self.config),
                stanza=self.stanza,
                bouncer=Bouncer(
                    bouncer.host,
                    bouncer.port,
                    bouncer.admin_user,
                    bouncer.admin_password,
                    self.stack.dbname,
                ),
                label="local",
            )
            if stanza:
                self.target.pgbackrest("stanza-create", timeout=120)
            if backup:
                self.backup()
        except BaseException:
            self.stop()
            raise
        return self

    def _allow_peer_for_postgres(self) -> None:
        """The db host's rule: the postgres OS user over the socket by peer (the deploy's
        pg_hba.conf); the throwaway cluster otherwise asks everyone for SCRAM."""
        pg = self.stack.pg
        hba = pg.datadir / "pg_hba.conf"
        hba.write_text("local all postgres peer\n" + hba.read_text())
        pg.psql("SELECT pg_reload_conf()")

    def backup(self, kind: str = "full") -> None:
        assert self.target is not None
        self.target.pgbackrest("backup", f"--type={kind}", timeout=3600)

    def scratch_service(self, datadir: Path, port: int | None = None) -> tuple[PgCtlService, int]:
        """A pg_ctl service for a restored copy: its own port, no archiving, fsync as here."""
        assert self.stack is not None and self.stack.pg is not None
        port = port or free_port()
        options = {
            **_start_options(self.stack.pg),
            "port": str(port),
            "archive_mode": "off",
            "unix_socket_directories": str(datadir.parent),
        }
        options.pop("archive_command", None)
        service = PgCtlService(
            self.target.executor, str(datadir), str(datadir.parent / "log"), options=options
        )
        return service, port

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> LocalBackedUpDb:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _start_options(pg) -> dict[str, str]:
    """The flags PgCluster starts with, so a restart through pg_ctl keeps the same cluster."""
    options = {
        "listen_addresses": pg.host,
        "port": str(pg.port),
        "unix_socket_directories": str(pg.workdir / "sock"),
        "password_encryption": "scram-sha-256",
        "max_connections": "200",
    }
    if not pg.durable:
        options.update(fsync="off", synchronous_commit="off", full_page_writes="off")
    options.update(pg.settings)
    return options
