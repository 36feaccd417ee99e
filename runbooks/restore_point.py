"""Named restore points: `pg_create_restore_point`, then a WAL switch so the point reaches
the archive now rather than at the next archive_timeout."""

from __future__ import annotations

import re

from runbooks.checklist import Refused, Run
from runbooks.dbsteps import archive_live_wal
from runbooks.target import DbTarget

# PostgreSQL caps the name at 63 bytes; the restore command passes it on a command line.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise Refused(
            f"restore point name {name!r} is not usable",
            "use 1-63 letters, digits, '_', '.', ':' or '-', starting with a letter "
            "or digit (e.g. before-migration-0011)",
        )
    return name


def prepare(target: DbTarget, name: str, run: Run) -> str:
    validate_name(name)
    if not target.is_up():
        raise Refused(
            f"PostgreSQL on {target.label} is not running",
            "a restore point is written into the live WAL: start PostgreSQL first",
        )
    if target.psql("SELECT pg_is_in_recovery()", dbname="postgres") == "t":
        raise Refused(
            f"PostgreSQL on {target.label} is in recovery (a standby)",
            "create restore points on the primary",
        )
    run.plan = [
        f"Create restore point {name!r} on {target.label} ({target.executor.name})",
        "  1. SELECT pg_create_restore_point(name)",
        "  2. SELECT pg_switch_wal() and wait until the archiver has the segment",
    ]
    return name


def create(target: DbTarget, name: str, run: Run, archive_timeout: float) -> str:
    run.watch(target.executor)
    with run.step("Create the restore point"):
        lsn = target.psql(f"SELECT pg_create_restore_point('{name}')::text", dbname="postgres")
        run.facts.update(restore_point=name, lsn=lsn)
    with run.step("Archive it"):
        run.facts["archived"] = archive_live_wal(target, archive_timeout)
    run.check("restore point archived", True, f"{name} at {lsn}")
    return lsn
