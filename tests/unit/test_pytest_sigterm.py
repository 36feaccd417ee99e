"""SIGTERM to a pytest session runs its fixtures' teardown (testkit/pytest_sigterm.py): a
cancelled CI run leaves no server behind. Without the plugin the teardown never runs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SESSION = """
import time
import pytest

@pytest.fixture(scope="session")
def server(tmp_path_factory):
    yield
    open({marker!r}, "w").write("torn down")

def test_runs_long(server):
    open({started!r}, "w").write("started")
    time.sleep(60)
"""


def _terminated(tmp_path: Path, *plugin: str) -> tuple[subprocess.CompletedProcess, Path]:
    marker, started = tmp_path / "torn-down", tmp_path / "started"
    (tmp_path / "test_session.py").write_text(
        SESSION.format(marker=str(marker), started=str(started))
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         *plugin, "--rootdir", str(tmp_path), "-c", "/dev/null", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out), marker


def test_sigterm_ends_the_session_with_its_teardown(tmp_path):
    done, marker = _terminated(tmp_path, "-p", "testkit.pytest_sigterm")
    assert marker.read_text() == "torn down", done.stdout
    assert done.returncode == pytest.ExitCode.INTERRUPTED, done.stdout


def test_without_it_the_teardown_never_runs(tmp_path):
    done, marker = _terminated(tmp_path)
    assert not marker.exists() and done.returncode == -signal.SIGTERM, done.stdout
