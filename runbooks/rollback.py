"""Application rollback: back to the previous good release (or a named one), gated on health,
refusing when the database's schema has moved past what that release can run on.

"Previous" is the newest installed release older than the current one that is not marked
BAD. The schema gate: the target release records its expected head (SCHEMA_HEAD); when the
database is ahead of it, every migration in between must be marked backward compatible
(`backward_compatible = True` in the migration module), else the rollback is refused unless
--force.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from app import migrate
from runbooks import releases
from runbooks.checklist import Refused, Run
from runbooks.releases import AppTarget, Release


@dataclass
class Plan:
    app: AppTarget
    origin: str
    target: Release
    schema_ok: bool
    schema_reason: str
    gate_timeout: float
    lines: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)


def schema_gate(
    revisions: list[migrate.Revision], release_head: str | None, db_revision: str | None
) -> tuple[bool, str]:
    """Can a release expecting `release_head` run on a database at `db_revision`?"""
    names = [r.revision for r in revisions]
    if release_head is None:
        return False, "the release does not record its expected schema head (SCHEMA_HEAD)"
    if db_revision is None:
        return True, "the database has no schema revision recorded (empty)"
    if db_revision not in names:
        return False, f"the database is at revision {db_revision!r}, unknown to this sparkops"
    if release_head not in names:
        return False, f"the release expects revision {release_head!r}, unknown to this sparkops"
    have, want = names.index(db_revision), names.index(release_head)
    if have <= want:
        return True, f"the database ({db_revision}) is not ahead of the release ({release_head})"
    between = revisions[want + 1 : have + 1]
    breaking = [r.revision for r in between if not r.backward_compatible]
    if breaking:
        return False, (
            f"the database ({db_revision}) is ahead of the release ({release_head}) "
            f"and these migrations are not backward compatible: "
            f"{', '.join(breaking)}"
        )
    return True, (
        f"the database ({db_revision}) is ahead of the release ({release_head}); "
        f"the migrations between are backward compatible: "
        f"{', '.join(r.revision for r in between)}"
    )


def choose(found: list[Release], origin: str | None, wanted: str | None, force: bool) -> Release:
    by_name = {r.name: r for r in found}
    if wanted:
        if wanted not in by_name:
            raise Refused(
                f"release {wanted!r} is not installed", f"installed: {', '.join(by_name) or 'none'}"
            )
        if wanted == origin:
            raise Refused(f"release {wanted!r} is already current", "nothing to do")
        if by_name[wanted].bad and not force:
            raise Refused(
                f"release {wanted!r} is marked BAD (a health gate failed)",
                "pick another release, or --force to use it anyway",
            )
        return by_name[wanted]
    if origin not in by_name:
        raise Refused(
            f"the current release {origin!r} is not among the installed releases",
            "name the release to go to with --to",
        )
    older = [r for r in found[: found.index(by_name[origin])] if not r.bad]
    if not older:
        skipped = [r.name for r in found[: found.index(by_name[origin])] if r.bad]
        extra = f" (skipped, marked BAD: {', '.join(skipped)})" if skipped else ""
        raise Refused(
            f"no previous release to roll back to from {origin}{extra}",
            "deploy a fixed release instead, or name one with --to",
        )
    return older[-1]


@dataclass(frozen=True)
class Reading:
    """What a rollback's planning reads on an app host."""

    seen: releases.Seen  # `current` and the installed releases
    db_revision: str | None  # the database's schema revision, as the host reads it


def reading_of(seen: releases.Seen, revision: Callable[[], str | None]) -> Reading:
    """A Reading; `revision()` (which raises when the read failed) is taken only when the
    host has a current release: without one `prepare` refuses for that first."""
    return Reading(seen, None if seen.current is None else revision())


def read(app: AppTarget) -> Reading:
    """The releases and the database's revision, read at once: the revision is asked by the
    release's own Python on the host (the slowest read, about half a second)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        asked = pool.submit(app.db_revision)
        return reading_of(releases.look(app), asked.result)


def prepare(
    app: AppTarget,
    wanted: str | None,
    force: bool,
    gate_timeout: float = releases.DEFAULT_GATE_TIMEOUT,
    reading: Reading | None = None,
) -> Plan:
    """Decide from `reading` (read here when not given); changes nothing."""
    reading = reading or read(app)
    origin, found, db_revision = reading.seen.current, reading.seen.found, reading.db_revision
    if origin is None:
        raise Refused(
            f"{app.current_link} does not point at a release on {app.label}",
            "deploy first; a rollback needs a current release",
        )
    target = choose(found, origin, wanted, force)
    ok, reason = schema_gate(migrate.revisions(), target.schema_head, db_revision)
    if not ok and not force:
        raise Refused(
            f"rolling back to {target.name} is not safe: {reason}",
            "restore the database to a matching point first, or --force if you "
            "know the release copes",
        )
    facts = dict(
        origin=origin,
        target=target.name,
        db_revision=db_revision,
        target_schema_head=target.schema_head,
        schema_gate=reason,
    )
    lines = [
        f"Rollback plan on {app.label} ({app.executor.name})",
        f"  from:        {origin}",
        f"  to:          {target.name}" + (" (marked BAD, --force)" if target.bad else ""),
        f"  schema:      {'ok' if ok else 'FORCED'}: {reason}",
        "  steps:",
        f"    1. switch {app.current_link} -> releases/{target.name} (atomic rename)",
        f"    2. restart ({app.service.description})",
        f"    3. health gate: {app.base_url}/readyz 200 and /version = {target.name} "
        f"(deadline {gate_timeout:.0f} s)",
        f"    4. on failure: mark {target.name} BAD, switch back to {origin}, restart",
    ]
    return Plan(app, origin, target, ok, reason, gate_timeout, lines, facts)


def execute(plan: Plan, run: Run) -> bool:
    run.watch(plan.app.executor)
    live = releases.activate(
        plan.app,
        plan.target.name,
        run,
        plan.gate_timeout,
        origin=plan.origin,
        clear_bad=plan.target.bad,
    )
    plan.facts["live_release"] = plan.target.name if live else plan.origin
    if live:
        plan.facts["rollback_seconds"] = run.facts.get("switch_seconds")
    return live


def record(plans: list[Plan], run: Run) -> None:
    """The plans' facts into the run: flat for one host, by host for several."""
    if len(plans) == 1:
        run.facts.update(plans[0].facts)
    else:
        run.facts["hosts"] = {p.app.label: p.facts for p in plans}
