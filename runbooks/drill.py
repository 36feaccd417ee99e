"""The restore drill: restore the latest backup and all archived WAL somewhere harmless, check
it (amcheck, the ledger's checksums, the business invariants), time it, tear it down, and
publish the result for node_exporter's textfile collector.

Production is only touched by the WAL archiving step (a commit marker and a segment switch, so
the drill covers everything committed until it started).
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass

from runbooks import checks, pitr, restoring
from runbooks.checklist import Run, StepFailed, shielded
from runbooks.executor import CommandFailed, Executor
from runbooks.target import DbTarget
from sparkops import layout, metric_names

KEEP_CHECKPOINT_STEP = "Checkpoint the kept copy"


@dataclass
class Drill:
    plan: pitr.Plan
    metrics_path: str | None
    metrics_executor: Executor
    keep: bool = False


def prepare(
    source: DbTarget,
    scratch: DbTarget,
    run: Run,
    *,
    metrics_path: str | None,
    metrics_executor: Executor,
    keep: bool = False,
    own_parent: bool = False,
) -> Drill:
    """Plan a drill; refuses (before anything is made) a scratch directory that is, contains
    or sits inside a data directory, is not empty, or a port in use (runbooks.scratch).
    `own_parent`: the command made the scratch directory's parent for this run."""
    req = pitr.Request(
        kind="latest",
        dest=scratch,
        pause_bouncer=False,
        dest_option="--scratch-dir",
        dest_own_parent=own_parent,
    )
    plan = pitr.prepare(source, req, run)
    run.plan = [
        *plan.lines,
        "  then:",
        "    - business invariants: " + "; ".join(checks.INVARIANTS),
        (
            f"    - keep the copy running (port {scratch.port}, {scratch.data_dir}), "
            "checkpointed; the run ends with how to reach it and the command that removes it"
            if keep
            else "    - tear down the copy (stop the server this run started, remove only what "
            f"this run made under {scratch.data_dir})"
        ),
        f"    - metrics to {metrics_path or '(none: no textfile directory)'}",
    ]
    run.plan[0] = run.plan[0].replace("PITR restore plan", "Restore drill plan")
    return Drill(plan, metrics_path, metrics_executor, keep)


def execute(drill: Drill, run: Run) -> None:
    started = time.monotonic()
    scratch = drill.plan.dest
    error: Exception | None = None
    try:
        restoring.execute(drill.plan, run, cleanup_copy=not drill.keep)
        with run.step("Business invariants"):
            checks.invariants(scratch, run)
        if drill.keep:
            # A promotion leaves the end-of-recovery checkpoint to the background; until it
            # ends pgBackRest refuses to back the copy up (its pg_control names the old
            # timeline). Whoever keeps the copy may want to.
            with run.step(KEEP_CHECKPOINT_STEP):
                scratch.psql("CHECKPOINT", dbname="postgres", timeout=3600)
    except (StepFailed, CommandFailed) as exc:
        error = exc
    finally:  # an interruption too: the copy goes, production was never the target
        if not drill.keep and not _torn_down(run):
            with shielded():
                restoring.teardown_copy(drill.plan, run)
                run.leave(*restoring.state_after(drill.plan, restoring.Progress()))
        elif drill.keep and not run.left:  # restoring.execute says it when the restore failed
            run.leave_as_read(lambda: restoring.copy_state(drill.plan))
    seconds = time.monotonic() - started
    copy = run.facts.get("copy_seconds") or 0.0
    replay = run.facts.get("replay_seconds") or 0.0
    run.facts.update(drill_seconds=round(seconds, 3), restore_seconds=round(copy + replay, 3))
    success = error is None and run.verified
    run.say(
        f"restore {copy:.1f} s (copy) + {replay:.1f} s (WAL replay and start); "
        f"drill {seconds:.1f} s; {'PASSED' if success else 'FAILED'}"
    )
    if drill.keep and success:  # a failed run says its state left anyway (conduct)
        restoring.say_kept(run)
    if drill.metrics_path:
        write_metrics(drill.metrics_executor, drill.metrics_path, success, seconds)
        run.facts["metrics_file"] = drill.metrics_path
    if error is not None:
        raise error


def _torn_down(run: Run) -> bool:
    return any(s.name.startswith("Tear down the copy") for s in run.steps)


def metrics_text(success: bool, seconds: float, now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = [
        (metric_names.RESTORE_DRILL_LAST_SUCCESS, "1 when the last drill passed", int(success)),
        (metric_names.RESTORE_DRILL_LAST_RUN_TIMESTAMP, "when the last drill ended", f"{now:.3f}"),
        (metric_names.RESTORE_DRILL_DURATION, "seconds the last drill took", f"{seconds:.3f}"),
    ]
    lines = []
    for name, help_text, value in rows:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
    return "\n".join(lines) + "\n"


def write_metrics(executor: Executor, path: str, success: bool, seconds: float) -> None:
    """Atomically (temporary file, then rename), so node_exporter never reads half a file;
    readable by node_exporter's user whatever the umask (the drill's unit has 0077)."""
    tmp, dest = shlex.quote(f"{path}.tmp"), shlex.quote(path)
    executor.run(
        ["sh", "-c", f"cat > {tmp} && chmod 644 {tmp} && mv {tmp} {dest}"],
        input=metrics_text(success, seconds),
    )


def default_metrics_path(executor: Executor) -> str | None:
    directory = layout.NODE_EXPORTER_TEXTFILE_DIR
    return f"{directory}/{layout.DRILL_METRICS_FILE_NAME}" if executor.exists(directory) else None
