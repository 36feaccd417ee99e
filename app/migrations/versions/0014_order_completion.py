"""The idempotency key's completion as a function that refuses a key it no longer holds, so
an order's writes, the completion and COMMIT travel in one round trip.

Revision ID: 0014_order_completion
Revises: 0013_operator_kill_switch

`complete_idempotency_key(key, status, body)` marks an in-flight key completed with the
stored answer; when the key is not in flight (taken over after its in-flight timeout by a
retry that completed first, or released), it raises SQLSTATE `SP001` instead. The order
path sends its writes, this call and COMMIT as one simple-protocol batch: an error skips the
rest of the batch, COMMIT included, and the app rolls back and replays the stored answer
(app.orders). Before it, the app read the UPDATE's RETURNING and sent COMMIT in a round trip
of its own.

Backward compatible: a new function that the previous release does not call. EXECUTE is
granted to the app role alone (a function is executable by PUBLIC by default).
"""

from alembic import op

from sparkops import defaults

revision = "0014_order_completion"
down_revision = "0013_operator_kill_switch"
branch_labels = None
depends_on = None
backward_compatible = True

# The SQLSTATE app.orders maps to KeyTakenOver ("S": a class left to implementations).
KEY_NOT_HELD = "SP001"


def upgrade() -> None:
    op.execute(f"""
CREATE FUNCTION complete_idempotency_key(p_key text, p_status integer, p_body text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE idempotency_keys
    SET state = 'completed', response_status = p_status, response_body = p_body,
        completed_at = now()
    WHERE key = p_key AND state = 'in_flight';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'idempotency key % is no longer held by this request', p_key
            USING ERRCODE = '{KEY_NOT_HELD}';
    END IF;
END$$;
REVOKE ALL ON FUNCTION complete_idempotency_key(text, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION complete_idempotency_key(text, integer, text) TO {defaults.ROLE_APP};
""")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS complete_idempotency_key(text, integer, text)")
