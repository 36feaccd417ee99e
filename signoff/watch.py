"""The seed's 48-hour watch after a release (`sparkops watch --since 48h`): the red flags read
from Prometheus's history over the window, and a go/no-go verdict.

Red flags, each one PromQL query evaluated now over the window:
- alerts that fired (`ALERTS{alertstate="firing"}`; when they last became active from
  `ALERTS_FOR_STATE`): a critical one is NO-GO, a warning is WARN;
- the share of the users' requests answered 5xx above the alert's ratio: NO-GO;
- WAL archive lag above the stale-archive alert's threshold, or archive failures: NO-GO;
- the restore drill: a failed run in the window, or no result at all: NO-GO.
A flag whose metric has no series in the window says so (nothing watched is not "all well").
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from alerts import config as c
from alerts.rules import sel
from sparkops import metric_names as m
from sparkops import webaccess

GO, WARN, NO_GO = "GO", "WARN", "NO-GO"
WINDOW = re.compile(r"^[1-9][0-9]*[smhdw]$")
_USER_ROUTES = 'route!~"' + "|".join(c.APP_PROBE_ROUTES) + '"'


class WatchError(Exception):
    """Prometheus cannot be asked: no verdict."""


@dataclass
class Flag:
    name: str
    verdict: str  # GO | WARN | NO-GO
    message: str
    queries: list[str] = field(default_factory=list)


def check_window(window: str) -> str:
    if not WINDOW.match(window):
        raise ValueError(f"{window!r} is not a duration like 48h, 90m or 2d")
    return window


class Prometheus:
    def __init__(self, url: str, at: float | None = None) -> None:
        self.url = url.rstrip("/")
        self.at = time.time() if at is None else at

    def vector(self, expr: str) -> list[tuple[dict[str, str], float]]:
        try:
            r = webaccess.get(f"{self.url}/api/v1/query", params={"query": expr, "time": self.at},
                          timeout=30)  # fmt: skip
            body = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise WatchError(f"Prometheus at {self.url} does not answer: {exc}") from exc
        if body.get("status") != "success":
            raise WatchError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
        return [(s["metric"], float(s["value"][1])) for s in body["data"]["result"]]


def alerts_fired(p: Prometheus, w: str) -> Flag:
    fired_q = f'max by (alertname, severity) (max_over_time(ALERTS{{alertstate="firing"}}[{w}]))'
    since_q = f"max by (alertname) (max_over_time(ALERTS_FOR_STATE[{w}]))"
    fired = p.vector(fired_q)
    since = {labels.get("alertname"): value for labels, value in p.vector(since_q)}
    if not fired:
        return Flag("alerts fired", GO, "no alert fired", [fired_q, since_q])
    names = []
    for labels, _ in sorted(fired, key=lambda s: (s[0].get("severity") != "critical", str(s[0]))):
        name = labels.get("alertname", "?")
        at = since.get(name)
        when = f", active since {_utc(at)}" if at else ""
        names.append(f"{name} ({labels.get('severity', 'no severity')}{when})")
    critical = any(labels.get("severity") == c.SEVERITY_CRITICAL for labels, _ in fired)
    return Flag("alerts fired", NO_GO if critical else WARN, "fired: " + "; ".join(names),
                [fired_q, since_q])  # fmt: skip


def error_share(p: Prometheus, w: str) -> Flag:
    counts = m.HTTP_REQUEST_DURATION + "_count"
    errors_only = _USER_ROUTES + ', status=~"5.."'
    all_q = f"sum(increase({sel(counts, c.APP_SELECTOR, _USER_ROUTES)}[{w}]))"
    err_q = f"sum(increase({sel(counts, c.APP_SELECTOR, errors_only)}[{w}]))"
    total = sum(v for _, v in p.vector(all_q))
    errors = sum(v for _, v in p.vector(err_q))
    if total <= 0:
        return Flag("server errors", WARN, "no requests to the app in the window", [all_q, err_q])
    share = errors / total
    verdict = NO_GO if share > c.APP_SERVER_ERROR_RATIO else GO
    return Flag("server errors", verdict,
                f"{share:.2%} of {total:.0f} requests answered 5xx "
                f"(no-go above {c.APP_SERVER_ERROR_RATIO:.0%})", [all_q, err_q])  # fmt: skip


def archive(p: Prometheus, w: str) -> Flag:
    age_q = f"max(max_over_time({sel(m.PG_ARCHIVER_LAST_ARCHIVE_AGE, c.POSTGRES_SELECTOR)}[{w}]))"
    failed_q = f"sum(increase({sel(m.PG_ARCHIVER_FAILED, c.POSTGRES_SELECTOR)}[{w}]))"
    ages, failed = p.vector(age_q), p.vector(failed_q)
    if not ages:
        return Flag("WAL archive", NO_GO, "no archive metric in the window: is the PostgreSQL "
                    "exporter scraped?", [age_q, failed_q])  # fmt: skip
    worst = ages[0][1]
    failures = sum(v for _, v in failed)
    problems = []
    if worst > c.WAL_ARCHIVE_STALE_SECONDS:
        problems.append(f"lag reached {worst:.0f}s (no-go above {c.WAL_ARCHIVE_STALE_SECONDS}s)")
    if failures > 0:
        problems.append(f"{failures:.0f} failed archive attempt(s)")
    if problems:
        return Flag("WAL archive", NO_GO, "; ".join(problems), [age_q, failed_q])
    return Flag("WAL archive", GO, f"worst lag {worst:.0f}s, no failure", [age_q, failed_q])


def drill(p: Prometheus, w: str) -> Flag:
    q = f"min(min_over_time({sel(m.RESTORE_DRILL_LAST_SUCCESS, c.BACKUP_SELECTOR)}[{w}]))"
    result = p.vector(q)
    if not result:
        return Flag("restore drill", NO_GO, "no drill result in the window", [q])
    if result[0][1] < 1:
        return Flag("restore drill", NO_GO, "a restore drill failed in the window", [q])
    return Flag("restore drill", GO, "every drill result in the window is a success", [q])


FLAGS = (alerts_fired, error_share, archive, drill)


def evaluate(prometheus_url: str, window: str, at: float | None = None) -> list[Flag]:
    p = Prometheus(prometheus_url, at)
    return [flag(p, check_window(window)) for flag in FLAGS]


def verdict(flags: list[Flag]) -> str:
    return NO_GO if any(f.verdict == NO_GO for f in flags) else GO


def summary(flags: list[Flag], window: str, prometheus_url: str) -> str:
    lines = [
        f"# Watch over the last {window}: {verdict(flags)}",
        "",
        f"Prometheus {prometheus_url}, evaluated {_utc(time.time())}.",
        "",
        "| red flag | verdict | what |",
        "| --- | --- | --- |",
        *(f"| {f.name} | {f.verdict} | {f.message} |" for f in flags),
        "",
        "Queries:",
        "",
        *(f"- `{q}`" for f in flags for q in f.queries),
    ]
    return "\n".join(lines) + "\n"


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
