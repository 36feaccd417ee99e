"""pgBackRest's restore options for each way a restore can end (pure logic: no command runs).

A server known to run hot standby ends recovery by a promotion request: --latest restores as
a standby, a target pauses there. Otherwise recovery ends by itself (PostgreSQL's default).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runbooks.executor import LocalExecutor
from runbooks.pitr import Plan, Request, restore_options
from runbooks.services import PgCtlService
from runbooks.target import DbTarget
from runbooks.wal import BackupSet, RepoInfo

MOMENT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _plan(kind: str, fast: bool, value: str | None = None) -> Plan:
    executor = LocalExecutor()
    target = DbTarget(executor, "/srv/pg", PgCtlService(executor, "/srv/pg", "/srv/pg.log"))
    backup = BackupSet("20261204-110000F", "full", MOMENT, MOMENT, 0x3000028, 0x3000100, 1)
    info = RepoInfo("spark", [backup], None, None, {})
    plan = Plan(
        Request(kind=kind, value=value), target, target, info, backup,
        primary_up=fast, timeline=1, current_lsn=None, target_time=MOMENT, target_lsn=0x4000000,
    )  # fmt: skip
    plan.fast_promotion = fast
    return plan


def _type_and_action(options: list[str]) -> tuple[str, str | None]:
    kind = next(o for o in options if o.startswith("--type="))
    action = next((o for o in options if o.startswith("--target-action=")), None)
    return kind, action


@pytest.mark.parametrize(
    ("kind", "fast", "expected"),
    [
        ("latest", True, ("--type=standby", None)),
        ("latest", False, ("--type=default", None)),
        ("time", True, ("--type=time", "--target-action=pause")),
        ("time", False, ("--type=time", "--target-action=promote")),
        ("lsn", True, ("--type=lsn", "--target-action=pause")),
        ("lsn", False, ("--type=lsn", "--target-action=promote")),
        ("name", True, ("--type=name", "--target-action=pause")),
        ("name", False, ("--type=name", "--target-action=promote")),
    ],
)
def test_how_recovery_ends(kind, fast, expected):
    options = restore_options(_plan(kind, fast, value="before-migration"))
    assert _type_and_action(options) == expected
    # A standby has no target: pgBackRest would refuse --target with --type=standby.
    assert kind != "latest" or not any(o.startswith("--target=") for o in options)
