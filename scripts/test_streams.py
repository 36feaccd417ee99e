"""Run the suite as two pytest sessions at once: the lab tests and the rest.

Why: the lab tests spend most of their time waiting (SSH round trips, apt in the hosts,
systemd, polls against services in the lab's namespaces) and share one lab, so they run one
after the other; the other tests start their own PostgreSQL, pgBouncer, Redis and Patroni
on loopback ports they pick and share nothing with the lab. One after the other the whole
suite took about 40 minutes on a 2-core machine; side by side it takes about as long as the
lab alone.

Then, alone, the Patroni cluster lab (four hosts: the site deploy on a cluster, a switchover,
a cluster PITR and a host killed under orders, about 4 minutes): a second lab beside the
first would share two cores with both sessions, so it runs once the lab session has taken
its lab down.

Each session writes its own log and JUnit XML (build/test-streams/<name>.log and .xml, or
under $SPARKOPS_TEST_STREAMS_DIR); this prints a progress line
now and then, each log in full as its session ends, and a summary; it exits non-zero when
either session failed. Arguments are passed to both sessions (paths, -k, -x, --durations);
arguments that choose markers themselves (-m), or SPARKOPS_TEST_SERIAL=1, run one ordinary
pytest session instead.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR_ENV = "SPARKOPS_TEST_STREAMS_DIR"  # where the logs go (default build/test-streams)
# The default selection (pyproject's addopts) split in two by the lab marker, then the
# Patroni cluster lab (`ha_lab`, make test-ha-lab) on its own.
DEFAULT = "not ha_lab"
STREAMS = (("lab", f"lab and {DEFAULT}"), ("local", f"not lab and {DEFAULT}"))
PHASES = (STREAMS, (("ha_lab", "ha_lab"),))
_stopped: dict[str, int | None] = {"by": None}  # the signal that stopped the run, if any
SERIAL_ENV = "SPARKOPS_TEST_SERIAL"
PROGRESS_EVERY_S = 120
NO_TESTS_COLLECTED = 5  # pytest's exit code when a selection is empty
PERCENT = re.compile(r"\[\s*(\d+)%\]")
# "3 passed in 9.1s", "1 failed, 1285 passed, 123 deselected, 2 warnings in 1305.63s"
SUMMARY = re.compile(
    r"(\d+ (passed|failed|errors?|skipped|deselected)\b.*|no tests ran) in [\d.]+s"
)


def pytest_argv(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", *args]


def chooses_markers(args: list[str]) -> bool:
    return any(a.startswith("-m") for a in args)  # -m EXPR or -mEXPR


def progress(log: Path) -> str:
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return "starting"
    found = PERCENT.findall(tail)
    return f"{found[-1]}%" if found else "collecting"


def summary_line(log: Path) -> str:
    """pytest's last line ("3 passed, 1 failed in 9.1s"), with or without its rules (-q)."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if SUMMARY.search(ln)]
    return lines[-1].strip("= ") if lines else "(no summary: see the log)"


def run_streams(args: list[str]) -> int:
    """Every phase in turn, each one's sessions side by side; one exit code for all."""
    log_dir = Path(os.environ.get(LOG_DIR_ENV) or ROOT / "build" / "test-streams")
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    codes: dict[str, int] = {}
    logs: dict[str, Path] = {}
    for phase in PHASES:
        phase_codes, phase_logs = run_phase(phase, args, log_dir, started)
        codes.update(phase_codes)
        logs.update(phase_logs)
        if _stopped["by"] is not None:  # an operator's Ctrl-C (or CI's SIGTERM) ends it all
            print(f"test-streams: stopped by signal {_stopped['by']}: later phases not run")
            break
    print(f"\ntest-streams: {time.monotonic() - started:.0f} s in all", flush=True)
    for name, log in logs.items():
        print(f"test-streams: {name}: exit {codes[name]}: {summary_line(log)}", flush=True)
    return combined(codes.values())


def run_phase(
    streams: tuple[tuple[str, str], ...], args: list[str], log_dir: Path, started: float
) -> tuple[dict[str, int], dict[str, Path]]:
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    for name, expr in streams:
        log = log_dir / f"{name}.log"
        out = log.open("wb")
        # Each test's time and outcome too, for balancing the sessions (and for CI).
        argv = pytest_argv(["-m", expr, f"--junitxml={log_dir / name}.xml", *args])
        print(f"test-streams: {name}: {' '.join(argv[1:])} > {log}", flush=True)
        procs[name] = (
            subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT),
            log,
        )
        out.close()

    def forward(signum, _frame) -> None:
        _stopped["by"] = signum
        for proc, _log in procs.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)

    codes: dict[str, int] = {}
    last_progress = time.monotonic()
    while len(codes) < len(procs):
        time.sleep(1)
        for name, (proc, log) in procs.items():
            if name in codes or proc.poll() is None:
                continue
            codes[name] = proc.returncode
            took = time.monotonic() - started
            print(f"\n===== test-streams: {name} ended (exit {proc.returncode}, "
                  f"{took:.0f} s); its log: =====", flush=True)  # fmt: skip
            sys.stdout.write(log.read_text(errors="replace"))
            sys.stdout.flush()
        if time.monotonic() - last_progress >= PROGRESS_EVERY_S and len(codes) < len(procs):
            last_progress = time.monotonic()
            states = ", ".join(
                f"{name} {'done' if name in codes else progress(log)}"
                for name, (_proc, log) in procs.items()
            )
            print(f"test-streams: {time.monotonic() - started:.0f} s: {states}", flush=True)

    return codes, {name: log for name, (_proc, log) in procs.items()}


def combined(codes) -> int:
    """One exit code: the first failure; a session that selected nothing (the arguments chose
    only lab tests, say) is no failure, unless neither selected anything."""
    ran = [c for c in codes if c != NO_TESTS_COLLECTED]
    if not ran:
        return NO_TESTS_COLLECTED
    return next((c for c in ran if c != 0), 0)


def main(args: list[str]) -> int:
    if os.environ.get(SERIAL_ENV) == "1" or chooses_markers(args):
        return subprocess.call(pytest_argv(args), cwd=ROOT)
    return run_streams(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
