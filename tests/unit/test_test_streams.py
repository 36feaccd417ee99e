"""scripts/test_streams.py: `make test` as two pytest sessions side by side (the lab's and the
rest), then the Patroni cluster lab alone."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "test_streams.py"
_spec = importlib.util.spec_from_file_location("test_streams", SCRIPT)
streams = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(streams)


def test_the_two_selections_cover_the_default_one_without_overlap():
    (lab, lab_expr), (local, local_expr) = streams.STREAMS
    assert (lab, local) == ("lab", "local")
    assert lab_expr == f"lab and {streams.DEFAULT}"
    assert local_expr == f"not lab and {streams.DEFAULT}"
    addopts = (ROOT / "pyproject.toml").read_text()
    assert f"-m '{streams.DEFAULT}'" in addopts  # the same default as a plain `pytest`
    # What the default leaves out runs after them, alone: together, every test.
    assert streams.PHASES == (streams.STREAMS, (("ha_lab", "ha_lab"),))
    assert streams.DEFAULT == "not ha_lab"


def test_a_signal_ends_the_run_before_the_next_phase(tmp_path, monkeypatch, capsys):
    ran = []

    def phase(sessions, _args, log_dir, _started):
        ran.append([name for name, _expr in sessions])
        streams._stopped["by"] = 15  # SIGTERM arrived while this phase ran
        log = log_dir / "x.log"
        log.write_text("1 passed in 1.0s\n")
        return {name: 0 for name, _ in sessions}, {name: log for name, _ in sessions}

    monkeypatch.setattr(streams, "run_phase", phase)
    monkeypatch.setitem(streams._stopped, "by", None)
    monkeypatch.setenv(streams.LOG_DIR_ENV, str(tmp_path))
    assert streams.run_streams([]) == 0
    assert ran == [["lab", "local"]]
    assert "later phases not run" in capsys.readouterr().out


def test_one_exit_code_for_both():
    empty = streams.NO_TESTS_COLLECTED
    assert streams.combined([0, 0]) == 0
    assert streams.combined([0, 1]) == 1
    assert streams.combined([2, 0]) == 2
    assert streams.combined([empty, 0]) == 0
    assert streams.combined([empty, 1]) == 1
    assert streams.combined([empty, empty]) == empty


def test_the_summary_is_found_with_or_without_rules(tmp_path):
    log = tmp_path / "x.log"
    log.write_text(
        "tests/a.py ..  [ 50%]\n=== 1 failed, 1285 passed, 2 warnings in 1305.63s (0:21:45) ===\n"
    )
    assert streams.summary_line(log) == "1 failed, 1285 passed, 2 warnings in 1305.63s (0:21:45)"
    log.write_text("..\n3 passed in 9.10s\n")
    assert streams.summary_line(log) == "3 passed in 9.10s"
    log.write_text("ImportError while loading conftest\n")
    assert streams.summary_line(log) == "(no summary: see the log)"


def test_a_marker_choice_runs_one_session():
    assert streams.chooses_markers(["-m", "not lab"])
    assert streams.chooses_markers(["-mchaos", "-x"])
    assert not streams.chooses_markers(["--maxfail=1", "tests/unit"])


def test_a_run_of_local_tests_only_passes_and_says_so(tmp_path):
    # The lab session selects nothing here (exit 5): no failure.
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "tests/unit/test_money.py", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, streams.LOG_DIR_ENV: str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "test-streams: lab: exit 5" in proc.stdout
    assert "test-streams: local: exit 0" in proc.stdout
    assert "test-streams: ha_lab: exit 5" in proc.stdout  # ran after, selected nothing here
    assert " passed" in proc.stdout.rsplit("test-streams: local:", 1)[1]
    assert " passed" in (tmp_path / "local.log").read_text()
    assert "<testcase " in (tmp_path / "local.xml").read_text()
