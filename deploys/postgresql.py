"""PostgreSQL 15 on the db hosts: packages, settings for WAL archiving, SCRAM-only pg_hba.conf,
least-privilege roles (sparkops.dbroles) with a password guard, the database, amcheck.

Settings that need a restart (listen address, wal_level, archive_mode ...) live in their own
conf.d file, so a changed archive_timeout reloads instead of restarting the database.
"""

from __future__ import annotations

import hashlib
from io import StringIO

from pyinfra import host, inventory
from pyinfra.api import QuoteString, StringCommand, deploy, operation
from pyinfra.operations import apt, files, systemd

from deploys import secretfiles, support, tls
from deploys.facts import PostgresState
from sparkops import dbroles, defaults, layout, secrets
from sparkops.scram import verifier_matches

VERSION = defaults.POSTGRES_VERSION
CONF_DIR = layout.POSTGRES_CONF_DIR
SERVICE = layout.POSTGRES_SERVICE
# Changing one of these only takes effect after a restart (PostgreSQL's "postmaster" context).
RESTART_SETTINGS = frozenset(
    {
        "listen_addresses",
        "port",
        "max_connections",
        "shared_buffers",
        "shared_preload_libraries",
        "wal_level",
        "archive_mode",
        "max_wal_senders",
        "max_replication_slots",
        "wal_log_hints",
    }
)
SCRAM = "scram-sha-256"
# The role statements (they carry SCRAM verifiers) for the one psql that runs them.
SECRET_SQL = "/root/.sparkops-roles.sql"

DEFAULTS = {
    "postgresql_packages": [f"postgresql-{VERSION}", f"postgresql-client-{VERSION}"],
    # Settings merged over the ones the deploy derives (listen address, WAL archiving, SCRAM):
    # {name: value}; strings are quoted for postgresql.conf, booleans become on/off.
    "postgresql_settings": {
        "max_connections": 200,
        "shared_buffers": "256MB",
        "log_min_duration_statement": "500ms",
        "log_line_prefix": "%m [%p] %q%u@%d ",
    },
    # pg_hba.conf, one dict per line. Shape: {"type": "host", "database": "spark",
    #   "user": "spark_app", "address": "127.0.0.1/32" | "group:app" (each host of that
    #   group, /32), "method": "scram-sha-256"}. Only scram-sha-256, plus peer for the local
    #   postgres superuser; network rules are "hostssl" (TLS inside: "host" is refused).
    "postgresql_hba_rules": [
        {"type": "local", "database": "all", "user": "postgres", "method": "peer"},
        # pgBouncer (same host) for the app role, and its auth_query lookup.
        {
            "type": "hostssl",
            "database": defaults.DATABASE_NAME,
            "user": f"{defaults.ROLE_APP},{defaults.ROLE_PGBOUNCER_AUTH}",
            "address": "127.0.0.1/32",
            "method": SCRAM,
        },
        # postgres_exporter (same host).
        {
            "type": "hostssl",
            "database": defaults.DATABASE_NAME,
            "user": defaults.ROLE_MONITORING,
            "address": "127.0.0.1/32",
            "method": SCRAM,
        },
        # Migrations run from the app hosts, direct to PostgreSQL as the owner.
        {
            "type": "hostssl",
            "database": defaults.DATABASE_NAME,
            "user": defaults.ROLE_MIGRATIONS,
            "address": "group:app",
            "method": SCRAM,
        },
    ],
}


class ConfigError(ValueError):
    """Group data the deploy cannot use; the message names the key and the fix."""


def pg_value(value) -> str:
    """A Python value as postgresql.conf spells it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def derived_settings(listen_address: str, extra: dict) -> dict:
    """The settings this project needs for archiving and SCRAM, then group data's extras."""
    settings = {
        "listen_addresses": f"localhost,{listen_address}",
        "port": defaults.POSTGRES_PORT,
        "password_encryption": SCRAM,
        "wal_level": "replica",
        "archive_mode": True,
        "archive_command": f"pgbackrest --stanza={defaults.PGBACKREST_STANZA} archive-push %p",
        "archive_timeout": defaults.ARCHIVE_TIMEOUT_SECONDS,
        "max_wal_senders": 4,
        # Recovery (a PITR restore's WAL replay) reads ahead in the WAL and prefetches the
        # blocks it will touch; PostgreSQL 15's default, spelled out because restore time
        # depends on it (docs/deploys.md, "Restore time").
        "recovery_prefetch": "try",
        # Full-page images compressed: less WAL to archive and to replay in a restore.
        "wal_compression": defaults.POSTGRES_WAL_COMPRESSION,
        # TLS inside (deploys/tls.py): hostssl rules only, so every network client uses it.
        "ssl": True,
        "ssl_cert_file": layout.POSTGRES_TLS_CERT,
        "ssl_key_file": layout.POSTGRES_TLS_KEY,
        "ssl_min_protocol_version": tls.TLS_MIN_PROTOCOL,
    }
    settings.update(extra)
    return settings


def split_settings(settings: dict) -> tuple[dict, dict]:
    """(needs restart, reload is enough), each as name -> postgresql.conf value."""
    restart = {k: pg_value(v) for k, v in sorted(settings.items()) if k in RESTART_SETTINGS}
    reload = {k: pg_value(v) for k, v in sorted(settings.items()) if k not in RESTART_SETTINGS}
    return restart, reload


def hba_rules(rules: list[dict], inventory_) -> list[dict]:
    """Expand `group:<name>` addresses; refuse all but SCRAM (and local peer for postgres)."""
    expanded = []
    for index, rule in enumerate(rules):
        missing = {"type", "database", "user", "method"} - set(rule)
        if missing:
            raise ConfigError(f"postgresql_hba_rules[{index}] lacks {sorted(missing)}: {rule}")
        local = rule["type"] == "local"
        if rule["method"] != SCRAM and not (
            local and rule["user"] == "postgres" and rule["method"] == "peer"
        ):
            raise ConfigError(
                f"postgresql_hba_rules[{index}] uses method {rule['method']!r}: only "
                f"{SCRAM} is allowed (and peer for the local postgres superuser)"
            )
        if local:
            expanded.append(dict(rule))
            continue
        if rule["type"] != "hostssl":
            raise ConfigError(
                f"postgresql_hba_rules[{index}] has type {rule['type']!r}: network rules "
                "must be 'hostssl' (TLS inside; clients use sslmode=verify-full)"
            )
        address = rule.get("address")
        if not address:
            raise ConfigError(f"postgresql_hba_rules[{index}] needs an address: {rule}")
        if address.startswith("group:"):
            group = address.removeprefix("group:")
            for addr in support.group_addresses(inventory_, group):
                expanded.append({**rule, "address": f"{addr}/32"})
        else:
            expanded.append(dict(rule))
    return expanded


def role_changes(state: dict, verifiers: dict[str, str], passwords: dict[str, str]) -> dict:
    """Which roles need CREATE and which an ALTER ROLE PASSWORD; the password guard.

    `state` is the PostgresState fact; `verifiers` what the deploy would store; `passwords`
    the plain passwords, compared with the stored verifier (its own salt) so an unchanged
    password issues nothing.
    """
    stored = state.get("roles", {})
    create = [r for r in verifiers if r not in stored]
    alter = [r for r in verifiers if not verifier_matches(stored.get(r), passwords[r])]
    return {"create": create, "alter": alter}


def _psql(sql_text: str, dbname: str = "postgres") -> StringCommand:
    """psql with the SQL as its argument: only for SQL that carries no secret."""
    return StringCommand(
        "runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d",
        dbname,
        "-c",
        QuoteString(sql_text),
    )


def _psql_secret(sql_text: str, dbname: str = "postgres"):
    """psql reading SQL that carries verifiers from a root-only file on its stdin (no command
    line, no log shows them; the file is removed whether psql succeeds or not)."""
    yield from secretfiles.secret_file._inner(src=StringIO(sql_text + ";\n"), dest=SECRET_SQL)
    yield (
        f"runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d {dbname} -f - < {SECRET_SQL}; "
        f"rc=$?; rm -f {SECRET_SQL}; exit $rc"
    )


def _sql(statement) -> str:
    return statement.as_string(None)


ROLE_ORDER = (
    defaults.ROLE_MIGRATIONS,
    defaults.ROLE_APP,
    defaults.ROLE_PGBOUNCER_AUTH,
    defaults.ROLE_MONITORING,
)


def _statements_by_role(passwords: dbroles.RolePasswords) -> dict[str, tuple[str, str]]:
    """dbroles.role_statements as role -> (create, alter); checked, so a reorder fails loudly."""
    statements = [_sql(s) for s in dbroles.role_statements(passwords)]
    pairs = {}
    for index, role in enumerate(ROLE_ORDER):
        create, alter = statements[2 * index], statements[2 * index + 1]
        if f'"{role}"' not in alter or f"'{role}'" not in create:
            raise RuntimeError(f"sparkops.dbroles.role_statements changed order near {role}")
        pairs[role] = (create, alter)
    return pairs


@operation()
def roles(environment: str):
    """Ensure the app's roles exist with the environment's passwords, issuing nothing when
    they already do. Takes the environment, not the passwords, so no argument shows them."""
    passwords = secrets.load(environment).role_passwords()
    plain = {
        defaults.ROLE_MIGRATIONS: passwords.migrations,
        defaults.ROLE_APP: passwords.app,
        defaults.ROLE_PGBOUNCER_AUTH: passwords.pgbouncer_auth,
        defaults.ROLE_MONITORING: passwords.monitoring,
    }
    # Store verifiers, not plain passwords: the plain text never reaches the server.
    verifiers = {role: secrets.stable_verifier(role, pw) for role, pw in plain.items()}
    statements = _statements_by_role(
        dbroles.RolePasswords(
            migrations=verifiers[defaults.ROLE_MIGRATIONS],
            app=verifiers[defaults.ROLE_APP],
            pgbouncer_auth=verifiers[defaults.ROLE_PGBOUNCER_AUTH],
            monitoring=verifiers[defaults.ROLE_MONITORING],
        )
    )
    state = host.get_fact(PostgresState, roles=list(ROLE_ORDER))
    changes = role_changes(state, verifiers, plain)
    script = []
    for role in ROLE_ORDER:
        create, alter = statements[role]
        if role in changes["create"]:
            script.append(create)
        if role in changes["alter"]:
            script.append(alter)
    if script:
        yield from _psql_secret(";\n".join(script))
    if defaults.ROLE_MONITORING not in state.get("pg_monitor_members", []):
        yield _psql(_sql(dbroles.role_statements(passwords)[-1]))
    if not changes["create"] and not changes["alter"]:
        host.noop("roles exist with the wanted passwords")


@operation()
def role_settings():
    """Ensure the app role's sessions start with their statement and idle-in-transaction
    bounds (sparkops.dbroles.role_settings), issuing nothing when pg_db_role_setting already
    holds those values."""
    state = host.get_fact(PostgresState, roles=list(ROLE_ORDER))
    statements = dbroles.role_setting_statements(state.get("role_settings", {}))
    if not statements:
        host.noop("role settings are as wanted")
        return
    yield _psql(";\n".join(_sql(s) for s in statements))


def privileges_marker(dbname: str) -> str:
    """A digest of the privilege SQL, stored as the database's comment: changed SQL reruns it."""
    text = "\n".join(_sql(s) for s in dbroles.privilege_statements(dbname))
    return "sparkops-privileges:" + hashlib.sha256(text.encode()).hexdigest()[:16]


@operation()
def database(dbname: str = defaults.DATABASE_NAME):
    """Ensure the database exists, owned by the migrations role, with grants, amcheck and the
    pgBouncer lookup function; rerun the grants only when dbroles' SQL changed."""
    state = host.get_fact(PostgresState, roles=list(ROLE_ORDER), dbname=dbname)
    if not state.get("database_exists"):
        yield _psql(_sql(dbroles.create_database_sql(dbname)))
    marker = privileges_marker(dbname)
    if state.get("database_comment") != marker:
        script = ";\n".join(_sql(s) for s in dbroles.privilege_statements(dbname))
        script += f";\nCOMMENT ON DATABASE \"{dbname}\" IS '{marker}'"
        yield _psql(script, dbname=dbname)
    else:
        host.noop(f"database {dbname} is set up ({marker})")


@deploy("PostgreSQL", data_defaults=DEFAULTS)
def postgresql() -> dict:
    """Returns {"role_settings": [op]}: pgBouncer reconnects its servers when it changed."""
    files.put(
        name="Create clusters with UTF-8 and data checksums",
        src=support.rendered("postgresql/createcluster.conf.j2"),
        dest="/etc/postgresql-common/createcluster.conf",
        mode="644",
    )
    apt.packages(
        name=f"Install PostgreSQL {VERSION}",
        packages=host.data.postgresql_packages,
        no_recommends=True,
    )
    unit_dropin = files.put(
        name="Stop PostgreSQL fast even while its unit is starting",
        src=support.rendered("postgresql/unit-override.conf.j2", service=SERVICE),
        dest=layout.POSTGRES_UNIT_DROPIN,
        mode="644",
    )
    systemd.daemon_reload(
        name="Reload systemd for PostgreSQL's unit drop-in", _if=unit_dropin.did_change
    )
    key_pair = tls.key_pair(
        "postgresql",
        layout.POSTGRES_TLS_CERT,
        layout.POSTGRES_TLS_KEY,
        owner="postgres",
        what="PostgreSQL",
    )
    include = files.line(
        name="Include conf.d from postgresql.conf",
        path=f"{CONF_DIR}/postgresql.conf",
        line="^include_dir = 'conf.d'",
        replace="include_dir = 'conf.d'",
    )
    settings = derived_settings(support.address(host), host.data.postgresql_settings)
    restart, reload = split_settings(settings)
    restart_conf = files.put(
        name="Configure PostgreSQL settings that need a restart",
        src=support.rendered(
            "postgresql/settings.conf.j2",
            settings=restart,
            purpose="Need a restart: the deploy restarts PostgreSQL when they change.",
        ),
        dest=f"{CONF_DIR}/conf.d/50-sparkops-restart.conf",
        user="postgres",
        group="postgres",
        mode="644",
    )
    reload_conf = files.put(
        name="Configure PostgreSQL WAL archiving and the other reloadable settings",
        src=support.rendered(
            "postgresql/settings.conf.j2",
            settings=reload,
            purpose="Reloadable settings: the deploy reloads PostgreSQL when they change.",
        ),
        dest=f"{CONF_DIR}/conf.d/60-sparkops.conf",
        user="postgres",
        group="postgres",
        mode="644",
    )
    hba = files.put(
        name="Configure pg_hba.conf (SCRAM only, TLS for the network)",
        src=support.rendered(
            "postgresql/pg_hba.conf.j2",
            rules=hba_rules(host.data.postgresql_hba_rules, inventory),
        ),
        dest=f"{CONF_DIR}/pg_hba.conf",
        user="postgres",
        group="postgres",
        mode="640",
    )
    systemd.service(
        name="Ensure PostgreSQL is running and enabled",
        service=SERVICE,
        running=True,
        enabled=True,
    )
    systemd.service(
        name="Restart PostgreSQL for changed restart-only settings",
        service=SERVICE,
        restarted=True,
        _if=lambda: restart_conf.did_change() or include.did_change(),
    )
    systemd.service(
        name="Reload PostgreSQL for changed settings, pg_hba.conf or TLS key pair",
        service=SERVICE,
        reloaded=True,
        _if=[
            lambda: not (restart_conf.did_change() or include.did_change()),
            lambda: (
                reload_conf.did_change()
                or hba.did_change()
                or any(op.did_change() for op in key_pair)
            ),
        ],
    )
    roles(name="Ensure the app's roles and passwords", environment=support.environment(host))
    settings_op = role_settings(name="Bound the app role's statements and idle transactions")
    database(name=f"Ensure database {defaults.DATABASE_NAME}, grants and amcheck")
    return {"role_settings": [settings_op]}
