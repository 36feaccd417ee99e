"""Order throughput of the API through pgBouncer, against pgbench running the same SQL.

Rounds (`--rounds`) of two runs, one after the other on the same machine and the same
pgBouncer: wrk driving POST /orders on uvicorn (`--app-workers` processes, each with a pool
of APP_DB_POOL_SIZE connections to pgBouncer in transaction mode), then pgbench running the
app's own statements in the app's own round trips (`BEGIN; claim; COMMIT; BEGIN; context`,
then the writes, the key's completion and COMMIT) with as many clients as the app has pooled
connections in all. Prints each round's orders/s, latencies and ratio, then the range.

The orders carry an API key bound to every bench account (made as `sparkops app keys
create` makes one). With `--baseline-tree DIR` (a checkout of the release before API keys,
e.g. `git worktree add /tmp/base 152c983`), the app of that tree is driven the same way
against the same database, alternating runs, and the cost of authentication is printed as a
ratio. `--profile FILE` writes a py-spy profile (raw, collapsed stacks) of the first round's
app process.

With `--tls`, PostgreSQL and pgBouncer run as deployed with TLS inside (hostssl only,
pgBouncer TLS both ways, the app verify-full); with `--tls-ratio`, the orders run without TLS
and with it, alternating, and the cost of TLS is printed as a ratio.

Usage: .venv/bin/python bench/orders_throughput.py [--seconds 20] [--rounds 3] [--durable]
       [--app-workers N] [--profile FILE] [--baseline-tree DIR] [--tls | --tls-ratio]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import apikeys, idempotency, orders
from sparkops import defaults, layout
from sparkops.wait import wait_until
from testkit.proc import free_port, stop_process
from testkit.stack import DbStack

ACCOUNTS = 50
RATIO_TARGET = 0.5

WRK_SCRIPT = textwrap.dedent(
    """
    counter = 0
    secrets = {%(secrets)s}
    math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
    request = function()
      counter = counter + 1
      local n = math.random(1, %(accounts)d)
      local acct = "bench-" .. n
      local side = (math.random(2) == 1) and "buy" or "sell"
      local key = string.format("wrk-%%d-%%d-%%d", os.time(), math.random(1, 1000000000), counter)
      local body = string.format('{"account_id":"%%s","symbol":"BTCUSDT","side":"%%s",' ..
        '"quantity":"0.001","price":"65000.00"}', acct, side)
      return wrk.format("POST", "/orders",
        {["Content-Type"] = "application/json", ["Idempotency-Key"] = key,
         ["Authorization"] = "Bearer " .. secrets[(n - 1) %% #secrets + 1]}, body)
    end
    """
)

# pgbench runs the app's own SQL (app.idempotency, app.ratelimit, app.orders), in the app's
# own batches (pgbench's `\;` sends several statements as one simple-protocol query, one
# round trip, as psycopg's ClientCursor does for the app): `BEGIN; claim; COMMIT; BEGIN;
# context`, then every write, the key's completion and COMMIT. Values the app computes in
# Python (the position after the fill, the response body) are literals of the same size.
BODY = (
    '{"account_id":"bench-1","commission":"0.065","created_at":"2026-12-02T23 45 00.000000+00 00",'
    '"id":"5f0c7b5e-8a53-4c55-9a43-7f1d2b9d0c11","liquidity":"taker","notional":"65",'
    '"position":{"avg_entry_price":"65000","id":1,"quantity":"1.001","realized_pnl":"0",'
    '"status":"open"},"price":"65000","quantity":"0.001","side":"buy","status":"filled",'
    '"strategy":null,"symbol":"BTCUSDT"}'
)
PGBENCH_HEAD = """\\set a random(1, {accounts})
\\set k random(1, 2000000000)
\\set s random(0, 1)
"""


def pgbench_script(api_key_id: str) -> str:
    """The order as pgbench runs it, from the statements the app runs."""
    values = {
        "account_id": "('bench-' || :a)",
        "symbol": "'BTCUSDT'",
        "strategy": "NULL",
        "side": "(CASE WHEN :s = 1 THEN 'buy' ELSE 'sell' END)",
        "key": "('pgb-' || :client_id || '-' || :k)",
        "hash": "'" + "5e" * 32 + "'",
        "api_key_id": f"'{api_key_id}'",
        "limit": "10000000",
        "client": "'127.0.0.1'",
        "client_limit": "10000000",
        "quantity": "1.001",
        "avg": "65000",
        "realized": "0",
        "id": ":position_id",
        "order_id": "gen_random_uuid()",
        "price": "65000",
        "notional": "65",
        "commission": "0.065",
        "liquidity": "'taker'",
        "client_addr": "'127.0.0.1'",
        "request_id": "('r-' || :k)",
        "delta": "-65.065",
        "aggregate": "('bench-' || :a || '/BTCUSDT/')",
        "payload": "'" + orders._event_payload("k" * 60, BODY) + "'",
        "status": "201",
        "body": f"'{BODY}'",
    }

    def bound(sql: str) -> str:
        sql = re.sub(r"%\((\w+)\)s", lambda m: values[m.group(1)], sql).replace("%%", "%")
        lines = (line.split("--")[0].strip() for line in sql.splitlines())
        return " ".join(line for line in lines if line)

    def batch(*statements: str) -> str:
        return " \\;\n".join(bound(sql) for sql in statements)

    first = batch("BEGIN", idempotency.CLAIM_COUNTED, "COMMIT", "BEGIN",
                  orders._CONTEXT_IF_CLAIMED) + " \\gset\n"  # fmt: skip
    writes = batch(orders._UPDATE_POSITION, orders._INSERT_ORDER, orders._CASH,
                   orders._OUTBOX, orders._COMPLETE, "COMMIT") + ";\n"  # fmt: skip
    return PGBENCH_HEAD.format(accounts=ACCOUNTS) + first + writes


def seed(stack: DbStack, keys: int = 1) -> list[tuple[str, str]]:
    """Accounts with an open position each, and `keys` API keys that share them out (key k
    has accounts k, k + keys, ...); returns the keys' (id, secret)."""
    with psycopg.connect(stack.app_conninfo(), autocommit=True, prepare_threshold=None) as c:
        c.execute("DELETE FROM outbox_events; DELETE FROM orders; DELETE FROM positions; "
                  "DELETE FROM idempotency_keys; DELETE FROM api_rate_windows; "
                  "DELETE FROM api_key_accounts; DELETE FROM api_keys; "
                  "DELETE FROM accounts")  # fmt: skip
        for i in range(1, ACCOUNTS + 1):
            c.execute("INSERT INTO accounts (id, name, opening_balance, cash_balance) "
                      "VALUES (%s, 'bench', 1000000, 1000000)", (f"bench-{i}",))  # fmt: skip
            c.execute("INSERT INTO positions (account_id, symbol, quantity, avg_entry_price) "
                      "VALUES (%s, 'BTCUSDT', 1, 65000)", (f"bench-{i}",))  # fmt: skip
        accounts = [f"bench-{i}" for i in range(1, ACCOUNTS + 1)]
        # A rate limit the bench cannot reach: the limit's cost is measured, not its refusals.
        return [
            apikeys.create(c, "bench", accounts[k::keys], ["read", "trade"], 10_000_000)
            for k in range(keys)
        ]


def run_app_bench(
    stack: DbStack,
    seconds: int,
    connections: int,
    workdir: Path,
    secrets: list[str],
    profile: Path | None = None,
    workers: int = 1,
    tree: Path | None = None,
) -> dict:
    """wrk against the app of this tree, or of `tree` (another checkout) when given."""
    port = free_port()
    env = {
        **os.environ,
        "SPARK_DATABASE_URL": stack.app_conninfo(),
        "SPARK_RELEASE_ID": "bench",
        "SPARK_RISK_MAX_POSITION": "1000000",
        "SPARK_CLIENT_RATE_LIMIT": "1000000",  # wrk sends everything from 127.0.0.1
        "SPARK_METRICS_PORT": "0",  # one fixed port: taken by the first of several workers
        "SPARK_DB_POOL_SIZE": str(defaults.APP_DB_POOL_SIZE),
    }
    app = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--no-access-log", "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tree,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, timeout=20,
                   what="the app to be ready")  # fmt: skip
        script = workdir / "orders.lua"
        listed = ", ".join(f'"{s}"' for s in secrets)
        script.write_text(WRK_SCRIPT % {"accounts": ACCOUNTS, "secrets": listed})
        spy = None
        if profile is not None:
            # py-spy samples the app process while wrk drives it: where does an order's CPU go?
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(app.pid),
                 "-d", str(seconds), "-f", "raw", "-o", str(profile), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
             url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        if spy is not None:
            spy.wait(timeout=seconds + 30)
    finally:
        stop_process(app)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": lat.get("50"), "p99": lat.get("99"),
            "errors": int(non2xx.group(1)) if non2xx else 0, "raw": out}  # fmt: skip


def run_pgbench(stack: DbStack, seconds: int, clients: int, workdir: Path, key_id: str) -> dict:
    script = workdir / "order.sql"
    script.write_text(pgbench_script(key_id))
    bouncer = stack.bouncer
    env = {**os.environ, "PGPASSWORD": stack.passwords.app}
    out = subprocess.run(
        [f"{layout.POSTGRES_BINDIR}/pgbench", "-n", "-M", "simple", "-f", str(script),
         "-c", str(clients), "-j", "1", "-T", str(seconds), "-r",
         "-h", bouncer.host, "-p", str(bouncer.port), "-U", defaults.ROLE_APP,
         defaults.DATABASE_NAME],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"pgbench failed:\n{out.stdout}\n{out.stderr}")
    out = out.stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    latency = re.search(r"latency average = ([\d.]+) ms", out).group(1)
    return {"tps": tps, "latency_avg_ms": float(latency), "raw": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--durable", action="store_true", help="fsync on (production-like)")
    parser.add_argument("--profile", type=Path, help="write a py-spy profile of the app here")
    parser.add_argument("--app-workers", type=int, default=defaults.APP_WORKERS,
                        help="uvicorn worker processes (default: the deploy's)")  # fmt: skip
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="a checkout without API keys: measure the cost of auth against it",
    )
    parser.add_argument(
        "--keys",
        type=int,
        default=1,
        help="API keys sharing the accounts out (each has its own rate-limit row)",
    )
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating runs of the API and its reference")  # fmt: skip
    parser.add_argument("--tls", action="store_true", help="TLS inside, as deployed")
    parser.add_argument(
        "--tls-ratio",
        action="store_true",
        help="orders without and with TLS, alternating: the cost of TLS",
    )
    args = parser.parse_args()
    if args.tls_ratio:
        compare_tls(args)
        return
    stack_of_run = DbStack(durable=args.durable, tls=args.tls)
    with tempfile.TemporaryDirectory() as tmp, stack_of_run as stack:
        if args.baseline_tree:
            compare_auth(stack, args, Path(tmp))
            return
        compare_pgbench(stack, args, Path(tmp))


def compare_pgbench(stack: DbStack, args, workdir: Path) -> None:
    """The API and pgbench in turn, `--rounds` times, each on a freshly seeded database.

    Same machine, same pgBouncer (and its server pool), same statements in the same round
    trips; pgbench gets as many clients as the app has pooled connections in all (workers x
    pool size). Each round's two runs follow each other, so their ratio shares the load other
    work puts on the machine; the range of the rounds' ratios is the figure to quote.
    """
    clients = args.app_workers * defaults.APP_DB_POOL_SIZE
    ratios = []
    print(f"machine: {os.cpu_count()} cores; durable={args.durable}; {args.seconds} s per run; "
          f"API: {args.app_workers} uvicorn worker(s) x pool {defaults.APP_DB_POOL_SIZE}, "
          f"{args.connections} wrk connections; pgbench: {clients} clients",
          flush=True)  # fmt: skip
    for n in range(1, args.rounds + 1):
        keys = seed(stack, args.keys)
        profile = args.profile if n == 1 else None
        app = run_app_bench(stack, args.seconds, args.connections, workdir,
                            [secret for _, secret in keys], profile, args.app_workers)  # fmt: skip
        keys = seed(stack)
        pgb = run_pgbench(stack, args.seconds, clients, workdir, keys[0][0])
        ratios.append(app["rps"] / pgb["tps"])
        print(f"round {n}: API {app['rps']:.0f} orders/s (p50 {app['p50']}, p99 {app['p99']}, "
              f"non-2xx {app['errors']}); pgbench {pgb['tps']:.0f} orders/s "
              f"(avg {pgb['latency_avg_ms']:.2f} ms); ratio {ratios[-1]:.2f}",
              flush=True)  # fmt: skip
    verdict = "meets" if min(ratios) >= RATIO_TARGET else "MISSES"
    print(f"ratio API / pgbench over {len(ratios)} round(s): {min(ratios):.2f}-{max(ratios):.2f}, "
          f"median {statistics.median(ratios):.2f} ({verdict} the >= {RATIO_TARGET})")  # fmt: skip


def compare_tls(args) -> None:
    """The same orders on a stack without TLS and one with it (each its own PostgreSQL and
    pgBouncer, freshly seeded), alternating; the median of the rounds' ratios."""
    runs: dict[str, list[float]] = {"plain": [], "tls": []}
    for _ in range(args.rounds):
        for name in ("plain", "tls"):
            stack_of_run = DbStack(durable=args.durable, tls=name == "tls")
            with tempfile.TemporaryDirectory() as tmp, stack_of_run as stack:
                secrets = [secret for _, secret in seed(stack, args.keys)]
                result = run_app_bench(stack, args.seconds, args.connections, Path(tmp),
                                       secrets, workers=args.app_workers)  # fmt: skip
            if result["errors"]:
                raise SystemExit(f"{name}: {result['errors']} non-2xx answers\n{result['raw']}")
            runs[name].append(result["rps"])
            print(f"{name:6} {result['rps']:.0f} orders/s, p50 {result['p50']}, "
                  f"p99 {result['p99']}", flush=True)  # fmt: skip
    ratios = [t / p for t, p in zip(runs["tls"], runs["plain"], strict=True)]
    median = statistics.median(ratios)
    plain, tls = (sum(runs[n]) / len(runs[n]) for n in ("plain", "tls"))
    print(f"machine: {os.cpu_count()} cores; durable={args.durable}; {args.seconds} s per run, "
          f"{args.rounds} round(s), {args.connections} wrk connections")  # fmt: skip
    print(f"POST /orders: without TLS {plain:.0f}/s, with TLS inside {tls:.0f}/s (means); "
          f"ratio TLS / plain per round {', '.join(f'{r:.3f}' for r in ratios)}; "
          f"median {median:.3f} (cost of TLS {100 * (1 - median):.1f} %)")  # fmt: skip


def compare_auth(stack: DbStack, args, workdir: Path) -> None:
    """The same orders against the baseline tree's app (no API keys; the header is ignored)
    and this tree's, alternating, each on a freshly seeded database."""
    runs: dict[str, list[float]] = {"baseline": [], "auth": []}
    for _ in range(args.rounds):
        for name, tree in (("baseline", args.baseline_tree.resolve()), ("auth", None)):
            secrets = [secret for _, secret in seed(stack, args.keys)]
            result = run_app_bench(stack, args.seconds, args.connections, workdir, secrets,
                                   workers=args.app_workers, tree=tree)  # fmt: skip
            if result["errors"]:
                raise SystemExit(f"{name}: {result['errors']} non-2xx answers\n{result['raw']}")
            runs[name].append(result["rps"])
            print(f"{name:8} {result['rps']:.0f} orders/s, p50 {result['p50']}, "
                  f"p99 {result['p99']}", flush=True)  # fmt: skip
    base, auth = (sum(runs[n]) / len(runs[n]) for n in ("baseline", "auth"))
    # Each round's two runs follow each other, so their ratio shares the machine's load; the
    # median of those ratios is the figure least moved by other work on a shared machine.
    ratios = [a / b for a, b in zip(runs["auth"], runs["baseline"], strict=True)]
    median = statistics.median(ratios)
    print(f"machine: {os.cpu_count()} cores; durable={args.durable}; {args.seconds} s per run, "
          f"{args.rounds} round(s), baseline tree {args.baseline_tree}")  # fmt: skip
    print(f"POST /orders: baseline {base:.0f}/s, with API keys {auth:.0f}/s (means); "
          f"ratio per round {', '.join(f'{r:.3f}' for r in ratios)}; median {median:.3f} "
          f"(cost of auth {100 * (1 - median):.1f} %, target < 5 %)")  # fmt: skip


if __name__ == "__main__":
    main()
