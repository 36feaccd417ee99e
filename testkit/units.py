"""Every systemd unit Spark Ops writes, rendered as the deploys render it, scored by
`systemd-analyze security --offline=yes` in a throwaway root: for tests/deploys/test_hardening.py
and bench/unit_exposure.py (the table in docs/hardening.md).

A drop-in (pgBouncer's) is scored over Debian's own unit, as systemd loads it on a host: the
vendor unit under <root>/lib/systemd/system, ours under <root>/etc/systemd/system/<unit>.d/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploys import app, drill, hacluster, hardening, pgbackrest, pgbouncer, support
from sparkops import defaults, layout

VENDOR_UNITS = Path("/lib/systemd/system")
_EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)")


@dataclass(frozen=True)
class Unit:
    name: str  # as systemctl names it (an instance for a template unit)
    text: str
    drop_in_for: str | None = None  # the vendor unit this text is a drop-in of


def rendered_units() -> list[Unit]:
    """Our units with the context the deploys give them (lab-like addresses), and our drop-ins
    over Debian's pgBouncer, Prometheus, Alertmanager and exporter units."""
    current = layout.APP_CURRENT_LINK
    common = {"current": current, "hardening": hardening.app_service()}
    units = [
        Unit(
            layout.APP_SERVICE,
            support.render(
                f"app/{layout.APP_SERVICE}.j2",
                user=layout.APP_USER,
                env_file=layout.APP_ENV_FILE,
                keep_alive=defaults.APP_KEEP_ALIVE_SECONDS,
                graceful_seconds=defaults.APP_GRACEFUL_SHUTDOWN_SECONDS,
                **common,
            ),
        ),
        Unit(
            "spark-idempotency-purge.service",
            support.render(
                "app/spark-idempotency-purge.service.j2",
                user=layout.APP_USER,
                env_file=layout.APP_ENV_FILE,
                ttl_hours=defaults.IDEMPOTENCY_KEY_TTL_HOURS,
                timeout=app.PURGE_TIMEOUT,
                **common,
            ),
        ),
        Unit(
            layout.OUTBOX_SERVICE,
            support.render(
                f"app/{layout.OUTBOX_SERVICE}.j2",
                user=layout.OUTBOX_USER,
                env_file=layout.OUTBOX_ENV_FILE,
                publisher="redis",
                metrics_host="10.0.0.11",
                metrics_port=defaults.OUTBOX_METRICS_PORT,
                dispatcher_name=app.outbox_name("app"),
                **common,
            ),
        ),
        Unit(
            layout.EXPORTER_SERVICE,
            support.render(
                f"app/{layout.EXPORTER_SERVICE}.j2",
                user=layout.EXPORTER_USER,
                env_file=layout.EXPORTER_ENV_FILE,
                listen_host="10.0.0.11",
                port=defaults.PGBOUNCER_EXPORTER_PORT,
                **common,
            ),
        ),
        Unit(
            "pgbackrest-backup@full.service",
            support.render(
                "pgbackrest/backup@.service.j2",
                stanza=pgbackrest.STANZA,
                # The cluster's variant (its ExecCondition verified too); the rest is the same.
                condition=hacluster.role_condition("primary"),
                backup_script=layout.PGBACKREST_BACKUP_SCRIPT,
                metric_script=pgbackrest.METRIC_SCRIPT,
                timeout=pgbackrest.BACKUP_TIMEOUT,
                hardening=hardening.backup_service(
                    pgbackrest.DEFAULTS["pgbackrest_repo_path"], pgbackrest.SPOOL
                ),
            ),
        ),
        Unit(
            layout.PGBACKREST_WAL_BUDGET_SERVICE,
            # The cluster's variant (its ExecCondition verified too).
            pgbackrest.wal_budget_unit(pgbackrest.DEFAULTS["pgbackrest_repo_path"], cluster=True),
        ),
        Unit(
            pgbackrest.SERVER_SERVICE,
            support.render(
                "pgbackrest/pgbackrest-server.service.j2",
                conf=pgbackrest.CONF,
                hardening=hardening.pgbackrest_server_service(),
            ),
        ),
        Unit(
            drill.SERVICE,
            support.render(
                "drill/spark-restore-drill.service.j2",
                sparkops="/opt/spark-app/releases/r1/venv/bin/sparkops",
                target_file=drill.TARGET_FILE,
                scratch_dir=drill.SCRATCH_DIR,
                scratch_port=drill.DEFAULTS["drill_scratch_port"],
                metrics_file=layout.DRILL_METRICS_FILE,
                evidence_dir=drill.EVIDENCE_DIR,
                timeout=drill.DEFAULTS["drill_timeout"],
                hardening=hardening.drill_service(
                    drill.SCRATCH_DIR, drill.EVIDENCE_DIR, pgbackrest.SPOOL
                ),
                # The cluster's variant (its ExecCondition verified too).
                place="replica",
                condition=hacluster.role_condition("replica", run_as="postgres"),
            ),
        ),
        Unit(
            layout.DB_ROUTE_SERVICE,
            support.render(
                "hacluster/spark-db-route.service.j2",
                config=layout.DB_ROUTE_CONFIG,
                hardening=hardening.db_route_service(),
            ),
        ),
        Unit(
            layout.PGBOUNCER_SERVICE,
            support.render(
                "pgbouncer/override.conf.j2",
                listen=pgbouncer.listen("10.0.0.10"),
                hardening=hardening.pgbouncer_service(),
            ),
            drop_in_for=layout.PGBOUNCER_SERVICE,
        ),
    ]
    for name in hardening.MONITORING_UNITS:
        text = support.render(
            "monitoring/unit-override.conf.j2",
            unit=name,
            hardening=hardening.monitoring_service(name),
            settings={},
            source="monitoring_prometheus_unit_overrides",
            reason="",
        )
        units.append(Unit(name, text, drop_in_for=name))
    return units


def exposure(unit: Unit, root: Path, timeout: float = 60) -> float:
    """The unit's overall exposure (0 safest, 10 worst) as systemd 252 scores it offline."""
    if root.exists():
        shutil.rmtree(root)
    system = root / "etc/systemd/system"
    system.mkdir(parents=True)
    vendor = root / "lib/systemd/system"
    vendor.mkdir(parents=True)
    if unit.drop_in_for:
        shutil.copy(VENDOR_UNITS / unit.drop_in_for, vendor / unit.drop_in_for)
        (system / f"{unit.drop_in_for}.d").mkdir()
        (system / f"{unit.drop_in_for}.d/sparkops.conf").write_text(unit.text)
    else:
        file_name = re.sub(r"@[^.]+\.", "@.", unit.name)
        (system / file_name).write_text(unit.text)
    return vendor_exposure(unit.name, root, timeout)


def vendor_exposure(name: str, root: Path | None = None, timeout: float = 60) -> float:
    """A unit's exposure: under `root` when given, else Debian's file on this machine."""
    if root is None:
        argv = ["systemd-analyze", "security", "--offline=yes", str(VENDOR_UNITS / name)]
    else:
        argv = ["systemd-analyze", "security", "--offline=yes", f"--root={root}", name]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    found = _EXPOSURE.search(proc.stdout)
    if not found:
        raise RuntimeError(f"{' '.join(argv)}: no exposure level in\n{proc.stdout}{proc.stderr}")
    return float(found.group(1))
