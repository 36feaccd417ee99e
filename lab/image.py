"""The lab's host image: debootstrap once, add packages once, cache both as tarballs.

Two tarballs live in the cache directory: debootstrap's minbase (slow to make, rarely
changes) and the host image built from it (systemd, sshd, python3 ...). The host image's
file name carries a hash of its recipe, so changing the package list or the masked units
builds a new image on the next `lab up`; an unchanged recipe reuses the cached file.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab import config
from lab.errors import LabError

# Bump when the build steps below change in a way the package list does not show.
RECIPE_VERSION = 1


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def _parse_one_line(text: str) -> list[AptSource]:
    found = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 4 or words[0] != "deb":
            continue
        words = [w for w in words[1:] if not w.startswith("[")]
        found.append(AptSource(words[0], (words[1],), tuple(words[2:])))
    return found


def _parse_deb822(text: str) -> list[AptSource]:
    found = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        for uri in fields.get("uris", "").split():
            found.append(
                AptSource(
                    uri,
                    tuple(fields.get("suites", "").split()),
                    tuple(fields.get("components", "main").split()),
                )
            )
    return found


def debian_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """This machine's Debian bookworm sources (the only mirror reachable from here)."""
    found: list[AptSource] = []
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text()
        found += _parse_deb822(text) if path.suffix == ".sources" else _parse_one_line(text)
    debian = [
        s
        for s in found
        if s.uri.startswith("http://")
        and s.uri.rstrip("/").rsplit("/", 1)[-1] in ("debian", "debian-security")
        and any(suite.startswith(config.SUITE) for suite in s.suites)
    ]
    if not any(s.uri.rstrip("/").endswith("/debian") for s in debian):
        raise LabError(
            "no plain-http Debian bookworm mirror in /etc/apt/sources.list*: the lab's "
            "debootstrap and its hosts' apt need one (e.g. http://deb.debian.org/debian)"
        )
    return debian


def main_mirror(sources: list[AptSource]) -> str:
    return next(s.uri for s in sources if s.uri.rstrip("/").endswith("/debian"))


def sources_list(sources: list[AptSource]) -> str:
    """A one-line-format sources.list with the given sources."""
    lines = ["# managed by Spark Ops lab: this machine's Debian mirror, reached via the proxy"]
    for s in sources:
        for suite in s.suites:
            lines.append(f"deb {s.uri} {suite} {' '.join(s.components)}")
    return "\n".join(lines) + "\n"


def machine_skips_valid_until() -> bool:
    """True when this machine's apt ignores Release expiry (a frozen snapshot mirror)."""
    out = subprocess.run(
        ["apt-config", "dump", "Acquire::Check-Valid-Until"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return '"false"' in out


def apt_options() -> str:
    """apt.conf lines every image build and host shares (besides the proxy)."""
    lines = [
        'APT::Install-Recommends "false";',
        'Acquire::Languages "none";',
    ]
    if machine_skips_valid_until():
        lines.append('Acquire::Check-Valid-Until "false";')
    return "\n".join(lines) + "\n"


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def base_tarball(sources: list[AptSource]) -> Path:
    name = f"debootstrap-{config.SUITE}-minbase-{_digest(main_mirror(sources))}.tar"
    return config.cache_dir() / name


def host_image(sources: list[AptSource]) -> Path:
    recipe = _digest(
        RECIPE_VERSION,
        config.SUITE,
        [(s.uri, s.suites, s.components) for s in sources],
        config.IMAGE_PACKAGES,
        config.MASKED_UNITS,
        apt_options(),
    )
    return config.cache_dir() / f"host-image-{config.SUITE}-{recipe}.tar"


def _run(args: list[str], what: str, timeout: float) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise LabError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def _tar_to(root: Path, target: Path) -> None:
    partial = target.with_suffix(".partial")
    _run(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."],
        f"packing {target.name}",
        timeout=600,
    )
    partial.rename(target)  # atomic: a half-written image is never picked up


def _build_base(sources: list[AptSource], target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="debootstrap-", dir=config.cache_dir()) as tmp:
        root = Path(tmp) / "root"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                config.SUITE,
                str(root),
                main_mirror(sources),
            ],
            "debootstrap",
            timeout=1200,
        )
        _tar_to(root, target)


# Runs inside the image root, in a private mount namespace (see _build_image).
_INSTALL_SCRIPT = """
set -e
mount -t proc proc "$ROOT/proc"
mount --rbind /dev "$ROOT/dev"
mount -t sysfs sysfs "$ROOT/sys"
printf '#!/bin/sh\\nexit 101\\n' > "$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive LC_ALL=C apt-get update -q
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
    apt-get install -y -q --no-install-recommends $PACKAGES
chroot "$ROOT" apt-get clean
rm -f "$ROOT/usr/sbin/policy-rc.d"
"""


def _build_image(sources: list[AptSource], base: Path, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="image-", dir=config.cache_dir()) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        _run(["tar", "--numeric-owner", "-C", str(root), "-xf", str(base)], "unpack", 600)
        (root / "etc/apt/sources.list").write_text(sources_list(sources))
        (root / "etc/apt/apt.conf.d/90sparkops-lab").write_text(apt_options())
        shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
        _run(
            [
                "unshare",
                "--mount",
                "--fork",
                "--kill-child",
                "env",
                f"ROOT={root}",
                f"PACKAGES={' '.join(config.IMAGE_PACKAGES)}",
                "sh",
                "-c",
                _INSTALL_SCRIPT,
            ],
            "installing the host image's packages",
            timeout=1800,
        )
        _finish_image(root)
        _tar_to(root, target)


def _finish_image(root: Path) -> None:
    """What every host shares: masked units, no host keys or machine id of the builder."""
    units = root / "etc/systemd/system"
    for unit in config.MASKED_UNITS:
        link = units / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")  # each host gets its own at start
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssh/sshd_config.d/sparkops-lab.conf").write_text(
        "# managed by Spark Ops lab\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "UseDNS no\n"
    )
    for lists in (root / "var/lib/apt/lists").glob("*_*"):
        lists.unlink()


def ensure_image(log: Callable[[str], None] = print) -> tuple[Path, float | None]:
    """The host image tarball, built when missing; returns (path, build seconds or None)."""
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is not installed: apt-get install -y debootstrap")
    cache = config.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    sources = debian_sources()
    image = host_image(sources)
    if image.exists():
        return image, None
    started = time.monotonic()
    base = base_tarball(sources)
    if not base.exists():
        log(f"building the debootstrap base ({config.SUITE} minbase) into {base} ...")
        _build_base(sources, base)
    log(f"building the host image {image.name} ...")
    _build_image(sources, base, image)
    for stale in cache.glob(f"host-image-{config.SUITE}-*.tar"):
        if stale != image:
            stale.unlink()  # one image per recipe; older recipes are never used again
    return image, time.monotonic() - started
