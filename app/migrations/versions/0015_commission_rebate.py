"""An order's commission may be a maker rebate (negative), never more than its notional.

Revision ID: 0015_commission_rebate
Revises: 0014_order_completion

app.money allows a negative maker rate down to -1 (`FeeSchedule`), so a maker order's
commission may be below zero, down to minus its notional; the initial schema's
`CHECK (commission >= 0)` refused such an order. The new bound is the one app.money keeps:
`commission >= -notional`. (There is no upper bound to agree on: a minimum fee may exceed a
tiny order's notional.)

The new check is added NOT VALID and validated after (validation takes only a SHARE UPDATE
EXCLUSIVE lock: orders keep being written). Every existing row passes it (commission >= 0,
notional > 0). Backward compatible: the previous release writes commissions >= 0. The
downgrade fails, changing nothing, once a rebate is stored.
"""

from alembic import op

revision = "0015_commission_rebate"
down_revision = "0014_order_completion"
branch_labels = None
depends_on = None
backward_compatible = True

OLD = "orders_commission_check"
NEW = "orders_commission_at_least_minus_notional"


def upgrade() -> None:
    op.execute(f"""
ALTER TABLE orders ADD CONSTRAINT {NEW} CHECK (commission >= -notional) NOT VALID;
ALTER TABLE orders DROP CONSTRAINT IF EXISTS {OLD};
""")
    # Its own transaction: the scan must not run under the ADD's ACCESS EXCLUSIVE lock.
    with op.get_context().autocommit_block():
        op.execute(f"ALTER TABLE orders VALIDATE CONSTRAINT {NEW}")


def downgrade() -> None:
    op.execute(f"""
ALTER TABLE orders ADD CONSTRAINT {OLD} CHECK (commission >= 0);
ALTER TABLE orders DROP CONSTRAINT IF EXISTS {NEW};
""")
