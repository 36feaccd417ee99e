"""pgBouncer's PAUSE and RESUME around a restore, bounded so the platform is never left paused.

`PAUSE db` takes effect at once (new queries wait) and returns only when every server
connection of that database is released, that is when every transaction running through
pgBouncer has ended. A client that sits in a transaction would hold it open for as long as it
likes, and the pause stays in effect even after the admin connection that asked for it is
gone. So the wait is bounded: when it runs out, RESUME goes out at once and the runbook
refuses, naming the clients that hold transactions, or (asked explicitly) ends their
transactions and pauses again, bounded the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from runbooks.checklist import Refused, Run, StepFailed
from runbooks.executor import CommandFailed
from runbooks.target import DbTarget
from sparkops import defaults

# Longer than the bounds on idle transactions (PostgreSQL's for the app role, pgBouncer's
# for anyone), so a client that merely sits in a transaction is cut off by them and PAUSE
# completes; what still holds it after this is a real, running transaction.
DEFAULT_PAUSE_WAIT_SECONDS = float(
    max(
        defaults.APP_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
        defaults.PGBOUNCER_IDLE_TRANSACTION_TIMEOUT_SECONDS,
    )
    + 3
)
RESUME_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Blocker:
    """A transaction that keeps PAUSE waiting: its backend, who runs it, for how long."""

    pid: int
    user: str
    application: str
    client: str
    state: str
    seconds: float
    query: str

    def describe(self) -> str:
        app = self.application or "no application_name"
        return (
            f"pid {self.pid}: {self.user} ({app}) from {self.client or '?'}, {self.state} "
            f"for {self.seconds:.0f} s: {self.query[:60]!r}"
        )


def is_paused(target: DbTarget) -> bool:
    """What pgBouncer says (SHOW DATABASES' paused column), not what this run believes."""
    database = target.bouncer.database
    rows = target.bouncer_rows("SHOW DATABASES", timeout=RESUME_TIMEOUT_SECONDS)
    return any(r.get("name") == database and r.get("paused") == "1" for r in rows)


def resume(target: DbTarget) -> None:
    """RESUME when paused (a pending PAUSE included); a no-op when not. Verified after."""
    database = target.bouncer.database
    if is_paused(target):
        result = target.bouncer_admin(
            f"RESUME {database}", timeout=RESUME_TIMEOUT_SECONDS, check=False
        )
        # "is not paused": someone resumed it between the look and the command; fine.
        if not result.ok and "not paused" not in result.output():
            raise CommandFailed(result)
    if is_paused(target):
        raise StepFailed(f"pgBouncer still reports {database} paused after RESUME")


def blockers(target: DbTarget) -> list[Blocker]:
    """The transactions holding pgBouncer's server connections of the database."""
    database = target.bouncer.database
    servers = target.bouncer_rows("SHOW SERVERS", timeout=RESUME_TIMEOUT_SECONDS)
    clients = {
        c.get("ptr"): c for c in target.bouncer_rows("SHOW CLIENTS", timeout=RESUME_TIMEOUT_SECONDS)
    }
    busy = {}
    for server in servers:
        if server.get("database") == database and server.get("state") == "active":
            pid = server.get("remote_pid", "")
            if pid.isdigit():
                client = clients.get(server.get("link"), {})
                busy[int(pid)] = f"{client.get('addr', '?')}:{client.get('port', '?')}"
    if not busy:
        return []
    rows = target.query_json(
        "SELECT pid, usename AS user, coalesce(application_name, '') AS application, "
        "coalesce(state, '') AS state, "
        "extract(epoch FROM now() - coalesce(xact_start, backend_start))::float AS seconds, "
        "coalesce(query, '') AS query FROM pg_stat_activity "
        f"WHERE pid IN ({', '.join(str(p) for p in busy)}) ORDER BY xact_start",
        dbname="postgres",
    )
    return [
        Blocker(
            r["pid"],
            r["user"] or "?",
            r["application"],
            busy.get(r["pid"], "?"),
            r["state"],
            r["seconds"] or 0.0,
            r["query"],
        )
        for r in rows
    ]


def terminate(target: DbTarget, found: list[Blocker]) -> None:
    pids = ", ".join(str(b.pid) for b in found)
    target.psql(
        f"SELECT pg_terminate_backend(pid) FROM unnest(ARRAY[{pids}]) AS pid", dbname="postgres"
    )


def pause(target: DbTarget, run: Run, *, wait: float, disconnect: bool) -> None:
    """PAUSE, bounded by `wait` seconds (on the host too). On time-out: RESUME at once, then
    refuse naming the transactions in the way, or, with `disconnect`, end them and try once
    more. Either way pgBouncer is not left paused by this function."""
    database = target.bouncer.database
    if _try_pause(target, database, wait):
        return
    found = blockers(target)
    listed = "; ".join(b.describe() for b in found) or "none found any more"
    run.note(f"PAUSE {database} did not complete in {wait:.0f} s; holding: {listed}")
    if not disconnect:
        raise Refused(
            f"pgBouncer could not pause {database} within {wait:.0f} s: "
            f"{len(found)} client(s) hold transactions ({listed}); pgBouncer was resumed",
            "let those transactions end and run the same command again, or add "
            "--disconnect-blockers to end them (their clients get an error) and go on",
        )
    if found:
        run.say(f"    ending {len(found)} transaction(s) in the way: {listed}")
        terminate(target, found)
    if not _try_pause(target, database, wait):
        again = "; ".join(b.describe() for b in blockers(target)) or "none found"
        raise Refused(
            f"pgBouncer could not pause {database} within {wait:.0f} s even after ending "
            f"the transactions in the way (now holding: {again}); pgBouncer was resumed",
            "find what keeps opening transactions (the app under heavy load?) and retry",
        )


def _try_pause(target: DbTarget, database: str, wait: float) -> bool:
    result = target.bouncer_admin(f"PAUSE {database}", timeout=wait, check=False)
    if result.ok:
        return True
    resume(target)  # the pause stays in effect after its command is gone: undo it now
    if not result.timed_out:
        raise CommandFailed(result)
    return False
