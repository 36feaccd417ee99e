"""Turning a command line's `--host NAME` or `--target-file PATH` into executors and targets.

`--host` names a host of an inventory (`--inventory`, default the lab's): it is reached over
SSH with the inventory's user, key and known_hosts, and laid out as the deploys lay out a
real db or app host. `--target-file` is a JSON description of a local target (the throwaway
clusters of the tests and the benchmark use it).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from app import migrate
from runbooks import releases, rollback
from runbooks.checklist import Refused
from runbooks.cluster import Cluster, Node
from runbooks.executor import LocalExecutor, SshExecutor
from runbooks.inventory import Inventory
from runbooks.inventory import load as load_inventory
from runbooks.releases import AppTarget
from runbooks.services import (
    PatroniNodePostgres,
    PgCtlService,
    PostgresSystemdService,
    ProcessService,
    SystemdService,
    alone_settings,
)
from runbooks.target import Bouncer, DbTarget
from sparkops import defaults, envvars, layout, secrets

# ssh's own exit status when it could not connect (a remote command's is passed through).
SSH_FAILED = 255


def ssh_executor(
    name: str, inventory: Inventory | None = None, *, probe: bool = True
) -> SshExecutor:
    """The host called `name` in the inventory, answering SSH (host keys checked).
    `probe=False`: no round trip of its own to check that; the caller's first command does,
    and says so (a rollback's planning, where every round trip counts)."""
    inventory = inventory or load_inventory()
    host = inventory.host(name)
    executor = SshExecutor(
        name=name,
        address=host.address,
        ssh_user=host.ssh_user,
        key=host.key,
        known_hosts=host.known_hosts,
        sudo=host.ssh_user != "root",
    )
    if probe and not executor.reachable():
        raise Refused(
            f"host {name} ({host.address}) does not answer SSH",
            "check the host (on the lab: `sparkops lab status`); nothing was changed",
        )
    return executor


def deployed_bouncer(environment: str) -> Bouncer | None:
    """pgBouncer's admin console on the db host, with the password the deploy generated."""
    if not secrets.secrets_path(environment).exists():
        return None  # the deploy has not run here: there is no pgBouncer to pause
    password = secrets.load(environment)["pgbouncer_admin"]
    return Bouncer("127.0.0.1", defaults.PGBOUNCER_PORT, defaults.ROLE_PGBOUNCER_ADMIN, password)


def db_target_for_host(name: str, stanza: str, inventory: Inventory | None = None) -> DbTarget:
    inventory = inventory or load_inventory()
    executor = ssh_executor(name, inventory)
    return DbTarget(
        executor=executor,
        data_dir=layout.POSTGRES_DATA_DIR,
        service=PostgresSystemdService(executor, (layout.POSTGRES_SERVICE,)),
        stanza=stanza,
        bouncer=deployed_bouncer(inventory.environment),
        label=name,
    )


def db_target(
    host: str, inventory: Path | None, target_file: Path | None, stanza: str | None
) -> DbTarget:
    """What a command's --host/--inventory or --target-file name."""
    if target_file:
        return db_target_from_file(target_file, stanza)
    return db_target_for_host(host, stanza or defaults.PGBACKREST_STANZA, load_inventory(inventory))


def db_target_from_file(path: Path, stanza: str | None) -> DbTarget:
    try:
        spec = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise Refused(f"cannot read target file {path}: {exc}", "give a JSON target file") from exc
    executor = LocalExecutor()
    bouncer = Bouncer(**spec["bouncer"]) if spec.get("bouncer") else None
    return DbTarget(
        executor=executor,
        data_dir=spec["data_dir"],
        service=PgCtlService(executor, spec["data_dir"], spec["logfile"], spec.get("options", {})),
        socket_dir=spec["socket_dir"],
        port=int(spec["port"]),
        dbname=spec.get("dbname", defaults.DATABASE_NAME),
        pgbackrest_config=spec.get("pgbackrest_config"),
        stanza=stanza or spec.get("stanza", defaults.PGBACKREST_STANZA),
        bouncer=bouncer,
        label=spec.get("label", "local"),
    )


def target_file_spec(target: DbTarget) -> dict:
    """The JSON a target file holds for a local PgCtl target (written by the tests)."""
    service = target.service
    assert isinstance(service, PgCtlService)
    spec = {
        "data_dir": target.data_dir,
        "logfile": service.logfile,
        "options": service.options,
        "socket_dir": target.socket_dir,
        "port": target.port,
        "dbname": target.dbname,
        "pgbackrest_config": target.pgbackrest_config,
        "stanza": target.stanza,
        "label": target.label,
    }
    if target.bouncer:
        b = target.bouncer
        spec["bouncer"] = {
            "host": b.host,
            "port": b.port,
            "user": b.user,
            "password": b.password,
            "database": b.database,
        }
    return spec


def scratch_target(
    source: DbTarget, data_dir: str, port: int, executor=None, label: str = "scratch"
) -> DbTarget:
    """A restored copy next to (or away from) the source: its own directory, port and socket,
    archiving off."""
    executor = executor or source.executor
    socket_dir = str(Path(data_dir).parent)
    options = {
        "port": str(port),
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": socket_dir,
        "archive_mode": "off",
    }
    if isinstance(source.service, PgCtlService):
        base = {k: v for k, v in source.service.options.items() if k != "archive_command"}
        options = {**base, **options}
    service = PgCtlService(executor, data_dir, f"{data_dir}.log", options, bindir=source.bindir)
    return DbTarget(
        executor=executor,
        data_dir=data_dir,
        service=service,
        socket_dir=socket_dir,
        port=port,
        dbname=source.dbname,
        bindir=source.bindir,
        pgbackrest_config=source.pgbackrest_config,
        stanza=source.stanza,
        bouncer=None,
        label=label,
    )


# --- app hosts ----------------------------------------------------------------------------


def _db_revision_script() -> str:
    return (
        f"set -a; . {layout.MIGRATIONS_ENV_FILE}; set +a; "
        f"{layout.APP_CURRENT_LINK}/venv/bin/python -c "
        f"{shlex.quote(migrate.CURRENT_REVISION_SCRIPT)} {envvars.MIGRATIONS_URL} "
        f"{migrate.APPLICATION_NAME}"
    )


def _db_revision_from(name: str, ok: bool, stdout: str, output: str) -> str | None:
    if not ok:
        raise Refused(
            f"cannot read the database's schema revision from {name}: " + output[-300:],
            "check that the db host is up and migrations.env is in place",
        )
    return stdout.strip() or None


def _remote_db_revision(executor) -> Callable[[], str | None]:
    """The database's revision, asked on the app host by the current release's own Python with
    the migrations' connection (the app host is the one pg_hba lets in)."""

    def revision() -> str | None:
        result = executor.run(["sh", "-c", _db_revision_script()], check=False, timeout=60)
        return _db_revision_from(executor.name, result.ok, result.stdout, result.output())

    return revision


def _not_answering(executor, result) -> Refused:
    return Refused(
        f"host {executor.name} does not answer SSH: {result.output().strip()[-200:]}",
        "check the host (on the lab: `sparkops lab status`); nothing was changed",
    )


def _answered(executor, result, what: str, hint: str):
    """`result` of a read on `executor`'s host, or Refused: the host did not answer SSH, or
    the command failed (its output says why)."""
    if result.returncode == SSH_FAILED:
        raise _not_answering(executor, result)
    if not result.ok:
        raise Refused(
            f"cannot read {what} on {executor.name}: {result.output().strip()[-300:]}", hint
        )
    return result


def _units_from(name: str, states: list[str], units: tuple[str, ...]) -> tuple[str, ...]:
    """The units of `units` the host has (`systemctl show -p LoadState` said `loaded`; the
    outbox and the exporter are optional in the deploy); the app's own unit first, and
    required."""
    present = tuple(u for u, state in zip(units, states, strict=False) if state == "loaded")
    if not present or present[0] != units[0]:
        raise Refused(
            f"{units[0]} is not installed on {name}",
            "deploy the app there first (deploys/app.py)",
        )
    return present


_UNITS_MARK, _REVISION_MARK = "@units", "@revision "

# One round trip for everything a rollback's planning reads on an app host: the units, the
# releases (releases.look_script) and, meanwhile in the background, the database's revision.
_ROLLBACK_READ = """
rev=$(mktemp) || exit 1
( {revision} ) >"$rev" 2>"$rev.err" &
pid=$!
echo {units_mark}
systemctl show -p LoadState --value {units}
{look}
wait $pid; rc=$?
echo "{revision_mark}$rc"
if [ $rc = 0 ]; then cat "$rev"; else cat "$rev" "$rev.err"; fi
rm -f "$rev" "$rev.err"
"""


def db_revision_on_db_host(name: str, inventory: Inventory) -> str | None:
    """The database's schema revision read by psql as PostgreSQL's superuser on the db host
    `name` (a few milliseconds; the app host's read starts the release's Python)."""
    executor = ssh_executor(name, inventory, probe=False)
    service = PostgresSystemdService(executor, (layout.POSTGRES_SERVICE,))
    db = DbTarget(executor=executor, data_dir=layout.POSTGRES_DATA_DIR, service=service, label=name)
    result = _answered(
        executor,
        db.psql_script(migrate.CURRENT_REVISION_PSQL),
        "the database's schema revision",
        "check that PostgreSQL is up there",
    )
    try:
        return migrate.revision_from_psql(result.stdout)
    except ValueError as exc:
        raise Refused(f"{exc} (on {name})", "repair alembic_version first") from exc


def app_host_for_rollback(
    name: str, inventory: Inventory, *, revision: bool = True
) -> tuple[AppTarget, rollback.Reading]:
    """The app host `name` as a target, and what a rollback's planning reads there, in one
    SSH round trip (each costs about a quarter of a second, and the planning is part of the
    time to the old release serving). `revision=False`: the database's revision is read
    elsewhere (db_revision_on_db_host); the reading's is None."""
    executor = ssh_executor(name, inventory, probe=False)
    app = AppTarget(
        executor=executor,
        service=SystemdService(executor, layout.APP_SERVICES),  # the units present: below
        base_url=f"http://{inventory.host(name).address}:{defaults.APP_PORT}",
        db_revision=_remote_db_revision(executor),
        label=name,
    )
    script = _ROLLBACK_READ.format(
        revision=_db_revision_script() if revision else "true",
        units_mark=_UNITS_MARK,
        units=" ".join(shlex.quote(u) for u in layout.APP_SERVICES),
        look=releases.look_script(app),
        revision_mark=_REVISION_MARK,
    )
    result = _answered(
        executor,
        executor.run(["sh", "-c", script], check=False, timeout=120),
        "the releases",
        "check the host; nothing was changed",
    )
    units, reading = parse_rollback_read(name, result.stdout)
    service = SystemdService(executor, units, also_reset=(layout.APP_SOCKET,))
    return replace(app, service=service), reading


def parse_rollback_read(name: str, out: str) -> tuple[tuple[str, ...], rollback.Reading]:
    """`_ROLLBACK_READ`'s output: the app's units present, the releases and the revision."""
    units_at = out.find(_UNITS_MARK + "\n")
    look_at = out.find(releases.CURRENT_MARK, max(units_at, 0))
    revision_at = out.rfind("\n" + _REVISION_MARK)
    if not 0 <= units_at < look_at < revision_at:
        raise Refused(
            f"cannot read the releases on {name}: unexpected answer {out.strip()[-300:]!r}",
            "check the host; nothing was changed",
        )
    states = out[units_at + len(_UNITS_MARK) : look_at].split()
    units = _units_from(name, states, layout.APP_SERVICES)
    seen = releases.parse_look(out[look_at:revision_at])
    rc, _, revision_out = out[revision_at + 1 + len(_REVISION_MARK) :].partition("\n")
    return units, rollback.reading_of(
        seen, lambda: _db_revision_from(name, rc.strip() == "0", revision_out, revision_out)
    )


def app_target_from_file(path: Path) -> AppTarget:
    """{"root", "base_url", "database_url" (schema owner or any role that reads
    alembic_version), "service": {"argv", "pidfile", "logfile", "env"}}; the service reads
    <root>/current/release.env at each start, as the systemd unit does."""
    try:
        spec = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise Refused(f"cannot read target file {path}: {exc}", "give a JSON target file") from exc
    svc = spec["service"]
    root = spec["root"]
    service = ProcessService(
        argv=svc["argv"],
        pidfile=Path(svc["pidfile"]),
        env=svc.get("env", {}),
        env_files=[Path(root) / "current" / layout.RELEASE_ENV_FILE_NAME],
        logfile=Path(svc["logfile"]) if svc.get("logfile") else None,
        description=f"local process (pid file {svc['pidfile']})",
    )

    def revision() -> str | None:
        return migrate.current(spec["database_url"])

    return AppTarget(
        executor=LocalExecutor(),
        service=service,
        base_url=spec["base_url"],
        db_revision=revision,
        root=root,
        label=spec.get("label", "local-app"),
    )


# --- a Patroni cluster (runbooks/cluster.py) ----------------------------------------------
def cluster_from_inventory(path: Path | None) -> Cluster:
    """The db hosts of a cluster inventory (one with an `etcd` group), over SSH, each with its
    pgBouncer's admin console (the deploy's password) for PAUSE/RESUME."""
    inventory = load_inventory(path)
    if not inventory.members("etcd"):
        raise Refused(
            f"the {inventory.path.stem} inventory ({inventory.path}) is not a Patroni cluster "
            "(no etcd group): its db host is a single PostgreSQL with no replica to move to",
            "for a cluster, add an etcd group and two or more db hosts (docs/ha.md)",
        )
    hosts = inventory.group("db")
    bouncer = deployed_bouncer(inventory.environment)
    nodes = []
    for host in hosts:
        executor = ssh_executor(host.name, inventory)
        patroni = SystemdService(executor, (layout.PATRONI_SERVICE,))
        alone = PgCtlService(
            executor,
            layout.POSTGRES_DATA_DIR,
            layout.CLUSTER_RESTORE_LOG,
            options=alone_settings(layout.POSTGRES_DATA_DIR),
        )
        target = DbTarget(
            executor=executor,
            data_dir=layout.POSTGRES_DATA_DIR,
            service=PatroniNodePostgres(patroni, alone),
            bouncer=bouncer,
            label=host.name,
        )
        nodes.append(Node(host.name, executor, db=target, patroni=patroni))
    args = f"--inventory {shlex.quote(str(path))}" if path else ""
    return Cluster(nodes, label=inventory.path.stem, command_args=args)


def cluster_from_file(path: Path) -> Cluster:
    """A local cluster described in JSON (the test kit's): {"nodes": [{"name", "config",
    "os_user"}], "label"}; no pgBouncer in front of its nodes."""
    try:
        spec = json.loads(Path(path).read_text())
        nodes = [
            Node(n["name"], LocalExecutor(), config=n["config"], os_user=n.get("os_user") or "")
            for n in spec["nodes"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Refused(
            f"cannot read cluster target file {path}: {exc}",
            'give a JSON file {"nodes": [{"name": ..., "config": ...}]}',
        ) from exc
    return Cluster(
        nodes,
        label=spec.get("label", "local"),
        command_args=f"--target-file {shlex.quote(str(path))}",
    )
