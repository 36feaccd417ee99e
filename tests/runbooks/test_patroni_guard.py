"""An in-place restore onto a Patroni node is refused in the plan, before any command that
changes something runs (Patroni would restart the stopped node or promote a replica over it)."""

from __future__ import annotations

import pytest

from runbooks import pitr
from runbooks.checklist import Refused, Run
from runbooks.executor import Executor
from runbooks.target import DbTarget
from sparkops import layout


class _Recording(Executor):
    """Answers `test -e` for the files it is told exist; any other command is recorded and
    fails, so the test sees whether the plan got further than the guard."""

    def __init__(self, present: set[str]) -> None:
        super().__init__()
        self.present = present
        self.ran: list[list[str]] = []

    def _spawn(self, argv, *, user, env, input, timeout):
        if argv[:2] == ["test", "-e"]:
            return (0 if argv[2] in self.present else 1), "", ""
        self.ran.append(list(argv))
        return 1, "", "not in this test"


def _target(executor: Executor) -> DbTarget:
    return DbTarget(executor=executor, data_dir=layout.POSTGRES_DATA_DIR, service=None)


def test_in_place_restore_on_a_patroni_node_is_refused_before_anything_runs():
    executor = _Recording({layout.PATRONI_CONFIG})
    with pytest.raises(Refused) as refused:
        pitr.prepare(_target(executor), pitr.Request(kind="latest"), Run("restore"))
    assert "Patroni" in str(refused.value) and "--to-data-dir" in refused.value.hint
    assert executor.ran == []


def test_a_single_host_goes_on_to_read_the_repository():
    executor = _Recording(set())
    with pytest.raises(Exception):  # noqa: B017  (the recording executor fails everything)
        pitr.prepare(_target(executor), pitr.Request(kind="latest"), Run("restore"))
    assert any("pgbackrest" in " ".join(argv) for argv in executor.ran)
