"""promtool unit tests for every alert, written as scenarios and rendered to YAML.

A firing scenario names the first evaluation at which the alert expression holds (`onset`,
minutes); the rendered test then checks both sides of the `for:` window: nothing at
`onset + for - 1m` (still pending) and the alert, with its labels and rendered annotations,
at `onset + for`. A quiet scenario (below the threshold, a transient blip, or no data)
checks that nothing fires at `at`. Sample values are placed relative to the thresholds in
`alerts.config`; the expected descriptions are written out in full, so a broken template
shows up as a failing case.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from alerts import config as c
from alerts import rules
from sparkops import metric_names as m

RULES_RELATIVE = "../generated/spark-ops.rules.yml"  # promtool resolves it from the test file

APP = {"job": c.JOB_APP, "instance": "app-1:8000"}
PG = {"job": c.JOB_POSTGRES, "instance": "db-1:9187"}
PGB = {"job": c.JOB_PGBOUNCER, "instance": "db-1:9127"}
NODE = {"job": c.JOB_NODE, "instance": "db-1:9100"}
NODE2 = {"job": c.JOB_NODE, "instance": "db-2:9100"}  # a cluster's second node
BACKREST = {**NODE, "stanza": "spark"}  # the backup metrics' own label
BACKREST2 = {**NODE2, "stanza": "spark"}
OUTBOX = {"job": c.JOB_OUTBOX, "instance": "app-1:9310"}
PAT1 = {"job": c.JOB_PATRONI, "instance": "db-1:8008", "scope": "spark"}
PAT2 = {"job": c.JOB_PATRONI, "instance": "db-2:8008", "scope": "spark"}
ETCD1 = {"job": c.JOB_ETCD, "instance": "db-1:2379"}
# Scenarios without any series of interest still need one input series.
UNRELATED = ('up{job="unrelated", instance="elsewhere:1"}', "1x60")
MIB = 1 << 20
# 0 to 150 MiB in five minutes, then a backup brings it back to 0: fifteen times (90 samples).
SAWTOOTH_150_MIB = " ".join([f"0+{30 * MIB}x5"] * 15)


def series(metric: str, labels: dict[str, str], values: str) -> tuple[str, str]:
    inside = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{inside}}}", values


def minutes(duration: str) -> int:
    units = {"m": 1, "h": 60}
    return int(duration[:-1]) * units[duration[-1]]


@dataclass(frozen=True)
class Firing:
    alert: str
    name: str
    inputs: tuple[tuple[str, str], ...]
    onset: int
    labels: dict[str, str]
    description: str


@dataclass(frozen=True)
class Quiet:
    alert: str
    name: str
    inputs: tuple[tuple[str, str], ...]
    at: int = 40
    extra: dict = field(default_factory=dict)


def _down_cases(alert: str, component: str, up_metric: str | None, target: dict) -> list:
    up = m.SCRAPE_UP
    job = target["job"]
    healthy = [series(up, target, "1x60")]
    if up_metric:
        healthy.append(series(up_metric, target, "1x60"))
    tail = f"has been down or unscrapable for more than {c.DOWN_FOR} (job {job})."
    on_instance = f"{component} on {target['instance']} {tail}"
    cases = [
        Quiet(alert, "healthy target", tuple(healthy)),
        Firing(
            alert,
            "scrape fails",
            (series(up, target, "1x9 0x50"),),
            onset=10,
            labels={"severity": c.SEVERITY_CRITICAL, **target},
            description=on_instance,
        ),
        Firing(
            alert,
            "job vanished: no up series at all",
            (UNRELATED,),
            onset=0,
            labels={"severity": c.SEVERITY_CRITICAL, "job": job},
            description=f"{component} {tail}",
        ),
    ]
    if up_metric:
        cases.append(
            Firing(
                alert,
                "exporter up, service down",
                (series(up, target, "1x60"), series(up_metric, target, "1x9 0x50")),
                onset=10,
                labels={"severity": c.SEVERITY_CRITICAL, **target},
                description=on_instance,
            )
        )
    return cases


def _app_cases() -> list[Firing | Quiet]:
    """SparkAppNotReady and SparkAppServerErrors: the app as its users see it."""
    crit = c.SEVERITY_CRITICAL
    ready = m.APP_READY
    count = m.HTTP_REQUEST_DURATION + "_count"
    orders = {**APP, "route": "/orders", "method": "POST"}
    probe = {**APP, "route": "/readyz", "method": "GET"}
    not_ready = (
        f"SparkApp on {APP['instance']} has not been ready for more than {c.APP_NOT_READY_FOR}: "
        "the database does not answer it through pgBouncer, and /readyz answers 503."
    )
    errors_tail = (
        f"of its requests with a 5xx over {c.APP_SERVER_ERRORS_WINDOW} "
        f"(threshold {c.APP_SERVER_ERROR_RATIO:.0%}, at least "
        f"{rules.num(c.APP_SERVER_ERRORS_MIN_PER_SECOND)}/s; probes and scrapes not counted)."
    )
    return [
        # SparkAppNotReady: the readiness gauge drops to 0 at 10m and stays there.
        Firing(
            "SparkAppNotReady",
            "database unreachable",
            (series(ready, APP, "1x9 0x50"),),
            onset=10,
            labels={"severity": crit, **APP},
            description=not_ready,
        ),
        Quiet("SparkAppNotReady", "ready", (series(ready, APP, "1x60"),)),
        # One scrape not ready, then ready again: pending at 10m, never firing at 11m.
        Quiet(
            "SparkAppNotReady", "one scrape not ready", (series(ready, APP, "1x9 0 1x50"),), at=11
        ),
        # A dead process has no gauge: SparkAppDown pages for it, this alert stays quiet.
        Quiet(
            "SparkAppNotReady",
            "process down: SparkAppDown's case",
            (series(m.SCRAPE_UP, APP, "1x9 0x50"),),
            at=20,
        ),
        Quiet("SparkAppNotReady", "no data", (UNRELATED,)),
        # SparkAppServerErrors: 4 orders/s succeed; from 10m 1/s more answers 503 (20%).
        Firing(
            "SparkAppServerErrors",
            "one in five orders answers 503",
            (
                series(count, {**orders, "status": "201"}, "0+240x60"),
                series(count, {**orders, "status": "503"}, "0x9 60+60x50"),
            ),
            onset=10,
            labels={"severity": crit, **APP},
            description=f"SparkApp on {APP['instance']} answered 20% {errors_tail}",
        ),
        Quiet(
            "SparkAppServerErrors",
            "one in fifty is below",
            (
                series(count, {**orders, "status": "201"}, "0+2940x60"),
                series(count, {**orders, "status": "500"}, "0+60x60"),
            ),
        ),
        # One 500 in a quiet minute is 14% of the traffic but under the rate floor.
        Quiet(
            "SparkAppServerErrors",
            "a lone 500 in a quiet minute",
            (
                series(count, {**orders, "status": "201"}, "0+6x60"),
                series(count, {**orders, "status": "500"}, "0x9 1x50"),
            ),
            at=11,
        ),
        # /readyz answering 503 is SparkAppNotReady's, not a user's request failing.
        Quiet(
            "SparkAppServerErrors",
            "probes answering 503 are not counted",
            (
                series(count, {**orders, "status": "201"}, "0+240x60"),
                series(count, {**probe, "status": "503"}, "0+240x60"),
            ),
        ),
        Quiet(
            "SparkAppServerErrors",
            "no traffic (0/0)",
            (series(count, {**orders, "status": "201"}, "0x60"),),
        ),
        Quiet("SparkAppServerErrors", "no data", (UNRELATED,)),
    ]


def scenarios() -> list[Firing | Quiet]:
    warn, crit = c.SEVERITY_WARNING, c.SEVERITY_CRITICAL
    blocks = m.RISK_BLOCKS
    bucket = m.HTTP_REQUEST_DURATION + "_bucket"
    route = {**APP, "route": "/orders", "method": "POST", "status": "201"}
    idem = m.IDEMPOTENCY_OUTCOMES
    pool = {**PGB, "database": "spark", "user": "spark_app"}
    return [
        # RiskBlockRateHigh: 1 block/s on one rule is above the threshold; 1/min is not.
        # rate() divides by the whole 5m window, so at 1m it reads 60/300 = 0.2 (not above).
        Firing(
            "RiskBlockRateHigh",
            "one rule blocks 1/s",
            (
                series(blocks, {**APP, "rule": "max_notional"}, "0+60x60"),
                series(blocks, {**APP, "rule": "price_band"}, "0+1x60"),
            ),
            onset=2,
            labels={"severity": warn, "rule": "max_notional"},
            description="Risk rule max_notional blocks 1 orders/s (threshold 0.2/s).",
        ),
        Quiet(
            "RiskBlockRateHigh",
            "0.1/s is below",
            (series(blocks, {**APP, "rule": "max_position"}, "0+6x60"),),
        ),
        Quiet("RiskBlockRateHigh", "no data", (UNRELATED,)),
        # PgBouncerPoolSaturation: the oldest waiting client goes from 0 s to 3 s at 10m.
        Firing(
            "PgBouncerPoolSaturation",
            "clients wait 3s",
            (series(m.PGBOUNCER_CLIENT_MAXWAIT, pool, "0x9 3x50"),),
            onset=10,
            labels={"severity": warn, "database": "spark", "instance": PGB["instance"]},
            description="The oldest client waiting in pool spark on db-1:9127 has waited 3s (threshold 1s).",  # noqa: E501
        ),
        Quiet(
            "PgBouncerPoolSaturation",
            "0.5s is below",
            (series(m.PGBOUNCER_CLIENT_MAXWAIT, pool, "0.5x60"),),
        ),
        Quiet("PgBouncerPoolSaturation", "no data", (UNRELATED,)),
        # HTTPLatencyHigh: every request between 0.25 s and 1 s puts p95 at 0.9625 s.
        Firing(
            "HTTPLatencyHigh",
            "p95 near 1s",
            (
                series(bucket, {**route, "le": "0.25"}, "0x60"),
                series(bucket, {**route, "le": "1"}, "0+60x60"),
                series(bucket, {**route, "le": "+Inf"}, "0+60x60"),
            ),
            onset=1,
            labels={"severity": warn, "route": "/orders"},
            description="p95 latency of /orders is 962.5ms (threshold 0.5s).",
        ),
        Quiet(
            "HTTPLatencyHigh",
            "all under 0.25s",
            (
                series(bucket, {**route, "le": "0.25"}, "0+60x60"),
                series(bucket, {**route, "le": "+Inf"}, "0+60x60"),
            ),
        ),
        Quiet("HTTPLatencyHigh", "no data", (UNRELATED,)),
        # CSPViolationsHigh: 0.5 reports/s on script-src; at 1m rate() reads 30/300 = 0.1.
        Firing(
            "CSPViolationsHigh",
            "script-src 0.5/s",
            (series(m.CSP_REPORTS, {**APP, "directive": "script-src"}, "0+30x60"),),
            onset=2,
            labels={"severity": warn, "directive": "script-src"},
            description="CSP directive script-src is violated 500m times/s (threshold 0.1/s).",
        ),
        Quiet(
            "CSPViolationsHigh",
            "0.05/s is below",
            (series(m.CSP_REPORTS, {**APP, "directive": "img-src"}, "0+3x60"),),
        ),
        Quiet("CSPViolationsHigh", "no data", (UNRELATED,)),
        # IdempotencyConflictRateHigh: 12 conflicts in 72 requests (16.67 %).
        Firing(
            "IdempotencyConflictRateHigh",
            "one in six conflicts",
            (
                series(idem, {**APP, "outcome": "created"}, "0+60x60"),
                series(idem, {**APP, "outcome": "in_flight"}, "0+6x60"),
                series(idem, {**APP, "outcome": "payload_mismatch"}, "0+6x60"),
            ),
            # From 2m: the rate floor needs two samples inside its window (the share does not).
            onset=2,
            labels={"severity": warn},
            description=(
                "16.67% of POST /orders end in an idempotency conflict (threshold 5%, at "
                "least 0.05/s)."
            ),
        ),
        Quiet(
            "IdempotencyConflictRateHigh",
            "a quiet system: one conflict in three requests, 1 a minute",
            (
                series(idem, {**APP, "outcome": "created"}, "0+2x60"),
                series(idem, {**APP, "outcome": "payload_mismatch"}, "0+1x60"),
            ),
        ),
        Quiet(
            "IdempotencyConflictRateHigh",
            "1 in 61 is below",
            (
                series(idem, {**APP, "outcome": "created"}, "0+60x60"),
                series(idem, {**APP, "outcome": "in_flight"}, "0+1x60"),
            ),
        ),
        Quiet(
            "IdempotencyConflictRateHigh",
            "no traffic (0/0)",
            (series(idem, {**APP, "outcome": "created"}, "0x60"),),
        ),
        # PostgresWalArchiveFailing: archiving stops at 10m and failures climb from 11m; the
        # alert holds once the 10m window has no archived segment (20m).
        Firing(
            "PostgresWalArchiveFailing",
            "archiver stuck",
            (
                series(m.PG_ARCHIVER_ARCHIVED, PG, "0+1x10 10x50"),
                series(m.PG_ARCHIVER_FAILED, PG, "0x10 1+1x50"),
            ),
            onset=20,
            labels={"severity": crit, **PG},
            description=(
                "db-1:9187: 10 archive attempts failed in 10m with none archived; "
                "point-in-time recovery stops at the last archived segment and pg_wal is growing."
            ),
        ),
        Quiet(
            "PostgresWalArchiveFailing",
            "one failure then success",
            (
                series(m.PG_ARCHIVER_ARCHIVED, PG, "0+1x60"),
                series(m.PG_ARCHIVER_FAILED, PG, "0x5 1x55"),
            ),
        ),
        Quiet("PostgresWalArchiveFailing", "no data", (UNRELATED,)),
        # PostgresWalArchiveStale: the last archive's age jumps past 900 s at 10m.
        Firing(
            "PostgresWalArchiveStale",
            "no archive for 1000s and counting",
            (series(m.PG_ARCHIVER_LAST_ARCHIVE_AGE, PG, "60x9 1000+60x50"),),
            onset=10,
            labels={"severity": warn, **PG},
            description="db-1:9187: last WAL archived 21m 40s ago (threshold 900s).",
        ),
        Quiet(
            "PostgresWalArchiveStale",
            "archived a minute ago",
            (series(m.PG_ARCHIVER_LAST_ARCHIVE_AGE, PG, "60x60"),),
        ),
        Quiet("PostgresWalArchiveStale", "no data", (UNRELATED,)),
        # PgBackRestBackupTooOld: promtool's clock starts at 0, so the timestamp is negative:
        # 90000 s old at 0m, 93600 s (the threshold) at 60m, above it from 61m.
        Firing(
            "PgBackRestBackupTooOld",
            "last backup ages past 26h",
            (series(m.PGBACKREST_LAST_BACKUP_TIMESTAMP, NODE, "-90000x120"),),
            onset=61,
            labels={"severity": warn, **NODE},
            description="db-1:9100: last backup completed 1d 2h 16m 0s ago (threshold 93600s).",
        ),
        Quiet(
            "PgBackRestBackupTooOld",
            "fresh backup",
            (series(m.PGBACKREST_LAST_BACKUP_TIMESTAMP, NODE, "-1000+60x60"),),
        ),
        Quiet(
            "PgBackRestBackupTooOld",
            "a former primary's old backup while the new primary's is fresh",
            (
                series(m.PGBACKREST_LAST_BACKUP_TIMESTAMP, NODE, "-200000x120"),
                series(m.PGBACKREST_LAST_BACKUP_TIMESTAMP, NODE2, "-1000+60x120"),
            ),
        ),
        Firing(
            "PgBackRestBackupTooOld",
            "no timestamp published",
            (UNRELATED,),
            onset=0,
            labels={"severity": warn, "job": c.JOB_NODE},
            description="no backup timestamp is published (threshold 93600s).",
        ),
        # PgBackRestBackupFellBackToPrimary: the primary's backup at 10m came from the primary
        # although a replica streamed (its server did not answer).
        Firing(
            "PgBackRestBackupFellBackToPrimary",
            "the replica's pgBackRest server did not answer",
            (
                series(m.PGBACKREST_LAST_BACKUP_TIMESTAMP, BACKREST, "-5000x9 -400x50"),
                series(m.PGBACKREST_BACKUP_FELL_BACK, BACKREST, "0x9 1x50"),
            ),
            onset=10,
            labels={"severity": warn, **BACKREST},
            description=(
                "db-1:9100: the last backup of stanza spark was copied from the primary "
                "although a replica streamed (no replica's pgBackRest server answered); backups "
                "load the primary until one comes from a replica again."
            ),
        ),
        Quiet(
            "PgBackRestBackupFellBackToPrimary",
            "every backup from a replica, or a single node",
            (
                series(m.PGBACKREST_LAST_BACKUP_TIMESTAMP, BACKREST, "-5000x9 -400x50"),
                series(m.PGBACKREST_BACKUP_FELL_BACK, BACKREST, "0x60"),
            ),
        ),
        Quiet(
            "PgBackRestBackupFellBackToPrimary",
            "a former primary's fallback while the new primary's backup came from a replica",
            (
                series(m.PGBACKREST_LAST_BACKUP_TIMESTAMP, BACKREST, "-90000x60"),
                series(m.PGBACKREST_BACKUP_FELL_BACK, BACKREST, "1x60"),
                series(m.PGBACKREST_LAST_BACKUP_TIMESTAMP, BACKREST2, "-1000x60"),
                series(m.PGBACKREST_BACKUP_FELL_BACK, BACKREST2, "0x60"),
            ),
        ),
        # PgBackRestWalOverBudget: a 100 MiB budget; the WAL grows by 10 MiB a minute from
        # 0m (no backup succeeds), passes 200 MiB (twice the budget) at 21m.
        Firing(
            "PgBackRestWalOverBudget",
            "the asked-for backups fail while the WAL grows",
            (
                series(m.PGBACKREST_LAST_BACKUP_TIMESTAMP, BACKREST, "-5000x90"),
                series(m.PGBACKREST_WAL_BUDGET, BACKREST, f"{100 * MIB}x90"),
                series(m.PGBACKREST_WAL_SINCE_BACKUP, BACKREST, f"0+{10 * MIB}x90"),
            ),
            onset=21,
            labels={"severity": warn, **BACKREST},
            description=(
                "db-1:9100: 510MiB of WAL written since the newest backup a restore of "
                "stanza spark could start from, over 2x the WAL budget for 30m: the incremental "
                "backups the budget asks for fail or do not keep up, and a restore takes longer "
                "than planned."
            ),
        ),
        Quiet(
            "PgBackRestWalOverBudget",
            "over the budget between backups, never twice it",
            (
                series(m.PGBACKREST_LAST_BACKUP_TIMESTAMP, BACKREST, "-5000x90"),
                series(m.PGBACKREST_WAL_BUDGET, BACKREST, f"{100 * MIB}x90"),
                series(m.PGBACKREST_WAL_SINCE_BACKUP, BACKREST, SAWTOOTH_150_MIB),
            ),
            at=60,
        ),
        Quiet(
            "PgBackRestWalOverBudget",
            "a former primary's last figures while the new primary backs up",
            (
                series(m.PGBACKREST_LAST_BACKUP_TIMESTAMP, BACKREST, "-90000x90"),
                series(m.PGBACKREST_WAL_BUDGET, BACKREST, f"{100 * MIB}x90"),
                series(m.PGBACKREST_WAL_SINCE_BACKUP, BACKREST, f"{900 * MIB}x90"),
                series(m.PGBACKREST_LAST_BACKUP_TIMESTAMP, BACKREST2, "-1000x90"),
                series(m.PGBACKREST_WAL_BUDGET, BACKREST2, f"{100 * MIB}x90"),
                series(m.PGBACKREST_WAL_SINCE_BACKUP, BACKREST2, f"{50 * MIB}x90"),
            ),
            at=60,
        ),
        # OutboxLagHigh: the oldest pending event is 200 s old at 10m and keeps ageing; two
        # dispatchers report the same table, so the alert is one, not one per dispatcher.
        Firing(
            "OutboxLagHigh",
            "dispatchers stalled",
            (
                series(m.OUTBOX_OLDEST_PENDING_AGE, OUTBOX, "0x9 200+60x50"),
                series(
                    m.OUTBOX_OLDEST_PENDING_AGE,
                    {**OUTBOX, "instance": "app-2:9310"},
                    "0x9 200+60x50",
                ),
            ),
            onset=10,
            labels={"severity": warn, "job": c.JOB_OUTBOX},
            description="The oldest pending outbox event is 8m 20s old (threshold 120s).",
        ),
        Quiet(
            "OutboxLagHigh",
            "30s is normal",
            (series(m.OUTBOX_OLDEST_PENDING_AGE, OUTBOX, "30x60"),),
        ),
        Quiet("OutboxLagHigh", "no data", (UNRELATED,)),
        # OutboxDeadLetters: three events parked at 10m.
        Firing(
            "OutboxDeadLetters",
            "three parked",
            (series(m.OUTBOX_DEAD_LETTERS, OUTBOX, "0x9 3x50"),),
            onset=10,
            labels={"severity": warn, "job": c.JOB_OUTBOX},
            description="3 outbox events are dead-lettered (job spark-outbox).",
        ),
        Quiet("OutboxDeadLetters", "none parked", (series(m.OUTBOX_DEAD_LETTERS, OUTBOX, "0x60"),)),
        Quiet("OutboxDeadLetters", "no data", (UNRELATED,)),
        *_down_cases("PostgresDown", "Postgres", m.PG_UP, PG),
        *_down_cases("PgBouncerDown", "PgBouncer", m.PGBOUNCER_UP, PGB),
        *_down_cases("SparkAppDown", "SparkApp", None, APP),
        *_app_cases(),
        *_down_cases("OutboxDispatcherDown", "OutboxDispatcher", None, OUTBOX),
        # RestoreDrillFailed: a failed drill, a drill too old, and no drill at all.
        Firing(
            "RestoreDrillFailed",
            "last drill failed",
            (
                series(m.RESTORE_DRILL_LAST_SUCCESS, NODE, "1x9 0x50"),
                series(m.RESTORE_DRILL_LAST_RUN_TIMESTAMP, NODE, "0x60"),
            ),
            onset=10,
            labels={"severity": warn, **NODE},
            description="db-1:9100: the last restore drill failed or is older than 691200s.",
        ),
        Firing(
            "RestoreDrillFailed",
            "last drill too old",
            (
                series(m.RESTORE_DRILL_LAST_SUCCESS, NODE, "1x60"),
                series(m.RESTORE_DRILL_LAST_RUN_TIMESTAMP, NODE, "-700000x60"),
            ),
            onset=0,
            labels={"severity": warn, **NODE},
            description="db-1:9100: the last restore drill failed or is older than 691200s.",
        ),
        Firing(
            "RestoreDrillFailed",
            "no drill has run",
            (UNRELATED,),
            onset=0,
            labels={"severity": warn, "job": c.JOB_NODE},
            description="no restore drill has published a result.",
        ),
        Quiet(
            "RestoreDrillFailed",
            "an older failed drill on a node the drill left, a newer success on another",
            (
                series(m.RESTORE_DRILL_LAST_SUCCESS, NODE, "0x60"),
                series(m.RESTORE_DRILL_LAST_RUN_TIMESTAMP, NODE, "-5000x60"),
                series(m.RESTORE_DRILL_LAST_SUCCESS, NODE2, "1x60"),
                series(m.RESTORE_DRILL_LAST_RUN_TIMESTAMP, NODE2, "-100x60"),
            ),
        ),
        Firing(
            "RestoreDrillFailed",
            "the newest drill failed, an older one elsewhere succeeded",
            (
                series(m.RESTORE_DRILL_LAST_SUCCESS, NODE, "1x60"),
                series(m.RESTORE_DRILL_LAST_RUN_TIMESTAMP, NODE, "-5000x60"),
                series(m.RESTORE_DRILL_LAST_SUCCESS, NODE2, "0x60"),
                series(m.RESTORE_DRILL_LAST_RUN_TIMESTAMP, NODE2, "-100x60"),
            ),
            onset=0,
            labels={"severity": warn, **NODE2},
            description="db-2:9100: the last restore drill failed or is older than 691200s.",
        ),
        Quiet(
            "RestoreDrillFailed",
            "recent successful drill",
            (
                series(m.RESTORE_DRILL_LAST_SUCCESS, NODE, "1x60"),
                series(m.RESTORE_DRILL_LAST_RUN_TIMESTAMP, NODE, "0x60"),
            ),
        ),
        *_ha_cases(),
    ]


def _ha_cases() -> list[Firing | Quiet]:
    """The Patroni cluster's alerts; each quiet on a single host, where no job exists."""
    crit, warn = c.SEVERITY_CRITICAL, c.SEVERITY_WARNING
    primary, up, replica = m.PATRONI_PRIMARY, m.SCRAPE_UP, m.PATRONI_REPLICA
    no_leader = (
        "The cluster has had 0 primaries (or nodes answering) for more than "
        f"{c.HA_NO_LEADER_FOR}: orders cannot be written."
    )
    both_up = (series(up, PAT1, "1x60"), series(up, PAT2, "1x60"))
    cases: list[Firing | Quiet] = [
        Firing(
            "PatroniNoLeader",
            "primary lost, no replica promoted",
            (*both_up, series(primary, PAT1, "1x9 0x50"), series(primary, PAT2, "0x60")),
            onset=10,
            labels={"severity": crit},
            description=no_leader,
        ),
        Firing(
            "PatroniNoLeader",
            "no node answers",
            (series(up, PAT1, "1x9 0x50"), series(up, PAT2, "1x9 0x50")),
            onset=10,
            labels={"severity": crit},
            description=no_leader,
        ),
        # A failover inside the lease: one evaluation without a primary, then the replica.
        Quiet(
            "PatroniNoLeader",
            "failover within a minute",
            (*both_up, series(primary, PAT1, "1x9 0x50"), series(primary, PAT2, "0x10 1x49")),
            at=11,
        ),
        Quiet("PatroniNoLeader", "single host: no cluster", (UNRELATED,)),
    ]
    lag_description = (
        "Replica db-2:8008 is 20.98MiB behind the primary (threshold "
        f"{c.HA_REPLICATION_LAG_BYTES} bytes); it is not promoted while it lags, and reads "
        "from it are stale."
    )
    written = series(m.PATRONI_XLOG_LOCATION, PAT1, "0+1000000x60")
    roles = (series(replica, PAT1, "0x60"), series(replica, PAT2, "1x60"))
    cases += [
        # The primary writes 1 MB a minute, the replica replays nothing: 16 MiB at 17 min.
        Firing(
            "PatroniReplicationLagHigh",
            "replica stuck",
            (
                written,
                *roles,
                series(m.PATRONI_XLOG_REPLAYED, PAT1, "0x60"),
                series(m.PATRONI_XLOG_REPLAYED, PAT2, "0x60"),
            ),
            onset=17,
            labels={"severity": warn, **PAT2},
            description=lag_description,
        ),
        Quiet(
            "PatroniReplicationLagHigh",
            "replica keeps up",
            (written, *roles, series(m.PATRONI_XLOG_REPLAYED, PAT2, "0+1000000x60")),
        ),
    ]
    timeline = m.PATRONI_TIMELINE
    cases += [
        Firing(
            "PatroniFailoverHappened",
            "the primary died, the replica took over",
            (series(timeline, PAT1, "1x30"), series(timeline, PAT2, "1x30 2x29")),
            onset=31,
            labels={"severity": warn},
            description=(
                f"The cluster is on timeline 2, higher than {c.HA_FAILOVER_WINDOW} ago: a new "
                "node is primary. If nobody ran a switchover, find out why the old primary was "
                "lost and whether it rejoined (patronictl list)."
            ),
        ),
        Quiet(
            "PatroniFailoverHappened",
            "a replica restarts",
            (series(timeline, PAT1, "1x60"), series(timeline, PAT2, "1x20 0x3 1x36")),
            at=25,
        ),
        Quiet("PatroniFailoverHappened", "no change", (series(timeline, PAT1, "1x60"),)),
    ]
    received = m.PATRONI_XLOG_RECEIVED
    cases += [
        # The replica's received position stops moving at 19 min while the primary writes.
        Firing(
            "PatroniReplicaNotStreaming",
            "replication broken",
            (
                series(m.PATRONI_XLOG_LOCATION, PAT1, "0+1000x60"),
                series(replica, PAT2, "1x60"),
                series(received, PAT2, "0+1000x19 19000x40"),
            ),
            onset=24,
            labels={"severity": crit, **PAT2},
            description=(
                f"Replica db-2:8008 received no WAL in {c.HA_NOT_STREAMING_WINDOW} while the "
                "primary wrote some: with synchronous mode the primary has no standby to "
                "confirm commits, and a failover now loses what this replica lacks."
            ),
        ),
        Quiet(
            "PatroniReplicaNotStreaming",
            "an idle primary writes nothing",
            (
                series(m.PATRONI_XLOG_LOCATION, PAT1, "5000x60"),
                series(replica, PAT2, "1x60"),
                series(received, PAT2, "5000x60"),
            ),
        ),
    ]
    etcd_tail = (
        f" has been down or without a leader for more than {c.ETCD_MEMBER_DOWN_FOR}; one more "
        "member lost and Patroni cannot hold its leader key (writes stop)."
    )
    cases += [
        Firing(
            "EtcdMemberDown",
            "member unreachable",
            (series(up, ETCD1, "1x9 0x50"),),
            onset=10,
            labels={"severity": warn, **ETCD1},
            description=f"etcd member on {ETCD1['instance']}{etcd_tail}",
        ),
        Firing(
            "EtcdMemberDown",
            "member without a leader (no quorum)",
            (series(up, ETCD1, "1x60"), series(m.ETCD_HAS_LEADER, ETCD1, "1x9 0x50")),
            onset=10,
            labels={"severity": warn, **ETCD1},
            description=f"etcd member on {ETCD1['instance']}{etcd_tail}",
        ),
        Quiet(
            "EtcdMemberDown",
            "healthy member",
            (series(up, ETCD1, "1x60"), series(m.ETCD_HAS_LEADER, ETCD1, "1x60")),
        ),
        Quiet("EtcdMemberDown", "single host: no cluster", (UNRELATED,)),
    ]
    return cases


def _test(case: Firing | Quiet) -> dict:
    alerts = rules.by_name()
    alert = alerts[case.alert]
    inputs = [{"series": s, "values": v} for s, v in case.inputs]
    checks: list[dict] = []
    if isinstance(case, Firing):
        fires_at = case.onset + minutes(alert.for_)
        if fires_at >= 1:
            checks.append(
                {"eval_time": f"{fires_at - 1}m", "alertname": alert.name, "exp_alerts": []}
            )
        expected = {
            "exp_labels": case.labels,
            "exp_annotations": {
                "summary": alert.summary,
                "description": case.description,
                "runbook_url": alert.runbook_url,
            },
        }
        checks.append(
            {"eval_time": f"{fires_at}m", "alertname": alert.name, "exp_alerts": [expected]}
        )
    else:
        checks.append({"eval_time": f"{case.at}m", "alertname": alert.name, "exp_alerts": []})
    return {
        "name": f"{case.alert}: {case.name}",
        "interval": "1m",
        "input_series": inputs,
        "alert_rule_test": checks,
    }


def test_file() -> dict:
    return {
        "rule_files": [RULES_RELATIVE],
        "evaluation_interval": "1m",
        "tests": [_test(case) for case in scenarios()],
    }


HEADER = (
    "# Generated by `sparkops alerts build` from alerts/promtool_cases.py; do not edit.\n"
    "# Run: promtool test rules alerts/tests/spark-ops.rules.test.yml\n"
)


def render() -> str:
    return HEADER + yaml.safe_dump(test_file(), sort_keys=False, width=1000)
