"""pgBouncer on the db hosts: transaction pooling in front of PostgreSQL, SCRAM via auth_query.

The [pgbouncer] settings are the same as the test fixture's (testkit/pgbouncer.py;
tests/deploys/test_templates.py checks they agree), with the host's paths and addresses.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.operations import apt, files, systemd

from deploys import hardening, secretfiles, support, tls
from sparkops import defaults, layout, secrets

SERVICE = layout.PGBOUNCER_SERVICE
CONF_DIR = layout.PGBOUNCER_CONF_DIR
SOCKET_DIR = layout.SOCKET_DIR
# The admin password for one RECONNECT, in a libpq password file that lives only while psql
# runs (root only): no password on a command line.
ADMIN_PASSFILE = "/root/.sparkops-pgbouncer-admin.pgpass"
AUTH_QUERY = "SELECT uname, phash FROM pgbouncer.user_lookup($1)"

DEFAULTS = {
    # Shape: {"name": "spark", "host": "127.0.0.1", "port": 5432, "dbname": "spark",
    #         "pool_size": 25}   (pool_size optional: default_pool_size applies)
    "pgbouncer_databases": [
        {
            "name": defaults.DATABASE_NAME,
            "host": "127.0.0.1",
            "port": defaults.POSTGRES_PORT,
            "dbname": defaults.DATABASE_NAME,
        }
    ],
    "pgbouncer_default_pool_size": defaults.PGBOUNCER_DEFAULT_POOL_SIZE,
    "pgbouncer_max_client_conn": defaults.PGBOUNCER_MAX_CLIENT_CONN,
    "pgbouncer_query_wait_timeout": 30,
    # Seconds a client may sit idle inside a transaction before pgBouncer disconnects it; a
    # backstop above the app role's own bound (see sparkops.defaults).
    "pgbouncer_idle_transaction_timeout": defaults.PGBOUNCER_IDLE_TRANSACTION_TIMEOUT_SECONDS,
    # Extra [pgbouncer] settings merged last (e.g. {"server_idle_timeout": 300}).
    "pgbouncer_settings": {},
}


def listen(address: str) -> str:
    return f"127.0.0.1,{address}:{defaults.PGBOUNCER_PORT}"


def settings(data, address: str) -> dict[str, str]:
    """The [pgbouncer] section, in the fixture's order, from group data."""
    values = {
        "listen_addr": f"127.0.0.1,{address}",
        "listen_port": str(defaults.PGBOUNCER_PORT),
        "unix_socket_dir": SOCKET_DIR,
        "auth_type": "scram-sha-256",
        "auth_file": f"{CONF_DIR}/userlist.txt",
        "auth_user": defaults.ROLE_PGBOUNCER_AUTH,
        "auth_query": AUTH_QUERY,
        "pool_mode": defaults.PGBOUNCER_POOL_MODE,
        "default_pool_size": str(data["pgbouncer_default_pool_size"]),
        "max_client_conn": str(data["pgbouncer_max_client_conn"]),
        "admin_users": defaults.ROLE_PGBOUNCER_ADMIN,
        "stats_users": defaults.ROLE_PGBOUNCER_STATS,
        "pidfile": "/run/pgbouncer/pgbouncer.pid",
        "logfile": layout.PGBOUNCER_LOG_FILE,
        "ignore_startup_parameters": "extra_float_digits,options",
        "server_reset_query": "",
        "query_wait_timeout": str(data["pgbouncer_query_wait_timeout"]),
        "idle_transaction_timeout": str(data["pgbouncer_idle_transaction_timeout"]),
        "server_login_retry": str(defaults.PGBOUNCER_SERVER_LOGIN_RETRY_SECONDS),
    }
    values.update({k: str(v) for k, v in data.get("pgbouncer_settings", {}).items()})
    return values


def tls_settings(cert_file: str, key_file: str, ca_file: str) -> dict[str, str]:
    """TLS both ways: clients must use it (they verify pgBouncer's certificate, verify-full);
    pgBouncer verifies PostgreSQL's against the CA. Shared with the test fixture
    (testkit/pgbouncer.py). pgBouncer 1.18 (Debian 12) offers SCRAM-SHA-256 but not its
    channel-bound -PLUS form, so clients cannot ask for channel_binding=require here."""
    protocols = tls.TLS_MIN_PROTOCOL.lower()
    return {
        "client_tls_sslmode": "require",
        "client_tls_cert_file": cert_file,
        "client_tls_key_file": key_file,
        "client_tls_protocols": protocols,
        "server_tls_sslmode": "verify-full",
        "server_tls_ca_file": ca_file,
        "server_tls_protocols": protocols,
    }


def userlist_entries(creds: secrets.Secrets) -> list[tuple[str, str]]:
    return [
        (defaults.ROLE_PGBOUNCER_AUTH, creds["postgresql_pgbouncer_auth"]),
        (
            defaults.ROLE_PGBOUNCER_ADMIN,
            secrets.stable_verifier(defaults.ROLE_PGBOUNCER_ADMIN, creds["pgbouncer_admin"]),
        ),
        (
            defaults.ROLE_PGBOUNCER_STATS,
            secrets.stable_verifier(defaults.ROLE_PGBOUNCER_STATS, creds["pgbouncer_stats"]),
        ),
    ]


def passfile_line(password: str) -> str:
    """A libpq password file entry for the admin console (':' and '\\' escaped)."""
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return (
        f"*:{defaults.PGBOUNCER_PORT}:{defaults.PGBOUNCER_ADMIN_DB}:"
        f"{defaults.ROLE_PGBOUNCER_ADMIN}:{escaped}\n"
    )


@operation()
def servers_reconnected(environment: str):
    """RECONNECT on pgBouncer's admin console: every server connection closes once its
    client releases it, so the next ones start with the roles' new settings (ALTER ROLE ...
    SET reaches new sessions only). No client is cut off; a stopped pgBouncer has nothing to
    reconnect. Takes the environment, not the password, so no argument shows it."""
    creds = secrets.load(environment)
    yield from secretfiles.secret_file._inner(
        src=StringIO(passfile_line(creds["pgbouncer_admin"])), dest=ADMIN_PASSFILE
    )
    yield StringCommand(
        f"systemctl is-active --quiet {SERVICE} || {{ rm -f {ADMIN_PASSFILE}; exit 0; }}; "
        f"PGPASSFILE={ADMIN_PASSFILE} psql -XAtq -h {SOCKET_DIR} -p {defaults.PGBOUNCER_PORT} "
        f"-U {defaults.ROLE_PGBOUNCER_ADMIN} -d {defaults.PGBOUNCER_ADMIN_DB} -c RECONNECT; "
        f"rc=$?; rm -f {ADMIN_PASSFILE}; exit $rc"
    )


def _data() -> dict:
    return {key: host.data.get(key) for key in DEFAULTS}


@deploy("pgBouncer", data_defaults=DEFAULTS)
def pgbouncer(reconnect_for=()) -> None:
    """`reconnect_for`: operations (the app role's settings) after whose change the server
    connections are replaced, so no pooled session keeps the old settings."""
    creds = secrets.load(support.environment(host))
    address = support.address(host)
    apt.packages(name="Install pgBouncer", packages=["pgbouncer"], no_recommends=True)
    unit = files.put(
        name="Give pgBouncer a runtime directory for its pidfile and a sandbox",
        src=support.rendered(
            "pgbouncer/override.conf.j2",
            listen=listen(address),
            hardening=hardening.pgbouncer_service(),
        ),
        dest="/etc/systemd/system/pgbouncer.service.d/sparkops.conf",
        mode="644",
    )
    key_pair = tls.key_pair(
        "pgbouncer",
        layout.PGBOUNCER_TLS_CERT,
        layout.PGBOUNCER_TLS_KEY,
        owner="postgres",
        what="pgBouncer",
    )
    ini = files.put(
        name="Configure pgbouncer.ini",
        src=support.rendered(
            "pgbouncer/pgbouncer.ini.j2",
            databases=host.data.pgbouncer_databases,
            settings={
                **settings(_data(), address),
                **tls_settings(
                    layout.PGBOUNCER_TLS_CERT, layout.PGBOUNCER_TLS_KEY, layout.TLS_CA_FILE
                ),
            },
        ),
        dest=f"{CONF_DIR}/pgbouncer.ini",
        user="postgres",
        group="postgres",
        mode="640",
    )
    userlist = secretfiles.secret_file(
        name="Configure pgBouncer's auth file",
        src=support.rendered("pgbouncer/userlist.txt.j2", entries=userlist_entries(creds)),
        dest=f"{CONF_DIR}/userlist.txt",
        user="postgres",
        group="postgres",
        mode="600",
    )
    systemd.daemon_reload(name="Reload systemd for pgBouncer's drop-in", _if=unit.did_change)
    systemd.service(
        name="Ensure pgBouncer is running and enabled",
        service=SERVICE,
        running=True,
        enabled=True,
    )
    systemd.service(
        name="Restart pgBouncer for a changed listen address or unit",
        service=SERVICE,
        restarted=True,
        _if=unit.did_change,
    )
    systemd.service(
        name="Reload pgBouncer for changed settings, users or TLS key pair",
        service=SERVICE,
        reloaded=True,
        _if=[
            unit.did_not_change,
            lambda: any(op.did_change() for op in [ini, userlist, *key_pair]),
        ],
    )
    servers_reconnected(
        name="Reconnect pgBouncer's server connections for changed role settings",
        environment=support.environment(host),
        _if=lambda: any(op.did_change() for op in reconnect_for),
    )
