"""Failover, switchover and the cost of synchronous replication on a real Patroni cluster.

A throwaway cluster on this machine (testkit/hacluster.py: etcd, two Patroni nodes owning
PostgreSQL 15 with the deploy's own configuration, the database route through HAProxy),
with the deploy's lease settings (hacluster.DEFAULTS) unless `--fast`. Prints:

- failover: a writer inserts rows through the route (a new connection each, as a pooled
  client reconnects); the primary's Patroni and PostgreSQL are killed (SIGKILL, as a dead
  host); seconds until writes succeed again, writes that failed in the gap, and acknowledged
  writes missing afterwards (0 expected with synchronous mode);
- switchover (planned, through Patroni's REST API) under the same writer: failed writes and
  the gap;
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
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploys import hacluster
from sparkops import layout
from sparkops.wait import wait_until
from testkit.hacluster import FAST, HACluster, Writer


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
    with HACluster(nodes_count=2, data=data) as kit:
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

        leader = kit.leader()
        fail = under_writes(kit, lambda: kit.kill_node(leader), settle=180)
        print(
            f"failover after killing {leader} (SIGKILL Patroni + PostgreSQL) under writes: "
            f"{fail['writes']} writes, {fail['failed']} failed, writes resumed after "
            f"{fail['gap_s']:.2f} s, acknowledged but lost: {fail['lost_acked']} (target 0)"
        )


if __name__ == "__main__":
    main()
