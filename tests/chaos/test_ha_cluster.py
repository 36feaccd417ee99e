"""Chaos on a real Patroni cluster (testkit/hacluster.py: etcd, two nodes with the deploy's
configuration, the database route), each node reaching etcd through its own fault proxy.

Expectations, each checked:
- the primary cut off from etcd (its proxy disabled: a partition) steps down before the
  replica takes over, so at no moment do two nodes answer as primary; writes move to the
  other node, and no acknowledged write is lost; healed, the old primary rejoins streaming;
- etcd's quorum lost (its only member stopped): the primary steps down rather than go on
  without a leader key, so writes stop (no node answers as primary) and nothing
  acknowledged is lost; etcd back, a primary is elected and writes succeed again.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from chaos.api import ChaosServer
from chaos.client import Toxiproxy
from sparkops.wait import wait_until
from testkit.hacluster import HACluster, Writer

pytestmark = pytest.mark.chaos


class PrimaryWatch:
    """Polls every node's /primary; keeps the most nodes seen primary at one moment."""

    def __init__(self, kit: HACluster) -> None:
        self.kit = kit
        self.most = 0
        self.seen: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 240
        while not self._stop.is_set() and time.monotonic() < deadline:
            now = self.kit.primaries()
            self.most = max(self.most, len(now))
            self.seen.append((time.monotonic(), now))
            self._stop.wait(0.2)

    def __enter__(self) -> PrimaryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def proxied_cluster():
    with ChaosServer() as server:
        api = Toxiproxy(server.url)
        proxies = {}

        def via_proxy(node: str, etcd: str) -> str:
            proxies[node] = api.create(f"etcd-{node}", etcd)
            return proxies[node].listen

        kit = HACluster(nodes_count=2, etcd_address_for=via_proxy)
        with kit:
            with psycopg.connect(kit.route_conninfo(), autocommit=True) as conn:
                conn.execute("CREATE TABLE acks (id bigint PRIMARY KEY)")
            yield kit, proxies
        api.close()


def _rows(kit: HACluster) -> set[int]:
    with psycopg.connect(kit.route_conninfo(), autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM acks")}


def test_the_primary_cut_off_from_etcd_steps_down_and_no_two_primaries_coexist(
    proxied_cluster,
):
    kit, proxies = proxied_cluster
    old = kit.leader()
    (other,) = [n.name for n in kit.nodes if n.name != old]
    with PrimaryWatch(kit) as watch, Writer(kit.route_conninfo(), limit=200) as writer:
        wait_until(lambda: len(writer.acked) > 20, timeout=30, what="writes flow")
        proxies[old].set_enabled(False)
        wait_until(lambda: kit.primaries() == [other], timeout=90, what="the other node leads")
        acked = len(writer.acked)
        wait_until(lambda: len(writer.acked) > acked + 20, timeout=60, what="writes flow again")
        proxies[old].set_enabled(True)
        wait_until(kit._all_streaming, timeout=120, what="the old primary rejoins, streaming")
    assert watch.most == 1, [s for s in watch.seen if len(s[1]) > 1][:5]
    assert set(writer.acked) <= _rows(kit)
    wait_until(lambda: kit.sync_standby() == old, timeout=60, what="a synchronous standby again")


def test_etcd_quorum_lost_stops_writes_without_losing_any_then_recovers(proxied_cluster):
    kit, _ = proxied_cluster
    with PrimaryWatch(kit) as watch, Writer(kit.route_conninfo(), limit=200) as writer:
        wait_until(lambda: len(writer.acked) > 20, timeout=30, what="writes flow")
        kit.stop_etcd()
        stopped_at = time.monotonic()
        wait_until(lambda: kit.primaries() == [], timeout=90, what="the primary steps down")
        stepped_down = time.monotonic() - stopped_at
        acked_then = len(writer.acked)
        # While etcd is gone no write may succeed: nobody holds the leader key.
        time_without = time.monotonic()
        wait_until(lambda: time.monotonic() - time_without > 5, timeout=10, what="a quiet stretch")
        assert len(writer.acked) == acked_then, "a write succeeded without a leader key"
        kit.start_etcd()
        wait_until(lambda: len(kit.primaries()) == 1, timeout=120, what="a primary again")
        wait_until(
            lambda: len(writer.acked) > acked_then + 20, timeout=60, what="writes flow again"
        )
    assert watch.most == 1
    assert set(writer.acked) <= _rows(kit)
    print(f"\nquorum lost: the primary stepped down after {stepped_down:.1f} s")
