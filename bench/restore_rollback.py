"""Restore and rollback figures on this machine (a throwaway cluster archived by a real
pgBackRest, the real app), each against a reference measured in the same run:

- WAL archive lag under a pgbench write load: the largest "seconds since the last archived
  segment" (pg_stat_archiver) and the oldest segment waiting to be archived (its .ready file),
  sampled every second; target: never more than archive_timeout (60 s).
- PITR restore of a database of at least 1 GB (pgbench scale 70) onto a scratch copy, split
  into copy (pgbackrest restore) and WAL replay (start until recovery ends), against a raw
  copy (cp -a + sync) of the same data directory; target: restore / raw copy <= 1.5.
- Rollback: `sparkops rollback` logic from release B to A until A is healthy; target <= 10 s.

    .venv/bin/python bench/restore_rollback.py [--scale 70] [--load-seconds 60]

Figures only; everything it starts is stopped and removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runbooks import flows, sites, wal
from runbooks.checklist import Run
from runbooks.conduct import Options, conduct
from sparkops import defaults, layout
from testkit import localapp
from testkit.localdb import LocalBackedUpDb
from testkit.proc import free_port, make_workdir

ROLLBACK_TARGET_SECONDS = 10.0
RESTORE_RATIO_TARGET = 1.5
RECOVERY_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "4GB"}


def pgbench(db: LocalBackedUpDb, *args: str, timeout: float) -> str:
    t = db.target
    result = t.executor.run(
        [f"{layout.POSTGRES_BINDIR}/pgbench", "-h", t.socket_dir, "-p", str(t.port), *args,
         "bench"],
        user="postgres", timeout=timeout,
    )  # fmt: skip
    return result.output()


def archive_lag_under_load(db: LocalBackedUpDb, seconds: int) -> dict:
    t = db.target
    status = Path(t.data_dir) / "pg_wal" / "archive_status"
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            row = t.query_json(
                "SELECT extract(epoch FROM now() - last_archived_time) AS since, "
                "archived_count, failed_count FROM pg_stat_archiver"
            )[0]
            ready = [p.stat().st_mtime for p in status.glob("*.ready")]
            oldest = time.time() - min(ready) if ready else 0.0
            samples.append((float(row["since"] or 0), oldest))
            stop.wait(1.0)

    before = t.query_json("SELECT archived_count FROM pg_stat_archiver")[0]["archived_count"]
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out = pgbench(db, "-c", "4", "-j", "2", "-T", str(seconds), "-N", timeout=seconds + 120)
    stop.set()
    thread.join(timeout=10)
    after = t.query_json("SELECT archived_count, failed_count FROM pg_stat_archiver")[0]
    tps = next((line for line in out.splitlines() if line.startswith("tps")), "tps ?")
    return {
        "max_since_last_archived": max(s for s, _ in samples),
        "max_oldest_ready": max(r for _, r in samples),
        "segments": after["archived_count"] - before,
        "failed": after["failed_count"],
        "tps": tps,
    }


def raw_copy_seconds(source: str) -> float:
    dest = Path(tempfile.mkdtemp(prefix="sparkops-rawcopy-")) / "data"
    # Flush what others left dirty first (the cluster's shutdown checkpoint, other work on
    # the machine): `sync -f` below would otherwise pay for it and the reference would vary
    # with the machine's load, not with the copy.
    subprocess.run(["sync"], check=True)
    start = time.monotonic()
    subprocess.run(["cp", "-a", source, str(dest)], check=True)
    subprocess.run(["sync", "-f", str(dest)], check=True)
    seconds = time.monotonic() - start
    shutil.rmtree(dest.parent)
    return seconds


# The runbooks run as `sparkops` runs them (runbooks.flows through runbooks.conduct), quietly
# and without a prompt; their evidence goes to a temporary directory.
QUIET = Options(yes=True, quiet=True, command="bench/restore_rollback.py")


def restore_copy(
    db: LocalBackedUpDb, kind: str = "latest", value: str | None = None
) -> tuple[Run, sites.DbTarget, str]:
    workdir = make_workdir("bench-restore")
    data_dir, port = f"{workdir}/data", free_port()
    order = flows.RestoreOrder(
        kind=kind,
        value=value,
        where=flows.DbWhere(resolved=db.target),
        to_data_dir=data_dir,
        to_port=port,
        pause_bouncer=False,
        # Recovery-friendly sizing for the copy: replay dirties pages faster than a small
        # buffer pool can take, and restartpoints every max_wal_size would write them out.
        copy_settings=RECOVERY_SETTINGS,
    )
    evidence = Path(tempfile.mkdtemp(prefix="sparkops-bench-evidence-"))
    outcome = conduct(flows.restore(order), replace(QUIET, evidence_dir=evidence))
    shutil.rmtree(evidence, ignore_errors=True)
    if outcome.code != 0:
        raise RuntimeError(f"restore {kind} failed: {outcome.result.get('message')}")
    scratch = sites.scratch_target(db.target, data_dir, port, label="bench-copy")
    return outcome.run, scratch, str(workdir)


def dir_bytes(path: str) -> int:
    out = subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def rollback_seconds(db: LocalBackedUpDb) -> float:
    workdir = Path(tempfile.mkdtemp(prefix="sparkops-bench-app-"))
    spec, app = localapp.app_target(db.stack, workdir)
    try:
        localapp.install(app_root(app), "A", age=100)
        localapp.install(app_root(app), "B", age=50)
        localapp.start_on(app, "B")
        options = replace(QUIET, evidence_dir=workdir / "evidence")
        start = time.monotonic()
        outcome = conduct(flows.rollback_runbook(flows.RollbackOrder(target_file=spec)), options)
        if outcome.code != 0:
            raise RuntimeError(f"rollback to A failed: {outcome.result.get('message')}")
        return time.monotonic() - start
    finally:
        app.service.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def app_root(app) -> Path:
    return Path(app.root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70 is ~1 GB)")
    parser.add_argument("--load-seconds", type=int, default=60)
    args = parser.parse_args()
    print(f"restore/rollback bench, {datetime.now(UTC).isoformat()}")
    db = LocalBackedUpDb(durable=True).start(backup=False)
    scratch = None
    try:
        db.target.psql("CREATE DATABASE bench", dbname="postgres")
        t0 = time.monotonic()
        pgbench(db, "-i", "-s", str(args.scale), "-q", timeout=3600)
        size = int(db.target.psql("SELECT pg_database_size('bench')", dbname="postgres"))
        print(f"pgbench -i -s {args.scale}: {size / 1e9:.2f} GB in {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        db.backup("full")
        print(f"full backup: {time.monotonic() - t0:.1f} s")

        lag = archive_lag_under_load(db, args.load_seconds)
        worst = max(lag["max_since_last_archived"], lag["max_oldest_ready"])
        print(
            f"WAL archive lag under pgbench -N -c 4 ({args.load_seconds} s, {lag['tps']}, "
            f"{lag['segments']} segments archived, {lag['failed']} failures): max "
            f"{lag['max_since_last_archived']:.1f} s since the last archived segment, oldest "
            f"segment waiting {lag['max_oldest_ready']:.1f} s; target <= "
            f"{defaults.ARCHIVE_TIMEOUT_SECONDS} s: "
            f"{'met' if worst <= defaults.ARCHIVE_TIMEOUT_SECONDS else 'MISSED'}"
        )

        run, scratch, workdir = restore_copy(db)
        copy, replay = run.facts["copy_seconds"], run.facts["replay_seconds"]
        restored = dir_bytes(scratch.data_dir)
        scratch.service.stop()
        # The reference: a raw copy of the production data directory (stopped, so the copy
        # is of settled files), the directory the restore reproduces.
        db.target.service.stop()
        source_bytes = dir_bytes(db.target.data_dir)
        raw = raw_copy_seconds(db.target.data_dir)
        db.target.service.start()
        total = copy + replay
        print(
            f"restore of {restored / 1e9:.2f} GB: copy {copy:.1f} s + WAL replay {replay:.1f} s "
            f"= {total:.1f} s; checks {'passed' if run.verified else 'FAILED'}"
        )
        print(
            f"raw copy (cp -a + sync) of the data directory ({source_bytes / 1e9:.2f} GB): "
            f"{raw:.1f} s"
        )
        print(
            f"restore / raw copy = {total / raw:.2f} (copy only {copy / raw:.2f}); target <= "
            f"{RESTORE_RATIO_TARGET}: {'met' if total / raw <= RESTORE_RATIO_TARGET else 'MISSED'}"
        )
        shutil.rmtree(workdir, ignore_errors=True)
        scratch = None

        # The same backup restored to its own end: the copy with almost no WAL to replay.
        stop_lsn = wal.format_lsn(wal.read_info(db.target).backups[-1].stop_lsn)
        run, scratch, workdir = restore_copy(db, "lsn", stop_lsn)
        copy0, replay0 = run.facts["copy_seconds"], run.facts["replay_seconds"]
        scratch.service.stop()
        print(
            f"restore to the backup's end (LSN {stop_lsn}): copy {copy0:.1f} s + replay "
            f"{replay0:.1f} s = {copy0 + replay0:.1f} s; / raw copy = "
            f"{(copy0 + replay0) / raw:.2f}"
        )
        shutil.rmtree(workdir, ignore_errors=True)
        scratch = None

        seconds = rollback_seconds(db)
        print(
            f"rollback B -> A (switch, restart, healthy on /readyz and /version): "
            f"{seconds:.1f} s; target <= {ROLLBACK_TARGET_SECONDS:.0f} s: "
            f"{'met' if seconds <= ROLLBACK_TARGET_SECONDS else 'MISSED'}"
        )
    finally:
        if scratch is not None:
            scratch.service.stop()
        db.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
