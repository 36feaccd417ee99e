"""The deployed lab stack as the lab tests drive it: hosts by group, commands over SSH, SQL on
the db host, orders through the app, a ledger snapshot, and app releases to switch between.
`deployed` (tests/lab/conftest.py) makes sure the site deploy has run."""

from __future__ import annotations

import contextlib
import uuid

import httpx
from click.testing import CliRunner

from deploys import release
from lab import ssh
from runbooks import checks
from sparkops import defaults, layout
from sparkops_cli.commands.app import keys_create_on_host, secret_in
from sparkops_cli.main import main

ACCOUNT = "runbook-e2e"
ROOT = layout.APP_ROOT


def site_env() -> dict[str, str]:
    """The site deploy's environment: this tree's release pinned (built once), so every run
    deploys the same release even while the working tree changes."""
    _release_id, tarball = release.selected()
    return {"SPARKOPS_RELEASE_TAR": str(tarball)}


def by_group(hosts, group):
    return next(h for h in hosts if group in h["groups"])


def on_host(h, command: str, timeout: float = 120) -> str:
    proc = ssh.run(h["ip"], command, timeout=timeout)
    assert proc.returncode == 0, f"{h['name']}: {command}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def psql(db, sql: str) -> str:
    quoted = sql.replace('"', '\\"')
    return on_host(
        db, f'runuser -u postgres -- psql -XAtq -d {defaults.DATABASE_NAME} -c "{quoted}"'
    )


def sparkops(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def ready(app) -> bool:
    try:
        url = f"http://{app['ip']}:{defaults.APP_PORT}/readyz"
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


# API keys for ACCOUNT by app host address, made on the host with `sparkops app keys create`.
_KEYS: dict[str, str] = {}


def api_key(app) -> str:
    if app["ip"] not in _KEYS:
        made = on_host(app, keys_create_on_host("lab-tests", [ACCOUNT], ["read", "trade"], 1000))
        _KEYS[app["ip"]] = secret_in(made)
    return _KEYS[app["ip"]]


def orders(app, count: int) -> list[str]:
    ids = []
    for n in range(count):
        body = {"account_id": ACCOUNT, "symbol": "BTCUSDT", "side": "buy" if n % 2 else "sell",
                "quantity": "0.01", "price": "65000.00"}  # fmt: skip
        key = str(uuid.uuid4())
        r = _post_order(app, body, key)
        if r.status_code == 401:
            # A restore took the database back to before the key was made: make another.
            _KEYS.pop(app["ip"], None)
            r = _post_order(app, body, key)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def _post_order(app, body: dict, key: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {api_key(app)}", "idempotency-key": key}
    return httpx.post(f"http://{app['ip']}:{defaults.APP_PORT}/orders", json=body,
                      headers=headers, timeout=30)  # fmt: skip


def snapshot(db) -> dict[str, str]:
    return {name: psql(db, sql).strip() for name, sql in checks.DEFAULT_CHECKS.items()}


def present(db, ids) -> set[str]:
    listed = ",".join(f"'{i}'" for i in ids)
    return set(psql(db, f"SELECT id FROM orders WHERE id IN ({listed})").split())


def copy_release(app_host, source: str, name: str, extra_env: str = "") -> None:
    """Another release on the app host: a copy of `source` with its own id (the same code)."""
    on_host(app_host, f"set -e; cd {ROOT}/releases; rm -rf {name}; cp -a {source} {name}; "
                   f"rm -f {name}/BAD; printf 'SPARK_RELEASE_ID={name}\\n{extra_env}' > "
                   f"{name}/release.env; touch {name}/.installed")  # fmt: skip


def activate_copy(app_host, source: str, name: str) -> None:
    """`copy_release`, then that copy made live by the deploy's activation script."""
    copy_release(app_host, source, name)
    on_host(app_host, f"/usr/local/sbin/spark-app-activate {name}", timeout=180)


@contextlib.contextmanager
def scratch_release(app_host, live: str, name: str):
    """For a test that makes release `name` on the app host: afterwards, however the test
    ended, `live` is live again and `name` is gone."""
    try:
        yield name
    finally:
        ssh.run(app_host["ip"], f"/usr/local/sbin/spark-app-activate {live}", timeout=180)
        ssh.run(app_host["ip"], f"rm -rf {ROOT}/releases/{name}")


def version(app) -> str:
    return httpx.get(f"http://{app['ip']}:{defaults.APP_PORT}/version", timeout=5).json()["release"]
