"""Restore time at the backup schedule's worst moment, and the cost of repository encryption,
on this machine (a throwaway cluster archived by a real pgBackRest into an encrypted
repository, as the deploy configures it), each against a reference measured in the same run:

- The schedule (deploys/pgbackrest.py): a full backup, an interval of pgbench writes, an
  incremental backup, another interval of writes: the worst moment, just before the next
  backup, with one interval of WAL to replay; or, with --wal-budget, writes until the WAL
  since the incremental backup reaches the deploy's WAL budget (the moment its check asks for
  the next backup). Then `sparkops restore --latest` in place (the
  PITR path: asynchronous archive-get fetching ahead, process-max parallel copy, recovery
  prefetch), split into copy and WAL replay, against a raw copy (cp -a + sync, the median of
  three) of the same data directory; target: restore / raw copy <= 1.5. Also printed: the
  same restore onto a copy beside the live cluster (the drill's path: WAL fetched
  synchronously), and the WAL budget per interval that keeps the ratio at 1.5 at the replay
  rate measured, and the replay split by the restored server's own log (bench/recovery_log.py:
  start to consistent, redo, end of WAL, new timeline, open).
- With --block-incremental, the repository as the deploy's `pgbackrest_block_incremental`
  makes it (repo1-bundle, repo1-block): a delta restore rewrites only the changed blocks of
  a file. pgBackRest 2.46 or later; on Debian 12's 2.45 the bench adds `beta=y` (a
  measurement of the lever only: the deploy refuses the beta).
- Encryption: a full backup and the restore of its files (no replay) from an encrypted and
  from a plaintext repository of the same cluster; ratios encrypted / plaintext.

    .venv/bin/python bench/restore_schedule.py [--scale 70]
        [--interval-seconds 30 | --wal-budget 5%] [--block-incremental]

Figures only; everything it starts is stopped and removed at the end.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import recovery_log
from bench.restore_rollback import (
    QUIET,
    RECOVERY_SETTINGS,
    RESTORE_RATIO_TARGET,
    dir_bytes,
    pgbench,
    raw_copy_seconds,
    restore_copy,
)
from deploys import pgbackrest as pgbackrest_deploy
from runbooks import flows, wal
from runbooks.conduct import conduct
from sparkops import defaults, walbudget
from testkit.localdb import LocalBackedUpDb, write_pgbackrest_config
from testkit.proc import chown_to_service_user, make_workdir

RAW_COPIES = 3
WRITE_ROUNDS_MAX = 600  # seconds of pgbench at most to reach a WAL budget


def timed(action) -> float:
    start = time.monotonic()
    action()
    return time.monotonic() - start


def wal_bytes(db: LocalBackedUpDb, since_lsn: str) -> int:
    return int(
        db.target.psql(
            f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{since_lsn}')", dbname="postgres"
        )
    )


def write_to_budget(
    db: LocalBackedUpDb, since: str, budget: str, load: list[str]
) -> tuple[int, int]:
    """pgbench in one-second rounds until the WAL since `since` reaches the WAL budget (as the
    deploy's check computes it: a share of the databases' size, or a size): the moment the
    check asks for the next backup. (WAL bytes, seconds of writes)."""
    share, fixed = walbudget.parse_budget(budget)
    size = int(db.target.psql("SELECT sum(pg_database_size(oid)) FROM pg_database",
                              dbname="postgres"))  # fmt: skip
    limit = fixed if fixed is not None else int(share * size)
    one_second = [*load[: load.index("-T")], "-T", "1", *load[load.index("-T") + 2 :]]
    rounds = 0
    while (written := wal_bytes(db, since)) < limit:
        if rounds >= WRITE_ROUNDS_MAX:
            raise RuntimeError(f"{WRITE_ROUNDS_MAX} s of pgbench wrote {written} of {limit} bytes")
        pgbench(db, *one_second, timeout=300)
        rounds += 1
    print(
        f"WAL budget {budget} of {size / 1e9:.2f} GB = {limit / 1e6:.0f} MB (no floor here): "
        f"{rounds} s of pgbench -N -c 4 wrote {written / 1e6:.0f} MB of WAL since the "
        "incremental backup (the worst moment: the check asks for the next backup; up to one "
        "check interval's writes more on a host)"
    )
    return written, max(rounds, 1)


def restore_in_place(db: LocalBackedUpDb):
    """`sparkops restore --latest` on the cluster itself, as on the db host."""
    order = flows.RestoreOrder(
        kind="latest", value=None, where=flows.DbWhere(resolved=db.target), pause_bouncer=False
    )
    evidence = Path(tempfile.mkdtemp(prefix="sparkops-bench-evidence-"))
    outcome = conduct(flows.restore(order), replace(QUIET, evidence_dir=evidence))
    shutil.rmtree(evidence, ignore_errors=True)
    if outcome.code != 0:
        raise RuntimeError(f"restore in place failed: {outcome.result.get('message')}")
    return outcome.run


def encryption_cost(db: LocalBackedUpDb) -> dict[str, float]:
    """A full backup and the copy of its files, from the encrypted repository (db's own) and
    from a plaintext one beside it (a second configuration of the same cluster)."""
    t = db.target
    pg = db.stack.pg
    plain_conf = db.workdir / "plain.conf"
    write_pgbackrest_config(
        plain_conf, db.workdir, db.stanza, pg.datadir, pg.port, pg.workdir / "sock",
        repo="plain-repo",
    )  # fmt: skip
    figures: dict[str, float] = {}
    for name, conf in (("encrypted", t.pgbackrest_config), ("plain", str(plain_conf))):
        base = ["pgbackrest", f"--config={conf}", f"--stanza={db.stanza}"]
        if name == "plain":
            t.executor.run([*base, "stanza-create"], user="postgres", timeout=300)
            # The plaintext repository's archive starts now: its backup needs a segment.
        figures[f"{name}_backup"] = timed(
            lambda b=base: t.executor.run(
                [*b, "--type=full", "--archive-check=n", "backup"], user="postgres", timeout=3600
            )
        )
        dest = make_workdir(f"bench-enc-{name}") / "data"
        dest.mkdir()
        chown_to_service_user(dest)
        dest.chmod(0o700)
        figures[f"{name}_restore"] = timed(
            lambda b=base, d=dest: t.executor.run(
                [*b, f"--pg1-path={d}", "--archive-mode=off", "--type=none", "restore"],
                user="postgres",
                timeout=3600,
            )
        )
        shutil.rmtree(dest.parent, ignore_errors=True)
    return figures


def block_options(wanted: bool) -> tuple[dict[str, str], str]:
    """The repository's extra options and how the figures name it."""
    if not wanted:
        return {}, "file-level incremental (the deploy's default)"
    installed = subprocess.run(
        ["pgbackrest", "version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    options = {"repo1-bundle": "y", "repo1-block": "y"}
    if pgbackrest_deploy.block_incremental_refusal(True, installed):
        # Measuring what 2.46 offers; never what the deploy configures on this version.
        return {"beta": "y", **options}, f"block incremental ({installed}: its beta)"
    return options, f"block incremental ({installed})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70 is ~1 GB)")
    parser.add_argument(
        "--interval-seconds",
        type=int,
        default=30,
        help="pgbench writes between backups (the schedule's interval, compressed)",
    )
    parser.add_argument(
        "--wal-budget",
        help="instead of a second timed interval, write until the WAL since the incremental "
        "backup reaches this WAL budget (5%%: of the databases' size; or a size, 512MiB): "
        "the deploy's WAL budget check's worst moment",
    )
    parser.add_argument(
        "--wal-compression",
        default=defaults.POSTGRES_WAL_COMPRESSION,
        help="wal_compression (default: the deploy's); `off` for the reference without it",
    )
    parser.add_argument(
        "--block-incremental",
        action="store_true",
        help="the repository with block incremental backup (the deploy's "
        "pgbackrest_block_incremental); on pgBackRest 2.45 as its beta, for measuring only",
    )
    args = parser.parse_args()
    repo_options, repo_kind = block_options(args.block_incremental)
    print(
        f"restore-schedule bench, {datetime.now(UTC).isoformat()}, "
        f"wal_compression={args.wal_compression}, repository: {repo_kind}"
    )
    db = LocalBackedUpDb(
        pgbackrest_options=repo_options,
        durable=True,
        extra_settings={"recovery_prefetch": "try", "wal_compression": args.wal_compression},
        cipher_pass=secrets.token_urlsafe(24),
    )
    db.start(backup=False)
    try:
        db.target.psql("CREATE DATABASE bench", dbname="postgres")
        t0 = time.monotonic()
        pgbench(db, "-i", "-s", str(args.scale), "-q", timeout=3600)
        size = int(db.target.psql("SELECT pg_database_size('bench')", dbname="postgres"))
        print(f"pgbench -i -s {args.scale}: {size / 1e9:.2f} GB in {time.monotonic() - t0:.1f} s")
        print(f"full backup (encrypted): {timed(lambda: db.backup('full')):.1f} s")
        load = ["-c", "4", "-j", "2", "-T", str(args.interval_seconds), "-N"]
        pgbench(db, *load, timeout=args.interval_seconds + 300)
        print(f"incremental backup after one interval: {timed(lambda: db.backup('incr')):.1f} s")
        since = wal.format_lsn(wal.read_info(db.target).backups[-1].stop_lsn)
        if args.wal_budget:
            interval_wal, written_seconds = write_to_budget(db, since, args.wal_budget, load)
        else:
            written_seconds = args.interval_seconds
            out = pgbench(db, *load, timeout=args.interval_seconds + 300)
            tps = next((line for line in out.splitlines() if line.startswith("tps")), "tps ?")
            interval_wal = wal_bytes(db, since)
            print(
                f"one interval of pgbench -N -c 4 ({args.interval_seconds} s, {tps}): "
                f"{interval_wal / 1e6:.0f} MB of WAL since the incremental backup (the worst "
                "moment: just before the next backup)"
            )

        # The drill's path first (a copy beside the live cluster, WAL fetched synchronously),
        # then the reference and the PITR in place (which changes the cluster).
        run, scratch, workdir = restore_copy(db)
        copy_c, replay_c = run.facts["copy_seconds"], run.facts["replay_seconds"]
        scratch.service.stop()
        shutil.rmtree(workdir, ignore_errors=True)

        db.target.service.stop()
        source_bytes = dir_bytes(db.target.data_dir)
        # One raw copy varied 1.3-2.9 s here (page cache, writeback): the median of three
        # is the reference, so the ratio moves with the restore rather than with the copy.
        raws = [raw_copy_seconds(db.target.data_dir) for _ in range(RAW_COPIES)]
        raw = statistics.median(raws)
        db.target.service.start()
        print(
            f"raw copy (cp -a + sync) of the data directory ({source_bytes / 1e9:.2f} GB): "
            f"median {raw:.1f} s of {', '.join(f'{r:.1f}' for r in raws)}"
        )

        db.target.service.options.update(RECOVERY_SETTINGS)
        log = Path(db.stack.pg.logfile)
        log_offset = log.stat().st_size
        run = restore_in_place(db)
        copy, replay = run.facts["copy_seconds"], run.facts["replay_seconds"]
        total = copy + replay
        dominant = "copy" if copy >= replay else "WAL replay"
        print(
            f"PITR in place (--latest; async archive-get, process-max 2, recovery_prefetch): "
            f"copy {copy:.1f} s + WAL replay {replay:.1f} s = {total:.1f} s; "
            f"checks {'passed' if run.verified else 'FAILED'}; dominated by {dominant}"
        )
        print(
            f"restore / raw copy = {total / raw:.2f} (copy {copy / raw:.2f}, replay "
            f"{replay / raw:.2f}); target <= {RESTORE_RATIO_TARGET}: "
            f"{'met' if total / raw <= RESTORE_RATIO_TARGET else 'MISSED'}"
        )
        split = recovery_log.phases(log.read_bytes()[log_offset:].decode(errors="replace"))
        if split:
            print(
                "  the replay by the server's log: "
                + ", ".join(f"{name.replace('_', ' ')} {split[name]:.2f} s" for name in
                            recovery_log.PHASES)
                + f" (server start to open {split['total']:.2f} s; the runbook's start, "
                f"request and polling around it {replay - split['total']:.2f} s)"
            )  # fmt: skip
        print(
            f"copy beside the live cluster (the drill's path, WAL fetched synchronously): copy "
            f"{copy_c:.1f} s + replay {replay_c:.1f} s = {copy_c + replay_c:.1f} s; / raw "
            f"copy = {(copy_c + replay_c) / raw:.2f}"
        )
        if replay > 0:
            rate = interval_wal / replay
            budget = max(0.0, RESTORE_RATIO_TARGET * raw - copy) * rate
            written = interval_wal / written_seconds  # WAL bytes per second of load
            print(
                f"replay rate {rate / 1e6:.0f} MB/s: at most {budget / 1e6:.0f} MB of WAL per "
                f"backup interval ({budget / size:.1%} of the database: "
                f"pgbackrest_incr_wal_budget) keeps the ratio <= {RESTORE_RATIO_TARGET}; at this "
                f"write rate ({written / 1e6:.1f} MB/s of WAL) that is an incremental backup "
                f"every {budget / written:.0f} s"
            )

        enc = encryption_cost(db)
        print(
            f"encryption (aes-256-cbc) cost: full backup {enc['encrypted_backup']:.1f} s vs "
            f"{enc['plain_backup']:.1f} s plaintext = "
            f"{enc['encrypted_backup'] / enc['plain_backup']:.2f}; restore (file copy) "
            f"{enc['encrypted_restore']:.1f} s vs {enc['plain_restore']:.1f} s = "
            f"{enc['encrypted_restore'] / enc['plain_restore']:.2f}"
        )
    finally:
        db.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
