"""A PITR restore at the backup schedule's worst moment on the lab's db host, as deployed
(encrypted repository, asynchronous archive-get with its queue, process-max, recovery
prefetch), against a raw copy of the same data directory on the same host:

    full backup (the deployed unit) -> an interval of pgbench writes -> incremental backup
    (the deployed unit, as its timer starts it) -> another interval: the worst moment, one
    interval of WAL to replay -> raw copy (PostgreSQL stopped, cp -a + sync) ->
    `sparkops restore --latest` in place (the runbook over SSH), split into copy and replay.

Target: restore / raw copy <= 1.5. Also printed: what dominates, the replay rate, and the WAL
per interval that keeps the ratio at the target (to set pgbackrest_incr_schedule from).

    SPARKOPS_LAB_ID=5 .venv/bin/python bench/restore_schedule_lab.py [--scale 70]
        [--interval-seconds 30]

The lab hosts' root is a 4 GB tmpfs: the data directory, its raw copy and the repository
must fit (scale 15 with 8 s intervals does; scale 70 does not), and both the copy and the
reference run at memory speed, so this measures pgBackRest's and recovery's CPU cost more
than a disk's.

Brings the lab up and deploys it when it is not serving; leaves it up (with the bench
database dropped); `sparkops lab down` takes it down.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deploys import release  # noqa: E402
from lab import config, control, ssh  # noqa: E402
from sparkops import defaults, layout  # noqa: E402
from testkit import pyinfra_runner as runner  # noqa: E402

RESTORE_RATIO_TARGET = 1.5
PG_BIN = f"/usr/lib/postgresql/{defaults.POSTGRES_VERSION}/bin"
DATA_DIR = layout.POSTGRES_DATA_DIR
RAW = "/var/tmp/sparkops-bench-rawcopy"


def on_db(db: dict, command: str, timeout: float = 3600) -> str:
    proc = ssh.run(db["ip"], command, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{command}: {proc.stdout[-1000:]} {proc.stderr[-1000:]}")
    return proc.stdout


def timed(action) -> float:
    start = time.monotonic()
    action()
    return time.monotonic() - start


def as_postgres(command: str) -> str:
    return f"runuser -u postgres -- {command}"


def psql(db: dict, sql: str, dbname: str = "postgres") -> str:
    return on_db(db, as_postgres(f'psql -XAtq -d {dbname} -c "{sql}"')).strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (70 is ~1 GB)")
    parser.add_argument("--interval-seconds", type=int, default=30)
    args = parser.parse_args()
    print(f"restore-schedule lab bench, {datetime.now(UTC).isoformat()}")
    up = control.up(config.DEFAULT_HOSTS, log=lambda _m: None)
    db = next(h for h in up.hosts if "db" in h["groups"])
    if not up.already_up or "pgbackrest-backup-incr.timer" not in on_db(
        db, "systemctl list-timers --all --no-legend || true"
    ):
        _rid, tarball = release.selected()
        deployed = runner.run_site(env={"SPARKOPS_RELEASE_TAR": str(tarball)})
        if deployed.returncode != 0:
            print(deployed.output[-4000:], file=sys.stderr)
            return 1
    info = json.loads(on_db(db, as_postgres("pgbackrest --stanza=spark --output=json info")))
    print(f"repository cipher: {info[0]['cipher']}")
    conf = on_db(db, f"cat {layout.PGBACKREST_CONF}")
    print(
        "pgBackRest: "
        + ", ".join(
            line
            for line in conf.splitlines()
            if line.split("=")[0] in ("archive-async", "archive-get-queue-max", "process-max")
        )
    )
    psql(db, "DROP DATABASE IF EXISTS bench")
    psql(db, "CREATE DATABASE bench")
    pgbench = as_postgres(f"{PG_BIN}/pgbench -h {layout.SOCKET_DIR}")
    seconds = timed(lambda: on_db(db, f"{pgbench} -i -s {args.scale} -q bench 2>&1"))
    size = int(psql(db, "SELECT pg_database_size('bench')"))
    print(f"pgbench -i -s {args.scale}: {size / 1e9:.2f} GB in {seconds:.1f} s")
    unit = "systemctl start pgbackrest-backup@{}.service"
    print(f"full backup (deployed unit): {timed(lambda: on_db(db, unit.format('full'))):.1f} s")
    load = f"{pgbench} -c 4 -j 2 -T {args.interval_seconds} -N bench 2>&1"
    on_db(db, load)
    print(f"incremental backup: {timed(lambda: on_db(db, unit.format('incr'))):.1f} s")
    since = psql(db, "SELECT pg_current_wal_lsn()")
    out = on_db(db, load)
    tps = next((ln for ln in out.splitlines() if ln.startswith("tps")), "tps ?")
    wal = int(psql(db, f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{since}')"))
    print(
        f"one interval of pgbench -N -c 4 ({args.interval_seconds} s, {tps}): {wal / 1e6:.0f} MB"
        " of WAL since the incremental backup (the worst moment: just before the next backup)"
    )

    on_db(db, "systemctl stop postgresql")
    source_bytes = int(on_db(db, f"du -sb {DATA_DIR}").split()[0])
    on_db(db, f"rm -rf {RAW} && sync")  # what others left dirty is not the copy's to pay
    raw = timed(lambda: on_db(db, f"cp -a {DATA_DIR} {RAW} && sync -f {RAW}"))
    on_db(db, f"rm -rf {RAW} && systemctl start postgresql")
    print(
        f"raw copy (cp -a + sync) of the data directory ({source_bytes / 1e9:.2f} GB): {raw:.1f} s"
    )

    evidence = tempfile.mkdtemp(prefix="sparkops-bench-evidence-")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "sparkops"), "restore", "--host", db["name"],
         "--latest", "--yes", "--json", "--evidence-dir", evidence],
        capture_output=True, text=True, timeout=7200, check=False, cwd=REPO,
    )  # fmt: skip
    subprocess.run(["rm", "-rf", evidence], check=False)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return 1
    facts = json.loads(proc.stdout)["facts"]
    copy, replay = facts["copy_seconds"], facts["replay_seconds"]
    total = copy + replay
    print(
        f"sparkops restore --latest in place: copy {copy:.1f} s + WAL replay {replay:.1f} s = "
        f"{total:.1f} s; dominated by {'copy' if copy >= replay else 'WAL replay'}"
    )
    print(
        f"restore / raw copy = {total / raw:.2f} (copy {copy / raw:.2f}, replay "
        f"{replay / raw:.2f}); target <= {RESTORE_RATIO_TARGET}: "
        f"{'met' if total / raw <= RESTORE_RATIO_TARGET else 'MISSED'}"
    )
    if replay > 0:
        rate = wal / replay
        budget = max(0.0, RESTORE_RATIO_TARGET * raw - copy) * rate
        print(
            f"replay rate {rate / 1e6:.0f} MB/s: at most {budget / 1e6:.0f} MB of WAL per "
            f"backup interval keeps the ratio <= {RESTORE_RATIO_TARGET}"
        )
    psql(db, "DROP DATABASE bench")
    return 0


if __name__ == "__main__":
    sys.exit(main())
