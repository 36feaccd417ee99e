"""Run `pyinfra deploys/site.py` and read its results table: the e2e test and the benchmark.

pyinfra ends with a table whose last row is "Grand total  <hosts> <changed> <errors>
<no change>" ("-" for zero); `changed` counts operations that changed something, so a clean
second run reads `changed == 0`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from deploys.support import REPO_ROOT

_GRAND_TOTAL = re.compile(r"Grand total\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class RunResult:
    returncode: int
    seconds: float
    operations: int
    changed: int
    errors: int
    output: str

    def changed_operations(self) -> list[str]:
        """Rows of the results table with a non-zero "Success" (= changed) column."""
        rows = []
        for line in self.output.splitlines():
            words = line.split()
            if len(words) >= 5 and words[-4].isdigit() and words[-3] not in ("-", "Success"):
                rows.append(" ".join(words[:-4]))
        return [r for r in rows if r != "Grand total"]


def _count(word: str) -> int:
    return 0 if word == "-" else int(word)


def parse(output: str) -> tuple[int, int, int]:
    """(operations, changed, errors) from pyinfra's output; ValueError when there is no table."""
    matches = _GRAND_TOTAL.findall(_ANSI.sub("", output))
    if not matches:
        raise ValueError("pyinfra printed no results table (did it fail before running?)")
    hosts, changed, errors, _no_change = matches[-1]
    return _count(hosts), _count(changed), _count(errors)


def run_site(
    inventory: str = "inventories/lab.py",
    *,
    env: dict[str, str] | None = None,
    timeout: float = 1800,
    extra_args: tuple[str, ...] = (),
    dry: bool = False,
) -> RunResult:
    """`dry`: pyinfra --dry, which plans and prints the proposed changes (`-y` would skip
    that change detection) and executes nothing."""
    pyinfra = Path(sys.executable).parent / "pyinfra"
    mode = ["--dry"] if dry else ["-y"]
    cmd = [str(pyinfra), *mode, inventory, "deploys/site.py", *extra_args]
    started = time.monotonic()
    proc = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.monotonic() - started
    output = _ANSI.sub("", proc.stdout + proc.stderr)
    try:
        operations, changed, errors = parse(output)
    except ValueError:
        operations, changed, errors = 0, 0, 1
    return RunResult(proc.returncode, seconds, operations, changed, errors, output)
