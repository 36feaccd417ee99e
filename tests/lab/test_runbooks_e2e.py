"""The runbooks on the lab, over SSH, against what the deploys built: PITR of the db host by
time, LSN and restore point with a ledger written through the app, and the app's rollback
(a release that fails its gate is undone by the deploy's switch and marked BAD; `sparkops
rollback` takes the app back and /version says so)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from lab import ssh
from sparkops import layout, metric_names
from sparkops.wait import wait_until
from tests.lab.stack import (
    ROOT,
    activate_copy,
    by_group,
    copy_release,
    on_host,
    orders,
    present,
    psql,
    scratch_release,
    snapshot,
    sparkops,
    version,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.mark.parametrize("kind", ["time", "lsn", "name"])
def test_pitr_on_the_db_host(deployed, kind, tmp_path):
    hosts = deployed["hosts"]
    db, app = by_group(hosts, "db"), by_group(hosts, "app")
    kept = orders(app, 6)
    before = snapshot(db)
    if kind == "time":
        target = ["--time", datetime.now(UTC).isoformat()]
    elif kind == "lsn":
        target = ["--lsn", psql(db, "SELECT pg_current_wal_insert_lsn()").strip()]
    else:
        name = f"e2e-{uuid.uuid4().hex[:8]}"
        made = sparkops("restore-point", "create", name, "--host", db["name"],
                         "--evidence-dir", str(tmp_path / "rp"))  # fmt: skip
        assert made.exit_code == 0, made.output
        target = ["--restore-point", name]
    lost = orders(app, 4)
    psql(db, "DROP TABLE trading_halts")
    run = sparkops("restore", "--host", db["name"], *target, "--yes", "--json",
                    "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
    assert run.exit_code == 0, run.output
    result = json.loads(run.stdout)
    assert result["facts"]["check_values"] == before
    assert snapshot(db) == before
    assert present(db, kept) == set(kept) and present(db, lost) == set()
    assert psql(db, "SELECT to_regclass('trading_halts')").strip() == "trading_halts"
    assert orders(app, 1)  # pgBouncer resumed; the app works again


def test_latest_with_the_db_server_down_ends_by_promotion(deployed, tmp_path):
    """The disaster case: PostgreSQL down on the db host. The plan reads the stopped
    server's hot_standby from /etc/postgresql (`postgres -C`), so the restore runs as a
    standby and ends by a promotion request, and serves everything archived."""
    hosts = deployed["hosts"]
    db, app = by_group(hosts, "db"), by_group(hosts, "app")
    kept = orders(app, 4)
    segment = psql(db, "SELECT pg_walfile_name(pg_switch_wal())").strip()
    wait_until(
        lambda: psql(db, "SELECT last_archived_wal FROM pg_stat_archiver").strip() >= segment,
        timeout=60,
        what=f"{segment} archived",
    )
    before = snapshot(db)
    on_host(db, f"systemctl stop {layout.POSTGRES_SERVICE}")
    run = sparkops("restore", "--host", db["name"], "--latest", "--yes", "--json",
                    "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
    assert run.exit_code == 0, run.output
    result = json.loads(run.stdout)
    assert "--type=standby" in result["facts"]["pgbackrest_options"]
    assert any("pg_promote" in line for line in result["plan"]), result["plan"]
    assert snapshot(db) == before
    assert present(db, kept) == set(kept)
    assert orders(app, 1)


def test_drill_on_the_db_host_passes_and_publishes_its_metric(deployed, tmp_path):
    """The drill restores onto a scratch copy beside the production cluster. The copy is
    started with pg_ctl and does not read /etc/postgresql, so it must take the settings
    recovery requires from the copy's control file (it failed on max_connections before)."""
    db, app = by_group(deployed["hosts"], "db"), by_group(deployed["hosts"], "app")
    orders(app, 3)
    run = sparkops("drill", "--host", db["name"], "--yes", "--json",
                    "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
    assert run.exit_code == 0, run.output
    metrics = on_host(db, f"cat {layout.DRILL_METRICS_FILE}")
    assert f"{metric_names.RESTORE_DRILL_LAST_SUCCESS} 1" in metrics
    assert psql(db, "SELECT count(*) FROM orders").strip() != "0"  # production untouched


def test_failed_deploy_returns_and_rollback_goes_back(deployed, tmp_path):
    app = by_group(deployed["hosts"], "app")
    a = deployed["release"]
    b = "e2e-release-b"
    with scratch_release(app, a, b):
        # B cannot reach its database: the deploy's switch undoes it and marks it BAD.
        copy_release(app, a, b, "SPARK_DATABASE_URL=postgresql://nobody@127.0.0.1:1/spark\\n")
        # A gate of 10 s, not the deploy's 60: B never becomes ready, so it would wait it all out.
        failed = ssh.run(
            app["ip"], f"APP_READY_TIMEOUT=10 /usr/local/sbin/spark-app-activate {b}", timeout=180
        )
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert version(app) == a
        assert on_host(app, f"test -e {ROOT}/releases/{b}/BAD && echo bad").strip() == "bad"
        # Fixed, B goes live; then the rollback takes the app back to A.
        activate_copy(app, a, b)
        assert version(app) == b
        run = sparkops("rollback", "--host", app["name"], "--yes", "--json",
                        "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
        assert run.exit_code == 0, run.output
        result = json.loads(run.stdout)
        assert result["facts"]["live_release"] == a and version(app) == a
        assert result["facts"]["rollback_seconds"] < 10


def _hit_the_start_limit(app) -> None:
    """Restart the app until systemd refuses to start it again (its default start rate limit,
    5 starts in 10 s: what a few quick deploys and rollbacks in an incident add up to)."""
    units = f"{layout.APP_SOCKET} {layout.APP_SERVICE}"
    out = on_host(app, "for i in 1 2 3 4 5 6 7 8; do "
                       f"systemctl restart {layout.APP_SERVICE} 2>&1 || break; done; "
                       f"systemctl is-active {units} || true")  # fmt: skip
    assert "too often" in out, out
    assert "failed" in out, out  # the socket fails with its service: connections refused


def test_rollback_and_switch_go_through_systemds_start_limit(deployed, tmp_path):
    app = by_group(deployed["hosts"], "app")
    a = deployed["release"]
    b = "e2e-release-limit"
    with scratch_release(app, a, b):
        activate_copy(app, a, b)
        _hit_the_start_limit(app)
        run = sparkops("rollback", "--host", app["name"], "--to", a, "--yes", "--json",
                       "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
        assert run.exit_code == 0, run.output
        assert version(app) == a
        _hit_the_start_limit(app)
        switched = ssh.run(app["ip"], f"/usr/local/sbin/spark-app-activate {b}", timeout=180)
        assert switched.returncode == 0, switched.stdout + switched.stderr
        assert version(app) == b
