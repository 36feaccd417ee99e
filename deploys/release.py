"""The app's release, built on the machine that runs pyinfra.

The hosts reach only the Debian mirror (through a proxy in the lab), not PyPI, so the release
is a tarball of wheels: this project's own wheel plus every dependency at the version
constraints.txt pins, built here with pip (which can reach PyPI) and installed on the host
with `pip install --no-index --find-links`. The release id is a digest of the sources that
go into the wheel, so an unchanged tree is the same release and a redeploy changes nothing.
Built releases are cached under ~/.cache/sparkops/releases/<id>/.

What ships is what the hosts run, nothing else (docs/layering.md): the foundation
(`sparkops`), the app, the runbooks (the db host's weekly drill) and the command line the units
call (`sparkops outbox run`, `sparkops app purge-idempotency-keys`, `sparkops drill`). The lab,
the dashboards and alerts builders, the sign-off checks, the deploys and the test kit stay on
the control machine, and so do their dependencies (pyproject's `control` extra: pyinfra,
grafanalib, boto3, jinja2, pyyaml). The README is not part of the release: editing it changes
no release id, so it restarts nothing.
"""

from __future__ import annotations

import email.parser
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from deploys.support import REPO_ROOT

# What the wheel is built from: the packages the hosts run, plus the build inputs.
SOURCE_DIRS = ("sparkops", "app", "runbooks", "sparkops_cli")
SOURCE_FILES = ("pyproject.toml", "constraints.txt")
# pyproject names a readme; the release's wheel gets this one line instead of README.md.
RELEASE_README = "Spark Ops: the app release (app, foundation, runbooks, command line).\n"
PROJECT = "spark-ops"
# The hosts' Python: Debian 12's python3 (3.11.2). Dependencies are resolved for it, so
# markers such as python_full_version < "3.11.3" pull what an older 3.11 needs (an extra
# wheel is harmless on a newer one), and only wheels for the hosts' platform are taken.
TARGET_PYTHON = "3.11.2"
TARGET_ABI = "cp311"
# glibc 2.36 (bookworm) runs manylinux wheels up to 2_36.
TARGET_PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)


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
        (src / "README.md").write_text(RELEASE_README)
        wheelhouse = work / "wheelhouse"
        pip = [sys.executable, "-m", "pip"]
        # The project's own wheel (pure Python), then its dependencies as the hosts need them.
        own_cmd = [*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheelhouse), str(src)]
        _run(own_cmd, release, timeout)
        (own,) = wheelhouse.glob("spark_ops-*.whl")
        platforms = [arg for p in TARGET_PLATFORMS for arg in ("--platform", p)]
        deps_cmd = [
            *pip, "download", "--quiet", "--only-binary=:all:", "--dest", str(wheelhouse),
            "--python-version", TARGET_PYTHON, "--implementation", "cp",
            "--abi", TARGET_ABI, "--abi", "abi3", "--abi", "none", *platforms,
            "--constraint", str(root / "constraints.txt"), str(own),
        ]  # fmt: skip
        _run(deps_cmd, release, timeout)
        # pip evaluates python_full_version markers for the Python running it, not the
        # target: fetch what the hosts' 3.11.2 needs on top (e.g. redis -> async-timeout).
        for _ in range(5):
            missing = missing_for_target(wheelhouse)
            if not missing:
                break
            _run([*deps_cmd[:-1], *missing], release, timeout)
        else:
            raise ReleaseError(f"release {release}: still missing {missing_for_target(wheelhouse)}")
        (work / "RELEASE").write_text(release + "\n")
        partial = target.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            tar.add(wheelhouse, arcname="wheelhouse")
            tar.add(work / "RELEASE", arcname="RELEASE")
        partial.replace(target)
    return target


def missing_for_target(wheelhouse: Path) -> list[str]:
    """Requirements of the wheels that apply on the hosts' Python and no wheel satisfies."""
    present: set[str] = set()
    required: list[Requirement] = []
    for wheel in sorted(wheelhouse.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = email.parser.Parser().parsestr(archive.read(name).decode())
        present.add(canonicalize_name(metadata["Name"]))
        required += [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]
    env = {"python_full_version": TARGET_PYTHON, "python_version": TARGET_PYTHON[:4], "extra": ""}
    missing = {
        canonicalize_name(r.name): f"{r.name}{r.specifier}"
        for r in required
        if canonicalize_name(r.name) not in present and (r.marker is None or r.marker.evaluate(env))
    }
    return sorted(missing.values())


def _run(cmd: list[str], release: str, timeout: float) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ReleaseError(f"pip {cmd[3]} failed for release {release}:\n{proc.stderr[-3000:]}")


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


def renamed(tarball: Path, name: str) -> Path:
    """The release `tarball` under another id (its RELEASE file rewritten), beside it: a second
    release to deploy and switch to like any new one (benchmarks, lab tests)."""
    target = tarball.parent.parent / name / "release.tar"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as src, tarfile.open(target, "w") as dst:
            for member in src.getmembers():
                if member.name == "RELEASE":
                    data = (name + "\n").encode()
                    member.size = len(data)
                    dst.addfile(member, io.BytesIO(data))
                else:
                    dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    return target


if __name__ == "__main__":  # `python -m deploys.release`: build and print the tarball path
    print(build())
