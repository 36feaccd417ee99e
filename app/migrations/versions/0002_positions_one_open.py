"""At most one open position per (account, symbol, strategy); a NULL strategy is unique too.

Revision ID: 0002_positions_one_open
Revises: 0001_initial

The index is built with CREATE INDEX CONCURRENTLY so writes to positions go on while it
builds. Before building, the migration looks for rows that would violate it and stops with
a list of them: an index build that fails half way leaves an INVALID index behind and tells
the operator far less.
"""

from alembic import op
from sqlalchemy import text

revision = "0002_positions_one_open"
down_revision = "0001_initial"
branch_labels = None
depends_on = None
backward_compatible = True

INDEX = "positions_one_open_per_account_symbol_strategy"

DUPLICATES = """
SELECT account_id, symbol, strategy, count(*) AS open_positions,
       array_agg(id ORDER BY id) AS position_ids
FROM positions
WHERE status = 'open'
GROUP BY account_id, symbol, strategy
HAVING count(*) > 1
ORDER BY account_id, symbol, strategy NULLS FIRST
"""


class DuplicateOpenPositions(RuntimeError):
    """Existing data violates the index about to be built."""


def report_duplicates(rows) -> str:
    lines = [
        f"  account={r.account_id} symbol={r.symbol} strategy={r.strategy or '(manual)'} "
        f"open={r.open_positions} ids={list(r.position_ids)}"
        for r in rows
    ]
    return (
        f"cannot build {INDEX}: {len(rows)} (account, symbol, strategy) group(s) have more "
        "than one open position:\n" + "\n".join(lines) + "\n"
        "Close or merge the extra positions (keep one open per group), then run the "
        "migration again. Nothing was changed."
    )


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(text(DUPLICATES)).fetchall()
    if rows:
        raise DuplicateOpenPositions(report_duplicates(rows))
    with op.get_context().autocommit_block():
        # A concurrent build that failed earlier leaves an INVALID index of this name.
        invalid = bind.execute(
            text(
                "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = :name AND NOT i.indisvalid"
            ),
            {"name": INDEX},
        ).first()
        if invalid:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.execute(
            f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} "
            "ON positions (account_id, symbol, strategy) NULLS NOT DISTINCT "
            "WHERE status = 'open'"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
