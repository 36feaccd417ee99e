"""What a rollback reads and checks on an app host, in as few round trips as it can: the
releases and `current` in one command (releases.look), everything its planning needs on an
inventory host in one SSH command (sites.parse_rollback_read reads that command's answer),
and a switch that checks `current` is still where the plan read it instead of reading it
again. Real shell commands on a releases directory laid out as the deploy lays it out; the
service is a recorder (what matters here is whether it was restarted, not the app)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app import migrate
from runbooks import flows, releases, rollback, sites
from runbooks.checklist import Refused, Run
from runbooks.executor import Executor, LocalExecutor
from runbooks.releases import AppTarget
from runbooks.services import ServiceControl
from sparkops import layout


@dataclass
class RecordedService(ServiceControl):
    calls: list[str] = field(default_factory=list)
    description: str = "recorded"

    def stop(self) -> None:
        self.calls.append("stop")

    def start(self) -> None:
        self.calls.append("start")

    def restart(self) -> None:
        self.calls.append("restart")


class NoCommands(Executor):
    def _spawn(self, argv, **_kw):
        raise AssertionError(f"a command ran: {argv}")


def lay_out(root: Path, name: str, *, age: int, bad: bool = False, installed: bool = True,
            head: str | None = "0015_x") -> None:  # fmt: skip
    d = root / "releases" / name
    d.mkdir(parents=True)
    if head:
        (d / releases.SCHEMA_HEAD_FILE).write_text(head + "\n")
    if bad:
        (d / releases.BAD_MARK).write_text("health gate failed\n")
    if installed:
        (d / ".installed").write_text("")
        stamp = time.time() - age
        os.utime(d / ".installed", (stamp, stamp))


def point(root: Path, name: str) -> None:
    tmp = root / "current.tmp"
    tmp.symlink_to(f"releases/{name}")
    tmp.replace(root / "current")


def target(root: Path, executor: Executor | None = None, service=None) -> AppTarget:
    return AppTarget(
        executor=executor or LocalExecutor(),
        service=service or RecordedService(),
        base_url="http://127.0.0.1:9",
        db_revision=lambda: "0015_x",
        root=str(root),
        label="app-test",
    )


def test_look_reads_current_and_the_installed_releases_in_one_command(tmp_path):
    lay_out(tmp_path, "A", age=300)
    lay_out(tmp_path, "B", age=200, bad=True, head="0014_y")
    lay_out(tmp_path, "C", age=100)
    lay_out(tmp_path, "half", age=50, installed=False)  # an upload that did not finish
    point(tmp_path, "C")
    commands = []
    app = target(tmp_path)
    app.executor.recorders.append(commands.append)
    seen = releases.look(app)
    assert len(commands) == 1
    assert seen.current == "C"
    assert [(r.name, r.bad, r.schema_head) for r in seen.found] == [
        ("A", False, "0015_x"), ("B", True, "0014_y"), ("C", False, "0015_x")]  # fmt: skip
    # The same as the two separate reads give.
    assert seen.found == releases.list_releases(app)
    assert seen.current == releases.current_release(app)


def test_look_without_a_current_link_or_a_releases_directory(tmp_path):
    seen = releases.look(target(tmp_path))
    assert seen.current is None and seen.found == []


def test_a_rollback_plan_from_a_reading_runs_no_command(tmp_path):
    app = target(tmp_path, executor=NoCommands(name="nowhere"))
    head = migrate.revisions()[-1].revision
    found = [releases.Release("A", 1.0, False, head), releases.Release("B", 2.0, False, head)]
    reading = rollback.Reading(releases.Seen("B", found), head)
    plan = rollback.prepare(app, None, False, gate_timeout=5, reading=reading)
    assert plan.origin == "B" and plan.target.name == "A" and plan.schema_ok


def test_no_current_release_is_refused_before_the_revision_matters(tmp_path):
    app = target(tmp_path, executor=NoCommands(name="nowhere"))
    reading = rollback.Reading(releases.Seen(None, []), None)
    with pytest.raises(Refused, match="does not point at a release"):
        rollback.prepare(app, None, False, reading=reading)


def test_the_switch_refuses_when_current_moved_since_the_plan(tmp_path):
    for name, age in (("A", 300), ("B", 200), ("C", 100)):
        lay_out(tmp_path, name, age=age)
    point(tmp_path, "C")  # the plan read B; someone deployed C since
    app = target(tmp_path)
    run = Run("activate")
    with pytest.raises(releases.CurrentMoved, match="points at C, not at B"):
        releases.activate(app, "A", run, gate_timeout=1, origin="B", clear_bad=False)
    assert os.readlink(tmp_path / "current") == "releases/C"
    assert app.service.calls == []  # not restarted, and no "return" to B either


def test_the_switch_goes_ahead_when_current_is_where_the_plan_read_it(tmp_path):
    for name, age in (("A", 300), ("B", 200)):
        lay_out(tmp_path, name, age=age)
    point(tmp_path, "B")
    app = target(tmp_path)
    releases.switch(app, "A", expect="B")
    assert os.readlink(tmp_path / "current") == "releases/A"


# --- the one SSH command of a rollback's planning, as its answer reads -------------------
UNITS = layout.APP_SERVICES


def answer(states: list[str], look: str, rc: int, revision: str) -> str:
    return "@units\n" + "\n\n".join(states) + "\n" + look + f"@revision {rc}\n" + revision


LOOK = "@current releases/B\nA\t100\t\t0015_x\nB\t200\t\t0015_x\n"


def test_the_planning_read_parses_units_releases_and_revision():
    units, reading = sites.parse_rollback_read(
        "app", answer(["loaded", "not-found", "loaded"], LOOK, 0, "0015_x\n")
    )
    assert units == (UNITS[0], UNITS[2])
    assert reading.seen.current == "B" and [r.name for r in reading.seen.found] == ["A", "B"]
    assert reading.db_revision == "0015_x"


def test_the_planning_read_with_an_empty_database():
    _units, reading = sites.parse_rollback_read("app", answer(["loaded"] * 3, LOOK, 0, ""))
    assert reading.db_revision is None


def test_the_planning_read_refuses_a_failed_revision_read():
    with pytest.raises(Refused, match="cannot read the database's schema revision from app"):
        sites.parse_rollback_read(
            "app", answer(["loaded"] * 3, LOOK, 1, "psycopg.OperationalError: refused\n")
        )


def test_the_planning_read_without_current_does_not_need_the_revision():
    _units, reading = sites.parse_rollback_read(
        "app", answer(["loaded"] * 3, "@current \n", 1, "no such file\n")
    )
    assert reading.seen.current is None and reading.db_revision is None


def test_the_planning_read_refuses_a_host_without_the_app():
    with pytest.raises(Refused, match=f"{UNITS[0]} is not installed on app"):
        sites.parse_rollback_read("app", answer(["not-found"] * 3, LOOK, 0, "0015_x\n"))


@pytest.mark.parametrize("out", ["", "@units\nloaded\n", "garbage\n@revision 0\n"])
def test_the_planning_read_refuses_an_answer_it_cannot_read(out):
    with pytest.raises(Refused, match="cannot read the releases on app"):
        sites.parse_rollback_read("app", out)


# --- the database's revision from the db hosts (a cluster: every member answers) ---------
def test_the_db_hosts_answer_the_revision_they_agree_on():
    assert flows._agreed_revision([("0015_x", None)]) == "0015_x"
    assert flows._agreed_revision([(None, None)]) is None  # a database never migrated
    # A member that did not answer is left out when another did.
    assert flows._agreed_revision([(None, "db2: does not answer SSH"), ("0015_x", None)]) == (
        "0015_x"
    )


def test_no_db_host_answering_is_refused():
    with pytest.raises(Refused, match=r"no db host answered .*db: does not answer SSH"):
        flows._agreed_revision([(None, "db: does not answer SSH")])


def test_db_hosts_that_disagree_are_refused():
    with pytest.raises(Refused, match="disagree on the schema revision"):
        flows._agreed_revision([("0015_x", None), ("0014_y", None)])
