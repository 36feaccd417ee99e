"""Failover, switchover and the cost of synchronous replication on a real Patroni cluster.

A throwaway cluster on this machine (testkit/hacluster.py: etcd, two Patroni nodes owning
PostgreSQL 15 with the deploy's own configuration, the database route through HAProxy),
with the deploy's lease settings (hacluster.DEFAULTS) unless `--fast`. Prints:

- failover: a writer inserts rows through the route (a new connection each, as a pooled
  client reconnects); the primary's Patroni and PostgreSQL are killed (SIGKILL, as a dead
  host); seconds until writes succeed again, writes that failed in the gap, and acknowledged
  writes missing afterwards (0 expected with synchronous mode);
- switchover (planned, through Patroni's REST API) under the same writer: failed writes and
  the gap (a raw client that does not retry: what the runbook and the app's retry remove);
- switchover with `sparkops cluster switchover` (the runbook) while the real app takes orders
  through the route: orders answered, failed (anything but 201), p99 latency, the runbook's
  own times;
- a cluster PITR (`sparkops cluster restore --time`, the runbook): seconds to a primary
  serving and to every replica streaming;
- pgbench (built-in TPC-B-like, the cost of a commit; not the orders SQL, whose schema the
  throwaway cluster does not carry) through the route with synchronous_mode on and off, and
  the ratio.

Usage: .venv/bin/python bench/ha_failover.py [--seconds 15] [--clients 8] [--fast]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import apikeys
from app.config import Settings
from deploys import hacluster
from runbooks import flows
from runbooks.conduct import Options, conduct
from sparkops import layout
from sparkops.wait import wait_until
from testkit import traffic
from testkit.appserver import AppServer
from testkit.hacluster import DBNAME, FAST, HACluster, Writer

ORDERS_PER_SECOND = 30
RATE_LIMIT = 1_000_000  # no limit the benchmark reaches


def trading_key(conn: psycopg.Connection, account: str) -> dict[str, str]:
    """An account and an API key bound to it (the secret stays in this process); the
    Authorization header."""
    key_id, secret = str(uuid.uuid4()), apikeys.new_secret()
    conn.execute(
        "INSERT INTO accounts (id, name, opening_balance, cash_balance) "
        "VALUES (%s, %s, 100000000, 100000000)",
        (account, account),
    )
    conn.execute(
        "INSERT INTO api_keys (id, name, secret_sha256, permissions, rate_limit) "
        "VALUES (%s, 'bench', %s, '{read,trade}', %s)",
        (key_id, apikeys.secret_sha256(secret), RATE_LIMIT),
    )
    conn.execute(
        "INSERT INTO api_key_accounts (api_key_id, account_id) VALUES (%s, %s)", (key_id, account)
    )
    return {"authorization": f"Bearer {secret}"}


def runbook_switchover(kit: HACluster) -> str:
    """The switchover runbook while the app takes orders: one line of figures."""
    with psycopg.connect(kit.app_conninfo(), autocommit=True) as conn:
        auth = trading_key(conn, "bench-ha")
    settings = Settings(database_url=kit.app_conninfo(), release_id="bench", metrics_port=0,
                        client_rate_limit=RATE_LIMIT)  # fmt: skip
    body = b'{"account_id": "bench-ha", "symbol": "BTCUSDT", "side": "buy", ' \
           b'"quantity": "0.00100", "price": "65000.00"}'  # fmt: skip
    stamp = time.strftime("%H%M%S")

    def order(i: int) -> traffic.Request:
        headers = {**auth, "content-type": "application/json",
                   "idempotency-key": f"bench-ha-{stamp}-{i}"}  # fmt: skip
        return traffic.Request("POST", "/orders", headers, body)

    with AppServer(settings) as server:
        load = traffic.Traffic(server.url, order, rate=ORDERS_PER_SECOND, timeout=30,
                               max_seconds=180).start()  # fmt: skip
        try:
            wait_until(lambda: len(load.outcomes) >= 60, timeout=60, what="orders flow")
            started = time.monotonic()
            where = flows.ClusterWhere(resolved=kit.runbook_cluster())
            outcome = conduct(flows.switchover_runbook(flows.SwitchoverOrder(where=where)),
                              Options(yes=True, quiet=True))  # fmt: skip
            ended = time.monotonic()
            done = len(load.outcomes)
            wait_until(lambda: len(load.outcomes) >= done + 60, timeout=60, what="orders after")
        finally:
            outcomes = load.stop()
    if outcome.code != 0:
        raise SystemExit(f"the switchover runbook failed: {outcome.result['message']}")
    facts = outcome.result["facts"]
    window = traffic.during(outcomes, started - 1, ended + 5)
    failed = [o for o in outcomes if o.status != 201]
    return (
        f"switchover runbook under orders through the app ({ORDERS_PER_SECOND}/s): "
        f"{len(outcomes)} orders, {len(failed)} failed (not 201), p99 around the switch "
        f"{traffic.p99(window):.2f} s; Patroni switched in {facts['switchover_seconds']} s, "
        f"the runbook took {ended - started:.1f} s"
    )


def cluster_restore(kit: HACluster) -> str:
    with psycopg.connect(kit.route_conninfo(dbname=DBNAME), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS restore_marks (name text PRIMARY KEY)")
        conn.execute("INSERT INTO restore_marks VALUES ('before') ON CONFLICT DO NOTHING")
        target = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        conn.execute("INSERT INTO restore_marks VALUES ('after') ON CONFLICT DO NOTHING")
    where = flows.ClusterWhere(resolved=kit.runbook_cluster())
    order = flows.ClusterRestoreOrder(kind="time", value=target.isoformat(), where=where)
    outcome = conduct(flows.cluster_restore_runbook(order), Options(yes=True, quiet=True))
    if outcome.code != 0:
        raise SystemExit(f"the cluster restore failed: {outcome.result['message']}")
    facts = outcome.result["facts"]
    return (
        f"cluster PITR (2 nodes, {facts.get('copy_seconds')} s copy, "
        f"{facts.get('replay_seconds')} s replay): primary serving after "
        f"{facts['primary_serving_seconds']} s, every replica streaming after "
        f"{facts['replicas_streaming_seconds']} s"
    )


def rows(kit: HACluster) -> set[int]:
    with psycopg.connect(kit.route_conninfo(), autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM acks")}


def under_writes(kit: HACluster, action, settle: float) -> dict:
    """Run `action()` while a writer writes; figures about the writes around it."""
    with Writer(kit.route_conninfo(), limit=300) as writer:
        wait_until(lambda: len(writer.acked) > 50, timeout=30, what="writes flow")
        before = len(writer.acked)
        started = time.monotonic()
        action()
        wait_until(
            lambda: (
                any(t > started for t in writer.acked_at[before:])
                and len(writer.acked) > before + 50
            ),
            timeout=settle,
            what="writes succeed again",
        )
    after_ok = next(t for t in writer.acked_at[before:] if t > started)
    # The gap: from the action to the first write acknowledged after the last failure.
    failures = [t for _, t in writer.failed if t >= started]
    resumed = after_ok
    if failures:
        resumed = next((t for t in writer.acked_at if t > max(failures)), after_ok)
    missing = set(writer.acked) - rows(kit)
    return {
        "writes": len(writer.acked) + len(writer.failed),
        "failed": len(failures),
        "gap_s": max(0.0, resumed - started),
        "lost_acked": len(missing),
    }


def pgbench(kit: HACluster, seconds: int, clients: int) -> float:
    conn = kit.route_conninfo()
    args = [f"{layout.POSTGRES_BINDIR}/pgbench", "-n", "-c", str(clients), "-j", "2",
            "-T", str(seconds), conn]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"pgbench failed:\n{out.stdout}\n{out.stderr}")
    return float(re.search(r"tps = ([\d.]+)", out.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15, help="pgbench seconds per mode")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--fast", action="store_true", help="the test kit's short lease")
    args = parser.parse_args()
    data = (
        dict(FAST)
        if args.fast
        else {k: hacluster.DEFAULTS[k] for k in ("ha_ttl", "ha_loop_wait", "ha_retry_timeout")}
    )
    print(
        f"lease: ttl {data['ha_ttl']} s, loop_wait {data['ha_loop_wait']} s, "
        f"retry_timeout {data['ha_retry_timeout']} s; synchronous_mode on"
    )
    with HACluster(nodes_count=2, data=data, app_schema=True, archiving="shared") as kit:
        with psycopg.connect(kit.route_conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE acks (id bigint PRIMARY KEY)")
        init = [f"{layout.POSTGRES_BINDIR}/pgbench", "-i", "-q", "-s", "5", kit.route_conninfo()]
        subprocess.run(init, capture_output=True, check=True)

        sync_tps = pgbench(kit, args.seconds, args.clients)
        kit.set_synchronous(False)
        async_tps = pgbench(kit, args.seconds, args.clients)
        kit.set_synchronous(True)
        print(
            f"pgbench TPC-B-like through the route, {args.clients} clients, {args.seconds} s: "
            f"synchronous {sync_tps:.0f} tps, asynchronous {async_tps:.0f} tps, "
            f"ratio {sync_tps / async_tps:.2f}"
        )

        old = kit.leader()
        (candidate,) = [n.name for n in kit.nodes if n.name != old]
        switch = under_writes(kit, lambda: kit.switchover(candidate), settle=120)
        wait_until(lambda: kit.sync_standby() == old, timeout=120, what="a new sync standby")
        print(
            f"switchover {old} -> {candidate} under writes: {switch['writes']} writes, "
            f"{switch['failed']} failed, writes resumed after {switch['gap_s']:.2f} s, "
            f"acknowledged but lost: {switch['lost_acked']}"
        )

        print(runbook_switchover(kit))
        print(cluster_restore(kit))

        leader = kit.leader()
        fail = under_writes(kit, lambda: kit.kill_node(leader), settle=180)
        print(
            f"failover after killing {leader} (SIGKILL Patroni + PostgreSQL) under writes: "
            f"{fail['writes']} writes, {fail['failed']} failed, writes resumed after "
            f"{fail['gap_s']:.2f} s, acknowledged but lost: {fail['lost_acked']} (target 0)"
        )


if __name__ == "__main__":
    main()
