"""The trading app on the app hosts: releases side by side, migrations, health-gated switch.

    /opt/spark-app/releases/<id>/   venv/ (the release's wheels), release.env, SCHEMA_HEAD,
                                    .installed, BAD (when its health gate failed)
    /opt/spark-app/current -> releases/<id>

A release is built here (deploys/release.py), uploaded as a wheelhouse and installed into its
own venv; migrations run (as the schema owner, direct to PostgreSQL) before the switch; the
switch renames a temporary link over `current`, restarts the app and waits for /readyz, and
switches back when the new release does not get ready (spark-app-activate). The app listens on
the socket spark-app.socket holds (socket activation), so its restarts refuse no connection.
The last APP_RELEASES_KEPT releases stay for rollback.
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host, inventory, logger, state
from pyinfra.api import deploy, operation
from pyinfra.api.command import FunctionCommand, StringCommand
from pyinfra.facts.files import File, Link
from pyinfra.operations import files, server, systemd

from deploys import dbroute, hardening, secretfiles, support, tls
from deploys import release as release_build
from deploys.facts import DirectoryEntries, MigrationState
from sparkops import defaults, envvars, layout, lbruntime, secrets

USER = layout.APP_USER
ETC = layout.APP_ETC_DIR
APP_ENV = layout.APP_ENV_FILE
MIGRATIONS_ENV = layout.MIGRATIONS_ENV_FILE
OUTBOX_ENV = layout.OUTBOX_ENV_FILE
PURGE_TIMER = "spark-idempotency-purge.timer"
# The hourly expiry's bound: a stuck run ends well before the next one starts.
PURGE_TIMEOUT = "15min"
EXPORTER_ENV = layout.EXPORTER_ENV_FILE
ACTIVATE = "/usr/local/sbin/spark-app-activate"
UPLOADS = f"{layout.APP_ROOT}/uploads"
MIGRATE_LOG_TAG = "spark-migrate"
OUTBOX_REDIS_PASSWORD_SECRET = (
    "outbox_redis_password"  # the journal's identifier for what `migrated` did
)

DEFAULTS = {
    # Extra SPARK_* settings for the app (app/config.py), e.g. {"SPARK_DB_POOL_SIZE": "10"}.
    "app_settings": {},
    "app_listen_host": "0.0.0.0",
    # Seconds the new release has to answer /readyz before the switch is undone.
    "app_ready_timeout": 60,
    "app_releases_kept": defaults.APP_RELEASES_KEPT,
    "app_outbox_enabled": True,
    "app_outbox_publisher": "redis",  # redis | console | webhook
    # Extra SPARK_OUTBOX_* settings, e.g. {"SPARK_OUTBOX_REDIS_URL": "redis://10.0.0.5:6379/0"}.
    # A webhook URL (SPARK_OUTBOX_WEBHOOK_URL) must be https://.
    "app_outbox_settings": {},
    # True where Redis has a password (requirepass): the secret outbox_redis_password
    # (SPARKOPS_SECRET_OUTBOX_REDIS_PASSWORD or the secrets file) goes to a file only the
    # dispatcher's user reads (root:spark-dispatcher 0640, SPARK_OUTBOX_REDIS_PASSWORD_FILE),
    # never into its URL or argv.
    "app_outbox_redis_password": False,
    "app_pgbouncer_exporter_enabled": True,
}


def outbox_name(host_name: str) -> str:
    """The outbox dispatcher's lease owner on one host: its own per host, since a dispatcher
    starting or stopping under a name releases every lease held under that name (a second
    host sharing it would lose its live leases, and publish alongside the first)."""
    return f"spark-outbox@{host_name}"


def outbox_extra_settings(extra: dict) -> dict:
    """The dispatcher's extra settings from group data, checked: a webhook goes over https://
    only (a clear error naming the key), a Redis password never inside the URL."""
    url = str(extra.get(envvars.OUTBOX_WEBHOOK_URL, ""))
    if url and not url.startswith("https://"):
        raise ValueError(
            f"app_outbox_settings[{envvars.OUTBOX_WEBHOOK_URL!r}] = {url!r}: webhooks go over "
            "https:// only (events carry orders)"
        )
    redis_url = str(extra.get(envvars.OUTBOX_REDIS_URL, ""))
    if "@" in redis_url:
        raise ValueError(
            f"app_outbox_settings[{envvars.OUTBOX_REDIS_URL!r}] holds credentials: set "
            "app_outbox_redis_password = True and give the password as the secret "
            f"{OUTBOX_REDIS_PASSWORD_SECRET} instead"
        )
    return dict(extra)


def release_dir(release: str) -> str:
    return f"{layout.APP_RELEASES_DIR}/{release}"


def database_urls(
    db_address: str, creds: secrets.Secrets, *, cluster: bool = False
) -> dict[str, str]:
    """libpq URLs: the app through pgBouncer, migrations direct, the exporter's admin console;
    all verify-full against the environment's CA, migrations (PostgreSQL direct) also with
    channel binding (pgBouncer does not offer it: deploys/pgbouncer.py).

    On a Patroni cluster (`cluster`) each goes through this host's database route
    (deploys/dbroute.py) to whichever node is primary, never to a node by address; TLS passes
    through the route, and every node's certificate also names 127.0.0.1 (deploys/tls.py)."""
    name = defaults.DATABASE_NAME
    if cluster:
        db_address = dbroute.BIND_ADDRESS
        bouncer, direct = defaults.DB_ROUTE_PRIMARY_PORT, defaults.DB_ROUTE_MIGRATIONS_PORT
    else:
        bouncer, direct = defaults.PGBOUNCER_PORT, defaults.POSTGRES_PORT
    return {
        "app": tls.with_tls(
            f"postgresql://{defaults.ROLE_APP}:{creds['postgresql_app']}@"
            f"{db_address}:{bouncer}/{name}"
        ),
        "migrations": tls.with_tls(
            f"postgresql://{defaults.ROLE_MIGRATIONS}:{creds['postgresql_migrations']}@"
            f"{db_address}:{direct}/{name}",
            channel_binding=True,
        ),
        "exporter": tls.with_tls(
            f"postgresql://{defaults.ROLE_PGBOUNCER_STATS}:{creds['pgbouncer_stats']}@"
            f"{db_address}:{bouncer}/{defaults.PGBOUNCER_ADMIN_DB}"
        ),
    }


def releases_to_remove(newest_first: list[str], current: str | None, keep: int) -> list[str]:
    """Releases beyond the newest `keep` (never the current one); ignores temporary names."""
    names = [n for n in newest_first if not n.endswith((".tar", ".tmp"))]
    kept = names[:keep]
    return [n for n in names[keep:] if n != current and n not in kept]


@operation()
def release_installed(release: str, tarball: str):
    """Upload the release's wheelhouse and install it into its own venv, once per release."""
    target = release_dir(release)
    if host.get_fact(File, path=f"{target}/.installed"):
        host.noop(f"release {release} is installed")
        return
    upload = f"{UPLOADS}/{release}.tar"
    yield f"mkdir -p {UPLOADS} && chmod 700 {UPLOADS}"
    yield from files.put._inner(src=tarball, dest=upload)
    yield (
        f"set -e; rm -rf {target}; mkdir -p {target}; tar -xf {upload} -C {target}; "
        f"python3 -m venv {target}/venv; "
        f"{target}/venv/bin/pip install --quiet --no-index --find-links {target}/wheelhouse "
        f"{release_build.PROJECT}; "
        f"rm -rf {target}/wheelhouse {upload}; "
        f"echo {envvars.RELEASE_ID}={release} > {target}/{layout.RELEASE_ENV_FILE_NAME}; "
        # The schema head this release expects: the rollback's schema gate reads it.
        f"{target}/venv/bin/python -c 'from app import migrate; print(migrate.head())' "
        f"> {target}/SCHEMA_HEAD; "
        f"touch {target}/.installed"
    )


@operation()
def migrated(release: str):
    """Upgrade the schema to the release's head, when the database is behind it.

    Every app host runs this at once; the upgrade's advisory lock (app.migrate) lets one
    migrate while the others wait and then find the schema at head. What each did goes to
    the deploy's output and to the host's journal (`journalctl -t spark-migrate`).
    """
    python = f"{release_dir(release)}/venv/bin/python"
    schema = host.get_fact(MigrationState, python=python, env_file=MIGRATIONS_ENV)
    if schema.get("head") and schema.get("current") == schema.get("head"):
        host.noop(f"schema is at {schema['head']}")
        return
    code = (
        "import os; from app import migrate; "
        f"print(migrate.upgrade(os.environ['{envvars.MIGRATIONS_URL}']).describe())"
    )
    yield (
        f'set -a; . {MIGRATIONS_ENV}; set +a; out=$({python} -c "{code}" 2>&1); rc=$?; '
        f'printf "%s\\n" "$out"; printf "%s\\n" "$out" | logger -t {MIGRATE_LOG_TAG}; exit $rc'
    )


def _failed_earlier() -> list[str]:
    """Other app hosts on which the operation now running has already failed (with
    `_serial=True` pyinfra runs it host by host, in its own order, and goes on after a
    failure; a host it has not reached yet has no result)."""
    op_hash = host.executing_op_hash
    failed = []
    for other in inventory.get_group("app", []):
        meta = getattr(state.ops.get(other, {}).get(op_hash), "operation_meta", None)
        if other != host and meta is not None and meta.is_complete() and meta.did_error():
            failed.append(other.name)
    return failed


@operation()
def activated(release: str, restart_for=()):
    """Point `current` at the release and restart, gated on /readyz (spark-app-activate);
    with the release already current, restart gated the same way when an operation in
    `restart_for` (settings, units) changed. Meant for `_serial=True`: app hosts switch one
    at a time, each only once the one before it answers /readyz, and none after a host whose
    switch failed (it switched that host back)."""
    link = host.get_fact(Link, path=layout.APP_CURRENT_LINK) or {}
    changed = [op for op in restart_for if op.is_complete() and op.did_change()]
    if link.get("link_target") == f"releases/{release}" and not changed:
        host.noop(f"release {release} is current")
        return
    failed = _failed_earlier() if state.is_executing else []
    if failed:
        yield (
            f"echo 'not switching to release {release}: it failed its health gate on "
            f"{', '.join(failed)} (switched back there); fix it and deploy again' >&2; exit 1"
        )
        return
    balancers = list(inventory.get_group("lb", []))
    if not balancers:
        yield f"{ACTIVATE} {release}"
        return
    # Behind load balancers: out of every lb's rotation first, back in after the gate.
    yield FunctionCommand(_drained_switch, (release, balancers), {})


def _lb_tool(action: str, server: str) -> str:
    timeout = defaults.LB_DRAIN_TIMEOUT_SECONDS if action == "drain" else (
        defaults.LB_READY_TIMEOUT_SECONDS)  # fmt: skip
    args = lbruntime.tool_args(
        action, server, defaults.LB_BACKEND, layout.HAPROXY_RUNTIME_SOCKET, timeout
    )
    return " ".join(shlex.quote(a) for a in [layout.LB_SERVER_TOOL, *args])


def _on(state, target, command: str) -> tuple[bool, str]:
    # As the deploy's own operations run there: with sudo under `--sudo` (the runtime socket
    # and spark-app-activate need root) unless the host's data says otherwise.
    sudo = target.data.get("_sudo", state.config.SUDO)
    ok, output = target.run_shell_command(StringCommand(command), _sudo=bool(sudo))
    return ok, "\n".join(line.line for line in output)


def _drained_switch(state, host, release: str, balancers) -> bool:
    """The preflight first, while this app host still serves (a release that cannot start is
    refused with the host never out of rotation, and a good one's start, 1.2-1.5 s, is not
    spent drained); then drain the host on every lb (new requests go to the others, those in
    flight finish), run the health-gated switch, and ready it again whatever the switch's
    outcome (a failed switch went back to the previous release and passed its gate;
    HAProxy's own check keeps a host that is not ready out). Runs on the control machine (a
    pyinfra callback; pyinfra passes `state` and `host`, the app host, by these names): the
    lb hosts' runtime API is a local socket there, reached over their SSH connections."""
    app_host = host
    tried, said = _on(state, app_host, f"APP_PREFLIGHT=only {ACTIVATE} {release}")
    _say(app_host, said, ok=tried)
    if not tried:
        return False
    for lb in balancers:
        ok, said = _on(state, lb, _lb_tool("drain", app_host.name))
        # In flight past the deadline: the switch goes on (the app's graceful shutdown).
        _say(app_host, said, ok=ok, prefix=f"drain on {lb.name}: ")
    switched, said = _on(state, app_host, f"APP_PREFLIGHT=no {ACTIVATE} {release}")
    _say(app_host, said, ok=switched)
    back_ok = True
    for lb in balancers:
        ok, said = _on(state, lb, _lb_tool("ready", app_host.name))
        _say(app_host, said, ok=ok, prefix=f"ready on {lb.name}: ")
        back_ok = back_ok and ok
    if switched and not back_ok:
        _say(app_host, "the switch passed its gate but an lb does not see the host UP", ok=False)
    return switched and back_ok


def _say(app_host, text: str, ok: bool, prefix: str = "") -> None:
    """Each line under the host's name (the script's story reads line by line in the deploy's
    output); as a warning when the step failed, so it stands out from the progress."""
    for line in text.strip().splitlines() or [""]:
        app_host.log(f"{prefix}{line}", log_func=logger.info if ok else logger.warning)


@operation()
def old_releases_removed(keep: int):
    """Remove releases beyond the newest `keep` (the current one always stays)."""
    names = host.get_fact(DirectoryEntries, path=layout.APP_RELEASES_DIR)
    link = host.get_fact(Link, path=layout.APP_CURRENT_LINK) or {}
    current = (link.get("link_target") or "").removeprefix("releases/") or None
    doomed = releases_to_remove(names, current, keep)
    if not doomed:
        host.noop(f"{len(names)} releases, at most {keep} kept")
        return
    for name in doomed:
        yield f"rm -rf {layout.APP_RELEASES_DIR}/{name}"


def _put_env(name: str, template: str, dest: str, **context):
    """An env file root alone reads (0600): systemd reads it for the one unit that names it
    (EnvironmentFile=), so the service's user never reads a file, its own or another's."""
    return secretfiles.secret_file(
        name=name,
        src=support.rendered(template, user=USER, **context),
        dest=dest,
        user="root",
        group="root",
        mode="600",
    )


def _put_unit(unit: str, user: str = USER, **context):
    return files.put(
        name=f"Install the {unit} unit",
        src=support.rendered(
            f"app/{unit}.j2",
            user=user,
            current=layout.APP_CURRENT_LINK,
            hardening=hardening.app_service(),
            **context,
        ),
        dest=f"/etc/systemd/system/{unit}",
        mode="644",
    )


def _system_user(user: str, what: str) -> None:
    server.user(
        name=f"Ensure the {user} system user ({what})",
        user=user,
        system=True,
        home=layout.APP_ROOT,
        shell="/usr/sbin/nologin",
        # The app root belongs to root (the app must not rewrite its own code).
        ensure_home=False,
    )


@deploy("Spark app release", data_defaults=DEFAULTS)
def app_release() -> dict:
    """Everything that does not need the database: user, settings, units, the release's venv.

    Runs while the db tier is being deployed; returns what `app_switch` needs.
    """
    creds = secrets.load(support.environment(host))
    db_address = support.address(support.first_in_group(inventory, "db"))
    urls = database_urls(db_address, creds, cluster=support.is_cluster(inventory))
    release, tarball_path = release_build.selected()
    tarball = str(tarball_path)

    _system_user(USER, "the app")
    for path in (layout.APP_ROOT, layout.APP_RELEASES_DIR):
        files.directory(name=f"Create {path}", path=path, user="root", group="root", mode="755")
    # Entered by all (the dispatcher reads its Redis password file here), listed by root:
    # every file in it is root's 0600 but that one, root:spark-dispatcher 0640.
    files.directory(name=f"Create {ETC}", path=ETC, user="root", group="root", mode="711")
    env_ops = [
        _put_env(
            "Write the app's settings",
            "app/app.env.j2",
            APP_ENV,
            database_url=urls["app"],
            metrics_host=support.address(host),
            metrics_port=defaults.APP_METRICS_PORT,
            extra=host.data.app_settings,
        ),
    ]
    _put_env(
        "Write the migrations' connection",
        "app/migrations.env.j2",
        MIGRATIONS_ENV,
        migrations_url=urls["migrations"],
    )
    files.put(
        name="Install spark-app-activate (health-gated switch)",
        src=support.rendered(
            "app/spark-app-activate.sh.j2",
            root=layout.APP_ROOT,
            current=layout.APP_CURRENT_LINK,
            port=defaults.APP_PORT,
            preflight_port=defaults.APP_PREFLIGHT_PORT,
            user=USER,
            env_file=APP_ENV,
            hardening=hardening.app_service(),
            ready_timeout=host.data.app_ready_timeout,
            services=" ".join(_services()),
        ),
        dest=ACTIVATE,
        mode="755",
    )
    units = [
        # The socket outlives the service's restarts (socket activation): zero downtime on
        # one host without a second instance or a local proxy (docs/zero-downtime.md).
        _put_unit(
            layout.APP_SOCKET,
            listen_host=host.data.app_listen_host,
            port=defaults.APP_PORT,
            backlog=defaults.APP_LISTEN_BACKLOG,
        ),
        _put_unit(
            layout.APP_SERVICE,
            env_file=APP_ENV,
            # Behind HAProxy the client's address comes in X-Forwarded-For, trusted from the
            # lb hosts only (the app's per-address rate limit counts clients, not the lb).
            forwarded_allow_ips=",".join(support.group_addresses(inventory, "lb")),
            keep_alive=defaults.APP_KEEP_ALIVE_SECONDS,
            graceful_seconds=defaults.APP_GRACEFUL_SHUTDOWN_SECONDS,
        ),
    ]
    # Keys expire after IDEMPOTENCY_KEY_TTL_HOURS; a timer deletes them (the app never does).
    units += [
        _put_unit(
            "spark-idempotency-purge.service",
            env_file=APP_ENV,
            ttl_hours=defaults.IDEMPOTENCY_KEY_TTL_HOURS,
            timeout=PURGE_TIMEOUT,
        ),
        _put_unit("spark-idempotency-purge.timer"),
    ]
    if host.data.app_outbox_enabled:
        _system_user(layout.OUTBOX_USER, "the outbox dispatcher")
        outbox_settings = outbox_extra_settings(host.data.app_outbox_settings)
        if host.data.app_outbox_redis_password:
            outbox_settings[envvars.OUTBOX_REDIS_PASSWORD_FILE] = layout.OUTBOX_REDIS_PASSWORD_FILE
            env_ops.append(
                secretfiles.secret_file(
                    name="Give the outbox dispatcher Redis' password",
                    src=StringIO(
                        secrets.provided(support.environment(host), OUTBOX_REDIS_PASSWORD_SECRET)
                    ),
                    dest=layout.OUTBOX_REDIS_PASSWORD_FILE,
                    # The dispatcher reads it itself: its user's group, no other service's.
                    user="root",
                    group=layout.OUTBOX_USER,
                    mode="640",
                )
            )
        env_ops.append(
            _put_env(
                "Write the outbox dispatcher's settings",
                "app/outbox.env.j2",
                OUTBOX_ENV,
                database_url=urls["app"],
                extra=outbox_settings,
            )
        )
        units.append(
            _put_unit(
                layout.OUTBOX_SERVICE,
                user=layout.OUTBOX_USER,
                env_file=OUTBOX_ENV,
                publisher=host.data.app_outbox_publisher,
                metrics_host=support.address(host),
                metrics_port=defaults.OUTBOX_METRICS_PORT,
                dispatcher_name=outbox_name(host.name),
            )
        )
    if host.data.app_pgbouncer_exporter_enabled:
        _system_user(layout.EXPORTER_USER, "the pgBouncer exporter")
        env_ops.append(
            _put_env(
                "Write the pgBouncer exporter's connection",
                "app/pgbouncer-exporter.env.j2",
                EXPORTER_ENV,
                dsn=urls["exporter"],
            )
        )
        units.append(
            _put_unit(
                layout.EXPORTER_SERVICE,
                user=layout.EXPORTER_USER,
                env_file=EXPORTER_ENV,
                # Scraped by the monitor host over the private network only.
                listen_host=support.address(host),
                port=defaults.PGBOUNCER_EXPORTER_PORT,
            )
        )
    systemd.daemon_reload(
        name="Reload systemd for the app's units",
        _if=lambda: any(op.did_change() for op in units),
    )

    release_installed(name=f"Install release {release}", release=release, tarball=tarball)
    return {"release": release, "changed": env_ops + units}


@deploy("Spark app", data_defaults=DEFAULTS)
def app_switch(prepared: dict) -> None:
    """Migrate, switch `current` (gated on /readyz), keep services up, prune: after the db tier."""
    release, changed = prepared["release"], prepared["changed"]
    migrated(name=f"Migrate the schema to release {release}'s head", release=release)
    # One app host at a time, so the others keep serving while one restarts; a restart for
    # changed settings goes through the same gate.
    activated(
        name=f"Switch to release {release} (gated on /readyz), one host at a time",
        release=release,
        restart_for=changed,
        _serial=True,
    )
    for unit in [layout.APP_SOCKET, *_services()]:
        systemd.service(
            name=f"Ensure {unit} is running and enabled", service=unit, running=True, enabled=True
        )
    systemd.service(
        name="Enable the hourly idempotency key expiry",
        service=PURGE_TIMER,
        running=True,
        enabled=True,
    )
    old_releases_removed(
        name=f"Keep the last {host.data.app_releases_kept} releases",
        keep=host.data.app_releases_kept,
    )


def _services() -> list[str]:
    units = [layout.APP_SERVICE]
    if host.data.app_outbox_enabled:
        units.append(layout.OUTBOX_SERVICE)
    if host.data.app_pgbouncer_exporter_enabled:
        units.append(layout.EXPORTER_SERVICE)
    return units
