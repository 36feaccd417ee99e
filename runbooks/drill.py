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

from app import metric_names
from runbooks import checks, pitr
from runbooks.checklist import Run, StepFailed
from runbooks.executor import CommandFailed, Executor
from runbooks.target import DbTarget
from sparkops import defaults

METRICS_FILE_NAME = "spark_restore_drill.prom"


@dataclass
class Drill:
    plan: pitr.Plan
    metrics_path: str | None
    metrics_executor: Executor
    keep: bool = False
    made_dir: str | None = None  # a directory the command created for the copy: removed too


def prepare(
    source: DbTarget,
    scratch: DbTarget,
    run: Run,
    *,
    metrics_path: str | None,
    metrics_executor: Executor,
    keep: bool = False,
    made_dir: str | None = None,
) -> Drill:
    req = pitr.Request(kind="latest", dest=scratch, pause_bouncer=False)
    plan = pitr.prepare(source, req, run)
    run.plan = [
        *plan.lines,
        "  then:",
        "    - business invariants: " + "; ".join(checks.INVARIANTS),
        f"    - {'keep' if keep else 'tear down'} the copy (stop, remove {scratch.data_dir})",
        f"    - metrics to {metrics_path or '(none: no textfile directory)'}",
    ]
    run.plan[0] = run.plan[0].replace("PITR restore plan", "Restore drill plan")
    return Drill(plan, metrics_path, metrics_executor, keep, made_dir)


def execute(drill: Drill, run: Run) -> None:
    started = time.monotonic()
    scratch = drill.plan.dest
    error: Exception | None = None
    try:
        pitr.execute(drill.plan, run)
        with run.step("Business invariants"):
            checks.invariants(scratch, run)
    except (StepFailed, CommandFailed) as exc:
        error = exc
    finally:
        if not drill.keep:
            with run.step("Tear down the copy"):
                teardown(scratch, drill.made_dir)
    seconds = time.monotonic() - started
    copy = run.facts.get("copy_seconds") or 0.0
    replay = run.facts.get("replay_seconds") or 0.0
    run.facts.update(drill_seconds=round(seconds, 3), restore_seconds=round(copy + replay, 3))
    success = error is None and run.verified
    run.say(
        f"restore {copy:.1f} s (copy) + {replay:.1f} s (WAL replay and start); "
        f"drill {seconds:.1f} s; {'PASSED' if success else 'FAILED'}"
    )
    if drill.metrics_path:
        write_metrics(drill.metrics_executor, drill.metrics_path, success, seconds)
        run.facts["metrics_file"] = drill.metrics_path
    if error is not None:
        raise error


def teardown(scratch: DbTarget, made_dir: str | None = None) -> None:
    try:
        scratch.service.stop()
    finally:
        scratch.executor.run(["rm", "-rf", scratch.data_dir, *([made_dir] if made_dir else [])])


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
    """Atomically (temporary file, then rename), so node_exporter never reads half a file."""
    tmp = f"{path}.tmp"
    executor.run(
        ["sh", "-c", f"cat > {shlex.quote(tmp)} && mv {shlex.quote(tmp)} {shlex.quote(path)}"],
        input=metrics_text(success, seconds),
    )


def default_metrics_path(executor: Executor) -> str | None:
    directory = defaults.NODE_EXPORTER_TEXTFILE_DIR
    return f"{directory}/{METRICS_FILE_NAME}" if executor.exists(directory) else None
