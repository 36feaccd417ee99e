"""The app's release, built on the machine that runs pyinfra.

The hosts reach only the Debian mirror (through a proxy in the lab), not PyPI, so the release
is a tarball of wheels: this project's own wheel plus every dependency at the version
constraints.txt pins, built here with pip (which can reach PyPI) and installed on the host
with `pip install --no-index --find-links`. The release id is a digest of the sources that
go into the wheel, so an unchanged tree is the same release and a redeploy changes nothing.
Built releases are cached under ~/.cache/sparkops/releases/<id>/.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from deploys.support import REPO_ROOT

# What the wheel is built from (pyproject's package list, plus the build inputs).
SOURCE_DIRS = ("app", "sparkops", "dashboards", "alerts", "runbooks", "lab")
SOURCE_FILES = ("pyproject.toml", "constraints.txt", "README.md")
PROJECT = "spark-ops"


class ReleaseError(RuntimeError):
    """The release could not be built; the message says what failed."""


def cache_dir() -> Path:
    base = os.environ.get("SPARKOPS_RELEASE_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "sparkops" / "releases"


def source_files(root: Path = REPO_ROOT) -> list[Path]:
    files = [root / name for name in SOURCE_FILES if (root / name).exists()]
    for top in SOURCE_DIRS:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append(path)
    return files


def release_id(root: Path = REPO_ROOT) -> str:
    """`<version>-<12 hex digits of the sources' digest>`; the same tree gives the same id."""
    digest = hashlib.sha256()
    for path in source_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return f"{_version(root)}-{digest.hexdigest()[:12]}"


def _version(root: Path) -> str:
    for line in (root / "pyproject.toml").read_text().splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    raise ReleaseError("pyproject.toml has no version line")


def build(release: str | None = None, root: Path = REPO_ROOT, *, timeout: float = 900) -> Path:
    """The release tarball (wheelhouse/ + RELEASE), built once per id and cached."""
    release = release or release_id(root)
    target = cache_dir() / release / "release.tar"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sparkops-release-") as tmp:
        work = Path(tmp)
        # Build from a copy, so a build directory never lands in the working tree.
        src = work / "src"
        for path in source_files(root):
            dest = src / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        wheelhouse = work / "wheelhouse"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--wheel-dir",
            str(wheelhouse),
            "--constraint",
            str(root / "constraints.txt"),
            str(src),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise ReleaseError(f"pip wheel failed for release {release}:\n{proc.stderr[-3000:]}")
        (work / "RELEASE").write_text(release + "\n")
        partial = target.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            tar.add(wheelhouse, arcname="wheelhouse")
            tar.add(work / "RELEASE", arcname="RELEASE")
        partial.replace(target)
    return target


def selected(root: Path = REPO_ROOT) -> tuple[str, Path]:
    """(release id, tarball) to deploy: `SPARKOPS_RELEASE_TAR` (an artifact built earlier with
    `python -m deploys.release`) when set, else this working tree's release, built if needed."""
    pinned = os.environ.get("SPARKOPS_RELEASE_TAR")
    if pinned:
        path = Path(pinned)
        try:
            with tarfile.open(path) as tar:
                member = tar.extractfile("RELEASE")
                release = member.read().decode().strip() if member else ""
        except (OSError, KeyError, tarfile.TarError) as exc:
            msg = f"SPARKOPS_RELEASE_TAR={pinned}: not a release tarball ({exc})"
            raise ReleaseError(msg) from exc
        if not release:
            raise ReleaseError(f"SPARKOPS_RELEASE_TAR={pinned}: its RELEASE file is empty")
        return release, path
    release = release_id(root)
    return release, build(release, root)


if __name__ == "__main__":  # `python -m deploys.release`: build and print the tarball path
    print(build())
