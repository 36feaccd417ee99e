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
requests started during the switch, switch time (command to the release serving).
Targets: 0 failed, rollback <= 5 s.

    .venv/bin/python bench/zero_downtime.py [--rate 80] [--gate-timeout 5]

Figures only; everything it starts is stopped and removed at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
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
        f"switch {took:5.2f} s",
        flush=True,
    )
    return len(failed), took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=80.0)
    parser.add_argument("--gate-timeout", type=float, default=5.0)
    args = parser.parse_args()
    gate = args.gate_timeout

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


if __name__ == "__main__":
    main()
