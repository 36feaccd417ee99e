"""Point-in-time restore with pgBackRest: in place on the db host, or onto another data
directory / host so production stays untouched while the restore is inspected.

`prepare()` reads everything and decides (the backup set, the bounds, the options, that a
copy's directory and port are free) without changing anything; `runbooks.restoring` acts,
one timed step at a time.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from runbooks import bouncer, checks, scratch, wal
from runbooks.checklist import Refused, Run
from runbooks.target import DbTarget
from runbooks.wal import BackupSet, RepoInfo, format_lsn, parse_lsn
from sparkops import defaults, layout

KINDS = ("time", "lsn", "name", "latest")
PGBACKREST_TYPE = {"time": "time", "lsn": "lsn", "name": "name", "latest": "default"}
# The backup's stop timestamp has whole seconds; its consistent point can be up to a second
# later than the number says.
STOP_TIME_SLACK = timedelta(seconds=1)


@dataclass
class Request:
    kind: str
    value: str | None = None
    checks: dict[str, str] = field(default_factory=lambda: dict(checks.DEFAULT_CHECKS))
    dest: DbTarget | None = None  # None: in place
    target_timeline: str | None = None
    pause_bouncer: bool = True
    pause_wait: float = bouncer.DEFAULT_PAUSE_WAIT_SECONDS
    disconnect_blockers: bool = False
    recovery_timeout: float = 3600.0
    archive_timeout: float = 2.0 * defaults.ARCHIVE_TIMEOUT_SECONDS
    dest_option: str = "--to-data-dir"  # names the copy's directory in refusals
    dest_own_parent: bool = False  # the command made the copy's parent (a temporary dir)
    # What an operator runs to finish or undo an interrupted run (set by the command line).
    rerun_command: str | None = None
    resume_command: str | None = None
    # Part of a whole cluster's restore (runbooks/cluster_restore.py), which stops Patroni
    # everywhere first: the in-place guard for Patroni nodes does not apply.
    cluster_restore: bool = False


@dataclass
class Plan:
    request: Request
    source: DbTarget
    dest: DbTarget
    info: RepoInfo
    backup: BackupSet
    primary_up: bool
    timeline: int | None
    current_lsn: int | None
    target_time: datetime | None = None
    target_lsn: int | None = None
    options: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    place: scratch.ScratchPlace | None = None  # a copy's directory, as inspected
    in_recovery: bool = False
    # A stopped server's hot_standby as its configuration has it (None: could not be read).
    stopped_hot_standby: str | None = None
    bouncer_paused_before: bool = False
    # Recovery ends by a promotion request rather than by itself: see restore_options.
    fast_promotion: bool = False

    @property
    def in_place(self) -> bool:
        return self.request.dest is None

    @property
    def pauses_bouncer(self) -> bool:
        return self.in_place and self.request.pause_bouncer and self.source.bouncer is not None

    @property
    def rerun_command(self) -> str:
        return self.request.rerun_command or "the same sparkops command again"

    @property
    def resume_command(self) -> str:
        return (
            self.request.resume_command or f"sparkops pgbouncer resume --host {self.source.label}"
        )


def parse_time(text: str, now: datetime) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Refused(
            f"--time {text!r} is not a timestamp",
            "use ISO 8601 with a zone, e.g. 2026-11-29T08:15:00Z or 2026-11-29 11:15:00+03:00",
        ) from None
    if moment.tzinfo is None:
        raise Refused(
            f"--time {text!r} has no time zone",
            "add one (Z for UTC, or +03:00): a bare time means a different moment on each machine",
        )
    moment = moment.astimezone(UTC)
    if moment > now:
        raise Refused(
            f"--time {moment.isoformat()} is in the future (now {now.isoformat()})",
            "pick a moment in the past; for everything archived use --latest",
        )
    return moment


def validate_request(req: Request, now: datetime) -> tuple[datetime | None, int | None]:
    """Input checks that need no host: the kind, the time's shape, the LSN's shape."""
    if req.kind not in KINDS:
        raise Refused(f"unknown restore target kind {req.kind!r}", f"use one of {KINDS}")
    if req.kind == "time":
        return parse_time(req.value or "", now), None
    if req.kind == "lsn":
        return None, parse_lsn(req.value or "")
    if req.kind == "name" and not (req.value or "").strip():
        raise Refused("--restore-point needs a name", "give the name used at creation")
    return None, None


def _timeline_of_stopped(target: DbTarget) -> int | None:
    result = target.executor.run(
        [f"{target.bindir}/pg_controldata", "-D", target.data_dir], user=target.os_user, check=False
    )
    for line in result.stdout.splitlines():
        if line.startswith("Latest checkpoint's TimeLineID:"):
            return int(line.split(":")[1])
    return None


def _latest_before(backups: list[BackupSet], ok) -> BackupSet | None:
    chosen = [b for b in backups if ok(b)]
    return chosen[-1] if chosen else None


def prepare(source: DbTarget, req: Request, run: Run, now: datetime | None = None) -> Plan:
    now = now or datetime.now(UTC)
    target_time, target_lsn = validate_request(req, now)
    if (
        req.dest is None
        and not req.cluster_restore
        and source.executor.exists(layout.PATRONI_CONFIG)
    ):
        # Patroni would restart the stopped node, or promote a replica over the restored one.
        raise Refused(
            f"{source.label} is a node of a Patroni cluster ({layout.PATRONI_CONFIG} exists): "
            "restoring one node in place would fight Patroni",
            "restore the whole cluster with `sparkops cluster restore` (the same target "
            "options; docs/ha.md), or restore to a copy (--to-data-dir or --to-host)",
        )
    info = wal.read_info(source)
    if not info.backups:
        raise Refused(
            f"stanza {source.stanza!r} has no usable backup",
            "take one: pgbackrest --stanza=NAME --type=full backup",
        )
    run.facts["pgbackrest_info"] = info.raw
    role = source.role()
    # A server still in recovery (an interrupted restore replaying WAL) has no live WAL to
    # archive: it is planned like a stopped one, from the archive, and stopped first.
    primary_up = role == "primary"
    stopped_hot_standby = None
    if primary_up:
        state = source.query_json(
            "SELECT pg_current_wal_lsn()::text AS lsn, pg_is_in_recovery() AS recovery, "
            "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS tl, "
            "current_setting('hot_standby') AS hot_standby"
        )[0]
        current_lsn, timeline = parse_lsn(state["lsn"]), state["tl"]
        hot_standby = state["hot_standby"] == "on"
    else:
        current_lsn, timeline = None, _timeline_of_stopped(source)
        if role == "recovery":
            hot_standby = True  # a server in recovery answers only in hot standby
        else:
            # Down: the setting it would start with, from its configuration (`postgres -C`);
            # None (unread) keeps the recovery that ends by itself.
            stopped_hot_standby = source.service.configured_setting("hot_standby")
            hot_standby = stopped_hot_standby == "on"
    oldest, newest = info.backups[0], info.backups[-1]
    archive_end = wal.segment_end_lsn(info.archive_max) if info.archive_max else None
    lsn_upper = current_lsn if primary_up else archive_end
    bounds = ""

    if req.kind == "time":
        lower = oldest.stop_time + STOP_TIME_SLACK
        if primary_up:
            upper, upper_why = now, "now (the live WAL is archived before the restore)"
        else:
            segments = wal.archived_segments(source)
            upper = wal.last_commit_time(source, segments)
            upper_why = "the last commit in archived WAL"
        valid = f"valid range: {lower.isoformat()} .. {upper.isoformat() if upper else '?'}"
        if target_time < lower:
            raise Refused(
                f"--time {target_time.isoformat()} is before the end of the oldest backup "
                f"({oldest.describe()}); {valid}",
                "pick a later time, or restore from an older repository if one exists",
            )
        if upper is None or target_time > upper:
            raise Refused(
                f"--time {target_time.isoformat()} is after {upper_why}; {valid}",
                "pick an earlier time, or use --latest",
            )
        backup = _latest_before(
            info.backups, lambda b: b.stop_time + STOP_TIME_SLACK <= target_time
        )
        bounds = f"{valid} (upper bound: {upper_why})"
    elif req.kind in ("lsn", "name"):
        if req.kind == "name":
            segments = wal.archived_segments(source)
            found = wal.find_restore_point(source, req.value, segments)
            if not found:
                scanned = segments[-wal.RESTORE_POINT_SCAN_LIMIT :]
                span = f"{scanned[0]} .. {scanned[-1]}" if scanned else "none"
                raise Refused(
                    f"no restore point named {req.value!r} in the archived WAL ({span})",
                    "list restore points with `pg_waldump -r XLOG` or create one with "
                    "`sparkops restore-point create NAME`",
                )
            target_lsn = found[-1]
            if len(found) > 1:
                run.facts["restore_point_duplicates"] = [format_lsn(x) for x in found]
        valid = (
            f"valid range: {format_lsn(oldest.stop_lsn)} .. "
            f"{format_lsn(lsn_upper) if lsn_upper else '?'}"
        )
        what = f"LSN {format_lsn(target_lsn)}"
        if req.kind == "name":
            what = f"restore point {req.value!r} at {what}"
        if target_lsn < oldest.stop_lsn:
            raise Refused(
                f"{what} is before the end of the oldest backup ({oldest.describe()}); {valid}",
                "pick a later target",
            )
        if lsn_upper is not None and target_lsn > lsn_upper:
            raise Refused(
                f"{what} is after the end of WAL ({format_lsn(lsn_upper)}); {valid}",
                "pick an earlier LSN, or use --latest",
            )
        backup = _latest_before(info.backups, lambda b: b.stop_lsn <= target_lsn)
        bounds = valid
    else:
        backup = newest
        bounds = "everything archived"
    assert backup is not None
    if req.kind != "time":  # a gap before a time target makes recovery fail loudly by itself
        if req.kind != "name":  # the name's search has read them already
            segments = wal.archived_segments(source)
        refuse_archive_gap(source, backup, segments, target_lsn)

    dest = req.dest or source
    plan = Plan(
        req, source, dest, info, backup, primary_up, timeline, current_lsn, target_time, target_lsn
    )
    plan.in_recovery = role == "recovery"
    plan.stopped_hot_standby = stopped_hot_standby
    plan.fast_promotion = hot_standby
    if not plan.in_place:
        same_host = dest.executor is source.executor
        plan.place = scratch.inspect(
            dest.executor,
            dest.data_dir,
            dest.port,
            option=req.dest_option,
            protected=(source.data_dir,) if same_host else (),
            own_parent=req.dest_own_parent,
            os_user=dest.os_user,
        )
    if plan.pauses_bouncer:
        plan.bouncer_paused_before = bouncer.is_paused(source)
    plan.options = restore_options(plan)
    plan.lines = plan_lines(plan, now, bounds)
    run.plan = plan.lines
    run.facts.update(
        backup=backup.label,
        timeline_before=timeline,
        lsn_before=format_lsn(current_lsn) if current_lsn is not None else None,
        target={"kind": req.kind, "value": req.value},
        pgbackrest_options=plan.options,
    )
    return plan


def refuse_archive_gap(
    source: DbTarget, backup: BackupSet, segments: list[str], up_to: int | None
) -> None:
    """Refuse when WAL between the backup and the target is missing from the archive: the
    restore would end at the gap and say nothing (seen after the repository was moved to
    another store and back)."""
    if not segments:
        return  # no archived WAL at all: pgbackrest restore refuses the backup by itself
    last = max(wal.segment_number(n) for n in segments)
    if up_to is not None:
        last = min(last, up_to // wal.SEGMENT_BYTES)
    gaps = wal.archive_gaps(segments, backup.start_lsn // wal.SEGMENT_BYTES, last)
    if not gaps:
        return
    first_missing = gaps[0][0]
    missing = sum(end - start + 1 for start, end in gaps)
    runs = ", ".join(
        wal.segment_label(a) + (f"..{wal.segment_label(b)}" if b != a else "") for a, b in gaps[:3]
    )
    ends_at = format_lsn(first_missing * wal.SEGMENT_BYTES)
    raise Refused(
        f"the archive is missing {missing} WAL segment(s) after backup {backup.describe()}: "
        f"{runs}{' and more' if len(gaps) > 3 else ''}. A restore from it would end at LSN "
        f"{ends_at} and silently lose every later commit (WAL archived to another "
        "repository meanwhile, or removed). Nothing was changed",
        f"take a full backup now (`pgbackrest --stanza={source.stanza} --type=full backup` "
        "as postgres on the db host) so the archive covers what follows, then restore from "
        f"it; or restore to a point before the gap (--lsn earlier than {ends_at})",
    )


def expected_end_lsn(plan: Plan) -> int | None:
    """The LSN recovery must reach for the restore to be what was asked: the target for an
    LSN or a restore point; for --latest, where the server was when planned (its live WAL is
    archived first) or the start of the last archived segment."""
    req = plan.request
    if req.kind in ("lsn", "name"):
        return plan.target_lsn
    if req.kind != "latest":
        return None
    if plan.current_lsn is not None:
        return plan.current_lsn
    if plan.info.archive_max:
        return wal.segment_end_lsn(plan.info.archive_max) - wal.SEGMENT_BYTES
    return None


def restore_options(plan: Plan) -> list[str]:
    req = plan.request
    # Recovery ended by itself (end of WAL, or a target with action=promote) writes an
    # immediate checkpoint and waits for it before the server opens: half a second after a
    # minute of writes, more after more. Ended by a promotion request, it writes an
    # end-of-recovery record and opens at once; the checkpoint follows in the background
    # (PostgreSQL's failover path). So with fast_promotion the restore asks: a target pauses
    # there and the request (sent as soon as the server answers) ends the pause; --latest
    # restores as a standby, which on that request replays everything the archive and pg_wal
    # hold, then ends. Pausing needs hot_standby (without it a pause is a shutdown): the plan
    # reads it from the source and keeps the self-ending recovery when it is off or unknown.
    kind = PGBACKREST_TYPE[req.kind]
    if plan.fast_promotion and req.kind == "latest":
        kind = "standby"
    options = ["--delta", f"--set={plan.backup.label}", f"--type={kind}"]
    if req.kind == "time":
        options.append(f"--target={plan.target_time.isoformat(sep=' ')}")
    elif req.kind == "lsn":
        options.append(f"--target={format_lsn(plan.target_lsn)}")
    elif req.kind == "name":
        options.append(f"--target={req.value}")
    if req.kind != "latest":
        options.append(f"--target-action={'pause' if plan.fast_promotion else 'promote'}")
    if req.target_timeline:
        options.append(f"--target-timeline={req.target_timeline}")
    if plan.in_place:
        options.append("--recovery-option=restore_command=" + restore_command(plan.dest))
    else:
        # The copy must not push its own WAL into production's archive.
        # A copy fetches WAL synchronously: an asynchronous archive-get shares the stanza's
        # archive lock and spool with the live cluster's archive-push on the same host, and
        # when the push holds the lock the get waits out archive-timeout (60 s) and reports
        # the segment missing, so recovery took an older timeline's segment and PANICked
        # (seen in a drill beside a busy cluster).
        # (pgBackRest takes restore_command from --recovery-option over its own.)
        get = plan.dest.pgbackrest_argv(
            "archive-get", f"--pg1-path={plan.dest.data_dir}", "--archive-async=n"
        )
        options += [
            f"--pg1-path={plan.dest.data_dir}",
            "--archive-mode=off",
            "--recovery-option=restore_command=" + shlex.join(get) + ' %f "%p"',
        ]
    return options


def restore_command(dest: DbTarget) -> str:
    """An in-place recovery's restore_command: the asynchronous archive-get (segments fetched
    ahead of replay, in parallel), and when it does not deliver within
    ARCHIVE_GET_ASYNC_WAIT_SECONDS, the same segment fetched synchronously.

    The short wait: a segment the prefetcher already holds is delivered at once, and one it
    does not hold yet came from the async get's polling after 0.3-0.4 s against 0.03 s from
    the repository directly. Recovery asks for three such segments in every restore (the
    first, the missing one after the last, and the last again to open the new timeline):
    0.4-0.6 s of a 2-3 s replay, measured by bench/restore_schedule.py.

    It also bounds pgBackRest 2.45's race for its archive lock when recovery crosses a
    timeline switch: the async process forked for the new timeline can die on the lock
    ("unable to acquire lock on file ...-archive.lock"), and the get that forked it would wait
    out archive-timeout (60 s, seen in this suite's restores across earlier restores'
    timelines) and report the segment missing, which could end recovery short of its target
    (fixed upstream in PR #2806, not in Debian's package). The synchronous get answers from
    the repository itself, so a missing answer is a true one."""
    wait = f"--archive-timeout={defaults.ARCHIVE_GET_ASYNC_WAIT_SECONDS}"
    prefetch = dest.pgbackrest_argv("archive-get", wait)
    direct = dest.pgbackrest_argv("archive-get", "--archive-async=n")
    return f'{shlex.join(prefetch)} %f "%p" || {shlex.join(direct)} %f "%p"'


def plan_lines(plan: Plan, now: datetime, bounds: str) -> list[str]:
    req, src, dest = plan.request, plan.source, plan.dest
    target = {
        "time": lambda: plan.target_time.isoformat(),
        "lsn": lambda: req.value,
        "name": lambda: f"{req.value} (LSN {format_lsn(plan.target_lsn)})",
        "latest": lambda: "the end of archived WAL",
    }[req.kind]()
    where = (
        f"IN PLACE on {src.label} ({src.executor.name}:{src.data_dir})"
        if plan.in_place
        else f"onto {dest.label} ({dest.executor.name}:{dest.data_dir}, port {dest.port}); "
        f"{src.label} is not touched"
    )
    if req.kind == "latest":
        loss = "only writes that were never archived (the live WAL is archived first)"
    elif req.kind == "time":
        loss = (
            f"every commit after {plan.target_time.isoformat()} "
            f"({(now - plan.target_time).total_seconds():.0f} s of history)"
        )
    else:
        since = f"{format_lsn(plan.target_lsn)}"
        if plan.current_lsn is not None:
            since += f" ({(plan.current_lsn - plan.target_lsn) / 1048576:.1f} MB of WAL)"
        loss = f"every change after {since}"
    if not plan.in_place:
        loss = "none on production (a copy); " + loss + " is absent from the copy"
    lines = [
        f"PITR restore plan ({now.isoformat()})",
        f"  target:          {req.kind} = {target}",
        f"  where:           {where}",
        f"  backup set:      {plan.backup.describe()}",
        f"  bounds:          {bounds}",
        f"  timeline now:    {plan.timeline if plan.timeline is not None else 'unknown'}",
        "  PostgreSQL:      "
        + (
            "running"
            if plan.primary_up
            # A copy from a replica (a drill on a cluster's standby): the source is only read.
            else "running as a replica (in recovery): not touched, the copy comes from the "
            "repository"
            if plan.in_recovery and not plan.in_place
            else "running, IN RECOVERY (a restore still replaying?): stopped and restored again"
            if plan.in_recovery
            else "not running"
        )
        + (f", WAL at {format_lsn(plan.current_lsn)}" if plan.current_lsn is not None else ""),
        f"  data loss:       {loss}",
        "  steps:",
    ]
    steps = []
    if plan.pauses_bouncer:
        already = " (already paused now: an earlier run?)" if plan.bouncer_paused_before else ""
        steps.append(
            f"pause pgBouncer (PAUSE {src.bouncer.database}, at most {req.pause_wait:.0f} s; "
            + (
                "then end the transactions in the way"
                if req.disconnect_blockers
                else "else resume and refuse, naming the transactions in the way"
            )
            + f"){already}"
        )
    if plan.primary_up:
        steps.append("archive the live WAL (commit marker, pg_switch_wal, wait for the archiver)")
    steps.append(
        f"stop PostgreSQL ({src.service.description})"
        if plan.in_place
        else f"create {dest.data_dir} (checked: new or empty, outside every data directory; "
        f"port {dest.port} free)"
    )
    steps.append("pgbackrest restore " + " ".join(plan.options))
    steps.append(f"start PostgreSQL ({dest.service.description})")
    if plan.fast_promotion:
        steps.append(
            "request the end of recovery (pg_promote, as soon as the server answers): "
            + (
                "it replays all archived WAL first, then opens at once"
                if req.kind == "latest"
                else "it ends the pause at the target and opens at once"
            )
            + "; the end-of-recovery checkpoint runs in the background"
        )
        by_itself = ""
    else:
        if plan.primary_up:
            why = "hot_standby is off"
        elif plan.stopped_hot_standby is not None:
            why = f"hot_standby is {plan.stopped_hot_standby} in the stopped server's configuration"
        else:
            why = (
                "the server is not running and its hot_standby could not be read from its "
                "configuration (postgres -C hot_standby)"
            )
        by_itself = (
            f"; it ends by itself, with its end-of-recovery checkpoint ({why}, so it cannot "
            "be asked to promote)"
        )
    steps.append(f"wait for recovery to end (deadline {req.recovery_timeout:.0f} s){by_itself}")
    if plan.pauses_bouncer:
        steps.append("resume pgBouncer (also on any failure or interruption)")
    if plan.fast_promotion and plan.in_place:
        steps.append("checkpoint (the new timeline in pg_control: backups work again)")
    steps.append(
        "verify: not in recovery, amcheck on the app's indexes, queries: " + ", ".join(req.checks)
    )
    lines += [f"    {n}. {s}" for n, s in enumerate(steps, 1)]
    return lines
