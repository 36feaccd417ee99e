"""The app, pgBouncer and PostgreSQL with a fault proxy on each database hop:

    client -> app -> [proxy "bouncer"] -> pgBouncer -> [proxy "postgres"] -> PostgreSQL

Everything is the throwaway kind (testkit) on loopback; the proxies are driven
through the Toxiproxy API (chaos.client), so a real Toxiproxy could stand in for ours.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import SimpleNamespace

import psycopg

from app.config import Settings
from chaos.api import ChaosServer
from chaos.client import ProxyHandle, Toxiproxy
from chaos.outbox import Outbox
from sparkops import defaults
from testkit.appserver import AppServer
from testkit.pgbouncer import PgBouncer
from testkit.postgres import conninfo
from testkit.stack import DbStack


@dataclass
class ChaosStack:
    settings: Settings  # the app's; database_url is replaced by the proxied one
    pool_size: int = defaults.PGBOUNCER_DEFAULT_POOL_SIZE
    bouncer_extra: dict[str, str] = dataclasses.field(default_factory=dict)
    with_outbox: bool = False  # a dispatcher on the proxied hop, publishing to Redis
    outbox: Outbox | None = None
    db: DbStack | None = None
    chaos: ChaosServer | None = None
    toxiproxy: Toxiproxy | None = None
    to_bouncer: ProxyHandle | None = None
    to_postgres: ProxyHandle | None = None
    app: AppServer | None = None

    def start(self) -> ChaosStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.db = DbStack(pool_size=self.pool_size).start()
        self.chaos = ChaosServer().start()
        self.toxiproxy = Toxiproxy(self.chaos.url)
        pg = self.db.pg
        self.to_postgres = self.toxiproxy.create("postgres", f"{pg.host}:{pg.port}")
        # pgBouncer again, its upstream (auth_query included) now through the proxy.
        self.db.bouncer.remove()
        self.db.bouncer = PgBouncer(
            upstream=SimpleNamespace(host=self.to_postgres.host, port=self.to_postgres.port),
            dbname=self.db.dbname,
            auth_password=self.db.passwords.pgbouncer_auth,
            pool_size=self.pool_size,
            extra=self.bouncer_extra,
        ).start()
        bouncer = self.db.bouncer
        self.to_bouncer = self.toxiproxy.create("bouncer", f"{bouncer.host}:{bouncer.port}")
        url = conninfo(self.to_bouncer.host, self.to_bouncer.port, defaults.ROLE_APP,
                       self.db.passwords.app, self.db.dbname)  # fmt: skip
        self.app = AppServer(dataclasses.replace(self.settings, database_url=url)).start()
        if self.with_outbox:
            self.outbox = Outbox(url)
            self.outbox.start()

    def direct(self) -> psycopg.Connection:
        """As the app role through pgBouncer, past the proxies: the checks' own view."""
        return psycopg.connect(self.db.app_conninfo(), autocommit=True, prepare_threshold=None)

    def heal(self) -> None:
        """Every toxic off, every proxy enabled (Toxiproxy's reset)."""
        self.toxiproxy.reset()

    def stop(self) -> None:
        if self.outbox is not None:
            self.outbox.stop()
            self.outbox = None
        if self.app is not None:
            self.app.stop()
            self.app = None
        if self.toxiproxy is not None:
            self.toxiproxy.close()
            self.toxiproxy = None
        if self.chaos is not None:
            self.chaos.stop()
            self.chaos = None
        if self.db is not None:
            self.db.stop()
            self.db = None

    def __enter__(self) -> ChaosStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
