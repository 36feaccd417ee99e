"""Pure logic of the runbooks: LSN and segment arithmetic, `pgbackrest info` statuses, input
checks, query naming, the metric file, and secrets kept out of what is logged."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from runbooks import checks, drill, pitr, wal
from runbooks.checklist import Refused
from runbooks.executor import SshExecutor, display
from sparkops import metric_names

NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def test_lsn_round_trip_and_refusals():
    assert wal.parse_lsn("0/16B3748") == 0x16B3748
    assert wal.parse_lsn("1/0") == 1 << 32
    assert wal.format_lsn(wal.parse_lsn("A/FF")) == "A/FF"
    for bad in ("16B3748", "0/", "0/XYZ", "0/123456789", ""):
        with pytest.raises(Refused, match="is not an LSN"):
            wal.parse_lsn(bad)


def test_segment_end():
    assert wal.segment_end_lsn("000000010000000000000002") == 3 * 16 * 1024 * 1024
    assert wal.segment_end_lsn("0000000200000001000000FF") == (1 << 32) + 256 * 16 * 1024 * 1024
    assert wal.segment_timeline("0000000A0000000000000001") == 10


def _info(code, message="x", backups=()):
    return json.dumps([{"name": "spark", "status": {"code": code, "message": message},
                        "backup": list(backups), "archive": []}])  # fmt: skip


@pytest.mark.parametrize(
    ("code", "expected"),
    [(1, "missing stanza path"), (3, "missing stanza data"), (2, "has no backup"),
     (99, "not usable")],
)  # fmt: skip
def test_info_statuses_are_refusals(code, expected):
    message = {1: "missing stanza path", 3: "missing stanza data"}.get(code, "other")
    with pytest.raises(Refused, match=expected):
        wal.parse_info(_info(code, message), "spark")


def test_info_without_the_stanza_and_garbage():
    with pytest.raises(Refused, match="no stanza 'other'"):
        wal.parse_info(_info(0), "other")
    with pytest.raises(Refused, match="did not return JSON"):
        wal.parse_info("ERROR: [041]", "spark")


def test_time_input():
    assert pitr.parse_time("2026-11-29T07:00:00Z", NOW).hour == 7
    assert pitr.parse_time("2026-11-29 10:00:00+03:00", NOW).hour == 7
    with pytest.raises(Refused, match="in the future"):
        pitr.parse_time("2026-11-29T08:00:01Z", NOW)
    with pytest.raises(Refused, match="no time zone"):
        pitr.parse_time("2026-11-29T07:00:00", NOW)
    with pytest.raises(Refused, match="not a timestamp"):
        pitr.parse_time("an hour ago", NOW)


def test_request_kinds():
    with pytest.raises(Refused, match="needs a name"):
        pitr.validate_request(pitr.Request(kind="name", value=" "), NOW)
    with pytest.raises(Refused, match="unknown restore target kind"):
        pitr.validate_request(pitr.Request(kind="xid", value="1"), NOW)


def test_check_queries_are_named():
    assert checks.named_queries(()) == checks.DEFAULT_CHECKS
    got = checks.named_queries(("n=SELECT 1", "SELECT count(*) FROM orders WHERE side='buy'"))
    assert got == {"n": "SELECT 1", "q2": "SELECT count(*) FROM orders WHERE side='buy'"}


def test_metric_file_text():
    text = drill.metrics_text(True, 12.5, now=1000.0)
    assert f"{metric_names.RESTORE_DRILL_LAST_SUCCESS} 1\n" in text
    assert f"{metric_names.RESTORE_DRILL_DURATION} 12.500\n" in text
    assert f"{metric_names.RESTORE_DRILL_LAST_RUN_TIMESTAMP} 1000.000\n" in text
    assert text.count("# TYPE") == 3


def test_secrets_stay_out_of_what_is_shown():
    shown = display(["psql", "-c", "PAUSE"], {"PGPASSWORD": "s3cret"}, None)
    assert "s3cret" not in shown and "PGPASSWORD=***" in shown
    ssh = SshExecutor(name="db", address="10.0.0.1")
    command = ssh.remote_command(
        ["psql", "-c", "PAUSE"], "postgres", {"PGPASSWORD": "s3cret"}, timeout=30
    )
    # Bounded on the host itself: the host's `timeout` runs the command as the other user.
    assert "timeout -k 5 30 runuser -u postgres -- sh -c " in command
    # The secret travels in the script on ssh's stdin, never on ssh's own argv.
    assert "s3cret" not in " ".join(ssh.ssh_argv())


def test_inventory_hosts_groups_and_sudo(tmp_path):
    from runbooks import inventory

    path = tmp_path / "production.py"
    path.write_text(
        'db = [("db-1", {"ssh_hostname": "10.0.0.10", "ssh_user": "ops", '
        '"ssh_known_hosts_file": "/etc/kh"})]\n'
        'app = [("app-1", {}), ("app-2", {"ssh_user": "root"})]\n'
    )
    found = inventory.load(path)
    assert found.environment == "production"
    assert [h.name for h in found.group("app")] == ["app-1", "app-2"]
    db = found.host("db-1")
    assert (db.address, db.ssh_user, str(db.known_hosts)) == ("10.0.0.10", "ops", "/etc/kh")
    assert db.groups == {"db"}
    with pytest.raises(Refused, match=r"unknown host 'db-9'.*has db-1, app-1, app-2"):
        found.host("db-9")
    with pytest.raises(Refused, match="no monitor hosts"):
        found.group("monitor")
    # An optional tier (the load balancer) is simply absent; the lab inventory even lists the
    # group with no host (`lb = []`), which the rollback must not take for a refusal.
    assert found.members("lb") == []
    assert [h.name for h in found.members("app")] == ["app-1", "app-2"]
    path.write_text(path.read_text() + "lb = []\n")
    assert inventory.load(path).members("lb") == []
    ssh = SshExecutor(name="db-1", address="10.0.0.10", ssh_user="ops", sudo=True)
    # The script (stdin) runs as root under `sudo -n sh -s`; with input (the script is then
    # ssh's argument) sudo wraps the command alone.
    script = ssh.remote_command(["systemctl", "stop", "x"], None, {"PGPASSWORD": "pw"})
    assert "timeout -k 5 120 systemctl stop x </dev/null" in script
    assert "export PGPASSWORD=pw" in script and "sudo" not in script.split("done", 1)[1]
    assert "timeout -k 5 120 sudo -n sh -c " in ssh.remote_command(
        ["systemctl", "stop", "x"], None, None, with_input=True
    )


def test_recovery_minimums_come_from_the_copys_control_file():
    from runbooks.services import recovery_minimums

    controldata = (
        "pg_control version number:            1300\n"
        "max_connections setting:              200\n"
        "max_worker_processes setting:         8\n"
        "max_wal_senders setting:              10\n"
        "max_prepared_xacts setting:           0\n"
        "max_locks_per_xact setting:           64\n"
    )
    assert recovery_minimums(controldata) == {
        "max_connections": "200",
        "max_worker_processes": "8",
        "max_wal_senders": "10",
        "max_prepared_transactions": "0",
        "max_locks_per_transaction": "64",
    }


def test_segment_numbers_and_archive_gaps():
    assert wal.segment_number("000000010000000000000003") == 3
    assert wal.segment_number("0000000200000001000000FF") == 0x1FF
    assert wal.segment_label(0x100) == "0000000100000000"
    names = ["000000010000000000000003", "000000010000000000000004",
             "000000020000000000000005",  # the switch segment, under the new timeline
             "000000020000000000000008"]  # fmt: skip
    assert wal.archive_gaps(names, 3, 5) == []
    assert wal.archive_gaps(names, 3, 8) == [(6, 7)]
    assert wal.archive_gaps(names, 2, 9) == [(2, 2), (6, 7), (9, 9)]


def test_history_switch_point():
    text = "1\t0/3000000\tno recovery target specified\n\n2\t0/5000A28\tbefore 2026-12-02\n"
    assert wal.history_switch_lsn(text) == 0x5000A28
    assert wal.history_switch_lsn("") is None


def test_evidence_is_not_world_readable_whatever_the_umask(tmp_path):
    import os
    import stat

    from runbooks.evidence import Evidence

    old = os.umask(0)
    try:
        evidence = Evidence("drill", tmp_path / "evidence")
        files = [evidence.write("plan.txt", "plan"), evidence.step_log(1, "Restore", "out")]
        files.append(evidence.write("deeper/facts.json", "{}"))
    finally:
        os.umask(old)
    folders = [evidence.path, evidence.path / "steps", evidence.path / "deeper"]
    for folder in folders:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750, folder
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
        assert path.read_text() in ("plan\n", "out\n", "{}\n")


def test_the_drills_metric_is_readable_by_node_exporter_under_a_strict_umask(tmp_path):
    """The drill's unit runs with UMask=0077; node_exporter (another user) must read the file."""
    import os
    import stat

    from runbooks.drill import write_metrics
    from runbooks.executor import LocalExecutor

    path = tmp_path / "spark_restore_drill.prom"
    old = os.umask(0o077)
    try:
        write_metrics(LocalExecutor(), str(path), True, 3.5)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert "spark_restore_drill_last_success 1" in path.read_text()


def test_evidence_goes_where_the_environment_says_when_no_dir_is_given(tmp_path, monkeypatch):
    from runbooks import evidence

    monkeypatch.setenv(evidence.EVIDENCE_DIR_ENV, str(tmp_path / "elsewhere"))
    assert evidence.Evidence("restore").path.parent == tmp_path / "elsewhere"
    assert evidence.Evidence("restore", tmp_path / "given").path.parent == tmp_path / "given"
    monkeypatch.delenv(evidence.EVIDENCE_DIR_ENV)
    assert evidence.default_root() == evidence.REPO_ROOT / "evidence"


def test_the_test_session_keeps_its_evidence_out_of_the_checkout():
    from runbooks import evidence

    assert not evidence.default_root().is_relative_to(evidence.REPO_ROOT)
