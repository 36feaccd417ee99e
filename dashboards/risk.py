"""The risk / idempotency / PITR dashboard: twelve panels for the platform's safety features
(two of them for what a restore would face: the WAL to replay and the newest backup's age),
and two for the Patroni cluster (empty on a single database host).

Expressions shared with an alert are imported from `alerts.rules`, thresholds from
`alerts.config`, metric names from `sparkops.metric_names`; so the panel that shows a quantity
and the alert that fires on it cannot drift apart.
"""

from __future__ import annotations

from alerts import config as c
from alerts import rules
from alerts.rules import rate, sel
from dashboards.panels import Panel, Query
from dashboards.panels import dashboard as build_dashboard
from sparkops import metric_names as m

UID = "spark-risk-idempotency-pitr"
TITLE = "Spark: risk, idempotency and PITR"

WARN, CRIT = "orange", "red"
W = c.RATE_WINDOW


def _outcome_rate(outcome: str) -> str:
    matcher = 'outcome="' + outcome + '"'
    return f"sum({rate(m.IDEMPOTENCY_OUTCOMES, c.APP_SELECTOR, matcher)})"


PANELS: tuple[Panel, ...] = (
    Panel(
        title="Risk blocks rate",
        description="Orders blocked per second by each pre-trade risk rule.",
        unit="ops",
        queries=(Query(rules.RISK_BLOCK_RATE, "{{rule}}"),),
        thresholds=((c.RISK_BLOCK_RATE_PER_SECOND, WARN),),
    ),
    Panel(
        title="Idempotency conflicts",
        description=(
            "POST /orders answered 409 (key in flight), 422 (key reused with another "
            "payload) or replayed from a completed key, per second; the conflict share "
            "(right axis) is what IdempotencyConflictRateHigh watches."
        ),
        unit="reqps",
        queries=(
            Query(_outcome_rate("in_flight"), "409 in flight"),
            Query(_outcome_rate("payload_mismatch"), "422 payload mismatch"),
            Query(_outcome_rate("replayed"), "replayed"),
            Query(rules.IDEMPOTENCY_CONFLICT_SHARE, "conflict share", right_axis=True),
        ),
        right_unit="percentunit",
    ),
    Panel(
        title="pgBouncer pool utilization",
        description=(
            "Server connections in use and clients waiting per pool (the line is the pool "
            "size); the oldest waiting client's wait on the right axis."
        ),
        unit="short",
        queries=(
            Query(
                f"sum by (database) ({sel(m.PGBOUNCER_SERVER_ACTIVE, c.PGBOUNCER_POOL_SELECTOR)})",
                "{{database}} server active",
            ),
            Query(
                f"sum by (database) ({sel(m.PGBOUNCER_CLIENT_WAITING, c.PGBOUNCER_POOL_SELECTOR)})",
                "{{database}} clients waiting",
            ),
            Query(rules.PGBOUNCER_MAX_WAIT, "{{database}} max wait", right_axis=True),
        ),
        thresholds=((c.PGBOUNCER_POOL_SIZE, CRIT),),
        right_unit="s",
    ),
    Panel(
        title="HTTP request duration (P95)",
        description="95th percentile of request duration per route template.",
        unit="s",
        queries=(Query(rules.HTTP_P95_BY_ROUTE, "{{route}}"),),
        thresholds=((c.HTTP_LATENCY_P95_SECONDS, WARN),),
    ),
    Panel(
        title="CSP violations",
        description="Content-Security-Policy violation reports per second, by directive.",
        unit="ops",
        queries=(Query(rules.CSP_RATE, "{{directive}}"),),
        thresholds=((c.CSP_REPORTS_PER_SECOND, WARN),),
    ),
    Panel(
        title="WAL archiving status",
        description=(
            "Seconds since the last archived WAL segment (left, with the staleness "
            f"threshold); segments archived and failed per {W} (right)."
        ),
        unit="s",
        queries=(
            Query(rules.WAL_LAST_ARCHIVE_AGE, "{{instance}} seconds since last archive"),
            Query(f"increase({rules.WAL_ARCHIVED}[{W}])", "{{instance}} archived", True),
            Query(f"increase({rules.WAL_FAILED}[{W}])", "{{instance}} failed", True),
        ),
        thresholds=((c.WAL_ARCHIVE_STALE_SECONDS, CRIT),),
    ),
    Panel(
        title="Restore: WAL to replay",
        description=(
            "WAL written since the newest backup a restore could start from, which a restore "
            "now would replay, beside the WAL budget past which an incremental backup is "
            "asked for (checked by pgbackrest-wal-budget.timer; alert PgBackRestWalOverBudget "
            f"at {c.WAL_BUDGET_OVER_FACTOR}x the budget for {c.WAL_BUDGET_OVER_FOR}). A former "
            "primary keeps its last figures."
        ),
        unit="bytes",
        queries=(
            Query(rules.WAL_SINCE_BACKUP, "{{instance}} WAL since the newest backup"),
            Query(rules.WAL_BUDGET, "{{instance}} budget"),
        ),
    ),
    Panel(
        title="Backups: age of the newest",
        description=(
            "Seconds since each database host's last successful pgBackRest backup, with the "
            "age past which PgBackRestBackupTooOld fires (on a cluster only the primary backs "
            "up: the lowest line counts)."
        ),
        unit="s",
        queries=(Query(f"time() - {rules.BACKUP_TIMESTAMP}", "{{instance}}"),),
        thresholds=((c.BACKUP_MAX_AGE_SECONDS, CRIT),),
    ),
    Panel(
        title="Database size",
        description="Size of the platform's database on disk.",
        unit="bytes",
        queries=(
            Query(
                f"sum by (instance, datname) "
                f"({sel(m.PG_DATABASE_SIZE, c.POSTGRES_SELECTOR, c.DATABASE_SELECTOR)})",
                "{{datname}} on {{instance}}",
            ),
        ),
    ),
    Panel(
        title="Outbox event lag",
        description=(
            "Age of the oldest pending outbox event (left, with the lag threshold); pending "
            "and dead-lettered events (right)."
        ),
        unit="s",
        queries=(
            Query(rules.OUTBOX_OLDEST_AGE, "oldest pending age"),
            Query(
                f"max without (instance) ({sel(m.OUTBOX_PENDING, c.OUTBOX_SELECTOR)})",
                "pending events",
                right_axis=True,
            ),
            Query(rules.OUTBOX_DEAD, "dead letters", right_axis=True),
        ),
        thresholds=((c.OUTBOX_LAG_SECONDS, WARN),),
    ),
    Panel(
        title="Money utils operations",
        description="Decimal money operations per second, by kind.",
        unit="ops",
        queries=(Query(f"sum by (kind) ({rate(m.MONEY_OPERATIONS, c.APP_SELECTOR)})", "{{kind}}"),),
    ),
    Panel(
        title="Position unique violations",
        description=(
            f"Attempts per {W} to open a second open position for one (account, symbol, "
            "strategy), refused by the unique index."
        ),
        unit="short",
        queries=(
            Query(
                f"sum(increase({sel(m.POSITION_UNIQUE_VIOLATIONS, c.APP_SELECTOR)}[{W}]))",
                "violations",
            ),
        ),
    ),
    Panel(
        title="Cluster: primary and replicas",
        description=(
            "Which node holds the leader key (1) and which is the synchronous standby, from "
            "each node's Patroni; the line moving from one node to another is a failover or a "
            "switchover. Empty on a single database host."
        ),
        unit="short",
        queries=(
            Query(sel(m.PATRONI_PRIMARY, c.PATRONI_SELECTOR), "{{instance}} primary"),
            Query(sel(m.PATRONI_SYNC_STANDBY, c.PATRONI_SELECTOR), "{{instance}} sync standby"),
            Query(rules.HA_TIMELINE_NOW, "timeline", right_axis=True),
        ),
    ),
    Panel(
        title="Cluster: replication lag",
        description=(
            "Bytes each replica has replayed less than the primary has written, with the "
            "alert's threshold. Empty on a single database host."
        ),
        unit="bytes",
        queries=(Query(rules.HA_REPLICA_LAG, "{{instance}}"),),
        thresholds=((c.HA_REPLICATION_LAG_BYTES, WARN),),
    ),
)

dashboard = build_dashboard(
    uid=UID,
    title=TITLE,
    description=(
        "Risk blocks, idempotency, pgBouncer, latency, CSP, WAL archiving, the WAL a restore "
        "would replay, backup age, database size, outbox and position invariants; the Patroni "
        "cluster's primary and lag. Generated by `sparkops dashboards build`; edits made in "
        "Grafana are lost."
    ),
    tags=["spark", "generated"],
    panels=PANELS,
)
