"""Alembic environment: migrations run as the schema owner, directly against PostgreSQL.

Migrations go to PostgreSQL, not through pgBouncer: CREATE INDEX CONCURRENTLY and a long
lock_timeout-guarded DDL want a session of their own, which transaction pooling does not
promise. The connection is handed in by `app.migrate` via `config.attributes`.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
