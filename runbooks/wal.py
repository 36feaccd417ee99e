"""What pgBackRest's repository holds, read as facts: backup sets, the archived WAL range,
restore points; and the LSN and segment arithmetic around them.

Pure parsing lives here (tested without a database); the few commands that read the
repository go through a `DbTarget`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from runbooks.checklist import Refused
from runbooks.target import DbTarget

SEGMENT_BYTES = 16 * 1024 * 1024
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
# pg_waldump: "... lsn: 0/03000058, prev 0/03000028, desc: RESTORE_POINT before-migration"
_RESTORE_POINT = re.compile(r"lsn: ([0-9A-F]+/[0-9A-F]+), prev .*desc: RESTORE_POINT (.*)$")
_COMMIT = re.compile(r"lsn: ([0-9A-F]+/[0-9A-F]+), .*desc: (?:COMMIT|ABORT) (\S+ \S+ \S+)")
# Status codes of `pgbackrest info` (its documentation, "info" command).
STANZA_MISSING_CODES = {1: "missing stanza path", 3: "missing stanza data"}
NO_BACKUP_CODE = 2
# Restore points are looked for in this many of the newest archived segments (8 GB of WAL).
RESTORE_POINT_SCAN_LIMIT = 512


def parse_lsn(text: str) -> int:
    match = _LSN.match(text.strip())
    if not match:
        raise Refused(
            f"{text!r} is not an LSN",
            "an LSN is two hexadecimal numbers with a slash, like 0/16B3748 "
            "(SELECT pg_current_wal_lsn() shows one)",
        )
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segment_end_lsn(name: str) -> int:
    """The first LSN after the segment `name` (16 MB segments)."""
    match = _SEGMENT.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a WAL segment name")
    high, low = int(match.group(2), 16), int(match.group(3), 16)
    return (high << 32) + (low + 1) * SEGMENT_BYTES


def segment_timeline(name: str) -> int:
    return int(name[:8], 16)


# Segments per "xlogid" (the middle eight hex digits of a name): 4 GB of 16 MB segments.
SEGMENTS_PER_ID = 0x100000000 // SEGMENT_BYTES


def segment_number(name: str) -> int:
    """The segment's position in the WAL stream, whatever its timeline."""
    match = _SEGMENT.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a WAL segment name")
    return int(match.group(2), 16) * SEGMENTS_PER_ID + int(match.group(3), 16)


def segment_label(number: int) -> str:
    """A segment number as the last sixteen digits of its file name (timeline left out)."""
    return f"{number // SEGMENTS_PER_ID:08X}{number % SEGMENTS_PER_ID:08X}"


def archive_gaps(segments: list[str], first: int, last: int) -> list[tuple[int, int]]:
    """Runs of segment numbers in [first, last] that no archived segment holds, on any
    timeline (the switch segment of a new timeline is archived under the new one).

    Recovery replays WAL until restore_command finds no next segment, and then ends as if
    that were the end: a gap makes a restore to "everything archived" stop before it, and
    every commit after the gap is silently missing from the result."""
    have = {segment_number(n) for n in segments}
    gaps: list[tuple[int, int]] = []
    start = None
    for number in range(first, last + 1):
        if number not in have:
            start = number if start is None else start
        elif start is not None:
            gaps.append((start, number - 1))
            start = None
    if start is not None:
        gaps.append((start, last))
    return gaps


def history_switch_lsn(text: str) -> int | None:
    """Where the newest timeline began, from its history file ("parent<TAB>LSN<TAB>reason"
    lines): the point at which the recovery that made it ended."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return None
    fields = lines[-1].split()
    return parse_lsn(fields[1]) if len(fields) >= 2 else None


@dataclass(frozen=True)
class BackupSet:
    label: str
    kind: str
    start_time: datetime
    stop_time: datetime
    start_lsn: int
    stop_lsn: int
    timeline: int

    def describe(self) -> str:
        return (
            f"{self.label} ({self.kind}, ended {self.stop_time.isoformat()} at LSN "
            f"{format_lsn(self.stop_lsn)}, timeline {self.timeline})"
        )


@dataclass(frozen=True)
class RepoInfo:
    stanza: str
    backups: list[BackupSet]  # oldest first
    archive_min: str | None
    archive_max: str | None
    raw: dict


def parse_info(text: str, stanza: str) -> RepoInfo:
    """`pgbackrest info --output=json` for one stanza, or a refusal that says what to do."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise Refused(
            f"pgbackrest info did not return JSON ({exc})",
            "run `pgbackrest info` on the db host and read its error",
        ) from exc
    entry = next((s for s in data if s.get("name") == stanza), None)
    if entry is None:
        raise Refused(
            f"the repository has no stanza {stanza!r}",
            "check --stanza and the pgBackRest configuration",
        )
    status = entry.get("status", {})
    code, message = status.get("code", 99), status.get("message", "")
    if code in STANZA_MISSING_CODES:
        raise Refused(
            f"stanza {stanza!r}: {message}",
            "create it (`pgbackrest --stanza=NAME stanza-create`, the pgbackrest deploy does) and "
            "take a full backup, or fix --stanza / the repository path",
        )
    if code == NO_BACKUP_CODE:
        raise Refused(
            f"stanza {stanza!r} has no backup to restore from",
            "take one: pgbackrest --stanza=NAME --type=full backup",
        )
    if code not in (0,):
        raise Refused(
            f"the repository is not usable: {message} (pgBackRest status {code})",
            "check that the repository is reachable (network, S3 credentials) and "
            "that `pgbackrest info` succeeds on the db host",
        )
    backups = [_backup(b) for b in entry.get("backup", []) if not b.get("error")]
    archives = entry.get("archive", [])
    mins = [a["min"] for a in archives if a.get("min")]
    maxes = [a["max"] for a in archives if a.get("max")]
    return RepoInfo(
        stanza,
        sorted(backups, key=lambda b: b.stop_lsn),
        min(mins) if mins else None,
        max(maxes) if maxes else None,
        entry,
    )


def _backup(b: dict) -> BackupSet:
    return BackupSet(
        label=b["label"],
        kind=b["type"],
        start_time=datetime.fromtimestamp(b["timestamp"]["start"], UTC),
        stop_time=datetime.fromtimestamp(b["timestamp"]["stop"], UTC),
        start_lsn=parse_lsn(b["lsn"]["start"]),
        stop_lsn=parse_lsn(b["lsn"]["stop"]),
        timeline=segment_timeline(b["archive"]["start"]),
    )


def read_info(target: DbTarget) -> RepoInfo:
    result = target.pgbackrest("info", "--output=json", timeout=120, check=False)
    if not result.ok:
        raise Refused(
            f"`pgbackrest info` failed on {target.executor.name}: "
            + (result.stderr.strip() or result.stdout.strip())[-400:],
            "check the pgBackRest configuration and that the repository is reachable",
        )
    return parse_info(result.stdout, target.stanza)


def archived_segments(target: DbTarget) -> list[str]:
    """Names of the WAL segments in the repository, in order (all timelines)."""
    result = target.pgbackrest(
        "repo-ls", "--recurse", "--output=json", args=(f"archive/{target.stanza}",), timeout=300
    )
    names = set()
    for path, entry in json.loads(result.stdout).items():
        base = path.rsplit("/", 1)[-1]
        if entry.get("type") == "file" and _SEGMENT.match(base[:24]) and "." not in base[:25]:
            names.add(base[:24])
    return sorted(names, key=lambda n: (n[8:], n[:8]))


def _scan(target: DbTarget, segments: list[str], rmgr: str, pattern: str) -> str:
    """pg_waldump over `segments` fetched from the repository, one at a time, on the target
    host; returns the lines that match `pattern` (grep -E)."""
    if not segments:
        return ""
    # Synchronous: an async get would share the archive lock and spool with the host's own
    # archive-push (see runbooks.pitr.restore_command).
    get = " ".join(
        target.pgbackrest_argv("archive-get", "--archive-async=n", args=("$s", '"$d/$s"'))
    )
    script = (
        "export TZ=UTC; "
        "d=$(mktemp -d) || exit 1; trap 'rm -rf \"$d\"' EXIT; "
        f"for s in {' '.join(segments)}; do "
        f"{get} >/dev/null 2>&1 || continue; "
        f'{target.bindir}/pg_waldump -r {rmgr} "$d/$s" 2>/dev/null | grep -E {pattern!r}; '
        'rm -f "$d/$s"; done; true'
    )
    return target.executor.run(["sh", "-c", script], user=target.os_user, timeout=1800).stdout


def find_restore_point(
    target: DbTarget, name: str, segments: list[str], limit: int = RESTORE_POINT_SCAN_LIMIT
) -> list[int]:
    """LSNs of the restore points called `name` in the newest `limit` archived segments."""
    lines = _scan(target, segments[-limit:], "XLOG", "RESTORE_POINT")
    found = []
    for line in lines.splitlines():
        match = _RESTORE_POINT.search(line.strip())
        if match and match.group(2).strip() == name:
            found.append(parse_lsn(match.group(1)))
    return sorted(found)


def last_commit_time(target: DbTarget, segments: list[str]) -> datetime | None:
    """The time of the last commit or abort in the newest archived segments that have one:
    recovery to a time after it cannot end at that time."""
    for start in range(len(segments), 0, -4):
        lines = _scan(target, segments[max(0, start - 4) : start], "Transaction", "COMMIT|ABORT")
        stamps = [m.group(2) for m in map(_COMMIT.search, lines.splitlines()) if m]
        if stamps:
            return max(_parse_waldump_time(s) for s in stamps)
    return None


def _parse_waldump_time(text: str) -> datetime:
    # "2026-11-29 08:03:15.104770 UTC"
    stamp, _zone = text.rsplit(" ", 1)
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC)
