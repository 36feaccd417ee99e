"""A real Patroni cluster (etcd, two nodes, the database route) started from the deploy's own
configuration: it bootstraps, routes writes to the primary, switches over on request, and
fails over when the primary's host dies without losing an acknowledged write.

One cluster for the module (about 20 s to start): the tests run in file order, the
switchover leaves a healthy cluster behind and the failover, which does not, runs last."""

from __future__ import annotations

import time

import psycopg
import pytest

from sparkops.wait import wait_until
from testkit.hacluster import HACluster, Writer

pytestmark = pytest.mark.chaos


@pytest.fixture(scope="module")
def cluster():
    with HACluster(nodes_count=2) as kit:
        with psycopg.connect(kit.route_conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE acks (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")
        yield kit


def _rows(kit: HACluster) -> set[int]:
    with psycopg.connect(kit.route_conninfo(), autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM acks")}


def test_the_cluster_bootstraps_with_a_synchronous_standby_and_the_deploys_settings(cluster):
    members = {m["name"]: m for m in cluster.cluster()["members"]}
    leader = cluster.leader()
    assert members[leader]["role"] in ("leader", "master", "primary")
    (replica,) = [name for name in members if name != leader]
    assert members[replica]["role"] == "sync_standby"
    with psycopg.connect(cluster.node(replica).conninfo(), autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('wal_log_hints', 'hot_standby', 'password_encryption', 'data_checksums')"
            ).fetchall()
        )
    assert settings == {
        "wal_log_hints": "on",
        "hot_standby": "on",
        "password_encryption": "scram-sha-256",
        "data_checksums": "on",
    }


def test_the_route_sends_writes_to_the_primary_and_reads_to_the_replica(cluster):
    leader = cluster.leader()
    assert cluster.route_target("primary") == leader
    replica = cluster.route_target("replicas")
    assert replica is not None and replica != leader
    with (
        psycopg.connect(cluster.route_conninfo("replicas"), autocommit=True) as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        conn.execute("INSERT INTO acks (id) VALUES (-1)")


def test_switchover_moves_the_primary_and_loses_no_acknowledged_write(cluster):
    old = cluster.leader()
    (candidate,) = [n.name for n in cluster.nodes if n.name != old]
    before = len(_rows(cluster))
    with Writer(cluster.route_conninfo()) as writer:
        wait_until(lambda: writer.acked_since(20), timeout=30, what="writes flow")
        cluster.switchover(candidate)
        wait_until(
            lambda: cluster.route_target("primary") == candidate,
            timeout=60,
            what="the route follows the switchover",
        )
        acked = len(writer.acked)
        wait_until(lambda: writer.acked_since(acked + 20), timeout=30, what="writes flow again")
    assert cluster.leader() == candidate
    assert len(_rows(cluster)) >= before + len(writer.acked)
    wait_until(lambda: cluster._all_streaming(), timeout=60, what="the old primary streams")
    # In synchronous mode only the synchronous standby may be promoted: the old primary must
    # take that part before the cluster survives another loss.
    wait_until(lambda: cluster.sync_standby() == old, timeout=60, what="a new sync standby")


def test_failover_after_the_primary_dies_loses_no_acknowledged_write(cluster):
    old = cluster.leader()
    assert cluster.sync_standby() not in (None, old)
    with Writer(cluster.route_conninfo()) as writer:
        wait_until(lambda: writer.acked_since(20), timeout=30, what="writes flow")
        acked_before = len(writer.acked)
        killed_at = time.monotonic()
        cluster.kill_node(old)
        wait_until(
            lambda: writer.acked_since(acked_before + 20) and cluster.leader() not in (None, old),
            timeout=60,
            what="writes succeed again on a new primary",
        )
    new = cluster.leader()
    assert new not in (None, old)
    assert cluster.route_target("primary") == new
    missing = set(writer.acked) - _rows(cluster)
    assert missing == set(), f"acknowledged writes lost in the failover: {sorted(missing)[:20]}"
    gap = max((t for _, t in writer.failed), default=killed_at) - killed_at
    # The lease (ttl 12 s in the kit) bounds the gap; generous for a loaded 2-core machine.
    assert gap < 45, f"writes failed for {gap:.1f} s after the kill"
