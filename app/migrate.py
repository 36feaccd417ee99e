"""Run the app's Alembic migrations against a PostgreSQL connection string.

Alembic is the kept migration tool; this module only hands it a connection (psycopg 3
through SQLAlchemy) and reads revisions, so the CLI, the deploy, the rollback gate and the
tests share one entry point.

An upgrade runs under a PostgreSQL advisory lock (sparkops.defaults.MIGRATION_LOCK_KEY),
so two at once (a deploy to several app hosts) run one after the other: the second finds
the schema at head and does nothing. The lock is held by a connection of its own that
stays outside any transaction, and a waiter polls with pg_try_advisory_lock instead of
blocking in pg_advisory_lock: a waiter blocked inside a statement holds a snapshot, and
CREATE INDEX CONCURRENTLY (0002) waits for every older snapshot, so the holder's index
build and the waiter would deadlock.
"""

from __future__ import annotations

import ast
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sparkops import defaults
from sparkops.wait import DeadlineExceeded, wait_until

if TYPE_CHECKING:
    import psycopg
    from alembic.config import Config

# Alembic, SQLAlchemy and psycopg are imported by the functions that run them, not with this
# module: importing them costs about half a second, and `sparkops rollback` (which reads only
# the revisions, see `revisions`) counts its seconds.

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# How migration sessions show in pg_stat_activity (the lock holder among them).
APPLICATION_NAME = "spark-migrate"


class MigrationLockTimeout(RuntimeError):
    """Another migration held the lock for longer than this one would wait."""


@dataclass(frozen=True)
class Upgraded:
    """What one upgrade did: the schema's revision before and after, and how long it waited
    for another migration to finish."""

    before: str | None
    after: str | None
    waited_seconds: float

    def describe(self) -> str:
        wait = ""
        if self.waited_seconds:
            wait = f" after waiting {self.waited_seconds:.1f}s for the migration lock"
        if self.before == self.after:
            return f"schema already at {self.after}{wait}"
        return f"schema migrated from {self.before or '(empty)'} to {self.after}{wait}"


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _engine(conninfo: str):
    import psycopg
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(conninfo, application_name=APPLICATION_NAME),
        poolclass=NullPool,
    )


def _lock_holders(conn: psycopg.Connection) -> str:
    rows = conn.execute(
        "SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local'),"
        " extract(epoch FROM now() - a.backend_start)::int "
        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid = %s AND l.objid = %s AND l.objsubid = 1",
        (defaults.MIGRATION_LOCK_KEY >> 32, defaults.MIGRATION_LOCK_KEY & 0xFFFFFFFF),
    ).fetchall()
    return ", ".join(
        f"pid {pid} ({app or 'no name'} from {addr}, {age}s)" for pid, app, addr, age in rows
    )


def _take_lock(conn: psycopg.Connection, wait_seconds: float) -> float:
    """Hold the migration lock on `conn` (autocommit); return how long another migration
    kept it (0.0 when it was free)."""
    import psycopg

    started = time.monotonic()
    failed: list[psycopg.Error] = []
    tries = []

    def taken() -> bool:
        tries.append(1)
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (defaults.MIGRATION_LOCK_KEY,))
            return bool(row.fetchone()[0])
        except psycopg.Error as exc:  # a lost connection is no reason to keep waiting
            failed.append(exc)
            return True

    try:
        wait_until(taken, timeout=wait_seconds, what="the migration lock", max_interval=0.5)
        if failed:
            raise failed[0]
    except DeadlineExceeded:
        raise MigrationLockTimeout(
            f"another migration has held the migration lock for over {wait_seconds:.0f}s "
            f"({_lock_holders(conn) or 'holder gone just now'}); nothing was changed. "
            "Let it finish and run again; if it is stuck, end it with "
            "SELECT pg_terminate_backend(<pid>) as a superuser."
        ) from None
    return time.monotonic() - started if len(tries) > 1 else 0.0


def upgrade(
    conninfo: str,
    revision: str = "head",
    *,
    lock_wait_seconds: float = defaults.MIGRATION_LOCK_WAIT_SECONDS,
) -> Upgraded:
    """Upgrade to `revision` under the migration lock; what it did (see `Upgraded`)."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True, application_name=APPLICATION_NAME) as lock:
        waited = _take_lock(lock, lock_wait_seconds)
        # The lock goes with this connection: released when it closes, or when the process
        # dies and PostgreSQL drops the session.
        from alembic import command

        before = current(conninfo)
        cfg = _config()
        engine = _engine(conninfo)
        try:
            with engine.connect() as conn:
                # Guard DDL: wait at most this long for a lock instead of queueing every
                # writer behind an ALTER that cannot get its lock.
                conn.exec_driver_sql("SET lock_timeout = '5s'")
                conn.commit()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        finally:
            engine.dispose()
        return Upgraded(before, current(conninfo), waited)


def current(conninfo: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = _engine(conninfo)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


# What `current` answers, for a runbook to run with a release's own Python on an app host (the
# conninfo in the environment variable named by argv[1]): psycopg alone, which every release
# has. Importing Alembic and SQLAlchemy there took about half of the rollback's slowest read.
CURRENT_REVISION_SCRIPT = """\
import os, sys, psycopg
with psycopg.connect(os.environ[sys.argv[1]], application_name=sys.argv[2]) as conn:
    table = conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0]
    rows = conn.execute("SELECT version_num FROM alembic_version ORDER BY 1") if table else []
    found = [r[0] for r in rows]
if len(found) > 1:
    sys.exit(f"the database has several schema revisions: {', '.join(found)}")
print(found[0] if found else "")
"""

# The same question for psql as PostgreSQL's superuser on a db host (runbooks.sites): psql
# answers in a few milliseconds where the release's Python takes a quarter of a second or
# more to start and import psycopg. Its output is read by `revision_from_psql`.
CURRENT_REVISION_PSQL = """\
SELECT to_regclass('public.alembic_version') IS NOT NULL AS has_version_table \\gset
\\if :has_version_table
SELECT version_num FROM alembic_version ORDER BY 1;
\\endif
"""


def revision_from_psql(out: str) -> str | None:
    """CURRENT_REVISION_PSQL's answer (unaligned, tuples only): the revision, None when the
    database has none; ValueError for several, as the script refuses them."""
    found = [line.strip() for line in out.splitlines() if line.strip()]
    if len(found) > 1:
        raise ValueError(f"the database has several schema revisions: {', '.join(found)}")
    return found[0] if found else None


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    backward_compatible: bool
    doc: str


def revisions() -> list[Revision]:
    """All revisions, oldest first, read from the migration files as Alembic reads them (the
    module-level `revision`, `down_revision`, `backward_compatible`; the docstring's first
    paragraph) without importing Alembic or the files: `sparkops rollback` reads them while
    it plans. tests/db/test_migrations.py checks the answer against Alembic's own."""
    found: dict[str | None, Revision] = {}  # by down_revision: one line of history
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        values = _module_constants(tree, ("revision", "down_revision", "backward_compatible"))
        if "revision" not in values:  # Alembic refuses such a file too
            raise RuntimeError(f"{path.name} in {path.parent} sets no `revision`")
        down = values.get("down_revision")
        rev = Revision(
            revision=values["revision"],
            down_revision=down if isinstance(down, str) else None,
            backward_compatible=bool(values.get("backward_compatible", False)),
            doc=re.split("\n\n", (ast.get_docstring(tree, clean=False) or "").strip())[0].strip(),
        )
        if rev.down_revision in found:
            raise RuntimeError(
                f"{path.name}: revisions {found[rev.down_revision].revision} and {rev.revision} "
                f"both follow {rev.down_revision}: the migrations must be one line"
            )
        found[rev.down_revision] = rev
    ordered, nxt = [], found.get(None)
    while nxt is not None:
        ordered.append(nxt)
        nxt = found.get(nxt.revision)
    if len(ordered) != len(found):
        raise RuntimeError(f"migrations not on one line from the first: {sorted(found)}")
    return ordered


def _module_constants(tree: ast.Module, names: tuple[str, ...]) -> dict:
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in names:
            values[target.id] = ast.literal_eval(value)
    return values


def head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()
