"""`sparkops demo`: the README's main command.

Brings the local lab up (db, app, monitor), runs the site deploy on it with pyinfra over
SSH, drives a little traffic through the app (an order, a replay, a refused float, a risk
block), shows the backup repository, and prints where to look.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import click
import httpx

from sparkops import defaults, webaccess
from sparkops.wait import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


def _step(title: str) -> float:
    click.secho(f"\n==> {title}", bold=True)
    return time.monotonic()


def _done(started: float) -> None:
    click.echo(f"    ({time.monotonic() - started:.1f} s)")


def _host(hosts: list[dict], group: str) -> dict:
    for h in hosts:
        if group in h["groups"]:
            return h
    raise click.ClickException(f"the lab has no {group} host")


def _demo_key(account: str = "demo") -> str:
    """A new API key for the demo account, made on the app host with `sparkops app keys
    create` (its secret is printed once there and kept only in this process)."""
    from sparkops_cli.commands.app import keys_create_on_host, secret_in

    cmd = keys_create_on_host("demo", [account], ["read", "trade"])
    proc = subprocess.run(
        [sys.executable, "-m", "sparkops_cli.main", "lab", "ssh", "app", "--", cmd],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    if proc.returncode != 0:
        raise click.ClickException(f"could not create the demo API key: {proc.stderr.strip()}")
    return secret_in(proc.stdout)


def _traffic(app_url: str, secret: str, account: str = "demo") -> None:
    order = {"account_id": account, "symbol": "BTCUSDT", "side": "buy",
             "quantity": "0.01000", "price": "65000.00"}  # fmt: skip
    key = str(uuid.uuid4())
    auth = {"authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=app_url, timeout=10, headers=auth) as client:
        shots = [
            ("order", lambda: client.post("/orders", json=order, headers={"idempotency-key": key})),
            ("same key again (replay)",
             lambda: client.post("/orders", json=order, headers={"idempotency-key": key})),
            ("price as a float (refused)",
             lambda: client.post("/orders", json={**order, "price": 65000.0},
                                 headers={"idempotency-key": str(uuid.uuid4())})),
            ("price outside the band (risk block)",
             lambda: client.post("/orders", json={**order, "price": "90000.00"},
                                 headers={"idempotency-key": str(uuid.uuid4())})),
            ("CSP violation report",
             lambda: client.post("/csp-report",
                                 json={"csp-report": {"violated-directive": "script-src"}},
                                 headers={"content-type": "application/csp-report"})),
        ]  # fmt: skip
        for label, shot in shots:
            r = shot()
            detail = (r.headers.get("idempotent-replayed") and "replayed") or ""
            try:
                body = r.json()
                detail = detail or body.get("error") or body.get("status") or ""
            except ValueError:
                pass
            click.echo(f"    {label:38} -> {r.status_code} {detail}")
        positions = client.get("/positions", params={"account_id": account}).json()
        click.echo(f"    open positions of account {account}: {json.dumps(positions['positions'])}")


@click.command("demo")
@click.option("--skip-deploy", is_flag=True, help="Only show the lab and drive traffic.")
def command(skip_deploy: bool) -> None:
    """Bring up the local lab, deploy the whole stack with pyinfra and show where to look."""
    from lab import control

    started = _step("Lab up: hosts db, app, monitor (network namespaces, systemd, sshd)")
    result = control.up()
    hosts = result.hosts
    _done(started)
    if not skip_deploy:
        started = _step("Deploy: pyinfra inventories/lab.py deploys/site.py")
        pyinfra = Path(sys.executable).parent / "pyinfra"
        proc = subprocess.run(
            [str(pyinfra), "-y", "inventories/lab.py", "deploys/site.py"], cwd=REPO_ROOT
        )
        if proc.returncode != 0:
            raise click.ClickException(
                "the deploy failed (output above); fix and run `make demo` again: "
                "deploys are idempotent, and a second run only does what is missing"
            )
        _done(started)
    db, app, monitor = _host(hosts, "db"), _host(hosts, "app"), _host(hosts, "monitor")
    app_url = f"http://{app['ip']}:{defaults.APP_PORT}"
    started = _step(f"Traffic through the app at {app_url} (pgBouncer on {db['ip']})")
    wait_until(lambda: httpx.get(f"{app_url}/readyz", timeout=3).status_code == 200,
               timeout=60, what="the app's /readyz")  # fmt: skip
    _ensure_demo_account(db)
    _traffic(app_url, _demo_key())
    _done(started)
    # The lab's inventory is environment "lab": HTTPS with its CA and basic auth.
    prometheus = webaccess.monitor_url(monitor["ip"], defaults.PROMETHEUS_PORT, "lab")
    started = _step(f"Monitoring: Prometheus scrape targets at {prometheus}")
    _show_targets(prometheus)
    _done(started)
    started = _step("Backups: pgbackrest info on the db host")
    info = subprocess.run(
        [sys.executable, "-m", "sparkops_cli.main", "lab", "ssh", "db", "--",
         f"sudo -u postgres pgbackrest --stanza={defaults.PGBACKREST_STANZA} info"],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    click.echo("    " + (info.stdout or info.stderr).strip().replace("\n", "\n    "))
    _done(started)
    started = _step("Restore drill: latest backup onto a scratch copy on the db host, checked")
    drill = subprocess.run(
        [sys.executable, "-m", "sparkops_cli.main", "drill", "--host", db["name"], "--yes"],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    lines = (drill.stdout + drill.stderr).strip().splitlines()
    click.echo("    " + "\n    ".join(lines[-3:]))
    _done(started)
    click.secho("\nWhere to look", bold=True)
    click.echo(f"  app:         {app_url}/  (/healthz /readyz /version /openapi.json)")
    click.echo(f"  app metrics: http://{app['ip']}:{defaults.APP_METRICS_PORT}/metrics")
    click.echo(f"  Prometheus:  {prometheus}/targets")
    click.echo(f"               (user {webaccess.USERNAME}; password: {webaccess.SECRET_NAME} "
               "in the lab's secrets file; CA: its tls/ca.crt)")  # fmt: skip
    click.echo(f"  pgBouncer:   {db['ip']}:{defaults.PGBOUNCER_PORT}")
    click.echo("  a shell:     sparkops lab ssh db   (or app, monitor)")
    click.echo("  redeploy:    .venv/bin/pyinfra inventories/lab.py deploys/site.py")
    click.echo("  tear down:   sparkops lab down")


def _targets(prometheus: str) -> list[dict]:
    data = webaccess.get(f"{prometheus}/api/v1/targets", timeout=5).json()
    return data["data"]["activeTargets"]


def _show_targets(prometheus: str) -> None:
    """Wait (bounded) for every target's first scrape, then list them with their health."""
    try:
        wait_until(
            lambda: all(t["health"] == "up" for t in _targets(prometheus)),
            timeout=90,
            what="every Prometheus target to be up",
        )
    except TimeoutError as exc:
        click.secho(f"    {exc}", fg="yellow")
    for t in sorted(_targets(prometheus), key=lambda t: t["labels"]["job"]):
        error = f" ({t['lastError']})" if t["lastError"] else ""
        click.echo(f"    {t['labels']['job']:14} {t['scrapeUrl']:45} {t['health']}{error}")


def _ensure_demo_account(db: dict) -> None:
    sql = (
        "INSERT INTO accounts (id, name, opening_balance, cash_balance) "
        "VALUES ('demo', 'Demo account', 100000, 100000) ON CONFLICT (id) DO NOTHING"
    )
    cmd = f'sudo -u postgres psql -X -q -d {defaults.DATABASE_NAME} -c "{sql}"'
    proc = subprocess.run(
        [sys.executable, "-m", "sparkops_cli.main", "lab", "ssh", "db", "--", cmd],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    if proc.returncode != 0:
        raise click.ClickException(f"could not create the demo account: {proc.stderr.strip()}")
