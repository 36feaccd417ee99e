"""PostgreSQL steps the restore, the restore point and the drill share: archiving the live
WAL, giving a copy its configuration files, waiting for recovery to end."""

from __future__ import annotations

from collections.abc import Callable

from runbooks.checklist import StepFailed
from runbooks.target import DbTarget
from sparkops.wait import DeadlineExceeded, StopWaiting, wait_until


def archive_live_wal(source: DbTarget, timeout: float) -> str:
    """Make sure every commit so far is in the archive: a transaction with an xid (its commit
    record gives a time target something to stop at), a segment switch, then wait for the
    archiver to report that segment."""
    row = source.query_json(
        "SELECT txid_current() AS xid, pg_current_wal_lsn()::text AS lsn_before"
    )[0]
    segment = source.psql("SELECT pg_walfile_name(pg_switch_wal())", dbname="postgres")

    def archived() -> bool:
        # The failures too: the evidence then shows why a wait is long.
        last, *_ = source.psql(
            "SELECT concat_ws(' ', coalesce(last_archived_wal, '-'), failed_count, "
            "last_failed_wal, last_failed_time) FROM pg_stat_archiver"
        ).split(" ")
        return last[8:] >= segment[8:] and last[:8] == segment[:8]

    try:
        wait_until(
            archived, timeout=timeout, what=f"WAL segment {segment} to be archived", interval=0.2
        )
    except DeadlineExceeded as exc:
        failed = source.psql(
            "SELECT concat_ws(' at ', last_failed_wal, last_failed_time) FROM pg_stat_archiver"
        )
        raise StepFailed(
            f"{exc}; last archive failure: {failed or 'none'}. Nothing was "
            "restored; check archive_command and the repository"
        ) from exc
    return f"{row['lsn_before']} (segment {segment})"


def ensure_config_files(dest: DbTarget) -> None:
    """Debian keeps postgresql.conf and pg_hba.conf in /etc, so a copy restored elsewhere has
    none: give it a minimal pair (settings come from the service's -c flags)."""
    script = (
        f"cd {dest.data_dir} && "
        "{ [ -e postgresql.conf ] || : > postgresql.conf; } && "
        "{ [ -e pg_ident.conf ] || : > pg_ident.conf; } && "
        '{ [ -e pg_hba.conf ] || echo "local all postgres peer" > pg_hba.conf; }'
    )
    dest.executor.run(["sh", "-c", script], user=dest.os_user)


def wait_for_promotion(dest: DbTarget, timeout: float) -> None:
    """Until recovery ends; at once when PostgreSQL has stopped (a PANIC in recovery, a
    missing WAL file it gave up on), not at the end of a recovery timeout of an hour."""

    def promoted() -> bool:
        return _ask(dest, lambda: dest.psql("SELECT pg_is_in_recovery()", dbname="postgres")) == "f"

    _wait(promoted, timeout, "recovery to end", dest)


def request_promotion(dest: DbTarget, timeout: float) -> bool:
    """Ask a server in recovery to end it (`pg_promote`, not waiting), as soon as it takes
    connections: it finishes what it must first (a standby replays all the WAL it can find;
    a recovery paused at its target ends the pause). True once asked; False when recovery
    had ended already."""

    def asked() -> str:
        return _ask(
            dest,
            lambda: dest.psql(
                "SELECT CASE WHEN pg_is_in_recovery() THEN pg_promote(false) ELSE false END",
                dbname="postgres",
                timeout=30,
            ),
        )

    return _wait(asked, timeout, "the restored server to take the promotion request", dest) == "t"


def _ask(dest: DbTarget, query: Callable[[], str]) -> str:
    """The query's answer; when it fails, "not yet" while PostgreSQL runs (still starting),
    StopWaiting once it has stopped. Asked in that order, a poll is one command (one SSH
    round trip on a host) until something goes wrong."""
    try:
        return query()
    except Exception:
        if not dest.service.is_active():
            raise StopWaiting(
                "PostgreSQL stopped during recovery:\n" + dest.service.log_tail()
            ) from None
        raise


def _wait(probe, timeout: float, what: str, dest: DbTarget):
    # A steady 0.2 s: backing off to a second once added up to 0.8 s to every restore,
    # between the server opening and the runbook noticing.
    try:
        return wait_until(probe, timeout=timeout, what=what, interval=0.2, max_interval=0.2)
    except StopWaiting as exc:
        raise StepFailed(str(exc)) from None
    except DeadlineExceeded as exc:
        raise StepFailed(f"{exc}; PostgreSQL log:\n{dest.service.log_tail()}") from exc
