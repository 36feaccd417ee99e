"""The WAL budget's decision (sparkops/walbudget.py, embedded in the db hosts' check): sizes
and shares read as pgBackRest writes them, the WAL counted from the newest backup a restore of
the current timeline could start from, and at most one request per minimum interval."""

from __future__ import annotations

import pytest

from sparkops import walbudget

MIB = 1 << 20
UNIT = "pgbackrest-backup@incr.service"


def backup(label: str, stop_lsn: str, *, timeline: int = 1, stopped: float = 1000.0) -> dict:
    """One backup as `pgbackrest info --output=json` lists it (the fields the check reads)."""
    segment = f"{timeline:08X}000000000000000A"
    return {
        "label": label,
        "lsn": {"start": "0/1000028", "stop": stop_lsn},
        "archive": {"start": segment, "stop": segment},
        "timestamp": {"start": stopped - 5, "stop": stopped},
    }


def state(lsn: str, *, timeline: int = 1, size: int = 1000 * MIB, history: str | None = None):
    return {"lsn": lsn, "walfile": f"{timeline:08X}0000000000000042", "history": history,
            "size": size}  # fmt: skip


def decide(backups, server, budget="64MiB", *, floor="16MiB", min_interval=300, now=5000.0,
           last_request=None, running=False):  # fmt: skip
    return walbudget.decide(
        backups, server, walbudget.parse_budget(budget), walbudget.parse_size(floor),
        min_interval, now, last_request, UNIT, running,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "size"),
    [("512MiB", 512 * MIB), ("2GiB", 2 << 30), ("1048576", MIB), ("1.5GiB", 3 << 29),
     (" 64 KiB ", 64 << 10), ("1TiB", 1 << 40), ("100B", 100)],
)  # fmt: skip
def test_sizes_read_as_pgbackrest_writes_them(text, size):
    assert walbudget.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "5 percent", "2GB", "-1MiB", "MiB", "1e9"])
def test_a_size_it_cannot_read_is_refused_with_the_forms_it_takes(text):
    with pytest.raises(ValueError, match="512MiB, 2GiB or a byte count"):
        walbudget.parse_size(text)


def test_a_budget_is_a_share_or_a_size_never_nothing():
    assert walbudget.parse_budget("5%") == (0.05, None)
    assert walbudget.parse_budget("100%") == (1.0, None)
    assert walbudget.parse_budget("256MiB") == (None, 256 * MIB)
    for text in ("0%", "150%", "0", "0MiB"):
        with pytest.raises(ValueError):
            walbudget.parse_budget(text)


def test_within_the_budget_nothing_is_asked():
    verdict = decide([backup("F", "0/10000000")], state("0/12000000"))  # 32 MiB of WAL
    assert verdict["due"] is False
    assert (verdict["wal"], verdict["budget"], verdict["newest"]) == (32 * MIB, 64 * MIB, "F")
    assert "32 MiB of WAL since backup F, within the budget of 64 MiB" in verdict["reason"]


def test_at_the_budget_an_incremental_backup_is_asked_for():
    verdict = decide([backup("F", "0/10000000")], state("0/14000000"))  # exactly 64 MiB
    assert verdict["due"] is True and verdict["wal"] == 64 * MIB
    assert "over the budget of 64 MiB" in verdict["reason"] and UNIT in verdict["reason"]


def test_the_wal_counts_from_the_newest_backup_not_the_first():
    backups = [backup("F", "0/10000000", stopped=100), backup("I", "0/13000000", stopped=900)]
    verdict = decide(backups, state("0/14000000"))
    assert (verdict["due"], verdict["wal"], verdict["newest"]) == (False, 16 * MIB, "I")


def test_a_share_is_of_the_databases_size_with_a_floor():
    over_share = decide([backup("F", "0/10000000")], state("0/16000000", size=1000 * MIB), "5%")
    assert over_share["budget"] == 50 * MIB and over_share["due"] is True  # 96 MiB written
    small = decide([backup("F", "0/10000000")], state("0/16000000", size=10 * MIB), "5%",
                   floor="128MiB")  # fmt: skip
    assert small["budget"] == 128 * MIB and small["due"] is False


def test_no_request_sooner_than_the_minimum_interval_after_the_newest_backup():
    backups = [backup("F", "0/10000000", stopped=4900)]
    verdict = decide(backups, state("0/30000000"), now=5000)
    assert verdict["due"] is False
    assert "the last backup was 100 s ago: the next request in 200 s" in verdict["reason"]
    assert decide(backups, state("0/30000000"), now=5200)["due"] is True


def test_no_second_request_while_the_first_has_brought_no_backup():
    backups = [backup("F", "0/10000000", stopped=1000)]
    verdict = decide(backups, state("0/30000000"), now=5000, last_request=4990)
    assert verdict["due"] is False and "the last request was 10 s ago" in verdict["reason"]
    assert decide(backups, state("0/30000000"), now=5300, last_request=4990)["due"] is True


def test_a_minimum_interval_of_zero_asks_at_every_check_over_the_budget():
    backups = [backup("F", "0/10000000", stopped=4999)]
    assert decide(backups, state("0/30000000"), now=5000, min_interval=0,
                  last_request=4999)["due"] is True  # fmt: skip


def test_no_request_while_a_backup_holds_the_lock():
    backups = [backup("F", "0/10000000", stopped=1000)]
    verdict = decide(backups, state("0/30000000"), now=5000, running=True)
    assert verdict["due"] is False and verdict["wal"] == 0x20000000
    assert "over the budget" in verdict["reason"] and "a backup is running" in verdict["reason"]
    assert decide(backups, state("0/30000000"), now=5000)["due"] is True


def test_no_backup_at_all_is_asked_for():
    verdict = decide([], state("0/3000000"))
    assert verdict["due"] is True and verdict["wal"] is None
    assert "no backup can start a restore of timeline 1" in verdict["reason"]


def test_after_a_pitr_only_backups_on_the_new_timelines_history_count():
    # Timeline 1 ended at 0/20000000 (a restore to that point made timeline 2). The backup
    # taken on timeline 1 after that point lies on the abandoned branch: a restore of timeline
    # 2 cannot start from it, however close its LSN.
    history = "1\t0/20000000\tbefore 2026-12-05 06:00:00+00\n"
    backups = [
        backup("before-fork", "0/10000000", timeline=1, stopped=100),
        backup("abandoned", "0/28000000", timeline=1, stopped=200),
    ]
    verdict = decide(backups, state("0/2A000000", timeline=2, history=history))
    assert verdict["newest"] == "before-fork" and verdict["wal"] == 0x1A000000
    assert verdict["due"] is True
    # Once a backup is taken on timeline 2, it is the one that counts.
    backups.append(backup("on-2", "0/29000000", timeline=2, stopped=300))
    verdict = decide(backups, state("0/2A000000", timeline=2, history=history))
    assert (verdict["newest"], verdict["wal"], verdict["due"]) == ("on-2", 16 * MIB, False)


def test_a_new_timeline_with_no_backup_on_its_history_is_over_the_budget():
    history = "1\t0/1000000\tno recovery target specified\n"
    verdict = decide([backup("late", "0/5000000", timeline=1)], state("0/6000000", timeline=2,
                     history=history))  # fmt: skip
    assert verdict["due"] is True and verdict["wal"] is None
    assert "timeline 2" in verdict["reason"]


def test_history_lines_and_comments():
    text = "# a comment\n1\t0/3000000\tone\n\n2\t1/0\ttwo\n"
    assert walbudget.ancestors(text) == {1: 0x3000000, 2: 1 << 32}
    assert walbudget.ancestors(None) == {}
