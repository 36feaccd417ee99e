"""The runbooks on the lab, over SSH, against what the deploys built: PITR of the db host by
time, LSN and restore point with a ledger written through the app, and the app's rollback
(a release that fails its gate is undone by the deploy's switch and marked BAD; `sparkops
rollback` takes the app back and /version says so)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from click.testing import CliRunner

from app import metric_names
from deploys import release, runner
from lab import ssh
from runbooks import checks, drill
from sparkops import defaults
from sparkops.cli import main

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ACCOUNT = "runbook-e2e"
ROOT = defaults.APP_ROOT


def _by_group(hosts, group):
    return next(h for h in hosts if group in h["groups"])


def _ssh(h, command: str, timeout: float = 120) -> str:
    proc = ssh.run(h["ip"], command, timeout=timeout)
    assert proc.returncode == 0, f"{h['name']}: {command}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _psql(db, sql: str) -> str:
    quoted = sql.replace('"', '\\"')
    return _ssh(db, f'runuser -u postgres -- psql -XAtq -d {defaults.DATABASE_NAME} -c "{quoted}"')


def _sparkops(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _ready(app) -> bool:
    try:
        url = f"http://{app['ip']}:{defaults.APP_PORT}/readyz"
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def deployed(lab_hosts):
    """The deployed stack: a lab that already serves the app is used as it is (a redeploy
    would build a new release from this tree, minutes); otherwise the site deploy runs."""
    db, app = _by_group(lab_hosts, "db"), _by_group(lab_hosts, "app")
    if not _ready(app):
        _release_id, tarball = release.selected()
        result = runner.run_site(env={"SPARKOPS_RELEASE_TAR": str(tarball)})
        assert result.returncode == 0 and result.errors == 0, result.output[-6000:]
    current = _ssh(app, f"readlink {ROOT}/current").strip().rsplit("/", 1)[-1]
    _psql(db, "INSERT INTO accounts (id, name, opening_balance, cash_balance) "
              f"VALUES ('{ACCOUNT}', 'E2E', 1000000, 1000000) ON CONFLICT DO NOTHING")  # fmt: skip
    return {"hosts": lab_hosts, "release": current}


def _orders(app, count: int) -> list[str]:
    ids = []
    for n in range(count):
        body = {"account_id": ACCOUNT, "symbol": "BTCUSDT", "side": "buy" if n % 2 else "sell",
                "quantity": "0.01", "price": "65000.00"}  # fmt: skip
        r = httpx.post(f"http://{app['ip']}:{defaults.APP_PORT}/orders", json=body,
                       headers={"idempotency-key": str(uuid.uuid4())}, timeout=30)  # fmt: skip
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def _snapshot(db) -> dict[str, str]:
    return {name: _psql(db, sql).strip() for name, sql in checks.DEFAULT_CHECKS.items()}


def _present(db, ids) -> set[str]:
    listed = ",".join(f"'{i}'" for i in ids)
    return set(_psql(db, f"SELECT id FROM orders WHERE id IN ({listed})").split())


@pytest.mark.parametrize("kind", ["time", "lsn", "name"])
def test_pitr_on_the_db_host(deployed, kind, tmp_path):
    hosts = deployed["hosts"]
    db, app = _by_group(hosts, "db"), _by_group(hosts, "app")
    kept = _orders(app, 6)
    before = _snapshot(db)
    if kind == "time":
        target = ["--time", datetime.now(UTC).isoformat()]
    elif kind == "lsn":
        target = ["--lsn", _psql(db, "SELECT pg_current_wal_insert_lsn()").strip()]
    else:
        name = f"e2e-{uuid.uuid4().hex[:8]}"
        made = _sparkops("restore-point", "create", name, "--host", db["name"],
                         "--evidence-dir", str(tmp_path / "rp"))  # fmt: skip
        assert made.exit_code == 0, made.output
        target = ["--restore-point", name]
    lost = _orders(app, 4)
    _psql(db, "DROP TABLE trading_halts")
    run = _sparkops("restore", "--host", db["name"], *target, "--yes", "--json",
                    "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
    assert run.exit_code == 0, run.output
    result = json.loads(run.stdout)
    assert result["facts"]["check_values"] == before
    assert _snapshot(db) == before
    assert _present(db, kept) == set(kept) and _present(db, lost) == set()
    assert _psql(db, "SELECT to_regclass('trading_halts')").strip() == "trading_halts"
    assert _orders(app, 1)  # pgBouncer resumed; the app works again


def test_drill_on_the_db_host_passes_and_publishes_its_metric(deployed, tmp_path):
    """The drill restores onto a scratch copy beside the production cluster. The copy is
    started with pg_ctl and does not read /etc/postgresql, so it must take the settings
    recovery requires from the copy's control file (it failed on max_connections before)."""
    db, app = _by_group(deployed["hosts"], "db"), _by_group(deployed["hosts"], "app")
    _orders(app, 3)
    run = _sparkops("drill", "--host", db["name"], "--yes", "--json",
                    "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
    assert run.exit_code == 0, run.output
    metrics = _ssh(db, f"cat {defaults.NODE_EXPORTER_TEXTFILE_DIR}/{drill.METRICS_FILE_NAME}")
    assert f"{metric_names.RESTORE_DRILL_LAST_SUCCESS} 1" in metrics
    assert _psql(db, "SELECT count(*) FROM orders").strip() != "0"  # production untouched


def _copy_release(app_host, source: str, name: str, extra_env: str = "") -> None:
    """Another release on the app host: a copy of `source` with its own id (the same code)."""
    _ssh(app_host, f"set -e; cd {ROOT}/releases; rm -rf {name}; cp -a {source} {name}; "
                   f"rm -f {name}/BAD; printf 'SPARK_RELEASE_ID={name}\\n{extra_env}' > "
                   f"{name}/release.env; touch {name}/.installed")  # fmt: skip


def _version(app) -> str:
    return httpx.get(f"http://{app['ip']}:{defaults.APP_PORT}/version", timeout=5).json()["release"]


def test_failed_deploy_returns_and_rollback_goes_back(deployed, tmp_path):
    app = _by_group(deployed["hosts"], "app")
    a = deployed["release"]
    b = "e2e-release-b"
    try:
        # B cannot reach its database: the deploy's switch undoes it and marks it BAD.
        _copy_release(app, a, b, "SPARK_DATABASE_URL=postgresql://nobody@127.0.0.1:1/spark\\n")
        failed = ssh.run(app["ip"], f"/usr/local/sbin/spark-app-activate {b}", timeout=180)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert _version(app) == a
        assert _ssh(app, f"test -e {ROOT}/releases/{b}/BAD && echo bad").strip() == "bad"
        # Fixed, B goes live; then the rollback takes the app back to A.
        _copy_release(app, a, b)
        _ssh(app, f"/usr/local/sbin/spark-app-activate {b}", timeout=180)
        assert _version(app) == b
        run = _sparkops("rollback", "--host", app["name"], "--yes", "--json",
                        "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
        assert run.exit_code == 0, run.output
        result = json.loads(run.stdout)
        assert result["facts"]["live_release"] == a and _version(app) == a
        assert result["facts"]["rollback_seconds"] < 10
    finally:
        ssh.run(app["ip"], f"/usr/local/sbin/spark-app-activate {a}", timeout=180)
        ssh.run(app["ip"], f"rm -rf {ROOT}/releases/{b}")
