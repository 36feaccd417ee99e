"""Initial schema: accounts, orders, positions, idempotency keys, outbox, trading halts.

Revision ID: 0001_initial
Revises:
"""

from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None
backward_compatible = True

# Money is numeric(38, 18): exact, wide enough for satoshi-level crypto quantities.
SCHEMA = """
CREATE TABLE accounts (
    id              text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name            text NOT NULL,
    opening_balance numeric(38, 18) NOT NULL DEFAULT 0,
    cash_balance    numeric(38, 18) NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id      text NOT NULL REFERENCES accounts (id),
    symbol          text NOT NULL,
    side            text NOT NULL CHECK (side IN ('buy', 'sell')),
    strategy        text,
    quantity        numeric(38, 18) NOT NULL CHECK (quantity > 0),
    price           numeric(38, 18) NOT NULL CHECK (price > 0),
    notional        numeric(38, 18) NOT NULL CHECK (notional > 0),
    commission      numeric(38, 18) NOT NULL CHECK (commission >= 0),
    liquidity       text NOT NULL CHECK (liquidity IN ('maker', 'taker')),
    status          text NOT NULL CHECK (status IN ('filled')),
    idempotency_key text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_account_created ON orders (account_id, created_at);

CREATE TABLE positions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id      text NOT NULL REFERENCES accounts (id),
    symbol          text NOT NULL,
    strategy        text,
    -- signed: positive is long, negative is short
    quantity        numeric(38, 18) NOT NULL,
    avg_entry_price numeric(38, 18) NOT NULL CHECK (avg_entry_price >= 0),
    realized_pnl    numeric(38, 18) NOT NULL DEFAULT 0,
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    opened_at       timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz,
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
);

CREATE TABLE idempotency_keys (
    key             text PRIMARY KEY,
    request_hash    text NOT NULL,
    state           text NOT NULL CHECK (state IN ('in_flight', 'completed')),
    response_status integer,
    response_body   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    locked_at       timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    CHECK ((state = 'completed') = (response_status IS NOT NULL))
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

CREATE TABLE outbox_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    aggregate_type  text NOT NULL,
    aggregate_id    text NOT NULL,
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX outbox_events_pending ON outbox_events (next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX outbox_events_aggregate_pending ON outbox_events (aggregate_type, aggregate_id, id)
    WHERE status = 'pending';
CREATE INDEX outbox_events_delivered_at ON outbox_events (delivered_at)
    WHERE status = 'delivered';

-- The kill switch: a row with scope 'global' halts all trading, a row per symbol halts one.
CREATE TABLE trading_halts (
    scope      text PRIMARY KEY,
    reason     text NOT NULL,
    created_by text NOT NULL DEFAULT current_user,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    raise NotImplementedError("the initial schema is not dropped by a migration")
