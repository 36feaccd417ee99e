"""The Prometheus alert rules, built from `alerts.config` and `sparkops.metric_names`.

Each alert carries `severity`, a fixed `summary`, a templated `description` and a
`runbook_url` derived from its name. `signals` are the expressions behind the alert without
its threshold: on a healthy system the alert expression returns nothing, so the live check
(`signoff.livecheck`) runs the signals to prove the alert watches series that exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from alerts import config as c
from sparkops import metric_names as m


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    signals: tuple[str, ...]

    @property
    def anchor(self) -> str:
        # docs/alerts.md has a "## <Name>" heading per alert; Markdown renderers make the
        # anchor by lower-casing it (the names hold only letters).
        return self.name.lower()

    @property
    def runbook_url(self) -> str:
        return f"{c.RUNBOOK_BASE_URL}#{self.anchor}"

    def to_rule(self) -> dict:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": self.runbook_url,
            },
        }


def num(value: float) -> str:
    """A threshold as PromQL and people write it: 0.2, 1, 900."""
    return f"{value:g}"


def sel(metric: str, selector: str, extra: str = "") -> str:
    inside = ", ".join(part for part in (selector, extra) if part)
    return f"{metric}{{{inside}}}"


def rate(metric: str, selector: str, extra: str = "") -> str:
    return f"rate({sel(metric, selector, extra)}[{c.RATE_WINDOW}])"


def _range_changes(selector: str, window: str) -> str:
    return f"changes({selector}[{window}])"


def _on_instance(what: str) -> str:
    return "{{ with $labels.instance }}" + what + " on {{ . }}{{ else }}" + what + "{{ end }}"


# --- the signals, shared with the dashboard -----------------------------------------------
RISK_BLOCK_RATE = f"sum by (rule) ({rate(m.RISK_BLOCKS, c.APP_SELECTOR)})"
PGBOUNCER_MAX_WAIT = (
    f"max by (instance, database) ({sel(m.PGBOUNCER_CLIENT_MAXWAIT, c.PGBOUNCER_POOL_SELECTOR)})"
)
HTTP_P95_BY_ROUTE = (
    f"histogram_quantile({num(c.HTTP_LATENCY_QUANTILE)}, sum by (route, le) "
    f"({rate(m.HTTP_REQUEST_DURATION + '_bucket', c.APP_SELECTOR)}))"
)
CSP_RATE = f"sum by (directive) ({rate(m.CSP_REPORTS, c.APP_SELECTOR)})"
_CONFLICTS = 'outcome=~"' + "|".join(c.IDEMPOTENCY_CONFLICT_OUTCOMES) + '"'
IDEMPOTENCY_CONFLICT_RATE = f"sum({rate(m.IDEMPOTENCY_OUTCOMES, c.APP_SELECTOR, _CONFLICTS)})"
IDEMPOTENCY_CONFLICT_SHARE = (
    f"{IDEMPOTENCY_CONFLICT_RATE} / sum({rate(m.IDEMPOTENCY_OUTCOMES, c.APP_SELECTOR)})"
)
WAL_FAILED = sel(m.PG_ARCHIVER_FAILED, c.POSTGRES_SELECTOR)
WAL_ARCHIVED = sel(m.PG_ARCHIVER_ARCHIVED, c.POSTGRES_SELECTOR)
WAL_LAST_ARCHIVE_AGE = sel(m.PG_ARCHIVER_LAST_ARCHIVE_AGE, c.POSTGRES_SELECTOR)
BACKUP_TIMESTAMP = sel(m.PGBACKREST_LAST_BACKUP_TIMESTAMP, c.BACKUP_SELECTOR)
BACKUP_FELL_BACK = sel(m.PGBACKREST_BACKUP_FELL_BACK, c.BACKUP_SELECTOR)
WAL_SINCE_BACKUP = sel(m.PGBACKREST_WAL_SINCE_BACKUP, c.BACKUP_SELECTOR)
WAL_BUDGET = sel(m.PGBACKREST_WAL_BUDGET, c.BACKUP_SELECTOR)
# The node whose last backup is the newest: a former primary keeps its old metrics.
NEWEST_BACKUP_NODE = f"({BACKUP_TIMESTAMP} == on () group_left () max({BACKUP_TIMESTAMP}))"
# Every dispatcher reports the same table-wide gauges: take the max across them.
OUTBOX_OLDEST_AGE = (
    f"max without (instance) ({sel(m.OUTBOX_OLDEST_PENDING_AGE, c.OUTBOX_SELECTOR)})"
)
OUTBOX_DEAD = f"max without (instance) ({sel(m.OUTBOX_DEAD_LETTERS, c.OUTBOX_SELECTOR)})"
APP_READY = sel(m.APP_READY, c.APP_SELECTOR)
_USER_ROUTES = 'route!~"' + "|".join(c.APP_PROBE_ROUTES) + '"'


def _app_requests(extra: str = "") -> str:
    """Requests per second to the users' routes, per app instance."""
    matchers = ", ".join(part for part in (_USER_ROUTES, extra) if part)
    counts = sel(m.HTTP_REQUEST_DURATION + "_count", c.APP_SELECTOR, matchers)
    return f"sum by (job, instance) (rate({counts}[{c.APP_SERVER_ERRORS_WINDOW}]))"


APP_REQUEST_RATE = _app_requests()
APP_SERVER_ERROR_RATE = _app_requests('status=~"5.."')
# The share is 0, not missing, while an instance has traffic and has never answered a 5xx
# (no 5xx series exists yet): so it shows on the dashboard and the live check sees it.
APP_SERVER_ERROR_SHARE = f"({APP_SERVER_ERROR_RATE} or 0 * {APP_REQUEST_RATE}) / {APP_REQUEST_RATE}"
DRILL_SUCCESS = sel(m.RESTORE_DRILL_LAST_SUCCESS, c.BACKUP_SELECTOR)
DRILL_LAST_RUN = sel(m.RESTORE_DRILL_LAST_RUN_TIMESTAMP, c.BACKUP_SELECTOR)

# The cluster (docs/ha.md). Every signal is empty on a single host: no job, no alert.
HA_PRIMARIES = f"sum({sel(m.PATRONI_PRIMARY, c.PATRONI_SELECTOR)})"
HA_NODES_UP = f"sum({sel(m.SCRAPE_UP, c.PATRONI_SELECTOR)})"
HA_REPLICA_LAG = (
    f"(scalar(max({sel(m.PATRONI_XLOG_LOCATION, c.PATRONI_SELECTOR)}))"
    f" - {sel(m.PATRONI_XLOG_REPLAYED, c.PATRONI_SELECTOR)})"
    f" and on (instance) ({sel(m.PATRONI_REPLICA, c.PATRONI_SELECTOR)} == 1)"
)
_TIMELINE = sel(m.PATRONI_TIMELINE, c.PATRONI_SELECTOR)
# The highest timeline now against the highest one a window ago: a replica restarting (its
# timeline briefly 0) moves neither.
HA_TIMELINE_NOW = f"max({_TIMELINE})"
HA_TIMELINE_MOVED = f"{HA_TIMELINE_NOW} > max({_TIMELINE} offset {c.HA_FAILOVER_WINDOW})"
HA_RECEIVED_CHANGES = _range_changes(
    sel(m.PATRONI_XLOG_RECEIVED, c.PATRONI_SELECTOR), c.HA_NOT_STREAMING_WINDOW
)
_PRIMARY_WAL = sel(m.PATRONI_XLOG_LOCATION, c.PATRONI_SELECTOR)
HA_PRIMARY_WAL_CHANGES = f"max({_range_changes(_PRIMARY_WAL, c.HA_NOT_STREAMING_WINDOW)})"
ETCD_UP = sel(m.SCRAPE_UP, c.ETCD_SELECTOR)
ETCD_HAS_LEADER = sel(m.ETCD_HAS_LEADER, c.ETCD_SELECTOR)


def _down(component: str, selector: str, job: str, up_metric: str | None = None) -> Alert:
    """Down when the exporter says so, when its scrape fails, or when the job has vanished
    from Prometheus altogether (absent): a missing target must not silence its alerts."""
    scrape_up = sel(m.SCRAPE_UP, selector)
    checks = [f"{scrape_up} == 0", f"absent({scrape_up})"]
    signals = [scrape_up]
    if up_metric:
        checks.insert(0, f"{sel(up_metric, selector)} == 0")
        signals.insert(0, sel(up_metric, selector))
    return Alert(
        name=f"{component}Down",
        expr=" or ".join(checks),
        for_=c.DOWN_FOR,
        severity=c.SEVERITY_CRITICAL,
        summary=f"{component} is down or not scraped.",
        description=(
            _on_instance(component)
            + f" has been down or unscrapable for more than {c.DOWN_FOR} (job {job})."
        ),
        signals=tuple(signals),
    )


ALERTS: tuple[Alert, ...] = (
    Alert(
        name="RiskBlockRateHigh",
        expr=f"{RISK_BLOCK_RATE} > {num(c.RISK_BLOCK_RATE_PER_SECOND)}",
        for_=c.RISK_BLOCK_FOR,
        severity=c.SEVERITY_WARNING,
        summary="Orders are being blocked by a risk rule at a sustained rate.",
        description=(
            "Risk rule {{ $labels.rule }} blocks {{ $value | humanize }} orders/s "
            f"(threshold {num(c.RISK_BLOCK_RATE_PER_SECOND)}/s)."
        ),
        signals=(RISK_BLOCK_RATE,),
    ),
    Alert(
        name="PgBouncerPoolSaturation",
        expr=f"{PGBOUNCER_MAX_WAIT} > {num(c.PGBOUNCER_MAX_WAIT_SECONDS)}",
        for_=c.PGBOUNCER_SATURATION_FOR,
        severity=c.SEVERITY_WARNING,
        summary="Clients are queueing for a pgBouncer server connection.",
        description=(
            "The oldest client waiting in pool {{ $labels.database }} on "
            "{{ $labels.instance }} has waited {{ $value | humanize }}s "
            f"(threshold {num(c.PGBOUNCER_MAX_WAIT_SECONDS)}s)."
        ),
        signals=(PGBOUNCER_MAX_WAIT,),
    ),
    Alert(
        name="HTTPLatencyHigh",
        expr=f"{HTTP_P95_BY_ROUTE} > {num(c.HTTP_LATENCY_P95_SECONDS)}",
        for_=c.HTTP_LATENCY_FOR,
        severity=c.SEVERITY_WARNING,
        summary="HTTP p95 latency of a route is above its objective.",
        description=(
            "p95 latency of {{ $labels.route }} is {{ $value | humanize }}s "
            f"(threshold {num(c.HTTP_LATENCY_P95_SECONDS)}s)."
        ),
        signals=(HTTP_P95_BY_ROUTE,),
    ),
    Alert(
        name="CSPViolationsHigh",
        expr=f"{CSP_RATE} > {num(c.CSP_REPORTS_PER_SECOND)}",
        for_=c.CSP_VIOLATIONS_FOR,
        severity=c.SEVERITY_WARNING,
        summary="Browsers report Content-Security-Policy violations at a sustained rate.",
        description=(
            "CSP directive {{ $labels.directive }} is violated {{ $value | humanize }} "
            f"times/s (threshold {num(c.CSP_REPORTS_PER_SECOND)}/s)."
        ),
        signals=(CSP_RATE,),
    ),
    Alert(
        name="IdempotencyConflictRateHigh",
        expr=(
            f"(({IDEMPOTENCY_CONFLICT_SHARE}) > {num(c.IDEMPOTENCY_CONFLICT_RATIO)})"
            f" and ({IDEMPOTENCY_CONFLICT_RATE} > {num(c.IDEMPOTENCY_CONFLICTS_MIN_PER_SECOND)})"
        ),
        for_=c.IDEMPOTENCY_CONFLICT_FOR,
        severity=c.SEVERITY_WARNING,
        summary="Many order requests reuse an idempotency key (409 in flight or 422 mismatch).",
        description=(
            "{{ $value | humanizePercentage }} of POST /orders end in an idempotency "
            f"conflict (threshold {c.IDEMPOTENCY_CONFLICT_RATIO:.0%}, at least "
            f"{num(c.IDEMPOTENCY_CONFLICTS_MIN_PER_SECOND)}/s)."
        ),
        signals=(IDEMPOTENCY_CONFLICT_SHARE,),
    ),
    Alert(
        name="PostgresWalArchiveFailing",
        expr=(
            f"(increase({WAL_FAILED}[{c.WAL_ARCHIVE_FAILING_WINDOW}]) > 0)"
            f" unless on (instance) (increase({WAL_ARCHIVED}[{c.WAL_ARCHIVE_FAILING_WINDOW}]) > 0)"
        ),
        for_=c.WAL_ARCHIVE_FAILING_FOR,
        severity=c.SEVERITY_CRITICAL,
        summary="PostgreSQL's archive_command keeps failing and no WAL is archived.",
        description=(
            "{{ $labels.instance }}: {{ $value | humanize }} archive attempts failed in "
            f"{c.WAL_ARCHIVE_FAILING_WINDOW} with none archived; point-in-time recovery "
            "stops at the last archived segment and pg_wal is growing."
        ),
        signals=(WAL_FAILED, WAL_ARCHIVED),
    ),
    Alert(
        name="PostgresWalArchiveStale",
        expr=f"{WAL_LAST_ARCHIVE_AGE} > {num(c.WAL_ARCHIVE_STALE_SECONDS)}",
        for_=c.WAL_ARCHIVE_STALE_FOR,
        severity=c.SEVERITY_WARNING,
        summary="No WAL segment has been archived for longer than expected.",
        description=(
            "{{ $labels.instance }}: last WAL archived {{ $value | humanizeDuration }} ago "
            f"(threshold {num(c.WAL_ARCHIVE_STALE_SECONDS)}s)."
        ),
        signals=(WAL_LAST_ARCHIVE_AGE,),
    ),
    Alert(
        name="PgBackRestBackupTooOld",
        # A node whose last backup is old is excused while another node's is fresh: on a
        # Patroni cluster only the primary backs up, and a former primary keeps its metric.
        expr=(
            f"(time() - {BACKUP_TIMESTAMP} > {num(c.BACKUP_MAX_AGE_SECONDS)}"
            f" unless on () (time() - max({BACKUP_TIMESTAMP}) <= {num(c.BACKUP_MAX_AGE_SECONDS)}))"
            f" or absent({BACKUP_TIMESTAMP})"
        ),
        for_=c.BACKUP_TOO_OLD_FOR,
        severity=c.SEVERITY_WARNING,
        summary="The last pgBackRest backup is too old, or its timestamp is not published.",
        description=(
            "{{ with $labels.instance }}{{ . }}: last backup completed "
            "{{ $value | humanizeDuration }} ago{{ else }}no backup timestamp is published"
            f"{{{{ end }}}} (threshold {num(c.BACKUP_MAX_AGE_SECONDS)}s)."
        ),
        signals=(BACKUP_TIMESTAMP,),
    ),
    Alert(
        name="PgBackRestBackupFellBackToPrimary",
        expr=f"{BACKUP_FELL_BACK} == 1 and on (instance) {NEWEST_BACKUP_NODE}",
        for_=c.BACKUP_FELL_BACK_FOR,
        severity=c.SEVERITY_WARNING,
        summary="The last backup was copied from the primary: no replica's server answered.",
        description=(
            "{{ $labels.instance }}: the last backup of stanza {{ $labels.stanza }} was copied "
            "from the primary although a replica streamed (no replica's pgBackRest server "
            "answered); backups load the primary until one comes from a replica again."
        ),
        signals=(BACKUP_FELL_BACK,),
    ),
    Alert(
        name="PgBackRestWalOverBudget",
        # Both series come from one textfile (the same labels). Only the node with the newest
        # backup counts: a former primary keeps its last figures.
        expr=(
            f"{WAL_SINCE_BACKUP} > {num(c.WAL_BUDGET_OVER_FACTOR)} * {WAL_BUDGET}"
            f" and on (instance) {NEWEST_BACKUP_NODE}"
        ),
        for_=c.WAL_BUDGET_OVER_FOR,
        severity=c.SEVERITY_WARNING,
        summary="A restore would replay more WAL than twice its budget: backups do not keep up.",
        description=(
            "{{ $labels.instance }}: {{ $value | humanize1024 }}B of WAL written since the newest "
            "backup a restore of stanza {{ $labels.stanza }} could start from, over "
            f"{num(c.WAL_BUDGET_OVER_FACTOR)}x the WAL budget for {c.WAL_BUDGET_OVER_FOR}: the "
            "incremental backups the budget asks for fail or do not keep up, and a restore "
            "takes longer than planned."
        ),
        signals=(WAL_SINCE_BACKUP, WAL_BUDGET),
    ),
    Alert(
        name="OutboxLagHigh",
        expr=f"{OUTBOX_OLDEST_AGE} > {num(c.OUTBOX_LAG_SECONDS)}",
        for_=c.OUTBOX_LAG_FOR,
        severity=c.SEVERITY_WARNING,
        summary="Outbox events wait too long to be published.",
        description=(
            "The oldest pending outbox event is {{ $value | humanizeDuration }} old "
            f"(threshold {num(c.OUTBOX_LAG_SECONDS)}s)."
        ),
        signals=(OUTBOX_OLDEST_AGE,),
    ),
    Alert(
        name="OutboxDeadLetters",
        expr=f"{OUTBOX_DEAD} > {num(c.OUTBOX_DEAD_LETTERS_MAX)}",
        for_=c.OUTBOX_DEAD_LETTERS_FOR,
        severity=c.SEVERITY_WARNING,
        summary="Outbox events were parked as dead letters and need a person.",
        description=(
            "{{ $value | humanize }} outbox events are dead-lettered (job {{ $labels.job }})."
        ),
        signals=(OUTBOX_DEAD,),
    ),
    _down("Postgres", c.POSTGRES_SELECTOR, c.JOB_POSTGRES, m.PG_UP),
    _down("PgBouncer", c.PGBOUNCER_SELECTOR, c.JOB_PGBOUNCER, m.PGBOUNCER_UP),
    _down("SparkApp", c.APP_SELECTOR, c.JOB_APP),
    Alert(
        name="SparkAppNotReady",
        expr=f"{APP_READY} == 0",
        for_=c.APP_NOT_READY_FOR,
        severity=c.SEVERITY_CRITICAL,
        summary="The trading app is up but not ready: it cannot reach the database.",
        description=(
            "SparkApp on {{ $labels.instance }} has not been ready for more than "
            f"{c.APP_NOT_READY_FOR}: the database does not answer it through pgBouncer, and "
            "/readyz answers 503."
        ),
        signals=(APP_READY,),
    ),
    Alert(
        name="SparkAppServerErrors",
        expr=(
            f"({APP_SERVER_ERROR_SHARE} > {num(c.APP_SERVER_ERROR_RATIO)})"
            f" and ({APP_SERVER_ERROR_RATE} > {num(c.APP_SERVER_ERRORS_MIN_PER_SECOND)})"
        ),
        for_=c.APP_SERVER_ERRORS_FOR,
        severity=c.SEVERITY_CRITICAL,
        summary="The trading app answers a share of its requests with server errors (5xx).",
        description=(
            "SparkApp on {{ $labels.instance }} answered {{ $value | humanizePercentage }} "
            f"of its requests with a 5xx over {c.APP_SERVER_ERRORS_WINDOW} "
            f"(threshold {c.APP_SERVER_ERROR_RATIO:.0%}, at least "
            f"{num(c.APP_SERVER_ERRORS_MIN_PER_SECOND)}/s; probes and scrapes not counted)."
        ),
        signals=(APP_SERVER_ERROR_SHARE, APP_REQUEST_RATE),
    ),
    _down("OutboxDispatcher", c.OUTBOX_SELECTOR, c.JOB_OUTBOX),
    Alert(
        name="RestoreDrillFailed",
        # The newest drill's result counts, and the age of the newest drill: on a Patroni
        # cluster the drill moves with the replica (or the primary) and a node it left keeps
        # its last result.
        expr=(
            f"({DRILL_SUCCESS} == 0"
            f" and on (instance) ({DRILL_LAST_RUN} == on () group_left max({DRILL_LAST_RUN})))"
            f" or on (instance) (time() - {DRILL_LAST_RUN} > {num(c.RESTORE_DRILL_MAX_AGE_SECONDS)}"
            f" unless on () (time() - max({DRILL_LAST_RUN})"
            f" <= {num(c.RESTORE_DRILL_MAX_AGE_SECONDS)}))"
            f" or absent({DRILL_LAST_RUN})"
        ),
        for_=c.RESTORE_DRILL_FOR,
        severity=c.SEVERITY_WARNING,
        summary="The last restore drill failed, or none has run recently.",
        description=(
            "{{ with $labels.instance }}{{ . }}: the last restore drill failed or is older "
            f"than {num(c.RESTORE_DRILL_MAX_AGE_SECONDS)}s{{{{ else }}}}no restore drill "
            "has published a result{{ end }}."
        ),
        signals=(DRILL_SUCCESS, DRILL_LAST_RUN),
    ),
)

HA_ALERTS: tuple[Alert, ...] = (
    Alert(
        name="PatroniNoLeader",
        expr=f"{HA_PRIMARIES} == 0 or {HA_NODES_UP} == 0",
        for_=c.HA_NO_LEADER_FOR,
        severity=c.SEVERITY_CRITICAL,
        summary="The Patroni cluster has no primary: writes fail.",
        description=(
            "The cluster has had {{ $value }} primaries (or nodes answering) for more than "
            f"{c.HA_NO_LEADER_FOR}: orders cannot be written."
        ),
        signals=(HA_PRIMARIES, HA_NODES_UP),
    ),
    Alert(
        name="PatroniReplicationLagHigh",
        expr=f"({HA_REPLICA_LAG}) > {c.HA_REPLICATION_LAG_BYTES}",
        for_=c.HA_REPLICATION_LAG_FOR,
        severity=c.SEVERITY_WARNING,
        summary="A replica has replayed far less WAL than the primary has written.",
        description=(
            "Replica {{ $labels.instance }} is {{ $value | humanize1024 }}B behind the primary "
            f"(threshold {c.HA_REPLICATION_LAG_BYTES} bytes); it is not promoted while "
            "it lags, and reads from it are stale."
        ),
        signals=(HA_REPLICA_LAG,),
    ),
    Alert(
        name="PatroniFailoverHappened",
        expr=HA_TIMELINE_MOVED,
        for_=c.HA_FAILOVER_FOR,
        severity=c.SEVERITY_WARNING,
        summary="The cluster changed primary (a failover or a switchover).",
        description=(
            "The cluster is on timeline {{ $value }}, higher than "
            f"{c.HA_FAILOVER_WINDOW} ago: a new node is primary. If nobody ran a switchover, "
            "find out why the old primary was lost and whether it rejoined (patronictl list)."
        ),
        signals=(HA_TIMELINE_NOW,),
    ),
    Alert(
        name="PatroniReplicaNotStreaming",
        expr=(
            f"({sel(m.PATRONI_REPLICA, c.PATRONI_SELECTOR)} == 1)"
            f" unless on (instance) ({HA_RECEIVED_CHANGES} > 0)"
            f" and on () ({HA_PRIMARY_WAL_CHANGES} > 0)"
        ),
        for_=c.HA_NOT_STREAMING_FOR,
        severity=c.SEVERITY_CRITICAL,
        summary="A replica receives no WAL while the primary writes: it is not streaming.",
        description=(
            "Replica {{ $labels.instance }} received no WAL in "
            f"{c.HA_NOT_STREAMING_WINDOW} while the primary wrote some: with synchronous "
            "mode the primary has no standby to confirm commits, and a failover now loses "
            "what this replica lacks."
        ),
        signals=(HA_RECEIVED_CHANGES, HA_PRIMARY_WAL_CHANGES),
    ),
    Alert(
        name="EtcdMemberDown",
        expr=f"{ETCD_UP} == 0 or {ETCD_HAS_LEADER} == 0",
        for_=c.ETCD_MEMBER_DOWN_FOR,
        severity=c.SEVERITY_WARNING,
        summary="An etcd member is down or has no leader.",
        description=(
            _on_instance("etcd member")
            + f" has been down or without a leader for more than {c.ETCD_MEMBER_DOWN_FOR}; "
            "one more member lost and Patroni cannot hold its leader key (writes stop)."
        ),
        signals=(ETCD_UP, ETCD_HAS_LEADER),
    ),
)
ALERTS = ALERTS + HA_ALERTS

HEADER = (
    "# Generated by `sparkops alerts build` from alerts/config.py and alerts/rules.py.\n"
    "# Do not edit by hand: `sparkops check-generated` fails when this file is stale.\n"
)


def by_name() -> dict[str, Alert]:
    return {alert.name: alert for alert in ALERTS}


def rule_file() -> dict:
    return {"groups": [{"name": c.RULE_GROUP, "rules": [a.to_rule() for a in ALERTS]}]}


def render() -> str:
    body = yaml.safe_dump(rule_file(), sort_keys=False, width=1000, allow_unicode=True)
    return HEADER + body
