"""The WAL budget's decision, as pure logic: embedded whole into the db hosts' check script
(templates/pgbackrest/wal-budget.py.j2, by deploys/pgbackrest.py wal_budget_script), used by
the deploy to refuse a budget it cannot read, and tested here without a host.

Standard library only, and self-contained: the script on the host has nothing else.
"""

import re

SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def parse_size(text):
    """512MiB, 2GiB, 1048576 (bytes): the sizes pgBackRest's own options take."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB)?\s*", str(text))
    if not found:
        raise ValueError(f"{text!r} is not a size: write it as 512MiB, 2GiB or a byte count")
    return int(float(found.group(1)) * SIZE_UNITS[found.group(2) or "B"])


def parse_budget(text):
    """(share, None) for "5%" (of the databases' size), (None, bytes) for a size."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", str(text))
    if found:
        share = float(found.group(1)) / 100
        if not 0 < share <= 1:
            raise ValueError(f"{text!r}: a share of the database is above 0% and at most 100%")
        return share, None
    size = parse_size(text)
    if size <= 0:
        raise ValueError(f"{text!r}: a budget of no WAL would back up at every check")
    return None, size


def parse_lsn(text):
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def ancestors(history):
    """{timeline: LSN where it ended} for the timelines before the current one, from its
    history file ("parent<TAB>switch LSN<TAB>reason" lines)."""
    ended = {}
    for line in (history or "").splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line.lstrip().startswith("#"):
            ended[int(fields[0])] = parse_lsn(fields[1])
    return ended


def restorable(backups, timeline, history, lsn):
    """The backups a restore of this timeline at `lsn` can start from."""
    ended = ancestors(history)
    found = []
    for b in backups:
        stop = parse_lsn(b["lsn"]["stop"])
        on = int(b["archive"]["stop"][:8], 16)
        if stop <= lsn and (on == timeline or (on in ended and stop <= ended[on])):
            found.append(b)
    return found


def decide(backups, state, budget, budget_min, min_interval, now, last_request, unit,
           running=False):  # fmt: skip
    """What to do and why, from `pgbackrest info`'s backups (JSON), the server's state (the
    check's query: lsn, walfile, history, size), `budget` as parse_budget returns it, the
    floor of a share and the minimum interval, the time now and of the last request (epoch
    seconds or None), `running`: whether a backup holds pgBackRest's lock now: a dict with
    due (ask for a backup), wal (bytes since the newest restorable backup, None when there is
    none), budget (bytes) and reason (one line)."""
    share, fixed = budget
    size = int(state["size"] or 0)
    limit = fixed if fixed is not None else max(budget_min, int(share * size))
    lsn = parse_lsn(state["lsn"])
    timeline = int(state["walfile"][:8], 16)
    usable = restorable(backups, timeline, state["history"], lsn)
    newest = max(usable, key=lambda b: parse_lsn(b["lsn"]["stop"])) if usable else None
    figures = {"budget": limit, "size": size, "timeline": timeline}
    if newest is None:
        figures["wal"] = None
        over = f"no backup can start a restore of timeline {timeline}"
    else:
        wal = lsn - parse_lsn(newest["lsn"]["stop"])
        figures.update(wal=wal, newest=newest["label"])
        if wal < limit:
            return {
                **figures,
                "due": False,
                "reason": (
                    f"{mib(wal)} of WAL since backup {newest['label']}, within the budget of "
                    f"{mib(limit)}"
                ),
            }
        over = f"{mib(wal)} of WAL since backup {newest['label']}, over the budget of {mib(limit)}"
    if running:
        # Another start would fail on the lock; the running backup bounds the WAL anyway.
        return {**figures, "due": False, "reason": f"{over}; a backup is running: waiting for it"}
    # Not sooner than the minimum interval after the newest backup or the last request.
    stops = [b["timestamp"]["stop"] for b in backups]
    since = max([*stops, last_request or 0])
    if since and now - since < min_interval:
        wait = int(min_interval - (now - since))
        what = "request" if last_request and last_request >= max(stops, default=0) else "backup"
        return {
            **figures,
            "due": False,
            "reason": (
                f"{over}; the last {what} was {int(now - since)} s ago: the next request in "
                f"{wait} s (at most one every {min_interval} s)"
            ),
        }
    return {**figures, "due": True, "reason": f"{over}: asking for an incremental backup ({unit})"}


def mib(n):
    return f"{n / (1 << 20):.0f} MiB"
