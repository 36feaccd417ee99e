"""Rollback on a local releases directory: two releases of the real app (uvicorn, told its
release id by release.env as the systemd unit is), a service controlled by pid through the
same interface as systemd, and the real database behind pgBouncer for /readyz and the schema
gate."""

from __future__ import annotations

import os

import httpx
import pytest

from app import migrate
from runbooks import releases, rollback
from runbooks.checklist import Refused, Run
from runbooks.releases import Release
from testkit import localapp
from tests.runbooks.conftest import result_json, sparkops

GATE = "5"


@pytest.fixture
def app_root(backed_db, tmp_path):
    spec, app = localapp.app_target(backed_db.stack, tmp_path)
    yield spec.parent / "spark-app", spec, app
    app.service.stop()


install, start_on = localapp.install, localapp.start_on


def version(app) -> str:
    return httpx.get(f"{app.base_url}/version", timeout=5).json()["release"]


def test_failed_switch_returns_to_the_start_and_marks_the_release_bad(app_root):
    root, _spec, app = app_root
    install(root, "A", age=100)
    # B cannot reach its database: /readyz answers 503.
    install(root, "B", age=50, env="SPARK_DATABASE_URL=host=127.0.0.1 port=1 dbname=spark\n")
    start_on(app, "A")
    run = Run("activate")
    assert releases.activate(app, "B", run, gate_timeout=float(GATE)) is False
    assert releases.current_release(app) == "A" and version(app) == "A"
    assert (root / "releases" / "B" / releases.BAD_MARK).exists()
    assert [c.name for c in run.checks if not c.ok] == ["release B healthy"]
    # A later rollback from a new release C skips B.
    install(root, "C", age=10)
    found = releases.list_releases(app)
    assert rollback.choose(found, "C", None, force=False).name == "A"


def test_rollback_from_b_to_a(app_root, tmp_path):
    root, spec, app = app_root
    install(root, "A", age=100)
    install(root, "B", age=50)
    start_on(app, "B")
    run = sparkops("rollback", "--target-file", str(spec), "--yes", "--json",
                   "--gate-timeout", "30", "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
    assert run.exit_code == 0, run.output
    result = result_json(run)
    assert result["facts"]["live_release"] == "A" and version(app) == "A"
    assert result["facts"]["rollback_seconds"] < 10
    assert os.readlink(root / "current") == "releases/A"


def test_no_previous_release_is_refused(app_root):
    root, spec, app = app_root
    install(root, "A", age=100)
    start_on(app, "A")
    run = sparkops("rollback", "--target-file", str(spec), "--yes")
    assert run.exit_code == 2 and "no previous release to roll back to from A" in run.output
    assert version(app) == "A"


def _breaking(revisions):
    return [migrate.Revision(r.revision, r.down_revision, r.revision != revisions[-1].revision,
                             r.doc) for r in revisions]  # fmt: skip


def test_incompatible_schema_is_refused_unless_forced(app_root, monkeypatch, tmp_path):
    root, spec, app = app_root
    revisions = migrate.revisions()
    # A expects the revision before head; the newest migration is made incompatible.
    install(root, "A", age=100, head=revisions[-2].revision)
    install(root, "B", age=50)
    start_on(app, "B")
    monkeypatch.setattr(migrate, "revisions", lambda: _breaking(revisions))
    refused = sparkops("rollback", "--target-file", str(spec), "--yes")
    assert refused.exit_code == 2, refused.output
    assert f"not backward compatible: {revisions[-1].revision}" in refused.output
    assert version(app) == "B"
    forced = sparkops("rollback", "--target-file", str(spec), "--yes", "--force",
                      "--gate-timeout", "30", "--evidence-dir", str(tmp_path / "ev"))  # fmt: skip
    assert forced.exit_code == 0, forced.output
    assert version(app) == "A"


def test_dry_run_and_no_change_nothing(app_root):
    root, spec, app = app_root
    install(root, "A", age=100)
    install(root, "B", age=50)
    start_on(app, "B")
    pid = app.service.pid()
    dry = sparkops("rollback", "--target-file", str(spec), "--dry-run")
    assert dry.exit_code == 0 and "to:          A" in dry.output
    no = sparkops("rollback", "--target-file", str(spec), input="n\n")
    assert no.exit_code == 3
    assert releases.current_release(app) == "B" and app.service.pid() == pid


# --- pure logic -----------------------------------------------------------------------------
R = migrate.Revision


def test_schema_gate_cases():
    revs = [R("1", None, True, ""), R("2", "1", True, ""), R("3", "2", False, "drop col")]
    assert schema(revs, "3", "3")[0] and schema(revs, "3", "1")[0]  # db at or behind
    assert schema(revs, "1", "2")[0]  # ahead by compatible migrations
    ok, reason = schema(revs, "1", "3")
    assert not ok and "not backward compatible: 3" in reason
    assert not schema(revs, None, "3")[0] and "SCHEMA_HEAD" in schema(revs, None, "3")[1]
    assert not schema(revs, "1", "9")[0] and "unknown" in schema(revs, "1", "9")[1]


def schema(revs, head, db):
    return rollback.schema_gate(revs, head, db)


def test_choose_cases():
    rel = [Release("A", 1, False, "h"), Release("B", 2, True, "h"), Release("C", 3, False, "h")]
    assert rollback.choose(rel, "C", None, False).name == "A"
    with pytest.raises(Refused, match="no previous release"):
        rollback.choose(rel[:1], "A", None, False)
    with pytest.raises(Refused, match="marked BAD"):
        rollback.choose(rel, "C", "B", False)
    assert rollback.choose(rel, "C", "B", True).name == "B"
    with pytest.raises(Refused, match="not installed"):
        rollback.choose(rel, "C", "Z", False)
