"""The lab's pure logic, without namespaces: mirror discovery, the image recipe hash, host
names, the root check, process identity and the inventory file."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys

import pytest

from lab import config, control, image, state
from lab.errors import LabError
from tests.lab.conftest import require_lab_machine

INVENTORY = config.REPO_ROOT / "inventories" / "lab.py"


def test_debian_sources_come_from_both_file_formats_and_skip_other_repositories(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "deb http://deb.example.org/debian bookworm main contrib\n"
        "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n"
    )
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://deb.example.org/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n"
    )
    sources = image.debian_sources(tmp_path)
    assert [s.uri for s in sources] == [
        "http://deb.example.org/debian",
        "http://deb.example.org/debian-security",
    ]
    assert image.main_mirror(sources) == "http://deb.example.org/debian"
    text = image.sources_list(sources)
    assert "deb http://deb.example.org/debian bookworm main contrib\n" in text
    assert "deb http://deb.example.org/debian-security bookworm-security main\n" in text


def test_no_debian_mirror_is_a_clear_error(tmp_path):
    (tmp_path / "sources.list").write_text("deb https://example.org/apt stable main\n")
    with pytest.raises(LabError, match="no plain-http Debian bookworm mirror"):
        image.debian_sources(tmp_path)


def test_the_image_name_follows_its_recipe(monkeypatch):
    sources = [image.AptSource("http://deb.example.org/debian", ("bookworm",), ("main",))]
    before = image.host_image(sources)
    assert image.host_image(sources) == before
    monkeypatch.setattr(config, "IMAGE_PACKAGES", (*config.IMAGE_PACKAGES, "jq"))
    assert image.host_image(sources) != before


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ([], "no hosts given"),
        (["DB"], "bad host name"),
        (["db-1"], "bad host name"),
        (["averyverylongname"], "bad host name"),
        (["db", "db"], "repeat"),
    ],
)
def test_bad_host_names_are_refused_before_anything_is_made(monkeypatch, tmp_path, names, message):
    monkeypatch.setenv("SPARKOPS_LAB_DIR", str(tmp_path / "lab"))
    with pytest.raises(LabError, match=message):
        control.up(names, log=lambda _m: None)
    assert not (tmp_path / "lab").exists()


def test_not_root_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARKOPS_LAB_DIR", str(tmp_path / "lab"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="the lab needs root for namespaces"):
        control.up(["db"], log=lambda _m: None)
    with pytest.raises(LabError, match="the lab needs root for namespaces"):
        control.down(log=lambda _m: None)


def test_a_process_is_ours_only_with_the_same_start_time():
    me = state.record_process(os.getpid())
    assert state.is_alive(me)
    assert not state.is_alive({"pid": os.getpid(), "start_time": me["start_time"] + 1})
    assert not state.is_alive(None)


def test_the_inventory_groups_hosts_with_their_ssh_data(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARKOPS_LAB_DIR", str(tmp_path))
    hosts = [
        {
            "name": name,
            "ip": f"10.213.0.{10 + i}",
            "groups": [name],
            "ssh_user": "root",
            "ssh_key": str(tmp_path / "id_ed25519"),
            "known_hosts": str(tmp_path / "known_hosts"),
        }
        for i, name in enumerate(("db", "app", "monitor", "extra"))
    ]
    (tmp_path / "hosts.json").write_text(json.dumps(hosts))
    inventory = runpy.run_path(str(INVENTORY))
    name, data = inventory["db"][0]
    assert (name, data["ssh_hostname"]) == ("db", "10.213.0.10")
    assert data["ssh_known_hosts_file"] == str(tmp_path / "known_hosts")
    assert data["ssh_strict_host_key_checking"] == "yes"
    assert data["ssh_user"] == "root"
    assert [h for h, _ in inventory["app"]] == ["app"]
    assert [h for h, _ in inventory["monitor"]] == ["monitor"]
    assert [h for h, _ in inventory["all"]] == ["db", "app", "monitor", "extra"]


def test_a_numbered_host_joins_the_group_of_its_base_name(monkeypatch, tmp_path):
    assert config.host_groups("app2") == ["app2", "app"]
    assert config.host_groups("app") == ["app"]
    assert config.host_groups("db10") == ["db10", "db"]
    monkeypatch.setenv("SPARKOPS_LAB_DIR", str(tmp_path))
    hosts = [
        {"name": name, "ip": f"10.213.0.{10 + i}", "groups": config.host_groups(name),
         "ssh_user": "root", "ssh_key": "k", "known_hosts": "kh"}
        for i, name in enumerate(("db", "app", "app2", "monitor"))
    ]  # fmt: skip
    (tmp_path / "hosts.json").write_text(json.dumps(hosts))
    inventory = runpy.run_path(str(INVENTORY))
    assert [h for h, _ in inventory["app"]] == ["app", "app2"]
    assert [h for h, _ in inventory["db"]] == ["db"]


def test_the_inventory_without_a_lab_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARKOPS_LAB_DIR", str(tmp_path))
    with pytest.raises(SystemExit, match="no lab is up: run `sparkops lab up`"):
        runpy.run_path(str(INVENTORY))


def _config_under(lab_id: str) -> subprocess.CompletedProcess:
    code = (
        "from lab import config, net; "
        "print(config.BRIDGE, config.SUBNET_PREFIX, net.netns_name('db'), net.veth_name('monitor'),"
        " config.lab_dir().name)"
    )
    env = {k: v for k, v in os.environ.items() if k != "SPARKOPS_LAB_DIR"}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "SPARKOPS_LAB_ID": lab_id},
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_second_lab_id_gets_its_own_names_subnet_and_directory():
    default = _config_under("0").stdout.split()
    second = _config_under("2").stdout.split()
    assert default == ["sparklab0", "10.213.0", "sparklab-db", "slab-monitor", ".lab"]
    assert second == ["sparklab2", "10.215.0", "sparklab2-db", "slab2-monitor", "id2"]
    assert all(len(name) <= 15 for name in (*default, *second))


def test_a_bad_lab_id_is_refused():
    proc = _config_under("12")
    assert proc.returncode != 0
    assert "SPARKOPS_LAB_ID must be a digit 0-9, not '12'" in proc.stderr


def test_the_lab_refuses_without_root(monkeypatch):
    monkeypatch.setattr(control.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root"):
        control.check_machine()


def test_a_missing_lab_tool_is_named_with_its_package(monkeypatch):
    monkeypatch.setattr(control.os, "geteuid", lambda: 0)
    real_find = control.programs.find
    monkeypatch.setattr(
        control.programs, "find", lambda t: None if t == "debootstrap" else real_find(t)
    )
    with pytest.raises(LabError, match="Debian's debootstrap package") as caught:
        control.check_machine()
    assert "scripts/debian-packages.txt" in str(caught.value)


def test_the_lab_tests_fail_rather_than_skip_on_a_machine_without_the_lab(monkeypatch):
    """A skip would count as a pass; the fixture fails and says what is missing."""
    monkeypatch.setattr(control.os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.fail.Exception, match=r"needs root.*not lab"):
        require_lab_machine()
