"""What a switch on one host costs the clients, with the app's socket held across restarts
(socket activation; here testkit.socketsup does what spark-app.socket does on a host).

Steady traffic (default 80 requests/s, a new connection each: half GET /readyz, half POST
/orders with an API key and a fresh Idempotency-Key) runs against the real app (uvicorn on the
inherited socket, PostgreSQL through pgBouncer) during:

- restart:        the service restarted on the same release (a settings change)
- deploy:         switch A -> B gated on /readyz and /version (runbooks.releases.activate,
                  the Python twin of spark-app-activate)
- rollback:       B -> A, as `sparkops rollback` does it (runbooks.rollback)
- failed deploy:  A -> C, C cannot reach its database (/readyz 503): the gate fails and the
                  switch goes back to A
- crashed deploy: A -> D, D exits at start (a bad setting): the gate fails, back to A

and prints for each: requests, failed (connection errors, 5xx, timeouts), p99 latency of the
requests started during the switch, switch time (the switch to the release serving, by the
runbook's own clock for the rollback) and the whole command's time (planning included).
Targets: 0 failed, rollback <= 5 s.

With --lab, the same on the lab's app host (real systemd and spark-app.socket; the lab of
SPARKOPS_LAB_ID, up and deployed, e.g. by the lab tests): traffic from this machine, the
restart by `systemctl restart spark-app.service`, the deploys by spark-app-activate (B, a
copy of the current release; C, the same unable to reach its database; D, unable to start),
the rollback by `sparkops rollback`. spark-app-activate tries each new release beside the
live app first (its preflight), so C and D are refused before anything switches; the local
runs use the Python twin, the rollback's path, which switches first and gates after.

    .venv/bin/python bench/zero_downtime.py [--rate 80] [--gate-timeout 5] [--lab]

Figures only; everything it starts is stopped and removed at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import apikeys
from runbooks import releases, rollback
from runbooks.checklist import Run
from sparkops import envvars
from testkit import localapp, socketsup, traffic
from testkit.stack import DbStack

ACCOUNTS = 20
SETTLE_SECONDS = 2.0  # traffic before and after each switch


def seed(stack: DbStack) -> str:
    """Accounts and one API key bound to them (a rate limit out of reach); its secret."""
    with psycopg.connect(stack.app_conninfo(), autocommit=True, prepare_threshold=None) as c:
        for i in range(1, ACCOUNTS + 1):
            c.execute("INSERT INTO accounts (id, name, opening_balance, cash_balance) "
                      "VALUES (%s, 'bench', 1000000000, 1000000000)", (f"zdt-{i}",))  # fmt: skip
        accounts = [f"zdt-{i}" for i in range(1, ACCOUNTS + 1)]
        return apikeys.create(c, "zdt-bench", accounts, ["read", "trade"], 10_000_000)[1]


def requests_for(secret: str) -> Callable[[int], traffic.Request]:
    run = time.time_ns()

    def nth(i: int) -> traffic.Request:
        if i % 2:
            return traffic.Request("GET", "/readyz")
        body = {
            "account_id": f"zdt-{i % ACCOUNTS + 1}",
            "symbol": "BTCUSDT",
            "side": "buy" if i % 4 else "sell",
            "quantity": "0.001",
            "price": "65000.00",
        }
        headers = {
            "authorization": f"Bearer {secret}",
            "content-type": "application/json",
            "idempotency-key": f"zdt-{run}-{i}",
        }
        return traffic.Request("POST", "/orders", headers, json.dumps(body).encode())

    return nth


def measured(name: str, app, secret: str, rate: float, action: Callable[[], float | None]):
    load = traffic.Traffic(app.base_url, requests_for(secret), rate=rate, max_seconds=300)
    load.start()
    time.sleep(SETTLE_SECONDS)  # a bench, not a test: steady traffic before the switch
    begin = time.monotonic()
    switch_seconds = action()
    end = time.monotonic()
    time.sleep(SETTLE_SECONDS)
    outcomes = load.stop()
    failed = traffic.failures(outcomes)
    window = traffic.during(outcomes, begin, end)
    kinds: dict[str, int] = {}
    for o in failed:
        kind = str(o.status) if o.status else o.error.split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    took = switch_seconds if switch_seconds is not None else end - begin
    print(
        f"{name:<15} requests {len(outcomes):>5}  failed {len(failed):>4}"
        f"{' ' + str(kinds) if kinds else ''}  p99 during switch "
        f"{traffic.p99(window) * 1000:7.1f} ms ({len(window)} requests)  "
        f"switch {took:5.2f} s (command {end - begin:5.2f} s)",
        flush=True,
    )
    return len(failed), took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=80.0)
    parser.add_argument("--gate-timeout", type=float, default=5.0)
    parser.add_argument("--lab", action="store_true", help="on the lab's app host")
    args = parser.parse_args()
    gate = args.gate_timeout
    if args.lab:
        return on_the_lab(args.rate, gate)

    work = Path(tempfile.mkdtemp(prefix="zdt-bench-"))
    stack = DbStack().start()
    app = None
    try:
        secret = seed(stack)
        app = socketsup.app_target(stack, work)
        app.service.env[envvars.CLIENT_RATE_LIMIT] = "1000000"  # one address sends it all
        root = work / "spark-app"
        localapp.install(root, "A", age=400)
        localapp.install(root, "B", age=300)
        unreachable = f"{envvars.DATABASE_URL}=host=127.0.0.1 port=1 dbname=spark\n"
        localapp.install(root, "C", age=200, env=unreachable)
        localapp.install(root, "D", age=100, env=f"{envvars.DB_POOL_SIZE}=not-a-number\n")
        localapp.start_on(app, "A")
        print(
            f"{args.rate:.0f} requests/s, a new connection each, half GET /readyz, half "
            f"POST /orders; health gate {gate:.0f} s; switch = command to release serving"
        )
        counter = itertools.count()

        def restart() -> float:
            started = time.monotonic()
            app.service.restart()
            ok, detail = releases.healthy(app, "A", 30)
            assert ok, detail
            return time.monotonic() - started

        def activate(release: str, expect: bool) -> Callable[[], float | None]:
            def go() -> float | None:
                run = Run(f"activate-{next(counter)}")
                started = time.monotonic()
                live = releases.activate(app, release, run, gate)
                assert live is expect, f"{release}: live={live}"
                return time.monotonic() - started

            return go

        def roll_back() -> float | None:
            run = Run("rollback")
            plan = rollback.prepare(app, None, force=False, gate_timeout=gate)
            assert plan.target.name == "A", plan.target.name
            assert rollback.execute(plan, run)
            return run.facts.get("switch_seconds")

        results = {
            "restart": measured("restart", app, secret, args.rate, restart),
            "deploy": measured("deploy A->B", app, secret, args.rate, activate("B", True)),
            "rollback": measured("rollback B->A", app, secret, args.rate, roll_back),
            "failed": measured("failed deploy", app, secret, args.rate, activate("C", False)),
            "crashed": measured("crashed deploy", app, secret, args.rate, activate("D", False)),
        }
        failed_rb, rb_seconds = results["rollback"]
        print(f"rollback: {failed_rb} failed (target 0), {rb_seconds:.2f} s (target <= 5 s)")
    finally:
        if app is not None:
            app.service.close()
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


def on_the_lab(rate: float, gate: float) -> None:
    from deploys import release
    from lab import control
    from lab.config import DEFAULT_HOSTS
    from testkit import pyinfra_runner as runner

    up = control.up(DEFAULT_HOSTS, log=lambda _m: None)
    hosts = {h["name"]: h for h in up.hosts}
    app_name, db_name = "app", "db"
    app_ip, db_ip = hosts[app_name]["ip"], hosts[db_name]["ip"]
    if not up.already_up:
        _release_id, tarball = release.selected()
        site = runner.run_site(env={"SPARKOPS_RELEASE_TAR": str(tarball)})
        assert site.returncode == 0, site.output[-4000:]
    try:
        lab_figures(rate, gate, app_name, app_ip, db_ip)
    finally:
        if not up.already_up:
            control.down(log=lambda _m: None)


def lab_figures(rate: float, gate: float, app_name: str, app_ip: str, db_ip: str) -> None:
    from lab import ssh
    from sparkops import defaults, layout
    from sparkops_cli.commands.app import keys_create_on_host, secret_in

    root = layout.APP_ROOT

    def on(ip: str, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return ssh.run(ip, command, timeout=timeout)

    accounts = ", ".join(f"('zdt-{i}', 'bench', 1000000000, 1000000000)"
                         for i in range(1, ACCOUNTS + 1))  # fmt: skip
    sql = (f"INSERT INTO accounts (id, name, opening_balance, cash_balance) VALUES {accounts} "
           "ON CONFLICT (id) DO NOTHING")  # fmt: skip
    made = on(db_ip, f"runuser -u postgres -- psql -XAtq -d {defaults.DATABASE_NAME} "
                     f"-c {shlex.quote(sql)}")  # fmt: skip
    assert made.returncode == 0, made.stderr
    names = [f"zdt-{i}" for i in range(1, ACCOUNTS + 1)]
    made = on(app_ip, keys_create_on_host("zdt-bench", names, ["read", "trade"], 10_000_000))
    secret = secret_in(made.stdout)
    a = on(app_ip, f"readlink {root}/current").stdout.strip().rsplit("/", 1)[-1]

    def copy(name: str, extra_env: str = "") -> None:
        done = on(app_ip, f"set -e; cd {root}/releases; rm -rf {name}; cp -a {a} {name}; "
                          f"rm -f {name}/BAD; printf 'SPARK_RELEASE_ID={name}\\n{extra_env}' > "
                          f"{name}/release.env; touch {name}/.installed")  # fmt: skip
        assert done.returncode == 0, done.stderr

    copy("zdt-b")
    copy("zdt-c", f"{envvars.DATABASE_URL}=postgresql://nobody@127.0.0.1:1/spark\\n")
    copy("zdt-d", f"{envvars.DB_POOL_SIZE}=not-a-number\\n")
    target = type("Lab", (), {"base_url": f"http://{app_ip}:{defaults.APP_PORT}"})()
    activate = "/usr/local/sbin/spark-app-activate"

    def timed(command: str, expect: int) -> Callable[[], float]:
        def go() -> float:
            started = time.monotonic()
            done = on(app_ip, f"APP_READY_TIMEOUT={int(gate)} {command}")
            assert done.returncode == expect, f"{command}: {done.returncode} {done.stderr[-2000:]}"
            return time.monotonic() - started

        return go

    def roll_back() -> float:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "sparkops"), "rollback", "--host", app_name,
             "--yes", "--json", "--gate-timeout", str(gate)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        facts = json.loads(done.stdout)["facts"]
        assert facts["live_release"] == a, facts
        return facts["rollback_seconds"]

    print(
        f"lab app host {app_name} ({app_ip}), from this machine: {rate:.0f} requests/s, a new "
        f"connection each, half GET /readyz, half POST /orders; health gate {gate:.0f} s"
    )
    try:
        measured("restart", target, secret, rate,
                 timed(f"systemctl restart {layout.APP_SERVICE}", 0))  # fmt: skip
        measured("deploy A->B", target, secret, rate, timed(f"{activate} zdt-b", 0))
        failed_rb, rb_seconds = measured("rollback B->A", target, secret, rate, roll_back)
        measured("failed deploy", target, secret, rate, timed(f"{activate} zdt-c", 1))
        measured("crashed deploy", target, secret, rate, timed(f"{activate} zdt-d", 1))
        print(f"rollback: {failed_rb} failed (target 0), {rb_seconds:.2f} s (target <= 5 s)")
    finally:
        on(app_ip, f"{activate} {a}")
        on(app_ip, f"rm -rf {root}/releases/zdt-b {root}/releases/zdt-c {root}/releases/zdt-d")


if __name__ == "__main__":
    main()
