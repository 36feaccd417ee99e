"""The scheduled drill's units, rendered: the command the timer runs exists as written (every
flag in `sparkops drill --help`), the target file is what `--target-file` reads, and the
schedule fits inside RestoreDrillFailed's window."""

from __future__ import annotations

import json
import re
import shlex

from alerts import config as alert_config
from deploys import drill, hacluster, support
from runbooks import sites
from sparkops_cli.main import main
from tests.docs import mentions

DAY_SECONDS = 24 * 3600


def _unit(place: str | None = None) -> str:
    return support.render(
        "drill/spark-restore-drill.service.j2",
        sparkops="/opt/spark-app/releases/r1/venv/bin/sparkops",
        target_file=drill.TARGET_FILE,
        scratch_dir=drill.SCRATCH_DIR,
        scratch_port=drill.DEFAULTS["drill_scratch_port"],
        metrics_file="/var/lib/prometheus/node-exporter/spark_restore_drill.prom",
        evidence_dir=drill.EVIDENCE_DIR,
        timeout=drill.DEFAULTS["drill_timeout"],
        hardening=[],
        place=place,
        condition=hacluster.role_condition(place, run_as="postgres") if place else None,
    )


def test_the_unit_runs_a_drill_command_that_exists():
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", _unit(), re.M)
    argv = shlex.split(exec_start)
    assert argv[0].endswith("/venv/bin/sparkops") and argv[1] == "drill"
    assert mentions.check_command(main, "sparkops " + " ".join(argv[1:])) == []
    for flag in ("--target-file", "--metrics-file", "--yes", "--evidence-dir"):
        assert flag in argv
    assert mentions.check_command(main, "sparkops drill --no-such-flag")  # the check bites


def test_the_target_file_is_what_the_drill_reads(tmp_path):
    path = tmp_path / "target.json"
    path.write_text(json.dumps(drill.target_spec()))
    target = sites.db_target_from_file(path, None)
    assert target.data_dir == drill.DATA_DIR and target.port == 5432
    assert target.pgbackrest_config == "/etc/pgbackrest/pgbackrest.conf"


def test_weekly_inside_the_alerts_window_and_first_run_optional():
    schedule = drill.DEFAULTS["drill_schedule"]
    weekdays = schedule.split()[0]
    assert re.fullmatch(r"Mon|Tue|Wed|Thu|Fri|Sat|Sun", weekdays), "one day a week"
    assert 7 * DAY_SECONDS < alert_config.RESTORE_DRILL_MAX_AGE_SECONDS
    with_first = support.render("drill/spark-restore-drill.timer.j2", schedule=schedule,
                                first_run_after="5min")  # fmt: skip
    assert "OnActiveSec=5min" in with_first and f"OnCalendar={schedule}" in with_first
    without = support.render("drill/spark-restore-drill.timer.j2", schedule=schedule,
                             first_run_after=None)  # fmt: skip
    assert "OnActiveSec" not in without


def test_on_a_cluster_the_drill_runs_on_a_replica_when_the_repository_is_shared():
    assert drill.drill_place(cluster=False, repo_type="s3") is None  # a single db host drills
    assert drill.drill_place(cluster=True, repo_type="s3") == "replica"
    # A posix repository per node: the primary's has the newest backups.
    assert drill.drill_place(cluster=True, repo_type="posix") == "primary"
    assert drill.drill_place(cluster=True, repo_type=None) == "primary"  # the default, posix
    assert "ExecCondition" not in _unit()
    (condition,) = re.findall(r"^ExecCondition=(.*)$", _unit("replica"), re.M)
    # Root runs the unit; psql runs as postgres (peer authentication on the socket).
    assert "runuser -u postgres -- psql" in condition and "= t" in condition
    assert "!= t" in hacluster.role_condition("primary")
