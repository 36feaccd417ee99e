"""Service control, one interface for the three ways a runbook starts and stops things.

- `SystemdService`: units on a real or lab host (`systemctl`); `PostgresSystemdService`, the
  PostgreSQL unit, also reads the server's settings while it is stopped.
- `PgCtlService`: a PostgreSQL data directory driven by `pg_ctl` (the throwaway clusters,
  scratch restores).
- `ProcessService`: a process started from a command line and stopped by its pid (a local
  stand-in for the app's systemd unit in the tests and the benchmark).

Runbooks call `start()`, `stop()`, `restart()` and `is_active()` and never know which.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from runbooks.executor import CommandFailed, Executor
from sparkops import defaults, layout
from sparkops.wait import DeadlineExceeded, wait_until


class ServiceControl:
    description = "service"

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_active(self) -> bool:
        raise NotImplementedError

    def log_tail(self) -> str:
        return ""

    def start_command(self) -> str:
        """What an operator types on the host to start it (printed in a state report)."""
        raise NotImplementedError

    def configured_setting(self, name: str) -> str | None:
        """A PostgreSQL setting as the server would start with it, read without starting
        it (`postgres -C`); None when this service is not PostgreSQL or the read failed."""
        return None

    def stop_command(self) -> str:
        raise NotImplementedError


@dataclass
class SystemdService(ServiceControl):
    executor: Executor
    units: tuple[str, ...]
    timeout: float = 300.0
    # Units whose failed state a restart clears too (the socket a service is activated by).
    also_reset: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        return f"systemd {' '.join(self.units)} on {self.executor.name}"

    def start(self) -> None:
        self.executor.run(["systemctl", "start", *self.units], timeout=self.timeout)

    def stop(self) -> None:
        self.executor.run(["systemctl", "stop", *self.units], timeout=self.timeout)

    def restart(self) -> None:
        # A restart asked for is not a crash loop: systemd's start rate limit (5 starts in
        # 10 s by default) would refuse it after a few quick ones ("start of the service was
        # attempted too often") and fail a socket-activated service's socket with it, leaving
        # the service down. reset-failed flushes the counter (and the socket's failed state:
        # also_reset), in the same command: no extra round trip.
        units = shlex.join(self.units)
        extra = shlex.join(self.also_reset)
        script = f"systemctl reset-failed {units} {extra} 2>/dev/null; systemctl restart {units}"
        self.executor.run(["sh", "-c", script], timeout=self.timeout)

    def is_active(self) -> bool:
        """Running, or still starting: "activating" is not stopped (PostgreSQL's unit stays
        there for seconds after the server takes connections, see PostgresSystemdService)."""
        result = self.executor.run(["systemctl", "is-active", self.units[0]], check=False)
        state = result.stdout.strip()
        if not result.ok and not state:  # no state printed: the command itself failed
            raise CommandFailed(result)
        return result.ok or state == "activating"

    def log_tail(self) -> str:
        return self.executor.run(
            ["journalctl", "-u", self.units[0], "-n", "20", "--no-pager"], check=False
        ).output()

    def start_command(self) -> str:
        return f"systemctl start {' '.join(self.units)}"

    def stop_command(self) -> str:
        return f"systemctl stop {' '.join(self.units)}"


def _postgres_setting(
    executor: Executor, bindir: str, user: str, config_dir: str, name: str
) -> str | None:
    result = executor.run(
        [f"{bindir}/postgres", "-D", config_dir, "-C", name], user=user, check=False, timeout=60
    )
    value = result.stdout.strip()
    return value if result.ok and value else None


@dataclass
class PostgresSystemdService(SystemdService):
    """Debian's PostgreSQL unit: its configuration lives apart from the data directory."""

    config_dir: str = layout.POSTGRES_CONF_DIR
    bindir: str = layout.POSTGRES_BINDIR
    user: str = "postgres"
    socket_dir: str = layout.SOCKET_DIR
    port: int = defaults.POSTGRES_PORT
    data_dir: str = layout.POSTGRES_DATA_DIR

    def configured_setting(self, name: str) -> str | None:
        return _postgres_setting(self.executor, self.bindir, self.user, self.config_dir, name)

    def stop(self) -> None:
        """`systemctl stop`, after PostgreSQL's fast shutdown when the unit is still starting.

        Stopping an "activating" unit (start() returns before Debian's `pg_ctlcluster start`
        has finished; a restore interrupted then and run again stops it seconds later)
        cancels the start: systemd kills pg_ctlcluster and sends SIGTERM to the postmaster,
        which is PostgreSQL's *smart* shutdown: it waits for every session to end, and
        pgBouncer, paused by the restore, keeps its server connections, so the server never
        stops (seen on the lab: the unit in "deactivating (final-sigterm)" for the hour of
        its stop timeout). Debian's ExecStop, a fast shutdown, runs only for a started unit.
        So the fast shutdown is asked for here (SIGINT to the postmaster its postmaster.pid
        names, when that process is a postgres), waited for, and then the unit stopped.
        The deploy's drop-in (KillSignal=SIGINT) makes systemd's own stop a fast shutdown
        too; this step stays for hosts deployed before it."""
        polls = str(int(self.timeout / _START_POLL_SECONDS))
        args = [self.units[0], f"{self.data_dir}/postmaster.pid", polls]
        self.executor.run(
            ["sh", "-c", _STOP_SCRIPT, "stop-postgresql", *args], timeout=2 * self.timeout + 10
        )

    def start(self) -> None:
        """Returns once the server takes connections, as `pg_ctl -w` would, not when
        `systemctl start` does: Debian's `pg_ctlcluster start` then sleeps 0.5 s and wants
        three connections in a row 0.5 s apart, 2 s or more of every restore in which the
        server waits for the runbook's promotion request. The unit finishes starting in
        the background ("activating" until then, which `is_active` counts as running); a
        start that fails before the server answers fails here, with the unit's journal."""
        polls = str(int(self.timeout / _START_POLL_SECONDS))
        isready = f"{self.bindir}/pg_isready"
        args = [self.units[0], isready, self.socket_dir, str(self.port), polls]
        self.executor.run(
            ["sh", "-c", _START_SCRIPT, "start-postgresql", *args], timeout=self.timeout + 10
        )


# The poll runs on the host: a round trip per poll over SSH would cost more than it saves.
# systemctl's own output is dropped (it may outlive this script, which must not keep the
# session's pipes open); the journal says more than its "see journalctl" anyway.
_START_POLL_SECONDS = 0.1
_START_SCRIPT = f"""unit=$1 isready=$2 sockdir=$3 port=$4 polls=$5
systemctl start "$unit" >/dev/null 2>&1 &
job=$!
i=0
while [ "$i" -lt "$polls" ]; do
  "$isready" -q -h "$sockdir" -p "$port" && exit 0
  if ! kill -0 "$job" 2>/dev/null; then
    wait "$job" && exit 0
    echo "systemctl start $unit failed, its journal:" >&2
    journalctl -u "$unit" -n 20 --no-pager >&2
    exit 1
  fi
  sleep {_START_POLL_SECONDS}
  i=$((i+1))
done
echo "PostgreSQL took no connections in time; systemctl start $unit goes on" >&2
exit 1
"""


_STOP_SCRIPT = f"""unit=$1 pidfile=$2 polls=$3
if [ "$(systemctl is-active "$unit")" = activating ] && [ -f "$pidfile" ]; then
  pid=$(head -n 1 "$pidfile")
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ]; then
    echo "$unit is still starting: asking PostgreSQL ($pid) for a fast shutdown first" >&2
    kill -INT "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt "$polls" ]; do
      sleep {_START_POLL_SECONDS}
      i=$((i+1))
    done
  fi
fi
systemctl stop "$unit"
"""


# pg_controldata's names for the settings a standby or recovering copy must not lower.
_CONTROLDATA_SETTINGS = {
    "max_connections setting": "max_connections",
    "max_worker_processes setting": "max_worker_processes",
    "max_wal_senders setting": "max_wal_senders",
    "max_prepared_xacts setting": "max_prepared_transactions",
    "max_locks_per_xact setting": "max_locks_per_transaction",
}


def recovery_minimums(controldata: str) -> dict[str, str]:
    found = {}
    for line in controldata.splitlines():
        label, _, value = line.partition(":")
        name = _CONTROLDATA_SETTINGS.get(label.strip())
        if name and value.strip().isdigit():
            found[name] = value.strip()
    return found


@dataclass
class PgCtlService(ServiceControl):
    """`pg_ctl` on a data directory, as the PostgreSQL OS user; `options` become `-c` flags."""

    executor: Executor
    datadir: str
    logfile: str
    options: dict[str, str] = field(default_factory=dict)
    user: str = "postgres"
    bindir: str = layout.POSTGRES_BINDIR
    timeout: float = 600.0

    @property
    def description(self) -> str:
        return f"pg_ctl -D {self.datadir} on {self.executor.name}"

    def _opts(self, options: dict[str, str]) -> str:
        return " ".join(f"-c {k}={shlex.quote(str(v))}" for k, v in options.items())

    def configured_setting(self, name: str) -> str | None:
        # The options are passed with -c at start and win over the configuration files.
        if name in self.options:
            return str(self.options[name])
        return _postgres_setting(self.executor, self.bindir, self.user, self.datadir, name)

    def recovery_minimums(self) -> dict[str, str]:
        """Settings recovery needs at least as high as on the primary, from the copy's own
        control file. A restored copy started with pg_ctl does not read the primary's
        /etc/postgresql configuration, and recovery refuses to run below these."""
        result = self.executor.run(
            [f"{self.bindir}/pg_controldata", self.datadir], user=self.user, check=False
        )
        if not result.ok:
            return {}
        return recovery_minimums(result.stdout)

    def start(self) -> None:
        options = dict(self.options)
        for name, value in self.recovery_minimums().items():
            current = options.get(name)
            if current is None or not current.isdigit() or int(current) < int(value):
                options[name] = value
        # -w waits for the end of recovery only up to consistency; callers wait for promotion.
        self.executor.run(
            [
                f"{self.bindir}/pg_ctl",
                "-D",
                self.datadir,
                "-l",
                self.logfile,
                "-o",
                self._opts(options),
                "-w",
                "-t",
                str(int(self.timeout)),
                "start",
            ],
            user=self.user,
            timeout=self.timeout + 10,
        )

    def stop(self) -> None:
        if not self.is_active():
            return
        self.executor.run(
            [
                f"{self.bindir}/pg_ctl",
                "-D",
                self.datadir,
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(self.timeout)),
                "stop",
            ],
            user=self.user,
            timeout=self.timeout + 10,
        )

    def is_active(self) -> bool:
        result = self.executor.run(
            [f"{self.bindir}/pg_ctl", "-D", self.datadir, "status"], user=self.user, check=False
        )
        # 0 running, 3 not running, 4 no data directory; anything else (a dropped connection)
        # is not an answer, and "could not look" must never read as "not running".
        if result.returncode not in (0, 3, 4):
            raise CommandFailed(result)
        return result.ok

    def log_tail(self) -> str:
        return self.executor.run(["tail", "-n", "20", self.logfile], check=False).output()

    def _as_user(self, action: str) -> str:
        pg_ctl = f"{self.bindir}/pg_ctl -D {shlex.quote(self.datadir)}"
        return f"runuser -u {self.user} -- {pg_ctl} {action}"

    def start_command(self) -> str:
        return self._as_user(
            f"-l {shlex.quote(self.logfile)} -o {shlex.quote(self._opts(self.options))} start"
        )

    def stop_command(self) -> str:
        return self._as_user("-m fast stop")


@dataclass
class ProcessService(ServiceControl):
    """A local process from `argv`, its environment read from `env_files` at each start (as
    systemd reads `EnvironmentFile=`), known by the pid in `pidfile`: a later command (another
    `sparkops` run) stops it the way systemd would, by that pid's process group."""

    argv: list[str]
    pidfile: Path
    env: dict[str, str] = field(default_factory=dict)
    env_files: list[Path] = field(default_factory=list)
    logfile: Path | None = None
    stop_timeout: float = 15.0
    description: str = "local process"

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        for path in self.env_files:
            for line in Path(path).read_text().splitlines():
                if "=" in line and not line.lstrip().startswith("#"):
                    key, value = line.split("=", 1)
                    value = value.strip()
                    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                        value = value[1:-1]  # systemd strips one pair of quotes too
                    env[key.strip()] = value
        return env

    def pid(self) -> int | None:
        try:
            return int(Path(self.pidfile).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> None:
        from runbooks.checklist import deferred  # lazy: the checklist imports the executor

        log = open(self.logfile, "ab") if self.logfile else subprocess.DEVNULL  # noqa: SIM115
        try:
            # Not cut by an interruption before its pid is written: else a process nobody
            # knows would hold the port (runbooks.checklist.deferred).
            with deferred():
                proc = subprocess.Popen(
                    self.argv,
                    env=self._environment(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
                Path(self.pidfile).write_text(f"{proc.pid}\n")
                _children[proc.pid] = proc  # reaped in stop(): no zombie left behind
        finally:
            if log is not subprocess.DEVNULL:
                log.close()

    def stop(self) -> None:
        pid = self.pid()
        if pid is None or not _alive(pid):
            Path(self.pidfile).unlink(missing_ok=True)
            return
        os.killpg(pid, signal.SIGTERM)
        try:
            wait_until(
                lambda: not _alive(pid), timeout=self.stop_timeout, what=f"process {pid} to exit"
            )
        except DeadlineExceeded:
            os.killpg(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), timeout=10, what=f"process {pid} to die")
        child = _children.pop(pid, None)
        if child is not None:
            child.wait(timeout=10)
        Path(self.pidfile).unlink(missing_ok=True)

    def is_active(self) -> bool:
        pid = self.pid()
        return pid is not None and _alive(pid)

    def start_command(self) -> str:
        return " ".join(shlex.quote(a) for a in self.argv)

    def stop_command(self) -> str:
        return f"kill -TERM -- -$(cat {shlex.quote(str(self.pidfile))})"

    def log_tail(self) -> str:
        if not self.logfile or not Path(self.logfile).exists():
            return ""
        return "\n".join(Path(self.logfile).read_text(errors="replace").splitlines()[-20:])


_children: dict[int, subprocess.Popen] = {}


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def alone_settings(data_dir: str) -> dict[str, str]:
    """What PostgreSQL started alone on a restored Patroni node must not take from the
    backup's postgresql.conf, which Patroni wrote for the node that was primary then: its
    addresses (loopback only while the restore is checked), its configuration files' paths,
    and above all its synchronous standby, which would hold every commit forever."""
    return {
        "listen_addresses": "127.0.0.1",
        "synchronous_standby_names": "",
        "hba_file": f"{data_dir}/pg_hba.conf",
        "ident_file": f"{data_dir}/pg_ident.conf",
    }


@dataclass
class PatroniNodePostgres(ServiceControl):
    """PostgreSQL on a Patroni node, for a restore: `stop` stops Patroni (which stops its
    PostgreSQL and gives up the leader key) and makes sure PostgreSQL is down; `start` starts
    PostgreSQL alone with pg_ctl, out of Patroni's hands, to replay and verify the restore
    before the cluster is made from it (runbooks/cluster_restore.py)."""

    patroni: ServiceControl
    postgres: PgCtlService

    @property
    def description(self) -> str:
        return f"Patroni ({self.patroni.description}), then PostgreSQL alone with pg_ctl"

    def stop(self) -> None:
        self.patroni.stop()
        self.postgres.stop()

    def start(self) -> None:
        self.postgres.start()

    def is_active(self) -> bool:
        return self.postgres.is_active()

    def configured_setting(self, name: str) -> str | None:
        return self.postgres.configured_setting(name)

    def log_tail(self) -> str:
        return self.postgres.log_tail()

    def start_command(self) -> str:
        return self.postgres.start_command()

    def stop_command(self) -> str:
        return f"{self.patroni.stop_command()}; {self.postgres.stop_command()}"
