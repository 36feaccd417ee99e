"""Placing an order: risk checks, the fill, the position, the cash, the outbox event and the
idempotency key's completion, all in one transaction.

Fill model: the app records a limit order as filled at its price (paper trading); routing to
an exchange is the exchange clients' job. Positions are locked row-first, the account last,
so two orders of one account on different symbols never deadlock; orders that find no open
position queue for the right to open it (an advisory lock, waited for holding nothing), and
the partial unique index stays the last word.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Context, Decimal

import psycopg
from psycopg import AsyncClientCursor, AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row, tuple_row

from app import idempotency, metrics, money, ratelimit, risk
from app.config import Settings
from app.edge import RequestError
from app.validation import OrderRequest, format_decimal

log = logging.getLogger("spark.app")

MAX_ATTEMPTS = 3
_EXACT = Context(prec=200)
POSITION_INDEX = "positions_one_open_per_account_symbol_strategy"


@dataclass(frozen=True)
class Audit:
    """Who placed an order: written on the order row."""

    api_key_id: str
    client_addr: str | None
    request_id: str


@dataclass(frozen=True)
class Response:
    status: int
    body: str  # JSON text, stored verbatim for replays
    location: str | None = None  # the created order's URL, for a 201


# One round trip for everything the risk checks read: does the account exist (and is it one
# the API key is bound to: another key's account reads as one that does not exist), is trading
# halted (globally or for the symbol), the open position (locked for this transaction) and
# the transaction's timestamp.
_CONTEXT_OF = """
SELECT a.id IS NOT NULL AS account_exists, now() AS tx_now,
       (SELECT scope || ': ' || reason FROM trading_halts
        WHERE scope IN ('global', %(symbol)s)
        ORDER BY scope = 'global' DESC LIMIT 1) AS halted_by,
       p.id AS position_id, p.quantity, p.avg_entry_price, p.realized_pnl
FROM (SELECT 1) AS one
LEFT JOIN accounts a ON a.id = %(account_id)s AND EXISTS (
    SELECT 1 FROM api_key_accounts
    WHERE api_key_id = %(api_key_id)s AND account_id = %(account_id)s)
LEFT JOIN LATERAL (
    SELECT id, quantity, avg_entry_price, realized_pnl FROM positions
    WHERE account_id = %(account_id)s AND symbol = %(symbol)s
      AND strategy IS NOT DISTINCT FROM %(strategy)s AND status = 'open'{claimed}
    FOR UPDATE
) AS p ON true
"""
# An order that finds no open position queues here, then reads the context again, before
# it opens one. The row lock above serializes orders only while an open position exists:
# when none does (the first order, or after one closed it), every order of a burst read
# "none" and tried to open it, and all but one met the unique index, again and again: a
# burst of buys and sells answered 500 after MAX_ATTEMPTS (tests/api/test_orders.py). A
# statement of its own, so that the context read after it takes its snapshot once the lock
# is ours; only on the way to opening a position, so an order on an open position pays
# nothing for it (measured: taken by every order, it cost 12 % of the orders/s). Two int4
# keys: a key space of its own, apart from the bigint locks (the migrations' lock).
#
# Taken first thing in a fresh transaction (_REQUEUE), never after the context read in the
# same one: a context read that waited on the position's row while another order closed it
# skips the closed row but keeps its lock on it (PostgreSQL locks the row's newest version,
# then re-checks it). Queued for this lock with that row lock, an order deadlocked with the
# lock's holder whose snapshot still saw the position open and so waited for the row
# (tests/db/test_order_sql.py). So the advisory lock is only ever waited for holding nothing,
# and its holder waits only on orders that never wait for it.
POSITION_LOCK_SPACE = 0x5350  # "SP"
_LOCK_POSITION = """
SELECT pg_advisory_xact_lock(%(lock_space)s,
                             hashtext(concat_ws('/', %(account_id)s, %(symbol)s, %(strategy)s)))
"""
_CONTEXT = _CONTEXT_OF.format(claimed="")
# After the claim in the same batch: the position is locked only if the key is in flight for
# this payload (claimed just now, or, rarely, held by a twin request: then rolled back at
# once); a request refused by its rate limit or replaying a stored answer locks nothing.
_CONTEXT_IF_CLAIMED = _CONTEXT_OF.format(
    claimed="""
      AND EXISTS (SELECT 1 FROM idempotency_keys WHERE key = %(key)s
                  AND state = 'in_flight' AND request_hash = %(hash)s)"""
)
_INSERT_POSITION = """
INSERT INTO positions (account_id, symbol, strategy, quantity, avg_entry_price, realized_pnl)
VALUES (%(account_id)s, %(symbol)s, %(strategy)s, %(quantity)s, %(avg)s, %(realized)s)
RETURNING id
"""
_UPDATE_POSITION = """
UPDATE positions SET quantity = %(quantity)s, avg_entry_price = %(avg)s,
    realized_pnl = %(realized)s, updated_at = now(),
    status = CASE WHEN %(quantity)s = 0 THEN 'closed' ELSE 'open' END,
    closed_at = CASE WHEN %(quantity)s = 0 THEN now() END
WHERE id = %(id)s
"""
_INSERT_ORDER = """
INSERT INTO orders (id, account_id, symbol, side, strategy, quantity, price, notional,
                    commission, liquidity, status, idempotency_key, created_at,
                    api_key_id, client_addr, request_id)
VALUES (%(order_id)s, %(account_id)s, %(symbol)s, %(side)s, %(strategy)s, %(quantity)s,
        %(price)s, %(notional)s, %(commission)s, %(liquidity)s, 'filled', %(key)s, now(),
        %(api_key_id)s, %(client_addr)s, %(request_id)s)
"""
_CASH = "UPDATE accounts SET cash_balance = cash_balance + %(delta)s WHERE id = %(account_id)s"
# The key's completion, raising KEY_NOT_HELD when the key is not in flight any more
# (migration 0014: the function and the SQLSTATE; tests/db/test_order_sql.py checks both).
_COMPLETE = "SELECT complete_idempotency_key(%(key)s, %(status)s, %(body)s)"
KEY_NOT_HELD = "SP001"
_OUTBOX = """
INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload)
VALUES ('position', %(aggregate)s, 'order.filled', %(payload)s)
"""


async def claim_and_place(
    conn: AsyncConnection,
    settings: Settings,
    order: OrderRequest,
    key: str,
    fingerprint: str,
    audit: Audit,
    rate: ratelimit.Budget,
) -> Response | idempotency.Claim:
    """Claim the key (counting the request against its rate limits) and place the order.

    The claim commits on its own, first (app.idempotency: first writer wins), in the same
    batch that then opens the order's transaction and reads its context: `BEGIN; claim;
    COMMIT; BEGIN; context`, one round trip. The context locks the position only when the
    key is in flight for this payload, so a refused or replayed request locks nothing; it
    then rolls back. A key not claimed here (held, completed, abandoned) goes the long way
    (`idempotency.claim`), and if that takes it over, the order is placed as `place_order`
    places it. Returns the order's response, or the claim that answers instead of it.
    """
    params = {**_params(order, key, audit), **rate.params(), "hash": fingerprint}
    statements = [
        ("BEGIN", None),
        (idempotency.CLAIM_COUNTED, params),
        ("COMMIT", None),
        ("BEGIN", None),
        (_CONTEXT_IF_CLAIMED, params),
    ]
    claimed: list[tuple] = []  # the claim's row: (used, client_used, created)

    async def claim_then_context(cur: AsyncClientCursor) -> dict:
        await cur.execute(_batch(cur, statements))
        cur.nextset()
        cur.row_factory = tuple_row
        claimed.append(await cur.fetchone())
        cur.row_factory = dict_row
        context = await _last_set(cur).fetchone()
        used, client_used, created = claimed[0]
        if created:
            idempotency.counted(idempotency.Claim("created"))
            return context
        await cur.execute("ROLLBACK")
        raise _NotClaimed(ratelimit.over(used, rate.limit, client_used, rate.client_limit))

    try:
        return await _releasing(
            conn, key, place_order(conn, settings, order, key, audit, first=claim_then_context)
        )
    except _NotClaimed as refused:
        if refused.limit is not None:
            return idempotency.Claim("rate_limited", limit=refused.limit)
    # Not claimed: a failure from here until the key is ours must leave the key alone.
    claim = await idempotency.claim(
        conn, key, fingerprint, settings.idempotency_in_flight_timeout_s
    )
    if claim.outcome != "created":
        return claim
    return await _releasing(conn, key, place_order(conn, settings, order, key, audit))


async def _releasing(conn: AsyncConnection, key: str, placing: Awaitable[Response]) -> Response:
    """Place the order; on failure give the key back, so the client's retry can run at once.

    A failure of the first batch may come before its claim committed; the key is then
    released all the same (the request's retry claims it anew). Released, too, on a refusal
    (RequestError) that the caller answers. Not on KeyTakenOver: the key is another's.
    """
    try:
        return await placing
    except (KeyTakenOver, _NotClaimed):
        raise
    except BaseException:
        try:
            await idempotency.release(conn, key)
        except psycopg.Error as exc:
            # The connection is gone (a switchover, a restart): app.dbretry gives the key
            # back on a fresh connection when it runs the order again; else it expires.
            log.warning("could not release idempotency key %s on its connection (%s): given "
                        "back by the run again, or expires as abandoned", key,
                        str(exc).strip()[:120])  # fmt: skip
        raise


class _NotClaimed(Exception):
    """The first batch did not claim the key (`limit`: the rate limit it passed, if any)."""

    def __init__(self, limit: str | None) -> None:
        self.limit = limit


async def place_order(
    conn: AsyncConnection,
    settings: Settings,
    order: OrderRequest,
    key: str,
    audit: Audit,
    *,
    first: Callable[[AsyncClientCursor], Awaitable[dict]] | None = None,
) -> Response:
    """Run the order transaction (the key is ours, claimed); retry when a concurrent order
    opened the same position. `first`, when given, opens the first attempt's transaction
    and returns its context row (claim_and_place's batch)."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            begin = first if attempt == 1 else None
            return await _in_one_transaction(conn, settings, order, key, audit, begin)
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name != POSITION_INDEX:
                raise
            metrics.POSITION_UNIQUE_VIOLATIONS.inc()
            if attempt == MAX_ATTEMPTS:
                raise
        except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected):
            if attempt == MAX_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def _in_one_transaction(
    conn: AsyncConnection, settings: Settings, order: OrderRequest, key: str, audit: Audit,
    begin: Callable[[AsyncClientCursor], Awaitable[dict]] | None,
) -> Response:  # fmt: skip
    """The order's transaction as a few simple-protocol batches, each ending in one
    ReadyForQuery: `BEGIN; context`, then every write, the key's completion and COMMIT:
    two round trips. An order that opens a position takes two more: a new transaction taking
    the position's lock and reading the context again, then the position's INSERT.

    Not pipeline mode: pgBouncer 1.18 (pipelining support came in 1.21) sometimes leaves
    the server linked to a client that finished a pipelined transaction: seen on about 4 %
    of orders, the server stays "active" until that client's next request, which blocks
    PAUSE (restores) and wastes a pool slot (tests/api/test_pgbouncer_release.py). Values
    are bound client-side by psycopg's ClientCursor (escaped, never spliced by us).
    """
    cur = AsyncClientCursor(conn, row_factory=dict_row)
    try:
        if begin is None:
            context = await _begin_with_context(cur, _params(order, key, audit))
        else:
            context = await begin(cur)
        return await _place(cur, settings, order, key, audit, context)
    except psycopg.DatabaseError as exc:
        if conn.info.transaction_status != TransactionStatus.IDLE and not conn.closed:
            await conn.execute("ROLLBACK")
        if exc.sqlstate == KEY_NOT_HELD:
            # Our claim was taken over after the in-flight timeout and the other request
            # finished first: ours is undone; the caller replays the stored response.
            raise KeyTakenOver(key) from None
        raise
    except BaseException:
        if conn.info.transaction_status != TransactionStatus.IDLE and not conn.closed:
            await conn.execute("ROLLBACK")
        raise


def _last_set(cur: AsyncClientCursor) -> AsyncClientCursor:
    """The last result of a multi-statement batch (its first is current after execute)."""
    while cur.nextset():
        pass
    return cur


def _params(order: OrderRequest, key: str, audit: Audit) -> dict:
    return {
        "account_id": order.account_id,
        "symbol": order.symbol,
        "strategy": order.strategy,
        "side": order.side,
        "key": key,
        "api_key_id": audit.api_key_id,
        "lock_space": POSITION_LOCK_SPACE,
    }


async def _begin_with_context(cur: AsyncClientCursor, params: dict) -> dict:
    """Open the order's transaction and read its context (one batch)."""
    await cur.execute("BEGIN; " + _CONTEXT, params)
    return await _last_set(cur).fetchone()


async def _place(
    cur: AsyncClientCursor,
    settings: Settings,
    order: OrderRequest,
    key: str,
    audit: Audit,
    context: dict,
) -> Response:
    instrument = settings.instruments[order.symbol]
    params = _params(order, key, audit)
    if not context["account_exists"]:
        raise RequestError(
            422, "unknown_account",
            f"account {order.account_id!r} does not exist or is not one of this API key's",
        )  # fmt: skip
    if context["position_id"] is None:
        # About to open the position: give back what the read locked, queue for the
        # position, then read again, in a new transaction (_LOCK_POSITION says why).
        await cur.execute(
            "ROLLBACK; BEGIN; " + _batch(cur, [(_LOCK_POSITION, params), (_CONTEXT, params)])
        )
        context = await _last_set(cur).fetchone()
    position = context if context["position_id"] is not None else None
    state = money.PositionState(
        quantity=position["quantity"] if position else Decimal(0),
        avg_entry_price=position["avg_entry_price"] if position else Decimal(0),
        realized_pnl=position["realized_pnl"] if position else Decimal(0),
    )
    block = risk.check_order(
        side=order.side,
        quantity=order.quantity,
        price=order.price,
        current_position=state.quantity,
        reference_price=instrument.reference_price,
        limits=settings.risk,
        halted_by=context["halted_by"],
    )
    if block is not None:
        metrics.RISK_BLOCKS.labels(block.rule).inc()
        response = Response(
            422,
            _json({"error": "risk_blocked", "rule": block.rule, "message": block.message}),
        )
        await cur.execute(_batch(cur, [(_COMPLETE, {**params, **_stored(response)})]) + "; COMMIT")
        return response

    notional = _EXACT.multiply(order.quantity, order.price)  # not the 28-digit default context
    fee = money.commission(notional, instrument.fees, order.liquidity)
    new_state = money.apply_fill(state, order.side, order.quantity, order.price)
    position_values = {
        "quantity": new_state.quantity,
        "avg": new_state.avg_entry_price,
        "realized": new_state.realized_pnl,
    }
    writes: list[tuple[str, dict]] = []
    if position:
        position_id = position["position_id"]
        writes.append((_UPDATE_POSITION, {**position_values, "id": position_id}))
    else:
        await cur.execute(_INSERT_POSITION, {**params, **position_values})
        position_id = (await cur.fetchone())["id"]
    order_id = uuid.uuid4()
    body = {
        "id": str(order_id),
        "account_id": order.account_id,
        "symbol": order.symbol,
        "side": order.side,
        "strategy": order.strategy,
        "quantity": format_decimal(order.quantity),
        "price": format_decimal(order.price),
        "notional": format_decimal(notional),
        "commission": format_decimal(fee),
        "liquidity": order.liquidity,
        "status": "filled",
        "created_at": context["tx_now"].isoformat(),
        "position": {
            "id": position_id,
            "quantity": format_decimal(new_state.quantity),
            "avg_entry_price": format_decimal(new_state.avg_entry_price),
            "realized_pnl": format_decimal(new_state.realized_pnl),
            "status": "closed" if new_state.quantity == 0 else "open",
        },
    }
    response = Response(201, _json(body), location=order_location(order_id))
    cash_delta = -(notional + fee) if order.side == "buy" else notional - fee
    writes += [
        (_INSERT_ORDER, {**params, "order_id": order_id, "quantity": order.quantity,
                         "price": order.price, "notional": notional, "commission": fee,
                         "liquidity": order.liquidity, "client_addr": audit.client_addr,
                         "request_id": audit.request_id}),
        (_CASH, {**params, "delta": cash_delta}),
        (_OUTBOX, {"aggregate": f"{order.account_id}/{order.symbol}/{order.strategy or ''}",
                   "payload": _event_payload(key, response.body)}),
        (_COMPLETE, {**params, **_stored(response)}),
    ]  # fmt: skip
    # Every write, the key's completion and COMMIT in one batch: a key no longer ours makes
    # the completion raise (KEY_NOT_HELD), which skips the rest of the batch, COMMIT too.
    await cur.execute(_batch(cur, writes) + "; COMMIT")
    metrics.ORDERS_ACCEPTED.labels(order.side).inc()
    return response


def _batch(cur: AsyncClientCursor, statements: list[tuple[str, dict | None]]) -> str:
    """Statements with their values bound by psycopg (client side), joined into one batch."""
    return "; ".join(cur.mogrify(sql, values) for sql, values in statements)


def order_location(order_id) -> str:
    return f"/orders/{order_id}"


def stored_headers(claim: idempotency.Claim) -> dict[str, str]:
    """Headers of a stored answer's replay: a 201 names the order it created, as it did first.

    The id comes from the stored body, which `_place` wrote; only status and body are stored.
    """
    if claim.status != 201 or not claim.body:
        return {}
    return {"location": order_location(json.loads(claim.body)["id"])}


class KeyTakenOver(RuntimeError):
    """The idempotency key completed under another request while this one ran."""


def _stored(response: Response) -> dict:
    return {"status": response.status, "body": response.body}


def _event_payload(key: str, body: str) -> str:
    """`_json({"idempotency_key": key, "order": <body>})`, with the body encoded once."""
    return f'{{"idempotency_key":{json.dumps(key)},"order":{body}}}'


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
