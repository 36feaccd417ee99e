"""What a restored database is checked for: index integrity (amcheck), the row counts and
checksums the operator asked for, and the business invariants of the trading ledger.

The checksum queries are declared here once; the tests compute their expected values with the
same SQL before the restore.
"""

from __future__ import annotations

from app.outbox.settings import RETENTION_HOURS
from runbooks.checklist import Run
from runbooks.executor import CommandFailed
from runbooks.target import DbTarget

APP_TABLES = ("accounts", "orders", "positions", "outbox_events", "idempotency_keys")

# name -> SQL returning one value; the default --check-sql set.
DEFAULT_CHECKS = {
    "orders_count": "SELECT count(*) FROM orders",
    "orders_checksum": (
        "SELECT coalesce(md5(string_agg(concat_ws('|', id, account_id, symbol, side, strategy, "
        "quantity, price, notional, commission, idempotency_key, created_at), ',' "
        "ORDER BY id)), 'empty') FROM orders"
    ),
    "accounts_checksum": (
        "SELECT coalesce(md5(string_agg(concat_ws('|', id, opening_balance, cash_balance), ',' "
        "ORDER BY id)), 'empty') FROM accounts"
    ),
}

_BTREE_INDEXES = """
SELECT c.relname AS index, t.relname AS table_name, c.oid::bigint AS oid
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = c.relam
WHERE n.nspname = 'public' AND am.amname = 'btree' AND i.indisvalid
  AND t.relname IN ({tables})
ORDER BY t.relname, c.relname
"""

# Delivered outbox events are deleted after the dispatcher's retention, so "every order has
# its event" holds for orders younger than that.
INVARIANTS = {
    "every order has its outbox event": f"""
        SELECT o.id::text AS order_id FROM orders o
        WHERE o.created_at > now() - interval '{RETENTION_HOURS} hours'
          AND NOT EXISTS (SELECT 1 FROM outbox_events e
                          WHERE e.payload->'order'->>'id' = o.id::text)
        ORDER BY o.id LIMIT 20""",
    "no duplicate open positions": """
        SELECT account_id, symbol, strategy, count(*) AS open_positions FROM positions
        WHERE status = 'open' GROUP BY account_id, symbol, strategy HAVING count(*) > 1
        LIMIT 20""",
    "balances add up": """
        SELECT a.id AS account_id, a.cash_balance,
               a.opening_balance + coalesce(sum(CASE WHEN o.side = 'buy'
                   THEN -(o.notional + o.commission) ELSE o.notional - o.commission END), 0)
                   AS expected
        FROM accounts a LEFT JOIN orders o ON o.account_id = a.id
        GROUP BY a.id, a.cash_balance, a.opening_balance
        HAVING a.cash_balance <> a.opening_balance + coalesce(sum(CASE WHEN o.side = 'buy'
                   THEN -(o.notional + o.commission) ELSE o.notional - o.commission END), 0)
        LIMIT 20""",
}


def _error(exc: CommandFailed) -> str:
    """The line that says what failed: psql's ERROR (its DETAIL and HINT lines follow it, and
    amcheck's HINT names no index), else the output's last line."""
    lines = str(exc).splitlines()
    errors = [line for line in lines if "ERROR:" in line or "FATAL:" in line]
    return (errors or lines)[-1].strip()


def amcheck(target: DbTarget, run: Run) -> bool:
    """bt_index_check on every valid b-tree index of the app's tables."""
    try:
        target.psql("CREATE EXTENSION IF NOT EXISTS amcheck")
        tables = ", ".join(f"'{t}'" for t in APP_TABLES)
        indexes = target.query_json(_BTREE_INDEXES.format(tables=tables))
        # One psql for all of them (one round trip on a host, not one per index), each
        # check its own statement; it stops at the first index that fails, and says which.
        if indexes:
            target.psql(
                tuple(f"SELECT bt_index_check({i['oid']}::regclass, true)" for i in indexes)
            )
    except CommandFailed as exc:
        return run.check("amcheck", False, _error(exc))
    names = ", ".join(i["index"] for i in indexes)
    run.facts["amcheck_indexes"] = [i["index"] for i in indexes]
    return run.check("amcheck", bool(indexes), f"{len(indexes)} b-tree indexes intact ({names})")


def check_queries(target: DbTarget, run: Run, queries: dict[str, str]) -> dict[str, str]:
    """Run each named query; a query that fails is a failed check, its value a fact."""
    values: dict[str, str] = {}
    for name, sql in queries.items():
        try:
            values[name] = target.psql(sql)
            run.check(f"query {name}", True, values[name])
        except CommandFailed as exc:
            run.check(f"query {name}", False, _error(exc))
    run.facts["check_values"] = values
    return values


def invariants(target: DbTarget, run: Run) -> bool:
    ok = True
    for name, sql in INVARIANTS.items():
        try:
            rows = target.query_json(sql)
        except CommandFailed as exc:
            ok = run.check(name, False, _error(exc)) and ok
            continue
        detail = "holds" if not rows else f"{len(rows)} violation(s), e.g. {rows[:3]}"
        ok = run.check(name, not rows, detail) and ok
    return ok


def named_queries(items: tuple[str, ...]) -> dict[str, str]:
    """--check-sql values: `NAME=SQL` or bare SQL (named q1, q2, ...); none means the default."""
    if not items:
        return dict(DEFAULT_CHECKS)
    queries = {}
    for n, item in enumerate(items, 1):
        name, sep, sql = item.partition("=")
        if sep and name.strip().isidentifier():
            queries[name.strip()] = sql.strip()
        else:
            queries[f"q{n}"] = item.strip()
    return queries
