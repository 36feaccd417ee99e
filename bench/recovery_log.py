"""Where a restore's "WAL replay" goes, read from PostgreSQL's own log of the restored server
(the default `log_line_prefix`, `%m [%p] `, puts a millisecond timestamp on every line).

The runbook times the replay from outside (start, promotion request, wait for the end of
recovery); the server's log splits it into what PostgreSQL did:

- `start`: the server starting to a consistent state (the backup's own WAL replayed);
- `redo`: replaying the archived WAL, from there to the last segment restored before redo
  ended;
- `end_of_wal`: from that segment to the end of redo (asking the archive for the next
  segment, which does not exist, and in standby mode taking the promotion request);
- `new_timeline`: the end of redo to a new timeline (the last segment read again from the
  archive, the timeline history looked up);
- `open`: the new timeline to accepting connections (the end-of-recovery checkpoint too when
  recovery ended by itself).
"""

from __future__ import annotations

import re
from datetime import datetime

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \S+ ")

MARKS = {
    "started": "starting PostgreSQL",
    "consistent": "consistent recovery state reached",
    "restored": "restored log file",
    "redo_done": "redo done at",
    "new_timeline": "selected new timeline ID",
    "ready": "database system is ready to accept connections",
}
PHASES = ("start", "redo", "end_of_wal", "new_timeline", "open")


def _events(log: str) -> list[tuple[float, str]]:
    found = []
    for line in log.splitlines():
        match = _STAMP.match(line)
        if not match:
            continue
        when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        for mark, text in MARKS.items():
            if text in line:
                found.append((when, mark))
    return found


def phases(log: str) -> dict[str, float] | None:
    """Seconds per phase (PHASES, back to back) of the last recovery in `log`, plus `total`
    (server start to accepting connections); None when the log does not show a whole
    recovery."""
    events = _events(log)
    starts = [i for i, (_, mark) in enumerate(events) if mark == "started"]
    if not starts:
        return None
    events = events[starts[-1] :]
    first = {}
    for when, mark in events:
        first.setdefault(mark, when)
    needed = ("started", "consistent", "redo_done", "new_timeline", "ready")
    if any(mark not in first for mark in needed):
        return None
    last_restored = max(
        (
            when
            for when, mark in events
            if mark == "restored" and first["consistent"] <= when <= first["redo_done"]
        ),
        default=first["consistent"],
    )
    return {
        "start": first["consistent"] - first["started"],
        "redo": max(0.0, last_restored - first["consistent"]),
        "end_of_wal": first["redo_done"] - last_restored,
        "new_timeline": first["new_timeline"] - first["redo_done"],
        "open": first["ready"] - first["new_timeline"],
        "total": first["ready"] - first["started"],
    }
