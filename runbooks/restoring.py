"""Carrying out a PITR plan (runbooks.pitr), one timed step at a time, and, when anything
stops it (a failed step, a signal, a lost connection), undoing what can be undone and saying
exactly what state is left and the one command that brings things back.

What can be undone is undone at once: pgBouncer is resumed whenever a PAUSE was sent;
PostgreSQL is started again when it was stopped but nothing was restored yet; a copy this
run made is removed. What cannot (a data directory partly restored in place) is said, with
the command that finishes the job: the same restore again (`--delta` makes it resumable).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from runbooks import bouncer, checks, scratch, wal
from runbooks.checklist import Run, StepFailed, shielded
from runbooks.dbsteps import (
    archive_live_wal,
    ensure_config_files,
    request_promotion,
    wait_for_promotion,
)
from runbooks.executor import CommandFailed, Executor, SshExecutor
from runbooks.pitr import Plan, expected_end_lsn
from runbooks.wal import format_lsn
from sparkops.wait import DeadlineExceeded

# Step names the figures are read from (run.facts, the benches).
COPY_STEP = "Restore (pgbackrest restore)"
START_STEP = "Start PostgreSQL"
PROMOTE_STEP = "Request the end of recovery (pg_promote)"
RECOVERY_STEP = "Wait for recovery to end"
CHECKPOINT_STEP = "Checkpoint on the new timeline"
CLEANUP_PROMOTE_WAIT_SECONDS = 60.0


@dataclass
class Progress:
    """How far the run got: the facts the cleanup and the state report rest on."""

    pause_sent: bool = False
    resumed: bool = False
    pg_stopped: bool = False
    restore_begun: bool = False
    pg_started: bool = False
    promotion_requested: bool = False
    recovered: bool = False


def execute(plan: Plan, run: Run, *, cleanup_copy: bool = True) -> None:
    """Act on the plan; on any interruption clean up and report (run.left), then re-raise.

    `cleanup_copy`: tear down a copy this run made when the restore fails (the drill tears
    it down itself, after its checks)."""
    run.watch(plan.source.executor, plan.dest.executor)
    progress = Progress()
    try:
        _restore(plan, run, progress)
        if progress.pause_sent:
            with run.step("Resume pgBouncer"):
                bouncer.resume(plan.source)
                progress.resumed = True
    except BaseException as exc:  # a signal or a bug too: the cleanup runs whatever stopped us
        cleanup(plan, run, progress, remove_copy=cleanup_copy)
        if isinstance(exc, (CommandFailed, StepFailed, DeadlineExceeded)):
            raise StepFailed(str(exc)) from exc
        raise
    run.facts["copy_seconds"] = run.step_seconds(COPY_STEP)
    run.facts["replay_seconds"] = round(
        sum(run.step_seconds(name) or 0 for name in (START_STEP, PROMOTE_STEP, RECOVERY_STEP)),
        3,
    )
    try:
        verify(plan, run)
    except BaseException:
        run.leave_as_read(lambda: state_after(plan, progress))  # restored and resumed: say so
        raise


def _restore(plan: Plan, run: Run, progress: Progress) -> None:
    req, src, dest = plan.request, plan.source, plan.dest
    if plan.pauses_bouncer:
        with run.step("Pause pgBouncer"):
            progress.pause_sent = True  # before PAUSE: it takes effect even if we never hear back
            bouncer.pause(src, run, wait=req.pause_wait, disconnect=req.disconnect_blockers)
    if plan.primary_up:
        with run.step("Archive the live WAL"):
            run.facts["lsn_sealed"] = archive_live_wal(src, req.archive_timeout)
    if plan.in_place:
        with run.step("Stop PostgreSQL"):
            progress.pg_stopped = True  # a stop cut short may still have stopped it
            src.service.stop()
    else:
        with run.step("Create the restore's data directory"):
            scratch.make(dest.executor, plan.place, dest.os_user)
    with run.step(COPY_STEP):
        progress.restore_begun = True
        if plan.place:
            plan.place.wrote = True
        dest.pgbackrest("restore", *plan.options, timeout=24 * 3600)
        ensure_config_files(dest)
        if plan.in_place:
            dest.clear_archive_get_queue()
    with run.step(START_STEP):
        progress.pg_started = True
        if plan.place:
            plan.place.start_issued = True
        dest.service.start()
        if plan.place:
            scratch.record_start(dest.executor, plan.place)
    if plan.fast_promotion:
        with run.step(PROMOTE_STEP):
            request_promotion(dest, req.recovery_timeout)
            progress.promotion_requested = True
    with run.step(RECOVERY_STEP):
        wait_for_promotion(dest, req.recovery_timeout)
        progress.recovered = True
        if plan.in_place:
            clear_recovery_settings(dest)


# The settings `pgbackrest restore` writes into postgresql.auto.conf for recovery. pgBackRest
# 2.45 leaves them there after recovery, and a later restore adds its own beside them: a
# primary would keep an old recovery target that applies again the day it is made a
# standby (a replica cloned from it would stop there), and a backup of it carries them into
# every restore made from that backup.
RECOVERY_SETTINGS = (
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_xid",
    "recovery_target_action",
    "recovery_target_timeline",
    "recovery_target_inclusive",
)


def clear_recovery_settings(target) -> None:
    """Once recovery has ended: the restore's recovery settings out of postgresql.auto.conf
    (ALTER SYSTEM rewrites it without them), and the configuration reloaded."""
    resets = tuple(f"ALTER SYSTEM RESET {name}" for name in RECOVERY_SETTINGS)
    target.psql((*resets, "SELECT pg_reload_conf()"), dbname="postgres")


def cleanup(plan: Plan, run: Run, progress: Progress, *, remove_copy: bool) -> None:
    """Undo what can be undone, each attempt in its own step; then record the state.
    Shielded: a signal that arrives meanwhile waits until the cleanup is done."""
    src = plan.source
    with shielded():
        if progress.pause_sent and not progress.resumed:
            _attempt(run, "Resume pgBouncer (cleanup)", lambda: bouncer.resume(src))
        if plan.in_place and progress.pg_stopped and not progress.restore_begun:
            _attempt(run, "Start PostgreSQL again (nothing was restored)", src.service.start)
        waiting = plan.in_place and plan.fast_promotion and progress.pg_started
        if waiting and not progress.promotion_requested and _ask(plan.dest.service.is_active):
            # Recovery waits for the request (paused at its target, or a standby): without
            # it the restored server would stay read-only however long nobody looks.
            progress.promotion_requested = _attempt(
                run,
                f"{PROMOTE_STEP} (cleanup)",
                lambda: request_promotion(plan.dest, CLEANUP_PROMOTE_WAIT_SECONDS),
            )
        if not plan.in_place and plan.place and remove_copy:
            teardown_copy(plan, run)
        run.leave(*state_after(plan, progress))


def teardown_copy(plan: Plan, run: Run) -> None:
    dest, place = plan.dest, plan.place

    def undo() -> None:
        for line in scratch.teardown(dest.executor, place, dest.service.stop):
            run.note(line)

    with shielded():
        _attempt(run, "Tear down the copy (what this run made)", undo)


def _attempt(run: Run, name: str, action, tries: int = 2) -> bool:
    """A cleanup action in a step of its own; tried again once, since what made the run
    fail (a dropped connection) has often passed by the time the cleanup runs."""
    for attempt in range(1, tries + 1):
        try:
            with run.step(name if attempt == 1 else f"{name}, again"):
                action()
            return True
        except (CommandFailed, StepFailed, DeadlineExceeded) as exc:
            run.say(f"    could not: {str(exc).splitlines()[0]}")
    return False


def state_after(plan: Plan, progress: Progress) -> tuple[list[str], str | None]:
    """The state as the hosts report it now (not as this run believes), and the one command
    that undoes it or finishes the job."""
    src, dest = plan.source, plan.dest
    lines: list[str] = []
    undo: str | None = None
    if plan.pauses_bouncer:
        paused = _ask(lambda: bouncer.is_paused(src))
        db = src.bouncer.database
        if paused is False:
            lines.append(f"pgBouncer on {src.label}: not paused ({db} accepts queries)")
        else:
            word = "PAUSED" if paused else "UNKNOWN (host did not answer; it may be paused)"
            lines.append(f"pgBouncer on {src.label}: {word}: clients of {db} wait")
            undo = plan.resume_command
    if plan.in_place:
        role = role_in_words(src)
        up = True if role.startswith("running") else False if role == "down" else None
        if not progress.pg_stopped:
            lines.append(f"PostgreSQL on {src.label}: not touched ({role})")
        elif not progress.restore_begun:
            lines.append(f"PostgreSQL on {src.label}: nothing was restored; now {role}")
            if up is not True and undo is None:
                undo = on_host(src.executor, src.service.start_command())
        elif progress.recovered:
            lines.append(
                f"PostgreSQL on {src.label}: restored to the target, recovery ended, now "
                f"{role}; the verification did not finish (the evidence shows how far it got)"
            )
        elif role == "running" or (
            role == "running, still in recovery"
            and (progress.promotion_requested or not plan.fast_promotion)
        ):
            now = (
                "recovery has ended, it serves"
                if role == "running"
                else "still replaying WAL: recovery ends by itself, then it serves"
            )
            lines.append(
                f"PostgreSQL on {src.label}: restored; {now}, unverified (the restore's "
                "checks did not run); the same command restores and verifies again (--delta "
                "reuses what was restored)"
            )
            if role != "running":
                # It will serve by itself, but not yet: the one command that brings it to a
                # verified state is printed, as for any restore not finished.
                undo = plan.rerun_command
        else:
            lines.append(
                f"PostgreSQL on {src.label}: data directory {src.data_dir} partly or fully "
                f"restored, now {role}; the same command finishes the restore "
                "(--delta reuses what was restored); `--latest` instead returns it to where "
                "it was (the live WAL was archived first)"
            )
            if role != "running":
                undo = plan.rerun_command  # it pauses and resumes pgBouncer itself
    else:
        lines.append(f"{src.label}: production was not touched (a copy was the target)")
        place = plan.place
        if place and (place.made_dir or place.made_parent or place.wrote):
            left = _ask(lambda: dest.executor.exists(place.resolved))
            if left is False:
                lines.append(f"the copy's directory {place.resolved}: removed (this run made it)")
            else:
                lines.append(
                    f"the copy's directory {place.resolved} on {dest.executor.name}: left "
                    f"(exists: {_word(left)}); it holds only what this run restored"
                )
                command = scratch.teardown_command(place, dest.service.stop_command())
                undo = undo or (command and on_host(dest.executor, command))
    return lines, undo


def copy_state(plan: Plan) -> tuple[list[str], str | None]:
    """A copy left running on purpose (a restore onto a copy, a drill's `--keep`) as its host
    reports it now: where it runs, how to reach it, and the one command that removes it
    (what this run made, and only that)."""
    lines, undo = state_after(plan, Progress())
    copy = plan.dest
    lines.append(
        f"the copy's PostgreSQL: {role_in_words(copy)}, port {copy.port}; to look at it: "
        + on_host(copy.executor, copy.psql_command())
    )
    return lines, undo


def say_kept(run: Run) -> None:
    """The state a passing run leaves on purpose (a failed one's is said by conduct)."""
    for line in run.left:
        run.say(f"kept: {line}")
    if run.undo:
        run.say(f"to remove it: {run.undo}")


def role_in_words(target) -> str:
    """The server's state in words: primary, recovery (still replaying), down or unknown."""
    try:
        role = target.role()
    except (CommandFailed, StepFailed, DeadlineExceeded, OSError):
        return "unknown"
    if role is None:
        try:
            return "not answering" if target.service.is_active() else "down"
        except (CommandFailed, StepFailed, OSError):
            return "unknown"
    return {"primary": "running", "recovery": "running, still in recovery"}[role]


def _ask(probe):
    try:
        return bool(probe())
    except (CommandFailed, StepFailed, DeadlineExceeded, OSError):
        return None


def _word(value: bool | None) -> str:
    return {True: "yes", False: "NO", None: "unknown (no answer)"}[value]


def on_host(executor: Executor, command: str) -> str:
    """A shell command as an operator types it for that host. With a non-root login the whole
    command runs under sudo: `sudo a; b` would run `b` (the removal after a stop, a second
    unit's stop) as the login user."""
    if isinstance(executor, SshExecutor):
        login = f"{executor.ssh_user}@{executor.address}"
        if executor.sudo:
            command = f"sudo -n sh -c {shlex.quote(command)}"
        return f"ssh {login} {shlex.quote(command)}"
    return command


def verify(plan: Plan, run: Run) -> None:
    dest = plan.dest
    if plan.fast_promotion and plan.in_place:
        # A promotion leaves the end-of-recovery checkpoint to the background, spread over
        # minutes; until it ends, pg_control names the old timeline and pgBackRest refuses
        # a backup ("WAL timeline 2 does not match pg_control timeline 1"). The server
        # serves meanwhile (pgBouncer is resumed); the runbook ends with it done. (A copy
        # is for looking at, not for backing up: it goes without.)
        with run.step(CHECKPOINT_STEP):
            dest.psql("CHECKPOINT", dbname="postgres", timeout=3600)
    with run.step("Verify"):
        state = dest.query_json(
            "SELECT pg_current_wal_lsn()::text AS lsn, pg_is_in_recovery() AS recovery, "
            "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS tl, "
            "(SELECT timeline_id FROM pg_control_checkpoint()) AS control_tl"
        )[0]
        run.facts.update(lsn_after=state["lsn"], timeline_after=state["tl"])
        run.check(
            "recovery ended (not in recovery)",
            not state["recovery"],
            f"timeline {plan.timeline} -> {state['tl']}, WAL at {state['lsn']}",
        )
        if plan.in_place:
            run.check(
                "checkpoint on the new timeline (a backup can be taken)",
                state["control_tl"] == state["tl"],
                f"pg_control's last checkpoint on timeline {state['control_tl']}",
            )
        _check_recovery_end(plan, run, int(state["tl"]))
        checks.amcheck(dest, run)
        checks.check_queries(dest, run, plan.request.checks)


def _check_recovery_end(plan: Plan, run: Run, timeline: int) -> None:
    """Recovery ended where it had to: a restore that stopped early (WAL missing from the
    archive) looks healthy otherwise, with every later commit gone."""
    expected = expected_end_lsn(plan)
    if expected is None:
        return
    history = plan.dest.psql(
        f"SELECT pg_read_file('pg_wal/{timeline:08X}.history')", dbname="postgres"
    )
    ended = wal.history_switch_lsn(history)
    run.facts["recovery_end_lsn"] = format_lsn(ended) if ended is not None else None
    run.check(
        "recovery reached the target",
        ended is not None and ended >= expected,
        f"ended at {format_lsn(ended) if ended is not None else '?'} (timeline {timeline}), "
        f"needed {format_lsn(expected)}"
        + (
            ""
            if ended is None or ended >= expected
            else ": WAL is missing from the archive after that point; later commits are not here"
        ),
    )
