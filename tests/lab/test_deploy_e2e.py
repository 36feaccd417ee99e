"""deploys/site.py end to end on the lab (db, app, monitor): the stack works, and a second
run changes nothing on any host.

The session's deploy (tests/lab/conftest.py: deployed_lab, a few minutes on a fresh lab)
and one more run of it (second_deploy, shared with the firewall module); the checks then
read the result. The release is built once and pinned (tests/lab/stack.py: site_env), so
both runs deploy the same release even while the working tree changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from alerts import rules
from deploys import release
from lab import ssh
from sparkops import defaults, envvars, layout, webaccess
from sparkops.wait import wait_until
from sparkops_cli.commands.app import keys_create_on_host, secret_in
from testkit import pyinfra_runner as runner
from tests.lab.stack import copy_release, site_env

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ACCOUNT = "e2e-acct"


def _by_group(hosts, group):
    return next(h for h in hosts if group in h["groups"])


def _ssh(h, command: str, timeout: float = 60) -> str:
    proc = ssh.run(h["ip"], command, timeout=timeout)
    assert proc.returncode == 0, f"{h['name']}: {command}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _psql(db, sql: str) -> str:
    return _ssh(db, f'runuser -u postgres -- psql -XAtq -d {defaults.DATABASE_NAME} -c "{sql}"')


@pytest.fixture(scope="module")
def deployed(deployed_lab, second_deploy):
    """The session's deployed lab, with this tree's deploy on it (second_deploy saw to it)."""
    return {**deployed_lab, "second": second_deploy, "release": release.selected()[0]}


def test_second_run_changes_nothing_on_any_host(deployed):
    second = deployed["second"]
    assert second.returncode == 0, second.output[-4000:]
    assert second.changed == 0, f"changed on the second run: {second.changed_operations()}"
    assert second.errors == 0


def test_block_incremental_on_debians_pgbackrest_is_refused_before_anything_changes(deployed):
    """The lab's db host has Debian 12's pgBackRest 2.45, where block incremental is a beta:
    asked for it, the deploy refuses, says what to do, and changes nothing."""
    db = _by_group(deployed["hosts"], "db")
    before = _ssh(db, f"md5sum {layout.PGBACKREST_CONF}; pgbackrest version")
    refused = runner.run_site(
        env=site_env(),
        extra_args=("--limit", db["name"], "--data", "pgbackrest_block_incremental=true"),
    )
    assert refused.returncode != 0, refused.output[-4000:]
    assert "pgbackrest_block_incremental needs pgBackRest 2.46 or later" in refused.output
    assert "'pgBackRest 2.45'" in refused.output and "nothing was changed" in refused.output
    assert refused.changed == 0, refused.changed_operations()
    assert _ssh(db, f"md5sum {layout.PGBACKREST_CONF}; pgbackrest version") == before
    assert "repo1-block" not in _ssh(db, f"cat {layout.PGBACKREST_CONF}")


def test_app_is_ready_through_pgbouncer_from_another_host(deployed):
    """From this machine, the lab's client (the firewall admits the app port from the clients
    only: tests/lab/test_firewall_lab.py)."""
    app = _by_group(deployed["hosts"], "app")
    body = httpx.get(f"http://{app['ip']}:{defaults.APP_PORT}/readyz", timeout=5).text
    ready = json.loads(body)
    assert ready["status"] == "ready"
    assert ready["release"] == deployed["release"]


def test_metrics_only_on_the_private_metrics_port(deployed):
    """The monitor host reads the app's metrics on APP_METRICS_PORT at the app host's private
    address; the public port answers a client 404 for /metrics, and loopback has no metrics
    port."""
    hosts = deployed["hosts"]
    app, monitor = _by_group(hosts, "app"), _by_group(hosts, "monitor")
    metrics = _ssh(monitor, f"curl -fsS --max-time 10 "
                            f"http://{app['ip']}:{defaults.APP_METRICS_PORT}/metrics")  # fmt: skip
    assert "spark_app_ready 1.0" in metrics
    # The public port, as a client (this machine; the firewall admits only clients there).
    public = httpx.get(f"http://{app['ip']}:{defaults.APP_PORT}/metrics", timeout=5)
    assert public.status_code == 404
    local = f"http://127.0.0.1:{defaults.APP_METRICS_PORT}/metrics"
    loopback = ssh.run(app["ip"], f"curl -fsS --max-time 3 {local}")
    assert loopback.returncode != 0  # bound to the private address only


def test_the_operator_halts_and_resumes_and_the_app_role_cannot(deployed):
    """On the deployed hosts: the schema owner's connection (migrations.env) acts as the
    operator role and the log names who; the app's own connection (app.env) is refused."""
    hosts = deployed["hosts"]
    app, db = _by_group(hosts, "app"), _by_group(hosts, "db")
    sparkops = f"{layout.APP_CURRENT_LINK}/venv/bin/sparkops"
    as_owner = f"set -a; . {layout.MIGRATIONS_ENV_FILE}; set +a; {sparkops} app"
    halted = _ssh(app, f"{as_owner} halt ETHUSDT --reason lab-drill --operator e2e-alice")
    assert "halted for ETHUSDT by e2e-alice" in halted
    resumed = _ssh(app, f"{as_owner} resume ETHUSDT --operator e2e-bob")
    assert "resumed for ETHUSDT by e2e-bob" in resumed
    log = _psql(db, "SELECT action || ':' || operator FROM trading_halt_log "
                    "WHERE reason = 'lab-drill' ORDER BY id")  # fmt: skip
    assert log.split() == ["halt:e2e-alice", "resume:e2e-bob"]
    as_app = (f"set -a; . {layout.APP_ENV_FILE}; set +a; "
              f"{envvars.MIGRATIONS_URL}=\"${envvars.DATABASE_URL}\" {sparkops} app")  # fmt: skip
    refused = ssh.run(app["ip"], f"{as_app} halt global --reason x --operator mallory", timeout=60)
    assert refused.returncode == 1 and "may not act as" in refused.stdout + refused.stderr
    assert _psql(db, "SELECT count(*) FROM trading_halts").strip() == "0"


def test_an_order_through_the_api_is_in_postgresql(deployed):
    hosts = deployed["hosts"]
    app, db = _by_group(hosts, "app"), _by_group(hosts, "db")
    _psql(
        db,
        "INSERT INTO accounts (id, name, opening_balance, cash_balance) "
        f"VALUES ('{ACCOUNT}', 'E2E', 100000, 100000) ON CONFLICT DO NOTHING",
    )
    order = {
        "account_id": ACCOUNT,
        "symbol": "BTCUSDT",
        "side": "buy",
        "quantity": "0.01",
        "price": "65000.00",
    }
    secret = secret_in(_ssh(app, keys_create_on_host("e2e", [ACCOUNT], ["read", "trade"])))
    r = httpx.post(
        f"http://{app['ip']}:{defaults.APP_PORT}/orders",
        json=order,
        headers={"authorization": f"Bearer {secret}", "idempotency-key": str(uuid.uuid4())},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    order_id = r.json()["id"]
    assert _psql(db, f"SELECT account_id FROM orders WHERE id = '{order_id}'").strip() == ACCOUNT


def test_wal_is_archived_and_a_full_backup_exists(deployed):
    db = _by_group(deployed["hosts"], "db")
    _psql(db, "CREATE TABLE IF NOT EXISTS e2e_wal (x int); INSERT INTO e2e_wal VALUES (1)")
    _psql(db, "SELECT pg_switch_wal()")

    def archived() -> dict | None:
        raw = _ssh(
            db,
            f"runuser -u postgres -- pgbackrest --stanza={defaults.PGBACKREST_STANZA}"
            " --output=json info",
        )
        info = json.loads(raw)[0]
        return info if info.get("archive") and info["archive"][0].get("max") else None

    info = wait_until(archived, timeout=90, what="pgBackRest to show archived WAL")
    assert info["status"]["code"] == 0
    assert any(b["type"] == "full" for b in info["backup"])
    stats = _psql(db, "SELECT archived_count, failed_count FROM pg_stat_archiver").strip()
    archived_count = int(stats.split("|")[0])
    assert archived_count >= 1


def test_postgresql_unit_stops_with_the_fast_shutdown_even_while_starting(deployed):
    """The drop-in is in force: a stop of the unit while it is still starting sends SIGINT
    (PostgreSQL's fast shutdown), not SIGTERM (the smart one, which waits for sessions)."""
    db = _by_group(deployed["hosts"], "db")
    shown = _ssh(db, f"systemctl show -p KillSignal -p DropInPaths {layout.POSTGRES_SERVICE}")
    assert "KillSignal=2\n" in shown, shown
    assert layout.POSTGRES_UNIT_DROPIN in shown, shown


def test_prometheus_reports_every_target_up(deployed):
    monitor = _by_group(deployed["hosts"], "monitor")
    url = f"{_prometheus(monitor)}/api/v1/targets"

    def all_up():
        targets = webaccess.get(url, timeout=5).json()["data"]["activeTargets"]
        down = [
            (t["labels"]["job"], t["scrapeUrl"], t.get("lastError"))
            for t in targets
            if t["health"] != "up"
        ]
        return targets if targets and not down else None

    targets = wait_until(all_up, timeout=120, what="every Prometheus target to be up")
    jobs = {t["labels"]["job"] for t in targets}
    assert {"spark-app", "spark-outbox", "pgbouncer", "postgres", "node", "prometheus"} <= jobs
    # Prometheus reaches itself and Alertmanager over HTTPS with basic auth.
    scheme = {t["labels"]["job"]: t["scrapeUrl"].split(":", 1)[0] for t in targets}
    assert scheme["prometheus"] == scheme["alertmanager"] == "https"
    (alertmanager,) = webaccess.get(
        f"{_prometheus(monitor)}/api/v1/alertmanagers", timeout=5
    ).json()["data"]["activeAlertmanagers"]
    assert alertmanager["url"].startswith("https://")


def _prometheus(monitor) -> str:
    return webaccess.monitor_url(monitor["ip"], defaults.PROMETHEUS_PORT, "lab")


def _alertmanager(monitor) -> str:
    return webaccess.monitor_url(monitor["ip"], defaults.ALERTMANAGER_PORT, "lab")


def test_prometheus_and_alertmanager_refuse_plain_http_and_no_credentials(deployed):
    monitor = _by_group(deployed["hosts"], "monitor")
    for base in (_prometheus(monitor), _alertmanager(monitor)):
        access = webaccess.access_for(base)
        plain = base.replace("https://", "http://")
        # Plain HTTP gets a TLS server's refusal (400), never the API.
        assert httpx.get(f"{plain}/-/ready", timeout=5).status_code == 400
        anonymous = httpx.get(f"{base}/-/ready", timeout=5, verify=access.verify())
        assert anonymous.status_code == 401
        wrong = httpx.get(f"{base}/-/ready", timeout=5, verify=access.verify(),
                          auth=(access.username, "not-the-password"))  # fmt: skip
        assert wrong.status_code == 401
        assert webaccess.get(f"{base}/-/ready", timeout=5).status_code == 200
    # Alertmanager has no cluster (gossip) port on a single node.
    listening = _ssh(monitor, "ss -Hltnu")
    assert ":9094 " not in listening, listening


def test_every_database_connection_is_tls(deployed):
    """The app's and the exporter's connections to pgBouncer, and pgBouncer's and
    postgres_exporter's to PostgreSQL, are TLS; a client without TLS is refused."""
    db, app = _by_group(deployed["hosts"], "db"), _by_group(deployed["hosts"], "app")
    rows = _ssh(db, "runuser -u postgres -- psql -XAtq -d spark -c \"select usename, ssl "
                "from pg_stat_activity join pg_stat_ssl using (pid) where client_addr is not "
                "null and datname = 'spark'\"")  # fmt: skip
    seen = {tuple(line.split("|")) for line in rows.split()}
    assert (defaults.ROLE_APP, "t") in seen and (defaults.ROLE_MONITORING, "t") in seen, seen
    assert not [row for row in seen if row[1] != "t"], seen
    # Straight from the app host, without TLS: PostgreSQL has no line for it, pgBouncer
    # requires TLS.
    python = f"{layout.APP_CURRENT_LINK}/venv/bin/python"
    for port, refusal in ((defaults.POSTGRES_PORT, "no encryption"),
                          (defaults.PGBOUNCER_PORT, "SSL required")):  # fmt: skip
        code = (f"import psycopg; psycopg.connect('host={db['ip']} port={port} user="
                f"{defaults.ROLE_APP} dbname={defaults.DATABASE_NAME} sslmode=disable "
                "password=x connect_timeout=5')")  # fmt: skip
        tried = ssh.run(app["ip"], f'{python} -c "{code}"', timeout=60)
        assert tried.returncode != 0 and refusal in tried.stderr, (port, tried.stderr[-500:])


def test_alertmanager_runs_the_deployed_configuration(deployed):
    monitor = _by_group(deployed["hosts"], "monitor")
    checked = _ssh(monitor, "amtool check-config /etc/prometheus/alertmanager.yml")
    assert "SUCCESS" in checked and "1 inhibit rules" in checked
    # The lab has no receivers: everything stays in Alertmanager.
    routed = _ssh(
        monitor,
        "amtool config routes test --config.file=/etc/prometheus/alertmanager.yml "
        "severity=critical alertname=PostgresDown",
    )
    assert routed.strip() == "null"
    status = webaccess.get(f"{_alertmanager(monitor)}/api/v2/status", timeout=5)
    assert "inhibit_rules" in status.json()["config"]["original"]


def test_the_header_smoke_test_passes_against_the_deployed_app(deployed):
    app = _by_group(deployed["hosts"], "app")
    url = f"http://{app['ip']}:{defaults.APP_PORT}"
    r = subprocess.run(
        [str(Path(sys.executable).parent / "sparkops"), "smoke-headers", "--base-url", url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # A lab address over plain http is made a secure context for the browser, and said so.
    assert f"--unsafely-treat-insecure-origin-as-secure={url}" in r.stdout
    assert "crossOriginIsolated=true, CSP violations=0" in r.stdout


def test_the_weekly_drill_runs_on_the_db_host_and_feeds_its_alert(deployed):
    """The timer the deploy installs starts the drill unit; its result reaches Prometheus
    through node_exporter, and RestoreDrillFailed's expression is then empty."""
    db, monitor = _by_group(deployed["hosts"], "db"), _by_group(deployed["hosts"], "monitor")
    timers = _ssh(db, "systemctl list-timers --all --no-pager spark-restore-drill.timer")
    assert "spark-restore-drill.service" in timers
    assert _ssh(db, "systemctl is-enabled spark-restore-drill.timer").strip() == "enabled"
    _ssh(db, "systemctl start spark-restore-drill.service", timeout=900)
    metric = _ssh(db, f"cat {layout.NODE_EXPORTER_TEXTFILE_DIR}/spark_restore_drill.prom")
    assert "spark_restore_drill_last_success 1" in metric, metric
    drill_alert = next(a for a in rules.ALERTS if a.name == "RestoreDrillFailed")
    query = f"{_prometheus(monitor)}/api/v1/query"

    def answered(expr):
        return webaccess.get(query, params={"query": expr}, timeout=5).json()["data"]["result"]

    wait_until(lambda: answered("spark_restore_drill_last_success == 1"), timeout=120,
               what="the drill's result in Prometheus")  # fmt: skip
    assert answered(drill_alert.expr) == []


def _validate(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    sparkops = str(Path(sys.executable).parent / "sparkops")
    argv = [sparkops, "validate", "--evidence-dir", str(tmp_path), *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    (folder,) = tmp_path.glob("*-validate")
    return r, folder


def test_validate_passes_every_check_on_the_lab_and_leaves_the_evidence(deployed, tmp_path):
    r, folder = _validate(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = (folder / "validation_summary.md").read_text()
    assert summary.startswith("# Validation: PASS") and "FAIL" not in summary
    for name in ("position_unique_validation.log", "idempotency_first.log",
                 "idempotency_duplicate.log", "idempotency_mismatch.log",
                 "money_test_coverage.txt", "pitr_lsn_before.txt", "pitr_lsn_after.txt",
                 "pgbouncer_stats.txt", "csp_smoke_headers.txt", "csp_smoke_browser.txt",
                 "restore_drill.txt", "final_summary.txt", "report.html"):  # fmt: skip
        assert (folder / name).is_file(), name
    assert "idempotent-replayed: true" in (folder / "idempotency_duplicate.log").read_text()
    assert "HTTP 422" in (folder / "idempotency_mismatch.log").read_text()
    assert (folder / "report.html").read_text().count("<svg") == 5
    assert "PASS restore drill" in r.stderr  # progress, as it runs
    print(r.stdout.splitlines()[-1])  # the wall time, for the report


def test_validate_with_prometheus_unreachable_fails_its_checks_and_runs_the_others(
    deployed, tmp_path
):
    dead = "http://127.0.0.1:9"
    r, folder = _validate(tmp_path, "--prometheus", dead, "--skip", "restore drill")
    assert r.returncode == 1
    final = (folder / "final_summary.txt").read_text()
    assert "FAIL alert rules loaded" in final and "FAIL dashboard queries" in final
    for name in ("position unique index", "idempotency sequence", "money suite coverage",
                 "pgbackrest check and info", "WAL switch archived",
                 "pgBouncer pools and stats", "security headers"):  # fmt: skip
        assert f"PASS {name}" in final, final
    assert "restore drill" not in final


def _assert_no_preflight_left(app) -> None:
    """The preflight's transient unit is gone and nothing listens on its port."""
    left = _ssh(app, f"systemctl is-active {layout.APP_PREFLIGHT_UNIT} || true; "
                     f"ss -Hltn 'sport = :{defaults.APP_PREFLIGHT_PORT}'")  # fmt: skip
    assert left.split() == ["inactive"], left


def test_a_release_that_never_gets_ready_is_refused_by_its_preflight_or_switched_back(deployed):
    """spark-app-activate on a release whose app cannot start. Its preflight (the release
    started beside the live app by systemd-run) refuses it: exit 1, BAD, `current` untouched
    and the live app never restarted, the preflight's unit gone. Past the preflight
    (APP_PREFLIGHT=no), the gate after the switch catches it: exit 1, `current` back on the
    good release, which answers /readyz again."""
    app = _by_group(deployed["hosts"], "app")
    good = deployed["release"]
    bad = "0.0.0-never-ready"
    releases = "/opt/spark-app/releases"
    # A copy of the good release whose app exits at once (a setting it refuses at start).
    copy_release(app, good, bad, f"{envvars.DB_POOL_SIZE}=not-a-number\\n")
    main_pid = f"systemctl show -p MainPID --value {layout.APP_SERVICE}"
    url = f"http://127.0.0.1:{defaults.APP_PORT}/readyz"
    try:
        live_pid = _ssh(app, main_pid).strip()
        proc = ssh.run(app["ip"], f"APP_READY_TIMEOUT=20 spark-app-activate {bad}", timeout=180)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"release {bad} failed its preflight" in proc.stderr, proc.stderr
        assert "not-a-number" in proc.stderr  # the preflight's own log, shown
        assert _ssh(app, "readlink /opt/spark-app/current").strip() == f"releases/{good}"
        assert _ssh(app, main_pid).strip() == live_pid  # the live app was never restarted
        assert _ssh(app, f"cat {releases}/{bad}/BAD").startswith("health gate failed in preflight")
        _assert_no_preflight_left(app)
        assert json.loads(_ssh(app, f"curl -fsS --max-time 3 {url}"))["release"] == good

        proc = ssh.run(
            app["ip"], f"APP_PREFLIGHT=no APP_READY_TIMEOUT=5 spark-app-activate {bad}", timeout=180
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "switched back" in proc.stderr
        assert _ssh(app, "readlink /opt/spark-app/current").strip() == f"releases/{good}"
        body = wait_until(
            lambda: json.loads(_ssh(app, f"curl -fsS --max-time 3 {url}")),
            timeout=60,
            what="the good release to be ready again",
        )
        assert body["release"] == good
    finally:
        _ssh(app, f"rm -rf {releases}/{bad}")


def test_a_good_release_passes_its_preflight_then_goes_live(deployed):
    """The preflight on the lab's real systemd: a copy of the live release answers /readyz
    beside it, then the switch takes it live; the preflight leaves no unit and no listener."""
    app = _by_group(deployed["hosts"], "app")
    good = deployed["release"]
    copy = "0.0.0-preflight-good"
    releases = "/opt/spark-app/releases"
    copy_release(app, good, copy)
    url = f"http://127.0.0.1:{defaults.APP_PORT}/readyz"
    try:
        proc = ssh.run(app["ip"], f"spark-app-activate {copy}", timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"preflight: release {copy} answered /readyz" in proc.stderr, proc.stderr
        assert json.loads(_ssh(app, f"curl -fsS --max-time 3 {url}"))["release"] == copy
        _assert_no_preflight_left(app)
    finally:
        back = ssh.run(app["ip"], f"spark-app-activate {good}", timeout=180)
        _ssh(app, f"rm -rf {releases}/{copy}")
    assert back.returncode == 0, back.stdout + back.stderr
    assert json.loads(_ssh(app, f"curl -fsS --max-time 3 {url}"))["release"] == good
