"""API keys bound to accounts and permissions, per-key rate-limit windows, and who placed
each order (key, client address, request id).

Revision ID: 0011_api_keys
Revises: 0010_outbox_lease

Only a SHA-256 hash of a key's secret is stored (the secret is 256 random bits, shown once
by `sparkops app keys create`). A key is revoked by setting `revoked_at`, never deleted, so
an order's `api_key_id` always names a key that existed.

Backward compatible: new tables, and nullable columns on `orders` that an older release
neither reads nor writes (its orders keep NULL there).
"""

from alembic import op

revision = "0011_api_keys"
down_revision = "0010_outbox_lease"
branch_labels = None
depends_on = None
backward_compatible = True

SCHEMA = """
CREATE TABLE api_keys (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    secret_sha256 bytea NOT NULL UNIQUE CHECK (length(secret_sha256) = 32),
    permissions   text[] NOT NULL
                  CHECK (cardinality(permissions) > 0
                         AND permissions <@ ARRAY['read', 'trade']::text[]),
    rate_limit    integer NOT NULL CHECK (rate_limit > 0),  -- requests per second
    created_by    text NOT NULL DEFAULT current_user,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_by    text,
    revoked_at    timestamptz,
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);

CREATE TABLE api_key_accounts (
    api_key_id uuid NOT NULL REFERENCES api_keys (id),
    account_id text NOT NULL REFERENCES accounts (id),
    PRIMARY KEY (api_key_id, account_id)
);
CREATE INDEX api_key_accounts_account ON api_key_accounts (account_id);

-- One row per key: the current one-second window and the requests counted in it. Shared by
-- every app process and host; updated in place (a HOT update: no indexed column changes).
CREATE TABLE api_rate_windows (
    api_key_id   uuid PRIMARY KEY REFERENCES api_keys (id),
    window_start timestamptz NOT NULL,
    used         integer NOT NULL
);

-- No foreign key to api_keys on purpose: its check takes a KEY SHARE lock on the key's row in
-- every order transaction, and one key's concurrent orders then share that row through a
-- MultiXact each (measured: most of the cost of auth on POST /orders). Keys are never
-- deleted (revocation sets revoked_at), so the id always names a key that existed.
ALTER TABLE orders ADD COLUMN api_key_id uuid;
ALTER TABLE orders ADD COLUMN client_addr inet;
ALTER TABLE orders ADD COLUMN request_id text;
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("ALTER TABLE orders DROP COLUMN IF EXISTS request_id")
    op.execute("ALTER TABLE orders DROP COLUMN IF EXISTS client_addr")
    op.execute("ALTER TABLE orders DROP COLUMN IF EXISTS api_key_id")
    op.execute("DROP TABLE IF EXISTS api_rate_windows, api_key_accounts, api_keys")
