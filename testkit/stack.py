"""PostgreSQL + the app's roles and schema + pgBouncer, as one throwaway unit.

The tests, the benchmarks and the pre-lab demo use this; it sets the database up exactly as
the PostgreSQL deploy does (sparkops.dbroles), then runs the app's migrations as the owner.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass, field

import psycopg

from app import migrate
from sparkops import dbroles, defaults
from testkit.pgbouncer import PgBouncer
from testkit.postgres import PgCluster, conninfo
from testkit.tls import TlsFiles, make_tls_files


def throwaway_passwords() -> dbroles.RolePasswords:
    """Passwords for the app's roles, made for one throwaway database and kept in memory."""
    return dbroles.RolePasswords(
        app=secrets.token_urlsafe(18),
        migrations=secrets.token_urlsafe(18),
        pgbouncer_auth=secrets.token_urlsafe(18),
        monitoring=secrets.token_urlsafe(18),
    )


@dataclass
class DbStack:
    pool_size: int = defaults.PGBOUNCER_DEFAULT_POOL_SIZE
    pg_settings: dict[str, str] = field(default_factory=dict)
    durable: bool = False
    # TLS inside, as deployed: PostgreSQL hostssl only, pgBouncer TLS both ways, every
    # conninfo verify-full against a throwaway CA (testkit/tls.py).
    tls: bool = False
    dbname: str = defaults.DATABASE_NAME
    passwords: dbroles.RolePasswords = field(default_factory=throwaway_passwords)
    pg: PgCluster | None = None
    bouncer: PgBouncer | None = None
    tls_files: TlsFiles | None = None

    def start(self, migrate_to: str | None = "head") -> DbStack:
        self.tls_files = make_tls_files() if self.tls else None
        self.pg = PgCluster(settings=self.pg_settings, durable=self.durable, tls=self.tls_files)
        self.pg.init().start()
        try:
            self._bootstrap()
            if migrate_to:
                migrate.upgrade(self.owner_conninfo(), migrate_to)
            self.bouncer = PgBouncer(
                upstream=self.pg,
                dbname=self.dbname,
                auth_password=self.passwords.pgbouncer_auth,
                pool_size=self.pool_size,
                tls=self.tls_files,
            ).start()
        except BaseException:
            self.stop()
            raise
        return self

    def _bootstrap(self) -> None:
        assert self.pg is not None
        with psycopg.connect(self.pg.superuser_conninfo(), autocommit=True) as conn:
            for stmt in dbroles.role_statements(self.passwords):
                conn.execute(stmt)
            for stmt in dbroles.role_setting_statements():
                conn.execute(stmt)
            if not conn.execute(dbroles.database_exists_sql(self.dbname)).fetchone():
                conn.execute(dbroles.create_database_sql(self.dbname))
        with psycopg.connect(self.pg.superuser_conninfo(self.dbname), autocommit=True) as conn:
            for stmt in dbroles.privilege_statements(self.dbname):
                conn.execute(stmt)

    def owner_conninfo(self) -> str:
        """Direct to PostgreSQL as the schema owner: migrations only."""
        assert self.pg is not None
        return conninfo(
            self.pg.host,
            self.pg.port,
            defaults.ROLE_MIGRATIONS,
            self.passwords.migrations,
            self.dbname,
            **self.pg.tls_params(),
        )

    def app_conninfo(self) -> str:
        """Through pgBouncer as the app role: what the app and the tests use."""
        assert self.bouncer is not None
        return self.bouncer.conninfo(defaults.ROLE_APP, self.passwords.app)

    def monitoring_conninfo(self) -> str:
        assert self.pg is not None
        return conninfo(
            self.pg.host,
            self.pg.port,
            defaults.ROLE_MONITORING,
            self.passwords.monitoring,
            self.dbname,
            **self.pg.tls_params(),
        )

    def stop(self) -> None:
        if self.bouncer is not None:
            self.bouncer.remove()
            self.bouncer = None
        if self.pg is not None:
            self.pg.remove()
            self.pg = None
        if self.tls_files is not None:
            shutil.rmtree(self.tls_files.workdir, ignore_errors=True)
            self.tls_files = None

    def __enter__(self) -> DbStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
