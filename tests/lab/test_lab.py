"""The lab's promises, checked on real namespaced hosts: systemd boots, sshd answers with
checked host keys, hosts reach each other and nothing else, pyinfra drives them, apt works
through the proxy, and `down` leaves nothing behind."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploys import firewall
from lab import cgroup, config, control, host, net, ssh, state
from sparkops.wait import wait_until
from sparkops_cli.commands.lab import command as lab_command

pytestmark = pytest.mark.lab

REPO = config.REPO_ROOT
PYINFRA = str(Path(sys.executable).parent / "pyinfra")
INVENTORY = str(REPO / "inventories" / "lab.py")
PROBE_PORT = 7711


def _ssh(h, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = ssh.run(h["ip"], command, timeout=timeout)
    return proc


def _pyinfra(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYINFRA, "-y", INVENTORY, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def test_hosts_boot_systemd_and_answer_ssh(lab_hosts):
    assert [h["name"] for h in lab_hosts] == list(config.DEFAULT_HOSTS)
    for h in lab_hosts:
        proc = _ssh(h, "hostname; systemctl is-system-running; systemctl show-environment")
        lines = proc.stdout.split()
        assert lines[0] == h["name"], proc
        if lines[1] == "degraded":
            failed = _ssh(h, "systemctl --failed --no-legend").stdout
            print(f"{h['name']} is degraded; failed units:\n{failed}")
        assert lines[1] in ("running", "degraded"), proc
        assert "LANG=C.UTF-8" in lines[2:], "services would run without a UTF-8 locale"


def test_units_can_use_private_user_namespaces(lab_hosts):
    """Debian units such as prometheus.service set PrivateUsers=true; that fails (217/USER)
    when systemd runs chrooted instead of in its own root."""
    proc = _ssh(lab_hosts[2], "systemd-run -p PrivateUsers=true -p User=nobody --pipe --wait -q id")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("uid=65534(nobody)")


def test_host_keys_are_checked(lab_hosts, tmp_path):
    """An empty known_hosts refuses the connection: the lab's known_hosts is what lets us in."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = [
        a if not a.startswith("UserKnownHostsFile=") else f"UserKnownHostsFile={empty}"
        for a in ssh.ssh_argv(lab_hosts[0]["ip"])
    ]
    proc = subprocess.run([*argv, "true"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 255
    assert "host key" in proc.stderr.lower()


def _open_probe_port(db) -> None:
    """When the deploy's firewall is on the host (an earlier test deployed it), let the probe
    through for this test only: the firewall drops every port the groups do not imply."""
    _ssh(
        db,
        f"if nft list table inet {firewall.TABLE} >/dev/null 2>&1; then nft insert rule inet "
        f"{firewall.TABLE} input tcp dport {PROBE_PORT} accept comment lab-probe; fi",
    )


def _close_probe_port(db) -> None:
    # `nft -a` ends each rule with "# handle N": delete ours by its handle.
    _ssh(
        db,
        f"nft -a list chain inet {firewall.TABLE} input 2>/dev/null | awk '/lab-probe/ "
        f"{{print $NF}}' | while read h; do nft delete rule inet {firewall.TABLE} input "
        "handle $h; done",
    )


def test_hosts_reach_each_other_over_the_bridge(lab_hosts):
    db, app = lab_hosts[0], lab_hosts[1]
    _open_probe_port(db)
    started = _ssh(
        db,
        f"systemd-run --unit=lab-probe python3 -m http.server {PROBE_PORT} --bind {db['ip']}"
        f" --directory /etc",
    )
    assert started.returncode == 0, started.stderr
    try:
        url = f"http://db:{PROBE_PORT}/hostname"
        fetched = wait_until(
            lambda: _ssh(app, f"curl -sf {url}").stdout.strip(),
            timeout=15,
            what=f"{url} to answer from host app",
        )
        assert fetched == "db"
    finally:
        _ssh(db, "systemctl stop lab-probe")
        _close_probe_port(db)


def test_hosts_reach_nothing_outside_the_lab(lab_hosts):
    app = lab_hosts[1]
    routes = _ssh(app, "ip route").stdout
    assert "default" not in routes, routes
    mirror = subprocess.run(
        ["getent", "hosts", "deb.debian.org"], capture_output=True, text=True, check=False
    ).stdout.split()
    target = mirror[0] if mirror else "1.1.1.1"
    direct = _ssh(app, f"curl -s --noproxy '*' --max-time 3 -o /dev/null http://{target}/")
    assert direct.returncode != 0, "a lab host reached the mirror without the proxy"


def test_pyinfra_reaches_every_host_through_the_inventory(lab_hosts):
    proc = _pyinfra("exec", "--", "hostname")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for h in lab_hosts:
        name = re.escape(h["name"])
        assert re.search(rf"\[{name}\]\s+{name}\n", proc.stdout + proc.stderr), proc.stderr
    fact = _pyinfra("fact", "server.Os")
    assert fact.returncode == 0, fact.stderr
    for h in lab_hosts:  # pyinfra prints facts on stderr
        assert f'"{h["name"]}": "Linux"' in fact.stdout + fact.stderr, fact.stderr


def test_pyinfra_starts_a_systemd_unit(lab_hosts, tmp_path):
    deploy = tmp_path / "unit_deploy.py"
    deploy.write_text(
        textwrap.dedent(
            """
            from io import StringIO

            from pyinfra.operations import files, systemd

            unit = files.put(
                name="Install the lab probe unit",
                src=StringIO(
                    "[Unit]\\nDescription=lab probe\\n"
                    "[Service]\\nExecStart=/bin/sleep infinity\\n"
                    "[Install]\\nWantedBy=multi-user.target\\n"
                ),
                dest="/etc/systemd/system/sparkops-lab-probe.service",
            )
            systemd.service(
                name="Ensure the lab probe runs",
                service="sparkops-lab-probe.service",
                running=True,
                enabled=True,
                daemon_reload=unit.did_change,
            )
            """
        )
    )
    proc = _pyinfra("--limit", "db", str(deploy))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    db = lab_hosts[0]
    assert _ssh(db, "systemctl is-active sparkops-lab-probe").stdout.strip() == "active"
    assert _ssh(db, "systemctl is-enabled sparkops-lab-probe").stdout.strip() == "enabled"


def test_apt_installs_a_package_through_the_proxy(lab_hosts):
    monitor = lab_hosts[2]
    proc = _ssh(monitor, "apt-get update -q && apt-get install -y -q jq && jq --version", 300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("jq-")
    log = (config.lab_dir() / "proxy/log/apt-cacher.log").read_text()
    assert "/jq_" in log, "jq did not come through the lab's apt proxy"
    gateway = _ssh(monitor, f"getent hosts {config.GATEWAY_NAME}").stdout.split()
    assert gateway[:1] == [config.BRIDGE_IP]


def test_up_again_says_the_lab_is_up(lab_hosts):
    again = control.up(config.DEFAULT_HOSTS, log=lambda _msg: None)
    assert again.already_up
    assert again.hosts == lab_hosts


def test_up_makes_a_lab_of_an_older_format_again(owned_lab):
    lab_state = state.load()
    lab_state["format"] = control.LAB_FORMAT - 1
    state.save(lab_state)
    messages: list[str] = []
    again = control.up(config.DEFAULT_HOSTS, log=messages.append)
    assert not again.already_up
    assert "older version" in " ".join(messages)
    assert again.hosts == owned_lab
    assert state.load()["format"] == control.LAB_FORMAT


def test_ssh_to_an_unknown_host_lists_the_hosts(lab_hosts):
    result = CliRunner().invoke(lab_command, ["ssh", "nosuchhost", "--", "true"])
    assert result.exit_code != 0
    assert "no lab host named 'nosuchhost'" in result.output
    assert "db, app, monitor" in result.output


def _leftovers() -> list[str]:
    found = [f"netns {ns}" for ns in net.leftover_netns()]
    found += [f"link {name}" for name in (config.BRIDGE,) if net.link_exists(name)]
    found += [
        f"link {net.veth_name(n)}"
        for n in config.DEFAULT_HOSTS
        if net.link_exists(net.veth_name(n))
    ]
    found += [f"mount {m}" for m in host.mounts_under(config.lab_dir())]
    found += [f"cgroup {c}" for c in cgroup.ours()]
    return found


def test_down_leaves_nothing_and_is_safe_twice(owned_lab):
    lab_hosts = owned_lab
    before = state.load()
    processes = [h["process"] for h in before["hosts"].values()] + [before["proxy"]]
    assert all(state.is_alive(p) for p in processes)

    control.down(log=lambda _msg: None)
    assert _leftovers() == []
    assert not any(state.is_alive(p) for p in processes)
    assert not config.state_file().exists()
    no_lab = _pyinfra("exec", "--", "true", timeout=60)
    assert no_lab.returncode != 0
    assert "no lab is up: run `sparkops lab up`" in no_lab.stdout + no_lab.stderr

    control.down(log=lambda _msg: None)
    assert _leftovers() == []

    # Later tests in the session share this lab: bring it back as it was.
    assert control.up(config.DEFAULT_HOSTS, log=lambda _msg: None).hosts == lab_hosts


def test_down_after_a_lost_state_file_still_ends_everything(owned_lab):
    """A crash can lose the state file: down then finds the lab's things by their names and
    ends its processes through the cgroups it made for them."""
    lab_hosts = owned_lab
    before = state.load()
    processes = [h["process"] for h in before["hosts"].values()] + [before["proxy"]]
    assert all(state.is_alive(p) for p in processes)
    config.state_file().unlink()

    control.down(log=lambda _msg: None)
    assert _leftovers() == []
    assert not any(state.is_alive(p) for p in processes)

    assert control.up(config.DEFAULT_HOSTS, log=lambda _msg: None).hosts == lab_hosts
