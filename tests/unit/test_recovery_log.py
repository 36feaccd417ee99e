"""The restore bench's split of a recovery from PostgreSQL's log (pure parsing)."""

from __future__ import annotations

import pytest

from bench.recovery_log import PHASES, phases

# A restore in place ended by a promotion request (the bench's own run, trimmed).
PROMOTED = """\
2026-12-04 21:59:26.607 UTC [100] LOG:  checkpoint starting: shutdown immediate
2026-12-04 21:59:27.029 UTC [100] LOG:  database system is shut down
2026-12-04 21:59:28.878 UTC [200] LOG:  starting PostgreSQL 15.18 (Debian 15.18-0+deb12u1)
2026-12-04 21:59:29.131 UTC [201] LOG:  restored log file "000000010000000000000028" from archive
2026-12-04 21:59:29.151 UTC [201] LOG:  redo starts at 0/28000028
2026-12-04 21:59:29.168 UTC [201] LOG:  consistent recovery state reached at 0/28000100
2026-12-04 21:59:29.168 UTC [200] LOG:  database system is ready to accept read-only connections
2026-12-04 21:59:29.324 UTC [201] LOG:  restored log file "00000001000000000000002A" from archive
2026-12-04 21:59:30.244 UTC [201] LOG:  restored log file "000000010000000000000031" from archive
2026-12-04 21:59:30.503 UTC [201] LOG:  received promote request
2026-12-04 21:59:30.503 UTC [201] LOG:  redo done at 0/31000910 system usage: CPU: user: 0.42 s
2026-12-04 21:59:30.926 UTC [201] LOG:  restored log file "000000010000000000000031" from archive
2026-12-04 21:59:30.961 UTC [201] LOG:  selected new timeline ID: 2
2026-12-04 21:59:30.995 UTC [201] LOG:  archive recovery complete
2026-12-04 21:59:31.024 UTC [200] LOG:  database system is ready to accept connections
"""


def test_a_promoted_recovery_is_split_back_to_back():
    split = phases(PROMOTED)
    assert split is not None
    assert split["start"] == pytest.approx(0.290, abs=1e-3)
    assert split["redo"] == pytest.approx(1.076, abs=1e-3)  # to the last segment before redo done
    assert split["end_of_wal"] == pytest.approx(0.259, abs=1e-3)
    assert split["new_timeline"] == pytest.approx(0.458, abs=1e-3)  # the re-read counted here
    assert split["open"] == pytest.approx(0.063, abs=1e-3)
    assert sum(split[p] for p in PHASES) == pytest.approx(split["total"], abs=1e-6)
    assert split["total"] == pytest.approx(2.146, abs=1e-3)


def test_only_the_last_start_counts_and_an_unfinished_recovery_gives_none():
    earlier = PROMOTED.replace("21:59:", "21:50:")
    assert phases(earlier + PROMOTED) == phases(PROMOTED)
    unfinished = PROMOTED.split("2026-12-04 21:59:30.961")[0]
    assert phases(unfinished) is None
    assert phases("no timestamps here\n") is None
