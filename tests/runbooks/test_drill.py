"""The restore drill against the real archive: a copy restored from the latest backup and all
archived WAL passes amcheck and the business invariants on good data, fails naming the
broken invariant, is torn down either way, and leaves its metric file."""

from __future__ import annotations

import os
import re
import subprocess

import psycopg

from sparkops import metric_names
from testkit.proc import port_open
from tests.runbooks.conftest import ensure_account, result_json, sparkops, superuser, write_orders


def _metrics(path) -> dict[str, float]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            values[name] = float(value)
    return values


def _drill(target_file, tmp_path):
    return sparkops("drill", "--target-file", str(target_file), "--scratch-port", "0",
                    "--metrics-file", str(tmp_path / "drill.prom"), "--json",
                    "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip


def test_drill_passes_on_good_data(backed_db, ledger_app, target_file, tmp_path):
    ensure_account(backed_db)
    write_orders(ledger_app, "ledger-1", 6)
    run = _drill(target_file, tmp_path)
    assert run.exit_code == 0, run.output
    result = result_json(run)
    names = {c["name"]: c["ok"] for c in result["checks"]}
    assert names["every order has its outbox event"] and names["balances add up"]
    assert names["no duplicate open positions"] and names["amcheck"]
    assert result["facts"]["restore_seconds"] > 0 and result["facts"]["copy_seconds"] > 0
    metrics = _metrics(tmp_path / "drill.prom")
    assert metrics[metric_names.RESTORE_DRILL_LAST_SUCCESS] == 1
    assert metrics[metric_names.RESTORE_DRILL_DURATION] > 0
    scratch = next(o for o in result["facts"]["pgbackrest_options"] if o.startswith("--pg1-path"))
    assert not os.path.exists(scratch.split("=", 1)[1])  # torn down


def test_drill_names_the_broken_invariant(backed_db, ledger_app, target_file, tmp_path):
    ensure_account(backed_db)
    write_orders(ledger_app, "ledger-1", 2)
    with superuser(backed_db) as conn:
        conn.execute("DELETE FROM outbox_events WHERE id = (SELECT max(id) FROM outbox_events)")
    try:
        run = _drill(target_file, tmp_path)
        assert run.exit_code == 1, run.output
        assert "FAIL every order has its outbox event: 1 violation(s)" in run.output
        assert "PASS balances add up" in run.output
        assert _metrics(tmp_path / "drill.prom")[metric_names.RESTORE_DRILL_LAST_SUCCESS] == 0
    finally:
        # Put the ledger right again for the tests that follow (an order without its event).
        with superuser(backed_db) as conn:
            conn.execute(
                "INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload) "
                "SELECT 'position', 'x', 'order.filled', jsonb_build_object('order', "
                "jsonb_build_object('id', o.id::text)) FROM orders o WHERE NOT EXISTS (SELECT 1 "
                "FROM outbox_events e WHERE e.payload->'order'->>'id' = o.id::text)"
            )


def test_drill_keep_leaves_a_checkpointed_copy_and_the_command_that_removes_it(
    backed_db, ledger_app, target_file, tmp_path
):
    ensure_account(backed_db)
    write_orders(ledger_app, "ledger-1", 2)
    with superuser(backed_db) as conn:
        orders = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
    run = sparkops("drill", "--target-file", str(target_file), "--scratch-port", "0",
                   "--metrics-file", str(tmp_path / "drill.prom"), "--keep", "--json",
                   "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
    result = result_json(run)
    undo = result["undo"]
    scratch = next(o for o in result["facts"]["pgbackrest_options"] if o.startswith("--pg1-path"))
    data_dir = scratch.split("=", 1)[1]
    parent = os.path.dirname(data_dir)
    try:
        assert run.exit_code == 0, run.output
        assert "tear down the copy" not in run.output and "keep the copy running" in run.output
        assert "kept: the copy's PostgreSQL: running, port " in run.output
        assert f"to remove it: {undo}" in run.output
        # The copy serves the restored ledger, checkpointed on its new timeline (a backup of
        # it would be refused until then).
        port = int(re.search(r"running, port (\d+)", run.output).group(1))
        pg = backed_db.stack.pg
        live = pg.superuser_conninfo(backed_db.stack.dbname)
        with psycopg.connect(live.replace(f"port={pg.port}", f"port={port}")) as copy:
            assert copy.execute("SELECT count(*) FROM orders").fetchone()[0] == orders
            timelines = copy.execute(
                "SELECT (SELECT timeline_id FROM pg_control_checkpoint()), "
                "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
            ).fetchone()
        assert timelines[0] == timelines[1] > 1
        # The command it printed stops the copy and removes what the drill made: the
        # temporary parent it created, not only the data directory.
        assert f"rm -rf -- {parent};" in undo, undo
        done = subprocess.run(["sh", "-c", undo], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert not os.path.exists(parent)
        assert not port_open("127.0.0.1", port)
    finally:
        subprocess.run(["sh", "-c", undo], capture_output=True, timeout=120)
