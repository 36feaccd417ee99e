"""The app's releases on an app host, as the deploy lays them out:

    <root>/releases/<id>/   .installed (when complete), release.env, SCHEMA_HEAD, BAD (marked)
    <root>/current -> releases/<id>

and the health-gated switch between them: `activate()` is the Python twin of the deploy's
spark-app-activate script (switch, restart, gate on /readyz and /version, and on failure mark
the release BAD and return to the one it started from).
"""

from __future__ import annotations

import http.client
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from runbooks.checklist import Run, StepFailed, shielded
from runbooks.executor import CommandFailed, Executor
from runbooks.services import ServiceControl
from sparkops import layout
from sparkops.wait import DeadlineExceeded, wait_until

BAD_MARK = "BAD"
SCHEMA_HEAD_FILE = "SCHEMA_HEAD"
DEFAULT_GATE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Release:
    name: str
    installed_at: float
    bad: bool
    schema_head: str | None


@dataclass
class AppTarget:
    executor: Executor
    service: ServiceControl
    base_url: str  # where /readyz and /version answer, as reached from here
    db_revision: Callable[[], str | None]  # the database's schema revision
    root: str = layout.APP_ROOT
    label: str = "app"
    # How a `sparkops` command names this target (--host NAME [--inventory F], or
    # --target-file F): printed in the command that undoes an interrupted switch.
    command_args: str = ""

    @property
    def releases_dir(self) -> str:
        return f"{self.root}/releases"

    @property
    def current_link(self) -> str:
        return f"{self.root}/current"


_LIST = r"""(
cd {dir} 2>/dev/null || exit 0
for d in */; do
  d=${{d%/}}
  [ -e "$d/.installed" ] || continue
  head=$(cat "$d/{head}" 2>/dev/null || true)
  if [ -z "$head" ] && [ -x "$d/venv/bin/python" ]; then
    head=$("$d/venv/bin/python" -c 'from app import migrate; print(migrate.head())' 2>/dev/null)
  fi
  bad=; [ -e "$d/{bad}" ] && bad=bad
  printf '%s\t%s\t%s\t%s\n' "$d" "$(stat -c %Y "$d/.installed")" "$bad" "$head"
done
)"""
CURRENT_MARK = "@current "


@dataclass(frozen=True)
class Seen:
    """An app host's releases as one read found them."""

    current: str | None  # the release `current` points at (None: no link, or not a release)
    found: list[Release]  # installed, oldest first


def _list_script(app: AppTarget) -> str:
    return _LIST.format(dir=shlex.quote(app.releases_dir), head=SCHEMA_HEAD_FILE, bad=BAD_MARK)


def _parse_list(lines: list[str]) -> list[Release]:
    found = []
    for line in lines:
        if not line.strip():
            continue
        name, stamp, bad, head = [*line.split("\t"), "", "", ""][:4]
        found.append(Release(name, float(stamp or 0), bad == "bad", head.strip() or None))
    return sorted(found, key=lambda r: (r.installed_at, r.name))


def _release_of(link: str) -> str | None:
    link = link.strip()
    return link.rsplit("/", 1)[-1] if link else None


def list_releases(app: AppTarget) -> list[Release]:
    """Installed releases, oldest first (by when they were installed)."""
    out = app.executor.run(["sh", "-c", _list_script(app)], timeout=120).stdout
    return _parse_list(out.splitlines())


def current_release(app: AppTarget) -> str | None:
    result = app.executor.run(["readlink", app.current_link], check=False)
    return _release_of(result.stdout) if result.ok else None


def look_script(app: AppTarget) -> str:
    """A shell script printing what `parse_look` reads: `current`, then the releases."""
    link = shlex.quote(app.current_link)
    return f"printf '{CURRENT_MARK}%s\\n' \"$(readlink {link})\"\n{_list_script(app)}"


def parse_look(out: str) -> Seen:
    lines = out.splitlines()
    marks = [i for i, line in enumerate(lines) if line.startswith(CURRENT_MARK)]
    if not marks:
        raise ValueError(f"no {CURRENT_MARK.strip()} line in: {out[-300:]!r}")
    first = marks[0]
    return Seen(_release_of(lines[first][len(CURRENT_MARK) :]), _parse_list(lines[first + 1 :]))


def look(app: AppTarget) -> Seen:
    """`current` and the installed releases in one round trip."""
    return parse_look(app.executor.run(["sh", "-c", look_script(app)], timeout=120).stdout)


MOVED_EXIT = 3  # switch(expect=...): `current` is not where the plan read it


class CurrentMoved(StepFailed):
    """`current` changed between the plan's read and the switch: nothing was switched."""


def switch(app: AppTarget, release: str, expect: str | None = None) -> None:
    """Point `current` at the release atomically: a new link renamed over the old one. With
    `expect`, only when `current` still points at that release (checked in the same command,
    so a plan's read is not repeated), else CurrentMoved and nothing changes."""
    link, tmp = app.current_link, f"{app.current_link}.tmp"
    script = f"ln -sfn releases/{shlex.quote(release)} {tmp} && mv -T {tmp} {link}"
    if expect is not None:
        script = (
            f'now=$(readlink {link}); [ "$now" = releases/{shlex.quote(expect)} ] '
            f'|| {{ echo "$now"; exit {MOVED_EXIT}; }}; {script}'
        )
    result = app.executor.run(["sh", "-c", script], check=False)
    if expect is not None and result.returncode == MOVED_EXIT:
        now = _release_of(result.stdout) or "nothing"
        raise CurrentMoved(
            f"{app.current_link} on {app.label} points at {now}, not at {expect} as the plan "
            f"read it (switched by someone else since): nothing was switched; plan again"
        )
    if not result.ok:
        raise CommandFailed(result)


def mark_bad(app: AppTarget, release: str, reason: str) -> None:
    path = f"{app.releases_dir}/{release}/{BAD_MARK}"
    app.executor.run(["sh", "-c", f"printf '%s\\n' {shlex.quote(reason)} > {path}"])


def _get(base_url: str, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET over plain HTTP (the app's port on its host): the standard library's client, as
    httpx's import alone took a fifth of a rollback's start."""
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)
    try:
        conn.request("GET", url.path.rstrip("/") + path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def healthy(app: AppTarget, release: str, timeout: float) -> tuple[bool, str]:
    """/readyz answers 200 and /version names `release`, before the deadline."""
    seen = {"detail": "no answer"}

    def probe() -> bool:
        try:
            ready, _ = _get(app.base_url, "/readyz")
            status, body = _get(app.base_url, "/version")
            version = json.loads(body).get("release") if status == 200 else None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            seen["detail"] = f"no answer: {exc}"
            return False
        seen["detail"] = f"/readyz {ready}, /version {version!r}"
        return ready == 200 and version == release

    try:
        wait_until(probe, timeout=timeout, what=f"release {release} to be healthy", interval=0.2)
        return True, seen["detail"]
    except DeadlineExceeded:
        return False, f"not healthy in {timeout:.0f} s: {seen['detail']}"


def activate(
    app: AppTarget,
    release: str,
    run: Run,
    gate_timeout: float,
    *,
    origin: str | None = None,
    clear_bad: bool = True,
) -> bool:
    """Switch to `release` gated on health; on failure mark it BAD and go back. Returns
    whether `release` is live; raises StepFailed when neither release is healthy.

    `origin`: the release `current` points at as a plan read it; the switch checks it is
    still so (CurrentMoved otherwise) instead of reading it again. `clear_bad=False`: the
    release was not marked BAD when planned, so there is no mark to clear once it passes.
    Both spare a round trip to the host while it is out of service.

    Interrupted anywhere between the switch and a passed gate (a signal, a lost connection),
    it goes back to the release it started from before the interruption goes on: `current`
    never stays on a release that has not passed its gate."""
    expect = origin
    if origin is None:
        origin = current_release(app)
    started = time.monotonic()
    try:
        with run.step(f"Switch current to {release}"):
            switch(app, release, expect=expect)
        with run.step("Restart the app"):
            app.service.restart()
        with run.step(f"Health gate: /readyz and /version = {release}"):
            ok, detail = healthy(app, release, gate_timeout)
            run.note(detail)
    except CurrentMoved:
        raise  # nothing was switched: nothing to go back from
    except BaseException:
        if origin and origin != release:
            with shielded():
                _return_after_interruption(app, origin, release, run, gate_timeout)
        raise
    run.check(f"release {release} healthy", ok, detail)
    if ok:
        run.facts["switch_seconds"] = round(time.monotonic() - started, 3)
        # A release that passes its gate is good again (a forced retry of a BAD one); a stale
        # mark left behind (the host did not answer) only makes rollbacks skip it.
        if clear_bad:
            app.executor.run(["rm", "-f", f"{app.releases_dir}/{release}/{BAD_MARK}"], check=False)
        return True
    with run.step(f"Mark {release} bad"):
        mark_bad(app, release, f"health gate failed: {detail}")
    if not origin or origin == release:
        raise StepFailed(f"release {release} is not healthy and there is no other to return to")
    back, back_detail = _return_to(app, origin, run, gate_timeout)
    run.check(f"returned to {origin}", back, back_detail)
    if not back:
        raise StepFailed(
            f"{release} failed its health gate and {origin} did not come back "
            f"either ({back_detail}): the app is down, look at its log"
        )
    return False


def _return_to(app: AppTarget, origin: str, run: Run, gate_timeout: float) -> tuple[bool, str]:
    with run.step(f"Return to {origin}"):
        switch(app, origin)
        app.service.restart()
        back, detail = healthy(app, origin, gate_timeout)
        run.note(detail)
    return back, detail


def _return_after_interruption(
    app: AppTarget, origin: str, release: str, run: Run, gate_timeout: float
) -> None:
    """The cleanup of an interrupted switch; records the state it leaves (run.left)."""
    try:
        back, detail = _return_to(app, origin, run, gate_timeout)
    except Exception as exc:  # the host may be gone: say what is known and what to run
        back, detail = False, f"could not return: {str(exc).splitlines()[0]}"
    now = _ask_current(app)
    lines = [
        f"{app.label}: current -> {now or 'unknown (host did not answer)'}; "
        f"{origin} healthy: {'yes' if back else 'NO'} ({detail})",
        f"{release} was not verified: it is not live",
    ]
    undo = None
    if not back or now != origin:
        where = app.command_args or f"--host {app.label}"
        undo = f"sparkops rollback --to {origin} {where} --force --yes"
    run.leave(run.left + lines, undo or run.undo)


def _ask_current(app: AppTarget) -> str | None:
    try:
        return current_release(app)
    except Exception:
        return None
