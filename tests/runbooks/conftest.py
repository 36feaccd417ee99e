"""A throwaway database archived by a real pgBackRest (posix repository in a temporary
directory), the app on a real uvicorn in front of it, and helpers to write a ledger of orders
and run the runbook commands as an operator would."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from click.testing import CliRunner

from runbooks import checks, sites
from sparkops.wait import wait_until
from sparkops_cli.main import main
from testkit.localdb import LocalBackedUpDb
from tests.conftest import AUTH, TEST_KEY_ID, ensure_test_key

SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture(scope="session")
def backed_db():
    db = LocalBackedUpDb().start()
    try:
        yield db
    finally:
        db.stop()


# Every restore here makes a timeline, and a restore `--latest` replays from the newest backup
# through every timeline since: about a second more per timeline (measured: "Wait for
# recovery to end" grew from 1 s to 7 s over the restores of tests/runbooks). An incremental
# backup once this many timelines have gone by keeps each restore's replay short.
TIMELINES_PER_BACKUP = 3
_backed_up_on = {"timeline": 1}


@pytest.fixture(autouse=True)
def _recent_backup(request):
    """Before a test that uses the kit's database: a fresh incremental backup when the
    database has moved on by TIMELINES_PER_BACKUP timelines since the last one."""
    if "backed_db" not in request.fixturenames:
        return
    db = request.getfixturevalue("backed_db")
    if db.stack is None or not db.target.is_up():
        return
    timeline = int(
        db.target.psql("SELECT timeline_id FROM pg_control_checkpoint()", dbname="postgres")
    )
    if timeline - _backed_up_on["timeline"] >= TIMELINES_PER_BACKUP:
        db.backup("incr")
        _backed_up_on["timeline"] = timeline


@pytest.fixture(scope="session")
def ledger_app(backed_db):
    """The app through the test pgBouncer: its pooled client connections outlive restores."""
    from app.config import Settings
    from testkit.appserver import AppServer

    settings = Settings(database_url=backed_db.stack.app_conninfo(), release_id="ledger")
    server = AppServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def target_file(backed_db, tmp_path):
    path = tmp_path / "target.json"
    path.write_text(json.dumps(sites.target_file_spec(backed_db.target)))
    return path


def superuser(db: LocalBackedUpDb, **kw) -> psycopg.Connection:
    return psycopg.connect(db.stack.pg.superuser_conninfo(db.stack.dbname), autocommit=True, **kw)


def ensure_account(db: LocalBackedUpDb, account: str = "ledger-1") -> str:
    with superuser(db) as conn:
        conn.execute(
            "INSERT INTO accounts (id, name, opening_balance, cash_balance) "
            "VALUES (%s, %s, 1000000, 1000000) ON CONFLICT DO NOTHING",
            (account, account),
        )
        # The session's test key may use it (tests.conftest.AUTH).
        ensure_test_key(conn)
        conn.execute(
            "INSERT INTO api_key_accounts (api_key_id, account_id) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING",
            (TEST_KEY_ID, account),
        )
    return account


def write_orders(server, account: str, count: int) -> list[str]:
    """`count` orders through the API (buys, then sells of what was bought); their ids."""
    ids = []
    for n in range(count):
        body = {"account_id": account, "symbol": SYMBOLS[n % 2],
                "side": "buy" if n % 4 < 2 else "sell", "quantity": "0.01",
                "price": "65000.00" if n % 2 == 0 else "3000.00"}  # fmt: skip
        headers = {**AUTH, "idempotency-key": str(uuid.uuid4())}
        r = httpx.post(f"{server.url}/orders", json=body, headers=headers, timeout=30)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def snapshot(db: LocalBackedUpDb) -> dict[str, str]:
    """The default check queries' values (what the restore reports after restoring)."""
    with superuser(db) as conn:
        return {name: str(conn.execute(sql).fetchone()[0])
                for name, sql in checks.DEFAULT_CHECKS.items()}  # fmt: skip


def existing(db: LocalBackedUpDb, ids: list[str]) -> set[str]:
    with superuser(db) as conn:
        rows = conn.execute("SELECT id::text FROM orders WHERE id = ANY(%s::uuid[])", (ids,))
        return {r[0] for r in rows}


def state(db: LocalBackedUpDb) -> dict:
    """What must not change when a command refuses: the postmaster, timeline and contents."""
    with superuser(db) as conn:
        timeline = conn.execute(
            "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"
        ).fetchone()[0]
    return {"pid": db.stack.pg.pid(), "timeline": timeline, **snapshot(db)}


def after_oldest_backup(db: LocalBackedUpDb) -> None:
    """Wait until a time target can follow the newest backup's end (whole-second stamps)."""
    stop = max(b["timestamp"]["stop"] for b in _info(db)["backup"])
    wait_until(lambda: time.time() >= stop + 1.5, timeout=5, what="a second past the backup")


def _info(db: LocalBackedUpDb) -> dict:
    return json.loads(db.target.pgbackrest("info", "--output=json").stdout)[0]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def sparkops(*args: str, input: str | None = None, env: dict | None = None):
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


def result_json(run) -> dict:
    return json.loads(run.stdout)
