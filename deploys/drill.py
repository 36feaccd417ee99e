"""The restore drill, scheduled: a weekly systemd timer on the db host runs `sparkops drill`.

Where: the db host. The backup repository is reachable from it (a posix repository is on
it; S3 is reached with its credentials), PostgreSQL 15 and pgBackRest are installed, and
node_exporter's textfile collector there is where RestoreDrillFailed reads the drill's
result (scrape job `node`). The copy goes to a scratch directory beside the cluster, on its
own port, archiving off, and is removed after the checks; the drill runs niced, after the
weekly full backup, and needs free disk about the size of the database.

What runs: the app's release (the same wheels the app hosts run) installed into its own venv
under /opt/spark-app/releases/<id>, whose `sparkops drill` drives a local target described
in /etc/spark-drill/target.json (the production cluster, read only).
"""

from __future__ import annotations

import json
from io import StringIO

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from deploys import hacluster, hardening, support
from deploys import release as release_build
from deploys.app import release_dir, release_installed
from deploys.pgbackrest import CONF, DATA_DIR, SPOOL, STANZA
from sparkops import defaults, layout

ETC = "/etc/spark-drill"
TARGET_FILE = f"{ETC}/target.json"
EVIDENCE_DIR = "/var/lib/spark-drill/evidence"
SCRATCH_DIR = layout.DRILL_SCRATCH_DIR
SERVICE = "spark-restore-drill.service"
TIMER = "spark-restore-drill.timer"

DEFAULTS = {
    # systemd OnCalendar: weekly, after the Sunday full backup (pgbackrest_full_schedule),
    # well inside RestoreDrillFailed's 8 days.
    "drill_schedule": "Sun *-*-* 05:00:00",
    # OnActiveSec for a first drill after the timer is installed (None: wait for the schedule).
    "drill_first_run_after": "5min",
    "drill_scratch_port": defaults.POSTGRES_PORT + 2,
    "drill_timeout": "6h",
}


def target_spec() -> dict:
    """The production cluster as `sparkops drill --target-file` reads it (runbooks/sites.py)."""
    return {
        "data_dir": DATA_DIR,
        "logfile": layout.POSTGRES_LOG_FILE,
        "socket_dir": layout.SOCKET_DIR,
        "port": defaults.POSTGRES_PORT,
        "dbname": defaults.DATABASE_NAME,
        "pgbackrest_config": CONF,
        "stanza": STANZA,
        "label": "db",
    }


def drill_place(cluster: bool, repo_type: str) -> str | None:
    """Which node of a Patroni cluster runs the drill (None: a single db host, it does).

    A replica, when the repository is shared (S3): the drill's restore and checks then load a
    node that serves no writes. The primary, with a posix repository: each node's repository
    holds only what that node archived while it was primary, so the current primary's is the
    one with the newest backups (docs/ha.md)."""
    if not cluster:
        return None
    return "replica" if repo_type == "s3" else "primary"


@deploy("Restore drill", data_defaults=DEFAULTS)
def restore_drill() -> None:
    release, tarball = release_build.selected()
    place = drill_place(support.is_cluster(inventory), host.data.get("pgbackrest_repo_type"))
    for path in (layout.APP_ROOT, layout.APP_RELEASES_DIR):
        files.directory(name=f"Create {path}", path=path, user="root", group="root", mode="755")
    release_installed(name=f"Install release {release} for the drill", release=release,
                      tarball=str(tarball))  # fmt: skip
    files.directory(name=f"Create {ETC}", path=ETC, user="root", group="root", mode="755")
    files.directory(name=f"Create {EVIDENCE_DIR}", path=EVIDENCE_DIR, mode="750")
    target = files.put(
        name="Describe the cluster the drill restores",
        src=StringIO(json.dumps(target_spec(), indent=2, sort_keys=True) + "\n"),
        dest=TARGET_FILE,
        mode="644",
    )
    unit = files.put(
        name="Install the restore drill unit",
        src=support.rendered(
            "drill/spark-restore-drill.service.j2",
            sparkops=f"{release_dir(release)}/venv/bin/sparkops",
            target_file=TARGET_FILE,
            scratch_dir=SCRATCH_DIR,
            scratch_port=host.data.drill_scratch_port,
            metrics_file=f"{layout.DRILL_METRICS_FILE}",
            evidence_dir=EVIDENCE_DIR,
            timeout=host.data.drill_timeout,
            hardening=hardening.drill_service(SCRATCH_DIR, EVIDENCE_DIR, SPOOL),
            place=place,
            condition=hacluster.role_condition(place, run_as="postgres") if place else None,
        ),
        dest=f"/etc/systemd/system/{SERVICE}",
        mode="644",
    )
    timer = files.put(
        name="Schedule the weekly restore drill",
        src=support.rendered(
            "drill/spark-restore-drill.timer.j2",
            schedule=host.data.drill_schedule,
            first_run_after=host.data.drill_first_run_after,
        ),
        dest=f"/etc/systemd/system/{TIMER}",
        mode="644",
    )
    systemd.daemon_reload(
        name="Reload systemd for the drill units",
        _if=lambda: any(op.did_change() for op in (target, unit, timer)),
    )
    systemd.service(name="Enable the weekly restore drill", service=TIMER, running=True,
                    enabled=True)  # fmt: skip
