"""The firewall's rules from the inventory (deploys/firewall.py): pure logic, then the
rendered ruleset through the real `nft -c` in a network namespace of its own."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from deploys import firewall, support
from sparkops import defaults

GROUPS = {
    "db": ["10.0.0.10"],
    "app": ["10.0.0.11", "10.0.0.21"],
    "monitor": ["10.0.0.12"],
}
CONTROL = ["10.0.0.1"]


def _flows(groups, **data):
    data.setdefault("firewall_control_addresses", CONTROL)
    return firewall.flows(groups, data, lambda g: GROUPS.get(g, []))


def _table(flows):
    return {f.port: f.sources for f in flows}


def test_db_accepts_pgbouncer_and_postgresql_from_app_exporters_from_monitor_ssh_from_control():
    table = _table(_flows(["db"]))
    apps = ("10.0.0.11/32", "10.0.0.21/32")
    assert table == {
        22: ("10.0.0.1/32",),
        defaults.PGBOUNCER_PORT: apps,
        defaults.POSTGRES_PORT: apps,
        defaults.POSTGRES_EXPORTER_PORT: ("10.0.0.12/32",),
        defaults.NODE_EXPORTER_PORT: ("10.0.0.12/32",),
    }


def test_app_accepts_clients_anywhere_by_default_and_metrics_only_from_monitor():
    table = _table(_flows(["app"]))
    monitor = ("10.0.0.12/32",)
    assert table == {
        22: ("10.0.0.1/32",),
        defaults.APP_PORT: None,
        defaults.APP_METRICS_PORT: monitor,
        defaults.OUTBOX_METRICS_PORT: monitor,
        defaults.PGBOUNCER_EXPORTER_PORT: monitor,
    }


def test_app_clients_restricted_and_disabled_exporters_left_closed():
    table = _table(
        _flows(
            ["app"],
            firewall_app_clients=["192.0.2.0/24", "2001:db8::1"],
            app_outbox_enabled=False,
            app_pgbouncer_exporter_enabled=False,
        )
    )
    assert table[defaults.APP_PORT] == ("192.0.2.0/24", "2001:db8::1/128")
    assert defaults.OUTBOX_METRICS_PORT not in table
    assert defaults.PGBOUNCER_EXPORTER_PORT not in table


def test_monitor_accepts_prometheus_and_alertmanager_from_control_only():
    table = _table(_flows(["monitor"]))
    assert table == {
        22: ("10.0.0.1/32",),
        defaults.PROMETHEUS_PORT: ("10.0.0.1/32",),
        defaults.ALERTMANAGER_PORT: ("10.0.0.1/32",),
    }


def test_no_control_address_is_refused_rather_than_locking_ssh_out():
    with pytest.raises(firewall.FirewallError, match="firewall_control_addresses is empty"):
        _flows(["db"], firewall_control_addresses=[])


@pytest.mark.parametrize(
    "data, message",
    [
        ({"firewall_control_addresses": "10.0.0.1"}, "must be a list"),
        ({"firewall_control_addresses": ["10.0.0.300"]}, "not an address"),
        ({"firewall_app_clients": ["lb.example"]}, "not an address"),
        ({"firewall_extra_rules": [{"port": 0, "sources": ["10.0.0.1"]}]}, "port must be"),
        ({"firewall_extra_rules": [{"port": 443, "sources": []}]}, "sources is empty"),
        ({"firewall_extra_rules": [{"port": 443, "source": ["10.0.0.1"]}]}, "must be"),
    ],
)
def test_bad_parameters_are_clear_errors(data, message):
    with pytest.raises(firewall.FirewallError, match=message):
        _flows(["app"], **data)


def test_extra_rules_and_a_host_in_no_group_gets_only_ssh():
    flows = _flows(["bastion"], firewall_extra_rules=[{"port": 443, "sources": ["10.9.0.0/16"]}])
    assert _table(flows) == {22: ("10.0.0.1/32",), 443: ("10.9.0.0/16",)}


def test_an_empty_source_group_opens_nothing():
    flows = firewall.flows(
        ["db"],
        {"firewall_control_addresses": CONTROL},
        lambda g: [] if g == "app" else ["10.0.0.12"],
    )
    assert defaults.PGBOUNCER_PORT not in _table(flows)


def test_rules_split_ipv4_and_ipv6_and_any_source_has_no_saddr():
    mixed = firewall.Flow(22, ("10.0.0.1/32", "2001:db8::/64"), "SSH")
    assert firewall.rule_lines(mixed) == [
        'ip saddr { 10.0.0.1/32 } tcp dport 22 accept comment "SSH"',
        'ip6 saddr { 2001:db8::/64 } tcp dport 22 accept comment "SSH"',
    ]
    assert firewall.rule_lines(firewall.Flow(8000, None, "app")) == [
        'tcp dport 8000 accept comment "app"'
    ]


def test_ruleset_drops_by_default_and_keeps_loopback_and_answers():
    text = firewall.ruleset(_flows(["db", "app", "monitor"]))
    assert text.startswith("#!/usr/sbin/nft -f\n# " + support.MANAGED_HEADER)
    assert "policy drop;" in text
    assert "ct state established,related accept" in text
    assert 'iif "lo" accept' in text
    assert "flush ruleset" not in text  # only our own table is replaced


def test_the_ruleset_loads_twice_in_real_nftables(tmp_path):
    """`nft -f` in a throwaway network namespace: the rendered file is valid, and loading it
    again (a reload) replaces the table instead of failing or doubling the rules."""
    nft, unshare = shutil.which("nft"), shutil.which("unshare")
    assert nft and unshare, "nft and unshare come from scripts/debian-packages.txt"
    path = tmp_path / "nftables.conf"
    path.write_text(firewall.ruleset(_flows(["db", "app", "monitor"])))
    # Without /etc/protocols, as on a minimal host (the lab's): no name nft must resolve.
    script = (
        f"mount --bind /dev/null /etc/protocols && {nft} -f {path} && {nft} -f {path} && "
        f"{nft} list table inet {firewall.TABLE}"
    )
    proc = subprocess.run(
        [unshare, "--net", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(f"tcp dport {defaults.PGBOUNCER_PORT} accept") == 1
    assert "policy drop" in proc.stdout


def _with_lb(groups, **data):
    data.setdefault("firewall_control_addresses", CONTROL)
    found = {**GROUPS, "lb": ["10.0.0.30"]}
    return firewall.flows(groups, data, lambda g: found.get(g, []))


def test_with_an_lb_the_app_port_is_open_to_the_lb_and_control_only():
    table = _table(_with_lb(["app"]))
    assert table[defaults.APP_PORT] == ("10.0.0.30/32", "10.0.0.1/32")
    # named clients replace the control machine, the lb stays
    table = _table(_with_lb(["app"], firewall_app_clients=["192.0.2.7"]))
    assert table[defaults.APP_PORT] == ("10.0.0.30/32", "192.0.2.7/32")


def test_the_lb_accepts_https_and_http_from_anywhere_or_its_named_clients():
    table = _table(_with_lb(["lb"]))
    assert table == {
        22: ("10.0.0.1/32",),
        defaults.LB_HTTPS_PORT: None,
        defaults.LB_HTTP_PORT: None,
    }
    table = _table(_with_lb(["lb"], firewall_lb_clients=["198.51.100.0/24"]))
    assert table[defaults.LB_HTTPS_PORT] == ("198.51.100.0/24",)
    assert defaults.APP_PORT not in table
