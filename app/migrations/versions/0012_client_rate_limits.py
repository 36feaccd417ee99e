"""Rate-limit windows per client address, beside the per-API-key ones.

Revision ID: 0012_client_rate_limits
Revises: 0011_api_keys

One row per client (an IPv4 address, or the /64 prefix of an IPv6 address): the current
one-second window and the requests counted in it, shared by every app process and host
(app.ratelimit). Rows of clients gone quiet are deleted by the hourly purge job.

Backward compatible: a new table that an older release neither reads nor writes.
"""

from alembic import op

revision = "0012_client_rate_limits"
down_revision = "0011_api_keys"
branch_labels = None
depends_on = None
backward_compatible = True


def upgrade() -> None:
    op.execute("""
CREATE TABLE client_rate_windows (
    client       text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    used         integer NOT NULL
);
CREATE INDEX client_rate_windows_start ON client_rate_windows (window_start);
""")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS client_rate_windows")
