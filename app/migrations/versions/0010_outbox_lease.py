"""Outbox leases: which dispatcher holds an event, and until when; an index for dead letters.

Revision ID: 0010_outbox_lease
Revises: 0002_positions_one_open

A dispatcher claims events by setting `claimed_by` and `claimed_until` in a short
transaction, then publishes outside any transaction (pgBouncer in transaction mode gives the
server connection back while the publisher talks to Redis). A lease that runs out makes the
event claimable again, so a crashed dispatcher delays its events by at most one lease.

Both columns are nullable and unused by older releases, so the previous release keeps
working on this schema (backward compatible). The index is built concurrently: the outbox is
written by every order.
"""

from alembic import op
from sqlalchemy import text

revision = "0010_outbox_lease"
down_revision = "0002_positions_one_open"
branch_labels = None
depends_on = None
backward_compatible = True

DEAD_INDEX = "outbox_events_aggregate_dead"


def upgrade() -> None:
    # ADD COLUMN without a default is a catalog-only change: no table rewrite.
    op.execute("ALTER TABLE outbox_events ADD COLUMN IF NOT EXISTS claimed_by text")
    op.execute("ALTER TABLE outbox_events ADD COLUMN IF NOT EXISTS claimed_until timestamptz")
    # A queue table: every row is updated twice and deleted within days. Vacuum and analyze
    # it after 2% of its rows changed rather than the default 20%/10%, so dead index entries
    # do not pile up in front of the pending ones and the planner's row counts stay current.
    op.execute(
        "ALTER TABLE outbox_events SET (autovacuum_vacuum_scale_factor = 0.02, "
        "autovacuum_analyze_scale_factor = 0.02)"
    )
    bind = op.get_bind()
    with op.get_context().autocommit_block():
        # A concurrent build that failed earlier leaves an INVALID index of this name.
        invalid = bind.execute(
            text(
                "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = :name AND NOT i.indisvalid"
            ),
            {"name": DEAD_INDEX},
        ).first()
        if invalid:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {DEAD_INDEX}")
        # A dead-lettered event holds back its aggregate's later events; the claim looks
        # for one per candidate, so it needs an index of its own.
        op.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {DEAD_INDEX} "
            "ON outbox_events (aggregate_type, aggregate_id, id) WHERE status = 'dead'"
        )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE outbox_events RESET (autovacuum_vacuum_scale_factor, "
        "autovacuum_analyze_scale_factor)"
    )
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {DEAD_INDEX}")
    op.execute("ALTER TABLE outbox_events DROP COLUMN IF EXISTS claimed_until")
    op.execute("ALTER TABLE outbox_events DROP COLUMN IF EXISTS claimed_by")
