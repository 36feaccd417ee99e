"""The scratch directory of a copy (the drill, `restore --to-data-dir`) is made whole: its
parent and itself appear with their owner and mode at once (made under a temporary name,
then renamed), and a run stopped before the rename leaves nothing that the next run would
refuse: teardown removes the unfinished directory."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest

from runbooks import scratch
from runbooks.checklist import StepFailed
from runbooks.executor import LocalExecutor
from sparkops.localhost import free_port, make_workdir, service_user

OS_USER = service_user() or pwd.getpwuid(os.getuid()).pw_name


class StopsBeforeTheRename(LocalExecutor):
    """Runs the making command's `install -d` and stops there, as a run interrupted between
    making the directory and renaming it into place would."""

    def run(self, argv, **kwargs):
        script = argv[-1] if argv[:2] == ["sh", "-c"] else ""
        if " && mv -T -- " in script:
            super().run(["sh", "-c", script.split(" && mv -T -- ")[0]], **kwargs)
            raise StepFailed("interrupted before the rename")
        return super().run(argv, **kwargs)


def _place(executor, base: Path) -> scratch.ScratchPlace:
    return scratch.inspect(
        executor, str(base / "drill" / "data"), free_port(), option="--scratch-dir",
        os_user=OS_USER,
    )  # fmt: skip


def _leftovers(base: Path) -> list[str]:
    return sorted(p.name for p in base.rglob("*.sparkops-*"))


def test_the_parent_and_the_directory_appear_whole():
    base = make_workdir("scratch-make")
    executor = LocalExecutor()
    place = _place(executor, base)
    assert not place.parent_existed and not place.existed
    scratch.make(executor, place, OS_USER)
    for path in (base / "drill", base / "drill" / "data"):
        info = path.stat()
        assert pwd.getpwuid(info.st_uid).pw_name == OS_USER, path
        assert stat.S_IMODE(info.st_mode) == 0o700, path
    assert place.made_parent and place.made_dir and place.staging is None
    assert _leftovers(base) == []
    done = scratch.teardown(executor, place, stop=lambda: None)
    assert not (base / "drill").exists(), done


def test_a_run_stopped_before_the_rename_leaves_nothing_the_next_run_refuses():
    base = make_workdir("scratch-stopped")
    stopped = StopsBeforeTheRename()
    place = _place(stopped, base)
    with pytest.raises(StepFailed):
        scratch.make(stopped, place, OS_USER)
    assert place.staging and Path(place.staging).is_dir()  # made, not yet renamed
    assert not (base / "drill").exists()  # the name others see never half made
    done = scratch.teardown(stopped, place, stop=lambda: None)
    assert any("had not finished making" in line for line in done), done
    assert _leftovers(base) == [] and os.listdir(base) == []
    # The next run finds the place as the first did, and makes it.
    again = _place(LocalExecutor(), base)
    scratch.make(LocalExecutor(), again, OS_USER)
    assert (base / "drill" / "data").is_dir()
    scratch.teardown(LocalExecutor(), again, stop=lambda: None)


def _tree(base: Path) -> list[str]:
    return sorted(str(p.relative_to(base)) for p in base.rglob("*"))


@pytest.mark.parametrize(
    "case", ["parent made", "directory made", "empty directory given", "log was there"]
)
def test_the_printed_teardown_command_removes_what_teardown_removes(case):
    """A kept copy's (or a failed run's) TO UNDO command, run later by an operator, must do
    what the runbook's own teardown does: no more (the operator's directory, a log that was
    there) and no less (the parent the run made)."""
    trees = []
    for by in ("teardown", "command"):
        base = make_workdir(f"scratch-undo-{by}")
        (base / "mine").write_text("the operator's")  # beside the copy: must stay
        if case in ("directory made", "log was there"):
            (base / "drill").mkdir()
        if case == "empty directory given":
            (base / "drill" / "data").mkdir(parents=True)
        if case == "log was there":
            (base / "drill" / "data.log").write_text("an earlier run's log")
        place = _place(LocalExecutor(), base)
        scratch.make(LocalExecutor(), place, OS_USER)
        place.wrote = True
        (base / "drill" / "data" / "PG_VERSION").write_text("15\n")  # what a restore writes
        (base / "drill" / "data.log").write_text("the copy's server log\n")
        if by == "teardown":
            scratch.teardown(LocalExecutor(), place, stop=lambda: None)
        else:
            command = scratch.teardown_command(place, "true")
            assert command is not None
            assert LocalExecutor().run(["sh", "-c", command]).ok
        trees.append(_tree(base))
    assert trees[0] == trees[1]
    assert "mine" in trees[0]
    assert ("drill/data" in trees[0]) is (case == "empty directory given"), trees[0]
    assert ("drill" in trees[0]) is (case != "parent made"), trees[0]
    assert ("drill/data.log" in trees[0]) is (case == "log was there"), trees[0]


def test_the_printed_teardown_command_removes_nothing_from_under_a_running_server():
    """A stop that failed leaves the server running: the command says so and removes
    nothing (its files would go from under it); once it is stopped, the same command
    removes them."""
    base = make_workdir("scratch-undo-running")
    place = _place(LocalExecutor(), base)
    scratch.make(LocalExecutor(), place, OS_USER)
    place.wrote = True
    server = subprocess.Popen(["sleep", "60"])  # a process standing in for its postmaster
    try:
        (base / "drill" / "data" / "postmaster.pid").write_text(f"{server.pid}\n")
        command = scratch.teardown_command(place, "false")  # the stop failed
        assert command is not None
        refused = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
        assert refused.returncode != 0
        assert "a server still runs in" in refused.stderr and "nothing removed" in refused.stderr
        assert (base / "drill" / "data" / "postmaster.pid").exists()
    finally:
        server.kill()
        server.wait(timeout=10)
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (base / "drill").exists()
