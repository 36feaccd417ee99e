"""The firewall on the lab (deploys/firewall.py): every (source, destination host:port) pair
probed, from inside each lab host's own namespace and from this machine (the control machine
and the app's client, on the lab bridge), and held to the flows the host groups imply.

The expected flows are written out here by hand, not computed by deploys/firewall.py, so a
mistake in the rule generation shows up as a mismatch. "open" is a completed TCP handshake;
"filtered" is no answer at all within the probe's timeout (the firewall dropped it); "refused"
(a reset) would mean the port is let through but nothing listens, which no pair here expects.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from lab import config, ssh
from sparkops import defaults

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PROBE_SECONDS = 2
CONTROL = "control"
ALERTMANAGER_CLUSTER_PORT = 9094  # Alertmanager's gossip default: must be off (one node)
PORTS = (
    defaults.SSH_PORT,
    defaults.POSTGRES_PORT,
    defaults.PGBOUNCER_PORT,
    defaults.APP_PORT,
    defaults.APP_METRICS_PORT,
    defaults.OUTBOX_METRICS_PORT,
    defaults.PGBOUNCER_EXPORTER_PORT,
    defaults.POSTGRES_EXPORTER_PORT,
    defaults.NODE_EXPORTER_PORT,
    defaults.PROMETHEUS_PORT,
    defaults.ALERTMANAGER_PORT,
    ALERTMANAGER_CLUSTER_PORT,
)
# (source, destination group) -> ports that must be open; every other pair must be filtered.
EXPECTED_OPEN = {
    (CONTROL, "db"): {defaults.SSH_PORT},
    (CONTROL, "app"): {defaults.SSH_PORT, defaults.APP_PORT},
    (CONTROL, "monitor"): {defaults.SSH_PORT, defaults.PROMETHEUS_PORT, defaults.ALERTMANAGER_PORT},
    ("app", "db"): {defaults.PGBOUNCER_PORT, defaults.POSTGRES_PORT},
    ("monitor", "db"): {defaults.POSTGRES_EXPORTER_PORT, defaults.NODE_EXPORTER_PORT},
    ("monitor", "app"): {
        defaults.APP_METRICS_PORT,
        defaults.OUTBOX_METRICS_PORT,
        defaults.PGBOUNCER_EXPORTER_PORT,
    },
}
# Ports that each host serves (listens on) in the lab, on its private address only.
PRIVATE_LISTENERS = {
    "db": {defaults.POSTGRES_EXPORTER_PORT, defaults.NODE_EXPORTER_PORT},
    "app": {
        defaults.APP_METRICS_PORT,
        defaults.OUTBOX_METRICS_PORT,
        defaults.PGBOUNCER_EXPORTER_PORT,
    },
    "monitor": {defaults.PROMETHEUS_PORT, defaults.ALERTMANAGER_PORT},
}


def _by_group(hosts, group):
    return next(h for h in hosts if group in h["groups"])


def _role(h) -> str:
    return next(g for g in ("db", "app", "monitor") if g in h["groups"])


@pytest.fixture(scope="module")
def firewalled(deployed, second_deploy):
    """The lab with this tree's site deploy (the firewall is part of it) and its second run,
    which must change nothing: the session's, shared with tests/lab/test_deploy_e2e.py."""
    return {"hosts": deployed["hosts"], "second": second_deploy}


def _probe_from_host(source, targets: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """Probe every target at once from inside `source` (bash's /dev/tcp, bounded by timeout)."""
    lines = [
        f"(timeout {PROBE_SECONDS} bash -c '</dev/tcp/{ip}/{port}' 2>/dev/null; "
        f'echo "{ip} {port} $?") &'
        for ip, port in targets
    ]
    proc = ssh.run(source["ip"], "\n".join([*lines, "wait"]), timeout=60)
    assert proc.returncode == 0, proc.stderr
    results = {}
    for line in proc.stdout.splitlines():
        ip, port, rc = line.split()
        results[(ip, int(port))] = {"0": "open", "124": "filtered"}.get(rc, "refused")
    assert len(results) == len(targets), proc.stdout
    return results


def _probe_one(target: tuple[str, int]) -> str:
    try:
        with socket.create_connection(target, timeout=PROBE_SECONDS):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "filtered"


def _probe_from_control(targets: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        return dict(zip(targets, pool.map(_probe_one, targets), strict=True))


def test_second_deploy_with_the_firewall_changes_nothing(firewalled):
    second = firewalled["second"]
    assert second.returncode == 0 and second.errors == 0, second.output[-4000:]
    assert second.changed == 0, f"changed on the second run: {second.changed_operations()}"


def test_reachability_matrix(firewalled):
    hosts = firewalled["hosts"]
    sources = [(CONTROL, None)] + [(_role(h), h) for h in hosts]
    rows, mismatches = [], []
    for source_role, source in sources:
        dests = [h for h in hosts if h is not source]
        targets = [(d["ip"], port) for d in dests for port in PORTS]
        seen = _probe_from_control(targets) if source is None else _probe_from_host(source, targets)
        for d in dests:
            opened = EXPECTED_OPEN.get((source_role, _role(d)), set())
            for port in PORTS:
                expected = "open" if port in opened else "filtered"
                got = seen[(d["ip"], port)]
                rows.append((source_role, _role(d), port, expected, got))
                if got != expected:
                    mismatches.append(rows[-1])
    print(f"\n{'source':8} {'dest':8} {'port':>5}  {'expected':9} seen")
    for source_role, dest, port, expected, got in rows:
        flag = "" if got == expected else "   <-- MISMATCH"
        print(f"{source_role:8} {dest:8} {port:>5}  {expected:9} {got}{flag}")
    opened = sum(1 for r in rows if r[3] == r[4] == "open")
    closed = sum(1 for r in rows if r[3] == r[4] == "filtered")
    print(
        f"pairs probed {len(rows)}, open as expected {opened}, "
        f"closed as expected {closed}, mismatches {len(mismatches)}"
    )
    assert opened == sum(len(v) for v in EXPECTED_OPEN.values())
    assert not mismatches, mismatches


def test_services_listen_on_the_private_address_only(firewalled):
    """Exporters, Prometheus and Alertmanager listen on the host's own address, not on every
    address; Alertmanager has no cluster port."""
    for h in firewalled["hosts"]:
        out = ssh.run(h["ip"], "ss -Hltn", timeout=30)
        assert out.returncode == 0, out.stderr
        local = [line.split()[3] for line in out.stdout.splitlines() if line.strip()]
        for port in PRIVATE_LISTENERS[_role(h)]:
            bound = [a for a in local if a.rsplit(":", 1)[1] == str(port)]
            assert bound == [f"{h['ip']}:{port}"], (h["name"], port, bound)
        assert not [a for a in local if a.endswith(f":{ALERTMANAGER_CLUSTER_PORT}")]


def test_the_firewall_is_loaded_with_a_drop_policy_on_every_host(firewalled):
    for h in firewalled["hosts"]:
        out = ssh.run(h["ip"], "nft list chain inet sparkops input", timeout=30)
        assert out.returncode == 0, out.stderr
        assert "policy drop;" in out.stdout
        assert f"ip saddr {config.BRIDGE_IP} tcp dport {defaults.SSH_PORT} accept" in out.stdout
