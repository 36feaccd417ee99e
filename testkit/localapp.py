"""A local app host for the rollback's tests and benchmark: a releases directory laid out as
the deploy lays it out, and the real app (uvicorn) as a pid-controlled service that reads
<root>/current/release.env at each start, as the systemd unit does."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from app import migrate
from runbooks import releases, sites
from runbooks.releases import AppTarget
from sparkops import envvars, layout
from testkit.proc import free_port
from testkit.stack import DbStack


def app_target(stack: DbStack, workdir: Path) -> tuple[Path, AppTarget]:
    """(target file, target) for `<workdir>/spark-app`, the app on a free loopback port."""
    root = workdir / "spark-app"
    (root / "releases").mkdir(parents=True, exist_ok=True)
    port = free_port()
    spec = {
        "root": str(root),
        "base_url": f"http://127.0.0.1:{port}",
        "database_url": stack.owner_conninfo(),
        "service": {
            "argv": [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "app.main:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
            ],
            "pidfile": str(workdir / "app.pid"),
            "logfile": str(workdir / "app.log"),
            # No /metrics port: it would be one fixed port for every such app on the machine.
            "env": {envvars.DATABASE_URL: stack.app_conninfo(), envvars.METRICS_PORT: "0"},
        },
    }
    path = workdir / "app.json"
    path.write_text(json.dumps(spec))
    return path, sites.app_target_from_file(path)


def install(root: Path, name: str, *, age: float, head: str | None = None, env: str = "") -> None:
    """A release as the deploy leaves it (.installed last), installed `age` seconds ago."""
    path = root / "releases" / name
    path.mkdir()
    (path / layout.RELEASE_ENV_FILE_NAME).write_text(f"{envvars.RELEASE_ID}={name}\n{env}")
    (path / releases.SCHEMA_HEAD_FILE).write_text((head or migrate.head()) + "\n")
    (path / ".installed").touch()
    stamp = 1_700_000_000 - age
    os.utime(path / ".installed", (stamp, stamp))


def start_on(app: AppTarget, name: str, timeout: float = 30) -> None:
    releases.switch(app, name)
    app.service.start()
    ok, detail = releases.healthy(app, name, timeout)
    if not ok:
        raise RuntimeError(f"release {name} did not start: {detail}\n{app.service.log_tail()}")
