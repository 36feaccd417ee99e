"""The place a restored copy goes (a drill's scratch copy, a restore onto a copy), checked
before anything is made, and torn down knowing exactly what this run made.

A scratch directory must not be, contain, or sit inside any cluster's data directory
(symlinks resolved; a directory with `PG_VERSION` or `postmaster.pid` is a data directory,
and so is the working directory of every running `postgres` process and every cluster Debian
lists), must be empty or not exist yet, and its port must be free. The teardown stops only a
server this run started (the pid it recorded) and removes only the files and directories
this run created.
"""

from __future__ import annotations

import secrets
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from runbooks.checklist import Refused, StepFailed
from runbooks.executor import Executor
from sparkops import layout

# Deep enough to find base/<oid>/PG_VERSION under a cluster's parent directory
# (/var/lib/postgresql/15 -> main/base/1/PG_VERSION), shallow enough to stay quick on /.
SEARCH_DEPTH = 4

_INSPECT = r"""
d={dir}; port={port}
r=$(realpath -m -- "$d")
echo "resolved=$r"
[ -e "$r" ] && echo exists=1
[ -d "$r" ] && echo isdir=1
[ -d "$r" ] && [ -n "$(ls -A -- "$r" 2>/dev/null | head -n 1)" ] && echo nonempty=1
[ -d "$(dirname -- "$r")" ] && echo parent_exists=1
[ -e "$r.log" ] && echo log_exists=1
a="$r"
while :; do
  [ -e "$a/PG_VERSION" ] || [ -e "$a/postmaster.pid" ] && echo "inside=$a"
  [ "$a" = / ] && break
  a=$(dirname -- "$a")
done
[ -d "$r" ] && find "$r" -maxdepth {depth} \( -name PG_VERSION -o -name postmaster.pid \) \
  -print 2>/dev/null | head -n 3 | sed 's/^/contains=/'
for p in /proc/[0-9]*; do
  [ "$(cat "$p/comm" 2>/dev/null)" = postgres ] && echo "running=$(readlink "$p/cwd")"
done | sort -u
command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null |
  while read -r _v _n _p _s _o dir _rest; do echo "cluster=$dir"; done
a="$r"; while [ ! -d "$a" ]; do a=$(dirname -- "$a"); done
[ "$(id -u)" = 0 ] && ! runuser -u {os_user} -- sh -c 'cd "$1"' _ "$a" 2>/dev/null &&
  echo "unreachable=$a"
ss -Hltn "sport = :$port" 2>/dev/null | head -n 1 | sed 's/^.*$/port_busy=1/'
exit 0
"""


@dataclass
class ScratchPlace:
    """What was there before the run (from `inspect`) and what the run made since."""

    requested: str
    resolved: str
    port: int
    existed: bool = False
    parent_existed: bool = True
    log_existed: bool = False
    own_parent: bool = False  # the command made the parent itself (a temporary directory)
    made_parent: bool = False
    made_dir: bool = False
    wrote: bool = False  # a restore began writing into the directory
    # A directory being made under a temporary name (make_whole): teardown removes it.
    staging: str | None = None
    # The copy's server was asked to start (its pid may not have been recorded: a run
    # interrupted or cut off mid-start); teardown then looks for it before removing anything.
    start_issued: bool = False
    started_pid: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def parent(self) -> str:
        return str(PurePosixPath(self.resolved).parent)

    @property
    def log(self) -> str:
        return f"{self.resolved}.log"


def _parse(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def _within(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def inspect(
    executor: Executor,
    data_dir: str,
    port: int,
    *,
    option: str,
    protected: tuple[str, ...] = (),
    own_parent: bool = False,
    os_user: str = "postgres",
) -> ScratchPlace:
    """Refuse (before anything is made) a directory or port that is not free for a copy.

    `option` names the command-line option in messages; `protected` adds data directories
    the caller knows of on this host (the source's)."""
    script = _INSPECT.format(
        dir=shlex.quote(data_dir), port=int(port), depth=SEARCH_DEPTH, os_user=shlex.quote(os_user)
    )
    facts = _parse(executor.run(["sh", "-c", script], timeout=60).stdout)
    resolved = facts.get("resolved", [data_dir])[0]
    shown = data_dir if resolved == data_dir else f"{data_dir} (resolves to {resolved})"
    hint = (
        f"give {option} a new or empty directory outside every cluster's data directory, "
        f"e.g. {layout.DRILL_SCRATCH_DIR}; nothing was touched"
    )
    clusters = sorted(
        {c for c in facts.get("running", []) + facts.get("cluster", []) if c}
        | {p for p in protected if p}
    )
    for cluster in clusters:
        if _within(resolved, cluster):
            what = "is" if resolved == cluster else "is inside"
            raise Refused(f"{option} {shown} {what} the data directory {cluster}", hint)
        if _within(cluster, resolved):
            raise Refused(f"{option} {shown} contains the data directory {cluster}", hint)
    for marker in facts.get("inside", []):
        raise Refused(f"{option} {shown} is or sits inside a data directory ({marker})", hint)
    for marker in facts.get("contains", []):
        raise Refused(f"{option} {shown} contains a data directory ({marker})", hint)
    if facts.get("exists") and not facts.get("isdir"):
        raise Refused(f"{option} {shown} exists and is not a directory", hint)
    if facts.get("nonempty"):
        raise Refused(
            f"{option} {shown} is not empty",
            f"{hint}; if an earlier run left a copy there, look at it and remove it yourself",
        )
    for where in facts.get("unreachable", []):
        raise Refused(
            f"{option} {shown}: the PostgreSQL user ({os_user}) cannot reach {where}",
            f"pick a directory {os_user} can reach (every parent searchable), e.g. "
            f"{layout.DRILL_SCRATCH_DIR}; nothing was touched",
        )
    if facts.get("port_busy"):
        raise Refused(
            f"port {port} is in use on {executor.name}",
            "pick a free port for the copy (--scratch-port / --to-port); nothing was touched",
        )
    return ScratchPlace(
        requested=data_dir,
        resolved=resolved,
        port=port,
        existed=bool(facts.get("exists")),
        parent_existed=bool(facts.get("parent_exists")),
        log_existed=bool(facts.get("log_exists")),
        own_parent=own_parent,
    )


def make(executor: Executor, place: ScratchPlace, os_user: str) -> None:
    """Create the directory (and its parent when missing), recording what was made; refuses
    a directory that filled up since it was inspected."""
    own = f"-m 700 -o {os_user} -g {os_user}"
    if not place.parent_existed:
        _make_whole(executor, place, place.parent, own)
        place.made_parent = True
    if place.existed:
        listing = executor.run(["ls", "-A", place.resolved], check=False)
        if not listing.ok or listing.stdout.strip():
            raise StepFailed(f"{place.resolved} is no longer empty: it was not touched")
        executor.run(["chown", f"{os_user}:{os_user}", place.resolved])
        executor.run(["chmod", "700", place.resolved])
    else:
        _make_whole(executor, place, place.resolved, own)
        place.made_dir = True


def _make_whole(executor: Executor, place: ScratchPlace, path: str, own: str) -> None:
    """Make `path` with its owner and mode in one step as others see it: under a temporary
    name beside it, then renamed. `install -d` alone makes the directory (root's, 0700 under
    a 0077 umask) before it gives it away: a run interrupted in between left one the
    PostgreSQL user cannot enter, which the next run refused as unreachable (seen once in
    the interrupted drill's rerun). The temporary name is recorded first, so teardown
    removes it when the run stops before the rename."""
    place.staging = f"{path}.sparkops-{secrets.token_hex(4)}"
    target, staging = shlex.quote(path), shlex.quote(place.staging)
    executor.run(
        [
            "sh",
            "-c",
            f"[ ! -e {target} ] && install -d {own} {staging} && mv -T -- {staging} {target}",
        ]
    )
    place.staging = None


# How long teardown waits for the postmaster.pid of a start whose outcome this run did not
# see: pg_ctl forks the postmaster into a session of its own, so it outlives a dropped
# connection or a killed pg_ctl, and writes that file within milliseconds of starting.
START_SETTLE_SECONDS = 2.0
_SETTLE_POLL_SECONDS = 0.1


def _postmaster_pid(executor: Executor, place: ScratchPlace, settle_seconds: float = 0.0) -> str:
    """The pid of the server running in the copy's directory (its postmaster.pid, when that
    process lives and is a postgres), "" when none runs; with `settle_seconds`, once a start
    in flight has had that long to write the file (one command on the host either way). A
    file left by a server that was killed (SIGKILL, the OOM killer) names a dead or reused
    pid: that is no server, and the copy may go. A command that fails (a dropped connection)
    raises: "could not look" must never read as "nothing runs"."""
    pidfile = shlex.quote(f"{place.resolved}/postmaster.pid")
    polls = int(settle_seconds / _SETTLE_POLL_SECONDS)
    script = (
        f"i=0; while [ ! -s {pidfile} ] && [ $i -lt {polls} ]; do "
        f"sleep {_SETTLE_POLL_SECONDS}; i=$((i+1)); done; "
        f"[ -e {pidfile} ] || {{ echo none; exit 0; }}; "
        f"pid=$(head -n 1 {pidfile}); "
        # Empty while a starting postmaster writes it: reported as is (not a server yet).
        'case "$pid" in ""|*[!0-9]*) echo "$pid"; exit 0;; esac; '
        'comm=$(cat /proc/$pid/comm 2>/dev/null) || comm=":unread:"; '
        'case "$comm" in '
        "postgres) if grep -qs '^State:[[:space:]]*Z' /proc/$pid/status; "
        'then echo none; else echo "$pid"; fi;; '
        # Unreadable: gone, or hidden from this user (/proc mounted with hidepid): only
        # "No such process" counts as gone, never a directory removed under a server.
        '":unread:") if LC_ALL=C kill -0 "$pid" 2>&1 | grep -q "No such process"; '
        'then echo none; else echo "$pid"; fi;; '
        "*) echo none;; "  # another program has the pid now
        "esac"
    )
    first = executor.run(["sh", "-c", script]).stdout.strip()
    return "" if first == "none" else first


def record_start(executor: Executor, place: ScratchPlace) -> None:
    """The postmaster pid this run started (its postmaster.pid), for the teardown."""
    first = _postmaster_pid(executor, place)
    place.started_pid = int(first) if first.isdigit() else None


def teardown(executor: Executor, place: ScratchPlace, stop) -> list[str]:
    """Undo what this run made, and only that; returns what was done (for the evidence).

    `stop` stops the copy's server; it is called only when the server running in the
    directory is the one this run started. Safe to run again after a failure."""
    done: list[str] = []
    if place.staging is not None:
        executor.run(["rm", "-rf", "--", place.staging])
        done.append(f"removed {place.staging} (a directory this run had not finished making)")
        place.staging = None
    first = ""
    if place.started_pid is not None:
        first = _postmaster_pid(executor, place)
    elif place.start_issued:
        # Asked to start, its pid never recorded: a server in the directory this run
        # restored is the one it started (nothing else could run there), and removing the
        # directory under it would leave it serving a deleted cluster on the copy's port.
        first = _postmaster_pid(executor, place, START_SETTLE_SECONDS)
        if first.isdigit():
            place.started_pid = int(first)
            done.append(f"found the copy's server (pid {first}) started before the run stopped")
    if place.started_pid is not None:
        if first == str(place.started_pid):
            stop()
            if _postmaster_pid(executor, place) == first:
                raise StepFailed(f"the copy's server (pid {first}) is still running")
            done.append(f"stopped the copy's server (pid {place.started_pid})")
        elif not first:
            done.append(f"the copy's server (pid {place.started_pid}) had already ended")
        else:
            raise StepFailed(
                f"a server this run did not start runs in {place.resolved} (pid {first}; "
                f"this run started {place.started_pid}): nothing removed"
            )
    if place.own_parent or place.made_parent:
        executor.run(["rm", "-rf", "--", place.parent])
        done.append(f"removed {place.parent} (made by this run)")
        return done
    if place.made_dir:
        executor.run(["rm", "-rf", "--", place.resolved])
        done.append(f"removed {place.resolved} (made by this run)")
    elif place.wrote:
        executor.run(["find", place.resolved, "-mindepth", "1", "-delete"])
        done.append(f"emptied {place.resolved} (it was empty before this run)")
    if not place.log_existed and (place.made_dir or place.wrote):
        executor.run(["rm", "-f", "--", place.log])
        done.append(f"removed {place.log}")
    return done


STILL_RUNS = "a server still runs in {}: nothing removed (stop it, then run this again)"


def teardown_command(place: ScratchPlace, stop_command: str) -> str | None:
    """The shell command an operator runs later to do what `teardown` does: stop the copy's
    server, then remove what this run made (and only that). None when it made nothing."""
    q = shlex.quote
    if place.own_parent or place.made_parent:
        remove = f"rm -rf -- {q(place.parent)}"
    elif place.made_dir:
        remove = f"rm -rf -- {q(place.resolved)}"
    elif place.wrote:
        remove = f"find {q(place.resolved)} -mindepth 1 -delete"
    else:
        return None
    if not (place.own_parent or place.made_parent) and not place.log_existed:
        remove += f" && rm -f -- {q(place.log)}"
    # `;` after the stop: a server already stopped makes pg_ctl fail, and the files must go
    # anyway; but never from under a server still running there (a stop that failed).
    pidfile = q(f"{place.resolved}/postmaster.pid")
    running = f'[ -f {pidfile} ] && kill -0 "$(head -n 1 {pidfile})" 2>/dev/null'
    refuse = f"echo {q(STILL_RUNS.format(place.resolved))} >&2; false"
    return f"{stop_command}; if {running}; then {refuse}; else {remove}; fi"
