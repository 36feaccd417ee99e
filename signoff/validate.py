"""The release sign-off checklist against a deployed environment (`sparkops validate`).

Each check runs whatever the others did, writes its evidence file(s) under the run's
folder (the seed's names where the seed had one) and returns PASS or FAIL with a message;
the summary (`validation_summary.md`, `final_summary.txt`) lists them with their seconds.
docs/validation-checklist.md is the same list by hand.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from alerts import rules
from runbooks.executor import CommandFailed
from runbooks.target import DbTarget
from signoff import livecheck
from sparkops import defaults, layout, webaccess

REPO_ROOT = Path(__file__).resolve().parents[1]
POSITION_INDEX = "positions_one_open_per_account_symbol_strategy"
WAL_ARCHIVE_DEADLINE_SECONDS = defaults.ARCHIVE_TIMEOUT_SECONDS + 30
DRILL_SERVICE = "spark-restore-drill.service"
DRILL_METRICS = f"{layout.NODE_EXPORTER_TEXTFILE_DIR}/spark_restore_drill.prom"
# The account the idempotency sequence trades on: its own, so its orders never mix with a
# desk's (created when missing; one small order per run).
SIGNOFF_ACCOUNT = "sparkops-signoff"
SIGNOFF_ORDER = {"account_id": SIGNOFF_ACCOUNT, "symbol": "BTCUSDT", "side": "buy",
                 "quantity": "0.00100", "price": "65000.00"}  # fmt: skip
# The money suite and the coverage it must reach (the seed's target).
MONEY_TESTS = "tests/unit/test_money.py"
MONEY_MODULES = ("app.money", "app.decimals")
MONEY_COVERAGE_MIN = 95


@dataclass
class Context:
    db: DbTarget
    app_url: str
    prometheus_url: str
    folder: Path
    # Makes an API key for SIGNOFF_ACCOUNT with trade permission and returns its secret
    # (the command line makes it on an app host); None: the idempotency check fails, saying so.
    api_key: Callable[[], str] | None = None
    repo_root: Path = REPO_ROOT
    # What checks measured for the report (request latencies, the WAL switch's seconds).
    measured: dict[str, list[float]] = field(default_factory=dict)
    # How long the WAL switch may take to reach the repository.
    archive_deadline: float = WAL_ARCHIVE_DEADLINE_SECONDS


@dataclass
class Outcome:
    name: str
    ok: bool
    message: str
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    started: float = 0.0  # seconds after the run began


class Failed(Exception):
    """A check's verdict: what is wrong, in one sentence."""


def _write(ctx: Context, name: str, text: str) -> str:
    (ctx.folder / name).write_text(text if text.endswith("\n") else text + "\n")
    return name


def check_position_index(ctx: Context) -> tuple[str, list[str]]:
    sql = (
        "SELECT pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i "
        f"JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = '{POSITION_INDEX}'"
    )
    out = ctx.db.psql(sql, timeout=60)
    files = [_write(ctx, "position_unique_validation.log", f"$ {sql}\n{out}")]
    if not out.strip():
        raise Failed(f"index {POSITION_INDEX} is missing: one open position is not enforced")
    definition, valid = out.strip().rsplit("|", 1)
    if "UNIQUE" not in definition or "NULLS NOT DISTINCT" not in definition:
        raise Failed(f"{POSITION_INDEX} is not UNIQUE NULLS NOT DISTINCT: {definition}")
    if valid != "t":
        raise Failed(f"{POSITION_INDEX} is INVALID (a failed concurrent build): rebuild it")
    return "unique, NULLS NOT DISTINCT, valid", files


def check_pgbackrest(ctx: Context) -> tuple[str, list[str]]:
    checked = ctx.db.pgbackrest("check", timeout=300, check=False)
    info = ctx.db.pgbackrest("info", timeout=120, check=False)
    files = [
        _write(ctx, "pgbackrest_check.txt", checked.stdout + checked.stderr),
        _write(ctx, "pgbackrest_info.txt", info.stdout + info.stderr),
    ]
    if not checked.ok:
        raise Failed(f"pgbackrest check exited {checked.returncode}: {checked.stderr[-300:]}")
    if not info.ok or "status: ok" not in info.stdout:
        raise Failed("pgbackrest info does not say status: ok")
    return "check passed, repository status ok", files


def check_wal_archived(ctx: Context) -> tuple[str, list[str]]:
    before = ctx.db.psql("SELECT pg_current_wal_lsn(), pg_walfile_name(pg_current_wal_lsn())")
    files = [_write(ctx, "pitr_lsn_before.txt", before)]
    segment = before.strip().split("|")[1]
    ctx.db.psql("SELECT pg_switch_wal()")
    started = time.monotonic()
    deadline = started + ctx.archive_deadline
    query = (
        "SELECT coalesce(last_archived_wal, ''), pg_current_wal_lsn(), failed_count, "
        "coalesce(last_failed_wal, '') FROM pg_stat_archiver"
    )
    while True:
        after = ctx.db.psql(query)
        archived = after.strip().split("|")[0]
        if archived >= segment or time.monotonic() > deadline:
            break
        time.sleep(1)  # polling the archiver until the deadline above
    files.append(_write(ctx, "pitr_lsn_after.txt", after))
    if archived < segment:
        failed_count, last_failed = after.strip().split("|")[2:4]
        failing = (
            f"; the archiver failed {failed_count} time(s), last on {last_failed}: "
            "see archive_command and the PostgreSQL log"
            if last_failed
            else ""
        )
        raise Failed(
            f"segment {segment} not archived within {ctx.archive_deadline:g}s "
            f"(last archived: {archived or 'none'}{failing})"
        )
    took = time.monotonic() - started
    ctx.measured.setdefault("wal_archive_seconds", []).append(took)
    return f"{segment} archived in {took:.1f}s", files


def check_pgbouncer(ctx: Context) -> tuple[str, list[str]]:
    text = []
    rows = {}
    for command in ("SHOW POOLS", "SHOW STATS"):
        try:
            rows[command] = ctx.db.bouncer_rows(command)
        except CommandFailed as exc:
            _write(ctx, "pgbouncer_stats.txt", str(exc))
            said = error_line(exc.result.output())
            raise Failed(
                f"pgBouncer's admin console on {ctx.db.label} does not answer {command}: "
                f"{said.strip()} (is {layout.PGBOUNCER_SERVICE} running?)"
            ) from exc
        text.append(f"== {command}")
        text += ["\t".join(f"{k}={v}" for k, v in r.items()) for r in rows[command]]
    files = [_write(ctx, "pgbouncer_stats.txt", "\n".join(text))]
    pools = [r for r in rows["SHOW POOLS"] if r.get("database") == defaults.DATABASE_NAME]
    if not pools:
        raise Failed(f"pgBouncer has no pool for database {defaults.DATABASE_NAME}")
    waiting = sum(int(r.get("cl_waiting", "0") or 0) for r in pools)
    if waiting:
        raise Failed(f"{waiting} client(s) waiting for a server connection")
    return f"{len(pools)} pool(s), no client waiting", files


def check_headers(ctx: Context) -> tuple[str, list[str]]:
    sparkops = str(Path(sys.executable).parent / "sparkops")
    argv = [sparkops, "smoke-headers", "--base-url", ctx.app_url, "--evidence-dir", str(ctx.folder)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    files = [f"csp_smoke_{n}.txt" for n in ("headers", "inventory", "browser")]
    files = [f for f in files if (ctx.folder / f).exists()]
    if r.returncode != 0:
        raise Failed((r.stderr.strip().splitlines() or ["smoke-headers failed"])[-1][:300])
    return "headers, inventory and browser pass", files


def check_alert_rules(ctx: Context) -> tuple[str, list[str]]:
    body = webaccess.get(f"{ctx.prometheus_url}/api/v1/rules", timeout=15).json()
    loaded = {r["name"] for g in body["data"]["groups"] for r in g["rules"]}
    files = [_write(ctx, "alert_rules.txt", "\n".join(sorted(loaded)))]
    missing = sorted({a.name for a in rules.ALERTS} - loaded)
    if missing:
        raise Failed(f"Prometheus has not loaded {', '.join(missing)}")
    return f"{len(rules.ALERTS)} alert rules loaded", files


def check_dashboard(ctx: Context) -> tuple[str, list[str]]:
    checks = livecheck.dashboard_checks()
    results = livecheck.run(ctx.prometheus_url, checks)
    files = [_write(ctx, "dashboard_livecheck.txt", livecheck.format_table(results))]
    # A labelled counter nothing has incremented yet (no CSP report on a fresh deploy) has
    # no series: a query must answer, not necessarily return something.
    bad = [r for r in results if not r.parsed or r.error]
    if bad:
        first = bad[0]
        raise Failed(
            f'{len(bad)} panel queries fail, e.g. panel "{first.check.source}": {first.error}'
        )
    with_series = sum(1 for r in results if r.series)
    return f"{len(results)} panel queries answer ({with_series} with series)", files


def check_drill(ctx: Context) -> tuple[str, list[str]]:
    run = ctx.db.executor.run(["systemctl", "start", DRILL_SERVICE], timeout=3600, check=False)
    metrics = ctx.db.executor.read_text(DRILL_METRICS) or ""
    files = [_write(ctx, "restore_drill.txt", f"{run.shown}: exit {run.returncode}\n{metrics}")]
    if not run.ok:
        raise Failed(f"{DRILL_SERVICE} failed: journalctl -u {DRILL_SERVICE} on the db host")
    if "spark_restore_drill_last_success 1" not in metrics:
        raise Failed("the drill did not publish a success")
    return "restore drill passed", files


def _exchange(
    client: httpx.Client, body: dict, key: str, ctx: Context
) -> tuple[httpx.Response, str]:
    started = time.monotonic()
    r = client.post("/orders", json=body, headers={"idempotency-key": key})
    ctx.measured.setdefault("request_seconds", []).append(time.monotonic() - started)
    shown = "\n".join(
        [f"POST {ctx.app_url}/orders", f"Idempotency-Key: {key}", json.dumps(body), "",
         f"HTTP {r.status_code}", *(f"{k}: {v}" for k, v in r.headers.items()), "", r.text]
    )  # fmt: skip
    return r, shown


def check_idempotency(ctx: Context) -> tuple[str, list[str]]:
    """The seed's sequence: an order with a new Idempotency-Key (201), the same request again
    (the stored answer, replayed), the same key with another body (422, nothing placed)."""
    if ctx.api_key is None:
        raise Failed("no API key to place the test order with (give --app-host)")
    ctx.db.psql(
        "INSERT INTO accounts (id, name, opening_balance, cash_balance) VALUES "
        f"('{SIGNOFF_ACCOUNT}', 'Release sign-off', 100000, 100000) ON CONFLICT (id) DO NOTHING",
        timeout=60,
    )
    secret = ctx.api_key()
    key = str(uuid.uuid4())
    files = []
    auth = {"authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=ctx.app_url, timeout=30, headers=auth) as client:
        first, shown = _exchange(client, SIGNOFF_ORDER, key, ctx)
        files.append(_write(ctx, "idempotency_first.log", shown))
        if first.status_code != 201:
            raise Failed(
                f"the first order answered {first.status_code}, not 201: {first.text[:200]}"
            )
        duplicate, shown = _exchange(client, SIGNOFF_ORDER, key, ctx)
        files.append(_write(ctx, "idempotency_duplicate.log", shown))
        other = {**SIGNOFF_ORDER, "quantity": "0.00200"}
        mismatch, shown = _exchange(client, other, key, ctx)
        files.append(_write(ctx, "idempotency_mismatch.log", shown))
    order_id = first.json().get("id")
    if duplicate.status_code != 201 or duplicate.headers.get("idempotent-replayed") != "true":
        raise Failed(
            f"the duplicate answered {duplicate.status_code} without idempotent-replayed: true "
            "(a second order may have been placed)"
        )
    if duplicate.json().get("id") != order_id:
        raise Failed(f"the duplicate names order {duplicate.json().get('id')}, not {order_id}")
    if mismatch.status_code != 422 or "idempotency_key_reused" not in mismatch.text:
        raise Failed(
            f"the same key with another body answered {mismatch.status_code}, "
            f"not 422 idempotency_key_reused"
        )
    placed = ctx.db.psql(f"SELECT count(*) FROM orders WHERE id = '{order_id}'", timeout=60).strip()
    if placed != "1":
        raise Failed(f"order {order_id} is in the database {placed} time(s), not once")
    return f"201, replayed (same order {order_id}), mismatch 422", files


# pytest-cov's exact figure (printed with --cov-fail-under), else the table's rounded TOTAL.
_TOTALS = (
    re.compile(r"Total coverage: (\d+(?:\.\d+)?)%"),
    re.compile(r"^TOTAL\s.*?(\d+(?:\.\d+)?)%\s*$", re.MULTILINE),
)


def check_money(ctx: Context) -> tuple[str, list[str]]:
    """The money suite, with the coverage of the money modules (pass at MONEY_COVERAGE_MIN)."""
    if not (ctx.repo_root / MONEY_TESTS).is_file():
        raise Failed(f"no {MONEY_TESTS} under {ctx.repo_root}: run validate from the repository")
    argv = [sys.executable, "-m", "pytest", MONEY_TESTS, "-q", "-p", "no:cacheprovider",
            *(f"--cov={m}" for m in MONEY_MODULES), "--cov-report=term-missing",
            f"--cov-fail-under={MONEY_COVERAGE_MIN}"]  # fmt: skip
    # Coverage's data file goes with the evidence, not into the repository.
    env = {**os.environ, "COVERAGE_FILE": str(ctx.folder / ".coverage")}
    r = subprocess.run(
        argv, capture_output=True, text=True, timeout=600, cwd=ctx.repo_root, env=env
    )
    shown = f"$ {' '.join(argv[2:])}\n{r.stdout}{r.stderr}"
    files = [_write(ctx, "money_test_coverage.txt", shown)]
    found = [m for m in (t.search(r.stdout) for t in _TOTALS) if m]
    coverage = float(found[0].group(1)) if found else None
    if coverage is None:
        raise Failed(f"the money suite exited {r.returncode} and printed no coverage total")
    if coverage < MONEY_COVERAGE_MIN:
        raise Failed(f"money coverage {coverage:g}% is under {MONEY_COVERAGE_MIN}%")
    if r.returncode != 0:
        last = (r.stdout.strip().splitlines() or ["?"])[-1]
        raise Failed(f"the money suite failed: {last}")
    return f"money suite passed, coverage {coverage:g}%", files


CHECKS: tuple[tuple[str, Callable[[Context], tuple[str, list[str]]]], ...] = (
    ("position unique index", check_position_index),
    ("idempotency sequence", check_idempotency),
    ("money suite coverage", check_money),
    ("pgbackrest check and info", check_pgbackrest),
    ("WAL switch archived", check_wal_archived),
    ("pgBouncer pools and stats", check_pgbouncer),
    ("security headers", check_headers),
    ("alert rules loaded", check_alert_rules),
    ("dashboard queries", check_dashboard),
    ("restore drill", check_drill),
)


def error_line(output: str) -> str:
    """The line of a program's output that says what went wrong (psql's `error:` line)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no answer"])[0][:300]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]


def run_all(ctx: Context, skip: set[str], progress: Callable[[str], None]) -> list[Outcome]:
    outcomes = []
    began = time.monotonic()
    for name, check in CHECKS:
        if name in skip:
            continue
        progress(f"... {name}")
        started = time.monotonic()
        try:
            message, files = check(ctx)
            outcome = Outcome(name, True, message, files=files)
        except (Failed, CommandFailed, httpx.HTTPError, OSError, ValueError) as exc:
            outcome = Outcome(name, False, _first_line(exc))
        except Exception as exc:  # one check's surprise must not stop the others
            outcome = Outcome(name, False, f"{type(exc).__name__}: {_first_line(exc)}")
        outcome.seconds = time.monotonic() - started
        outcome.started = started - began
        progress(
            f"{'PASS' if outcome.ok else 'FAIL'} {name} ({outcome.seconds:.1f}s): {outcome.message}"
        )
        outcomes.append(outcome)
    return outcomes


def write_summary(ctx: Context, outcomes: list[Outcome], total: float) -> None:
    verdict = "PASS" if all(o.ok for o in outcomes) else "FAIL"
    rows = [f"| {o.name} | {'PASS' if o.ok else 'FAIL'} | {o.seconds:.1f} | {o.message} | "
            f"{', '.join(o.files)} |" for o in outcomes]  # fmt: skip
    md = [
        f"# Validation: {verdict}",
        "",
        f"App {ctx.app_url}, Prometheus {ctx.prometheus_url}, db {ctx.db.label}; "
        f"{total:.1f}s in all.",
        "",
        "| check | result | seconds | what | evidence |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ]
    _write(ctx, "validation_summary.md", "\n".join(md))
    lines = [f"{'PASS' if o.ok else 'FAIL'} {o.name}: {o.message}" for o in outcomes]
    _write(ctx, "final_summary.txt", "\n".join([f"{verdict} ({total:.1f}s)", *lines]))
