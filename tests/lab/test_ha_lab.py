"""The site deploy on a Patroni cluster lab (db, db2, app, monitor; etcd on db, db2, monitor):
a second deploy changes nothing, the cluster has a leader and a synchronous standby, the app
reaches the database only through its route, and when the primary's host dies (its
namespace killed) under order traffic, orders succeed again on the other node and no
acknowledged order is missing.

Not in `make test` (about 8 minutes on 2 cores: four hosts, a cluster bootstrap and a
failover); `make test-ha-lab` runs it. A lab of its own, like test_two_app_hosts.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alerts import config as alert_config
from lab import config, control, ssh, state
from sparkops import defaults, layout, webaccess
from sparkops.wait import wait_until
from sparkops_cli.commands.app import keys_create_on_host, secret_in
from testkit import pyinfra_runner as runner
from tests.lab.conftest import SHARE_LAB_ENV, _session, require_lab_machine
from tests.lab.stack import site_env

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.ha_lab]

HOSTS = ("db", "db2", "app", "monitor")
ACCOUNT = "ha-lab"
PATRONICTL = f"patronictl -c {layout.PATRONI_CONFIG}"
LAB_INVENTORY = Path(__file__).resolve().parents[2] / "inventories" / "lab.py"


@pytest.fixture(scope="module")
def ha_lab() -> Iterator[list[dict[str, Any]]]:
    require_lab_machine()
    up = state.read_hosts()
    if up is not None and not _session["owns_lab"]:
        reason = (
            f"a lab (SPARKOPS_LAB_ID={config.LAB_ID}) was up before this session, and this "
            f"module needs one of its own ({', '.join(HOSTS)}): not taking someone's lab down"
        )
        if os.environ.get(SHARE_LAB_ENV) == "1":
            pytest.skip(f"{reason} ({SHARE_LAB_ENV}=1)")
        pytest.fail(f"{reason}. Run it with another SPARKOPS_LAB_ID", pytrace=False)
    if up is not None:
        control.down(log=lambda _msg: None)
    result = control.up(HOSTS, log=lambda _msg: None)
    try:
        yield result.hosts
    finally:
        control.down(log=lambda _msg: None)
        if up is not None:
            control.up(config.DEFAULT_HOSTS, log=lambda _msg: None)


def _host(hosts, name: str) -> dict[str, Any]:
    return next(h for h in hosts if h["name"] == name)


def _ssh(h, command: str, timeout: float = 120) -> str:
    proc = ssh.run(h["ip"], command, timeout=timeout)
    assert proc.returncode == 0, f"{h['name']}: {command}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _members(h) -> dict[str, dict]:
    return {m["Member"]: m for m in json.loads(_ssh(h, f"{PATRONICTL} list -f json"))}


def _psql(h, sql: str) -> str:
    quoted = sql.replace('"', '\\"')
    return _ssh(h, f'runuser -u postgres -- psql -XAtq -d {defaults.DATABASE_NAME} -c "{quoted}"')


def _first_error(output: str) -> str:
    """The deploy's output around its first error (the results table alone names no cause)."""
    at = output.find("Error")
    return output[max(0, at - 3000) : at + 1500] if at >= 0 else output[-6000:]


@pytest.fixture(scope="module")
def deployed(ha_lab):
    env = site_env()
    first = runner.run_site(env=env)
    assert first.returncode == 0 and first.errors == 0, _first_error(first.output)
    second = runner.run_site(env=env)
    print(f"\nfirst deploy {first.seconds:.0f}s, second {second.seconds:.0f}s")
    return {"hosts": ha_lab, "second": second}


def test_a_second_deploy_changes_nothing(deployed):
    second = deployed["second"]
    assert second.returncode == 0 and second.errors == 0, second.output[-4000:]
    assert second.changed == 0, second.changed_operations()


def test_the_cluster_has_a_leader_and_a_synchronous_standby(deployed):
    members = _members(_host(deployed["hosts"], "db"))
    roles = sorted(m["Role"] for m in members.values())
    assert roles == ["Leader", "Sync Standby"], members
    assert all(m["State"] in ("running", "streaming") for m in members.values()), members


def test_the_primarys_backup_unit_copies_from_the_replica_between_hosts(deployed):
    """The timer's unit started by hand on both nodes: the replica's run is skipped, the
    primary's copies the files from the other host through its pgBackRest TLS server (the
    deploy's certificates, firewall flow and units)."""
    hosts = deployed["hosts"]
    members = _members(_host(hosts, "db"))
    leader = next(name for name, m in members.items() if m["Role"] == "Leader")
    replica = next(name for name in members if name != leader)
    for name in (leader, replica):
        h = _host(hosts, name)
        _ssh(h, "systemctl is-active pgbackrest-server.service")
        since = _ssh(h, "date '+%Y-%m-%d %H:%M:%S'").strip()
        done = ssh.run(h["ip"], "systemctl start pgbackrest-backup@incr.service", timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        journal = _ssh(h, f"journalctl -u pgbackrest-backup@incr.service --since '{since}' "
                          "--no-pager -o cat")  # fmt: skip
        if name == leader:
            assert "replay on the standby reached" in journal, journal[-3000:]
            assert "backup command end: completed successfully" in journal, journal[-3000:]
        else:
            assert "backup command begin" not in journal, journal[-3000:]  # skipped


def test_the_app_reaches_the_database_only_through_its_route(deployed):
    app = _host(deployed["hosts"], "app")
    env = _ssh(app, f"cat {layout.APP_ENV_FILE} {layout.MIGRATIONS_ENV_FILE}")
    assert f"@127.0.0.1:{defaults.DB_ROUTE_PRIMARY_PORT}/" in env
    assert f"@127.0.0.1:{defaults.DB_ROUTE_MIGRATIONS_PORT}/" in env
    for db in ("db", "db2"):
        assert f"@{_host(deployed['hosts'], db)['ip']}:" not in env
    ready = httpx.get(f"http://{app['ip']}:{defaults.APP_PORT}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text


def test_patronis_rest_api_is_https_verified_by_its_clients_between_hosts(deployed):
    """From the app host (as the route's checks ask): HTTPS verified against the environment's
    CA answers, plain HTTP does not; Prometheus on the monitor host scrapes every node's
    REST API over HTTPS (its `patroni` targets are up)."""
    hosts = deployed["hosts"]
    app, monitor = _host(hosts, "app"), _host(hosts, "monitor")
    for db in ("db", "db2"):
        url = f"{_host(hosts, db)['ip']}:{defaults.PATRONI_REST_PORT}/patroni"
        answer = json.loads(_ssh(app, f"curl -fsS --max-time 5 --cacert {layout.TLS_CA_FILE} "
                                     f"https://{url}"))  # fmt: skip
        assert answer["state"] == "running", answer
        plain = ssh.run(app["ip"], f"curl -fsS --max-time 5 http://{url}")
        assert plain.returncode != 0, plain.stdout
    query = (
        f"curl -fsS --max-time 5 --cacert {layout.TLS_CA_FILE} "
        f'-u "{webaccess.USERNAME}:$(cat {layout.MONITOR_WEB_PASSWORD_FILE})" '
        f"'https://{monitor['ip']}:{defaults.PROMETHEUS_PORT}/api/v1/targets?state=active'"
    )

    def patroni_targets() -> list[dict]:
        targets = json.loads(_ssh(monitor, query))["data"]["activeTargets"]
        return [t for t in targets if t["labels"]["job"] == alert_config.JOB_PATRONI]

    wait_until(
        lambda: len(patroni_targets()) == 2 and all(t["health"] == "up" for t in patroni_targets()),
        timeout=90,
        what="Prometheus scrapes both nodes' REST API over HTTPS",
    )
    assert all(t["scrapeUrl"].startswith("https://") for t in patroni_targets())


class OrderClient:
    """POST /orders at a steady pace; records acknowledged order ids and failures."""

    def __init__(self, url: str, secret: str) -> None:
        self.url, self.secret = url, secret
        self.acked: list[tuple[str, float]] = []
        self.failed: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                order = {
                    "account_id": ACCOUNT,
                    "symbol": "BTCUSDT",
                    "side": "buy",
                    "quantity": "0.001",
                    "price": "65000.00",
                }
                headers = {
                    "authorization": f"Bearer {self.secret}",
                    "idempotency-key": str(uuid.uuid4()),
                }
                try:
                    r = client.post(self.url, json=order, headers=headers)
                    if r.status_code == 201:
                        self.acked.append((r.json()["id"], time.monotonic()))
                    else:
                        self.failed.append(time.monotonic())
                except httpx.HTTPError:
                    self.failed.append(time.monotonic())
                self._stop.wait(0.1)

    def __enter__(self) -> OrderClient:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def trader(deployed) -> tuple[str, str]:
    """(orders URL, API key secret) for an account of the lab's own."""
    hosts = deployed["hosts"]
    app = _host(hosts, "app")
    members = _members(_host(hosts, "db"))
    leader = next(name for name, m in members.items() if m["Role"] == "Leader")
    _psql(
        _host(hosts, leader),
        "INSERT INTO accounts (id, name, opening_balance, cash_balance) "
        f"VALUES ('{ACCOUNT}', 'HA', 100000000, 100000000) ON CONFLICT DO NOTHING",
    )
    secret = secret_in(_ssh(app, keys_create_on_host("ha-lab", [ACCOUNT], ["read", "trade"])))
    return f"http://{app['ip']}:{defaults.APP_PORT}/orders", secret


def test_a_switchover_under_orders_fails_none(deployed, trader, tmp_path):
    """`sparkops cluster switchover` with pgBouncer paused around it, orders flowing through the
    app: every order answered 201, the primary moved, the old one replicates."""
    db = _host(deployed["hosts"], "db")
    old = next(n for n, m in _members(db).items() if m["Role"] == "Leader")
    with OrderClient(*trader) as client:
        wait_until(lambda: len(client.acked) >= 20, timeout=60, what="orders flow")
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "sparkops_cli.main", "cluster", "switchover",
             "--inventory", str(LAB_INVENTORY), "--yes", "--json",
             "--evidence-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        seconds = time.monotonic() - started
        after = len(client.acked)
        wait_until(lambda: len(client.acked) >= after + 20, timeout=60, what="orders flow after")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    print(f"\nswitchover {seconds:.1f} s by the clock, facts {result['facts']}; "
          f"{len(client.acked)} orders acknowledged, {len(client.failed)} failed")  # fmt: skip
    assert result["facts"]["pgbouncer_paused"] is True
    assert result["facts"]["new_leader"] != old
    assert client.failed == [], f"{len(client.failed)} orders failed during the switchover"
    members = _members(db)
    assert members[old]["Role"] in ("Replica", "Sync Standby"), members


def test_the_whole_cluster_is_restored_to_a_time(deployed, tmp_path):
    """`sparkops cluster restore --time` on the lab: the primary and the replica both end at
    the moment between two commits, the replica cloned again, the app ready again."""
    hosts = deployed["hosts"]
    leader = next(n for n, m in _members(_host(hosts, "db")).items() if m["Role"] == "Leader")
    lead = _host(hosts, leader)
    # The lab's repository is posix, one per node (docs/ha.md): a node that became primary
    # made its own stanza and full backup (Patroni's role-change callback).
    info = f"runuser -u postgres -- pgbackrest --stanza={defaults.PGBACKREST_STANZA} "
    info += "--output=json info"

    def newest_full() -> float | None:
        backups = json.loads(_ssh(lead, info))[0].get("backup", [])
        stops = [b["timestamp"]["stop"] for b in backups if b.get("type") == "full"]
        return max(stops) if stops else None

    stop = wait_until(newest_full, timeout=300, what=f"a full backup in {leader}'s repository")
    # A backup's stop time has whole seconds: the target must be clear of it.
    wait_until(lambda: time.time() > stop + 2, timeout=10, what="two seconds past the backup")
    _psql(lead, "CREATE TABLE IF NOT EXISTS restore_marks (name text PRIMARY KEY)")
    _psql(lead, "INSERT INTO restore_marks VALUES ('before')")
    target = _psql(
        lead,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    ).strip()
    _psql(lead, "INSERT INTO restore_marks VALUES ('after')")
    done = subprocess.run(
        [sys.executable, "-m", "sparkops_cli.main", "cluster", "restore", "--time", target,
         "--inventory", str(LAB_INVENTORY), "--yes", "--json", "--evidence-dir", str(tmp_path),
         "--check-sql", "marks=SELECT count(*) FROM restore_marks"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    facts = json.loads(done.stdout)["facts"]
    print(f"\ncluster restore on the lab: primary serving after "
          f"{facts['primary_serving_seconds']} s, replicas streaming after "
          f"{facts['replicas_streaming_seconds']} s")  # fmt: skip
    for name in ("db", "db2"):
        wait_until(
            lambda name=name: _psql(_host(hosts, name), "SELECT string_agg(name, ',') "
                                    "FROM restore_marks").strip() == "before",
            timeout=60, what=f"{name} has the restored data",
        )  # fmt: skip
    app = _host(hosts, "app")
    wait_until(
        lambda: (
            httpx.get(f"http://{app['ip']}:{defaults.APP_PORT}/readyz", timeout=5).status_code
            == 200
        ),
        timeout=60,
        what="the app ready again",
    )


def _kill_host(name: str) -> None:
    """The host dies: its PID namespace's launcher SIGKILLed (the lab's state has its record;
    `unshare --kill-child` takes every process of the host with it)."""
    record = state.load()["hosts"][name].get("process")
    assert state.is_alive(record), f"no live process recorded for lab host {name}: {record}"
    state.kill(record, what=f"lab host {name}")
    assert not state.is_alive(record)


def test_the_primarys_host_dies_under_orders_and_none_acknowledged_is_lost(deployed, trader):
    hosts = deployed["hosts"]
    members = _members(_host(hosts, "db"))
    leader = next(name for name, m in members.items() if m["Role"] == "Leader")
    survivor = _host(hosts, "db2" if leader == "db" else "db")
    # Synchronous mode promotes only the synchronous standby: the cluster must have one (the
    # runbooks before this test end so) for the kill to be survivable.
    assert sorted(m["Role"] for m in members.values()) == ["Leader", "Sync Standby"], members
    with OrderClient(*trader) as client:
        wait_until(lambda: len(client.acked) >= 20, timeout=60, what="orders flow")
        before = len(client.acked)
        killed_at = time.monotonic()
        _kill_host(leader)
        wait_until(
            lambda: (
                any(t > killed_at for _, t in client.acked[before:])
                and len(client.acked) >= before + 20
            ),
            timeout=120,
            what="orders succeed again after the primary's host died",
        )
    failed = [t for t in client.failed if t >= killed_at]
    resumed = next(t for _, t in client.acked if t > max(failed, default=killed_at))
    ids = ",".join(f"'{order_id}'" for order_id, _ in client.acked)
    stored = int(_psql(survivor, f"SELECT count(*) FROM orders WHERE id IN ({ids})").strip())
    print(
        f"\nfailover: {len(client.acked)} orders acknowledged, {len(failed)} failed after the "
        f"kill, orders resumed after {resumed - killed_at:.1f} s, "
        f"{len(client.acked) - stored} acknowledged orders missing"
    )
    assert stored == len(client.acked), "acknowledged orders lost in the failover"
    assert _members(survivor)[survivor["name"]]["Role"] == "Leader"
    assert resumed - killed_at < 90
