"""Run the app's Alembic migrations against a PostgreSQL connection string.

Alembic is the kept migration tool; this module only hands it a connection (psycopg 3
through SQLAlchemy) and reads revisions, so the CLI, the deploy, the rollback gate and the
tests share one entry point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _engine(conninfo: str):
    return create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(conninfo),
        poolclass=NullPool,
    )


def upgrade(conninfo: str, revision: str = "head") -> None:
    cfg = _config()
    engine = _engine(conninfo)
    try:
        with engine.connect() as conn:
            # Guard DDL: wait at most this long for a lock instead of queueing every writer
            # behind an ALTER that cannot get its lock.
            conn.exec_driver_sql("SET lock_timeout = '5s'")
            conn.commit()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def current(conninfo: str) -> str | None:
    engine = _engine(conninfo)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    backward_compatible: bool
    doc: str


def revisions() -> list[Revision]:
    """All revisions, oldest first."""
    script = ScriptDirectory.from_config(_config())
    found = [
        Revision(
            revision=s.revision,
            down_revision=s.down_revision if isinstance(s.down_revision, str) else None,
            backward_compatible=bool(getattr(s.module, "backward_compatible", False)),
            doc=(s.doc or "").strip(),
        )
        for s in script.walk_revisions()
    ]
    return list(reversed(found))


def head() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()
