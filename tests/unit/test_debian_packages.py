"""A new machine gets every program the code runs: each one the source runs on this machine
maps to a Debian package in sparkops/programs.py, that package is in
scripts/debian-packages.txt (which scripts/bootstrap installs), and dpkg agrees the package
ships the program. The source is read by tests/unit/program_scan.py."""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

from sparkops import programs
from sparkops.artefacts import REPO_ROOT
from tests.unit.program_scan import scan, scan_source

# Where code that runs on this machine lives: the tests and their fixtures, the lab, the
# runbooks (their local executor runs the same argv as the ssh one), the test kit (lab S3,
# the pyinfra runner), the release build, the dashboard snapshot, the CLI, the benchmarks.
SCANNED = (
    "tests",
    "sparkops",
    "sparkops_cli",
    "signoff",
    "testkit",
    "lab",
    "runbooks",
    "deploys/release.py",
    "dashboards",
    "alerts",
    "app",
    "bench",
)
_PACKAGE_LINE = re.compile(r"[a-z0-9][a-z0-9+.-]+")


def listed_packages() -> list[str]:
    """The list as scripts/bootstrap reads it: lines that are not blank or comments."""
    lines = (REPO_ROOT / programs.PACKAGE_LIST).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def found() -> dict[str, list[str]]:
    return scan(REPO_ROOT, SCANNED)


def test_every_program_the_code_runs_has_a_package():
    known = programs.PACKAGES.keys() | programs.ON_HOSTS_ONLY.keys()
    unknown = {p: places[:3] for p, places in found().items() if p not in known}
    assert not unknown, (
        "programs run by the code with no Debian package in sparkops/programs.py PACKAGES "
        f"(add each with its package, and the package to {programs.PACKAGE_LIST}): {unknown}"
    )


def test_every_package_of_a_program_is_in_the_list_bootstrap_installs():
    listed = set(listed_packages())
    missing = {p: pkg for p, pkg in programs.PACKAGES.items() if pkg not in listed}
    assert not missing, f"packages not in {programs.PACKAGE_LIST}: {missing}"


def test_the_list_is_one_package_per_line_without_repeats():
    packages = listed_packages()
    bad = [line for line in packages if not _PACKAGE_LINE.fullmatch(line)]
    assert not bad, f"{programs.PACKAGE_LIST}: not a package name alone on its line: {bad}"
    assert len(packages) == len(set(packages)), sorted(p for p in packages if packages.count(p) > 1)


def test_the_map_names_only_programs_the_code_runs():
    """No stale entries: each mapped program is found by the scan or, where the scan cannot
    see it (inside a command string built for ssh), spelled as a command in the source."""
    seen = found()
    text = "\n".join(p.read_text() for part in SCANNED for p in _files(REPO_ROOT / part))
    stale = [
        p
        for p in {**programs.PACKAGES, **programs.ON_HOSTS_ONLY}
        if p not in seen and not re.search(rf"(^|[\s\"'(;&|/]){re.escape(p)} ", text, re.M)
    ]
    assert not stale, f"sparkops/programs.py maps programs no code runs: {stale}"


def test_dpkg_says_each_program_comes_from_its_package():
    """`dpkg -S` on the places a Debian package puts a program; merged /usr means dpkg may
    know a program under /bin while it is found under /usr/bin, so every place is asked."""
    candidates = {
        program: [f"{d}/{program}" for d in ("/usr/bin", "/bin", *programs.SEARCH_DIRS)]
        for program in programs.PACKAGES
    }
    paths = sorted({path for places in candidates.values() for path in places})
    result = subprocess.run(
        ["dpkg", "-S", *paths], capture_output=True, text=True, timeout=120, check=False
    )
    owners: dict[str, set[str]] = {}
    for line in result.stdout.splitlines():
        if line.startswith("diversion by"):
            continue
        packages, _, path = line.rpartition(": ")
        owners.setdefault(path, set()).update(p.split(":")[0] for p in packages.split(", "))
    wrong = {}
    for program, places in candidates.items():
        shipped_by = set().union(*(owners.get(path, set()) for path in places))
        if programs.PACKAGES[program] not in shipped_by:
            wrong[program] = f"mapped to {programs.PACKAGES[program]}, dpkg: {sorted(shipped_by)}"
    assert not wrong, (
        "programs the installed packages do not provide as sparkops/programs.py says "
        f"(is the package installed? run ./scripts/bootstrap): {wrong}"
    )


def test_a_missing_program_is_reported_with_its_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(programs, "SEARCH_DIRS", ())
    try:
        programs.require("stunnel4")
    except programs.ProgramMissing as exc:
        message = str(exc)
    else:
        raise AssertionError("require() found stunnel4 on an empty PATH")
    assert "stunnel4 package" in message and programs.PACKAGE_LIST in message
    assert "./scripts/bootstrap" in message


def test_the_scan_finds_each_way_code_runs_a_program():
    source = textwrap.dedent(
        '''
        import shutil, subprocess
        SERVER_BIN = "frob-server"
        SETUP_SCRIPT = """
        set -e
        # a comment that says run the rest
        mkthing "$ROOT" && FOO=1 exec /usr/sbin/thingd --flag
        """

        def f(executor, bindir, where):
            subprocess.run(["alpha", "-x"], check=True)
            subprocess.Popen([SERVER_BIN, "--port", "1"])
            executor.run([f"{bindir}/beta", "-D", where])
            shutil.which("gamma")
            programs.require("eta")
            "text".find("not-a-program")
            launcher = "exec delta --once | epsilon"
            subprocess.run(["sh", "-c", launcher])
            cmd = ["unshare", "--fork", "env", "X=1", "zeta", "arg"]
            subprocess.run([f"{where}/.venv/bin/pytest", "-q"])
            subprocess.run(["--not-a-program"])
            return cmd
        '''
    )
    assert set(scan_source(source)) == {
        "alpha", "frob-server", "beta", "gamma", "sh", "delta", "epsilon",
        "unshare", "env", "zeta", "mkthing", "thingd", "eta",
    }  # fmt: skip


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.rglob("*.py"))
