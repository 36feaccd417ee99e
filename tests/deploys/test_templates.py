"""Every template renders with the group data, carries the header, and says what it must."""

from __future__ import annotations

import configparser
import runpy
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from deploys import app, hacluster, monitoring, pgbackrest, pgbouncer, postgresql, support
from deploys.facts import PgBackRestVersion
from sparkops import defaults, layout, secrets
from sparkops.secrets import Secrets
from testkit.pgbouncer import PgBouncer

GROUP_DATA = support.REPO_ROOT / "inventories" / "group_data"
CREDS = Secrets({name: f"pw-{name}" for name in secrets.NAMES})


def group_data(*groups: str) -> dict:
    """What a host of these groups sees, as pyinfra merges it: the deploys' defaults, then
    group data (which holds only what differs from them)."""
    data: dict = {}
    for deploy in (app, monitoring, pgbackrest, pgbouncer, postgresql):
        data.update(deploy.DEFAULTS)
    for group in ("all", *groups):
        data.update(
            {
                k: v
                for k, v in runpy.run_path(str(GROUP_DATA / f"{group}.py")).items()
                if not k.startswith("_") and k != "defaults"
            }
        )
    return data


class Data(dict):
    """host.data's `get` for support.address()."""


def _addr_host(addr):
    return SimpleNamespace(name=addr, data=Data(ssh_hostname=addr))


INVENTORY = SimpleNamespace(
    get_group=lambda name, default=None: {
        "db": [_addr_host("10.0.0.10")],
        "app": [_addr_host("10.0.0.11"), _addr_host("10.0.0.21")],
        "monitor": [_addr_host("10.0.0.12")],
    }.get(name, default)
)


def test_every_template_starts_with_the_managed_header():
    templates = sorted(support.TEMPLATES_DIR.rglob("*.j2"))
    assert len(templates) >= 15
    for path in templates:
        head = "\n".join(path.read_text().splitlines()[:3])
        assert "{{ header }}" in head, f"{path} lacks the managed header"
    assert support.MANAGED_HEADER == "managed by Spark Ops - do not edit"


def test_pg_hba_is_scram_only_and_expands_groups():
    data = group_data("db")
    rules = postgresql.hba_rules(data["postgresql_hba_rules"], INVENTORY)
    text = support.render("postgresql/pg_hba.conf.j2", rules=rules)
    assert text.startswith("# managed by Spark Ops - do not edit")
    lines = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    assert lines, "no rules rendered"
    for words in lines:
        if words[0] == "local":
            assert words[2:] == ["postgres", "peer"]
        else:
            # TLS inside: every network rule is hostssl (a client without TLS matches none).
            assert words[0] == "hostssl" and words[-1] == "scram-sha-256", words
    owner_rules = [w for w in lines if w[2] == defaults.ROLE_MIGRATIONS]
    assert [w[3] for w in owner_rules] == ["10.0.0.11/32", "10.0.0.21/32"]


@pytest.mark.parametrize(
    "rule",
    [
        {"type": "host", "database": "all", "user": "all", "address": "0/0", "method": "md5"},
        {"type": "host", "database": "all", "user": "all", "address": "0/0", "method": "trust"},
        {"type": "local", "database": "all", "user": "spark_app", "method": "peer"},
        {"type": "host", "database": "all", "user": "x", "method": "scram-sha-256"},
        {"type": "host", "user": "x", "address": "1.2.3.4/32", "method": "scram-sha-256"},
        # Right method, but without TLS.
        {
            "type": "host",
            "database": "all",
            "user": "x",
            "address": "1.2.3.4/32",
            "method": "scram-sha-256",
        },
        {
            "type": "hostnossl",
            "database": "all",
            "user": "x",
            "address": "1.2.3.4/32",
            "method": "scram-sha-256",
        },
    ],
)
def test_pg_hba_refuses_weak_or_incomplete_rules(rule):
    with pytest.raises(postgresql.ConfigError, match="postgresql_hba_rules"):
        postgresql.hba_rules([rule], INVENTORY)


def test_postgresql_settings_archive_through_pgbackrest_and_split_by_restart():
    settings = postgresql.derived_settings("10.0.0.10", group_data("db")["postgresql_settings"])
    restart, reload = postgresql.split_settings(settings)
    assert restart["archive_mode"] == "on"
    assert restart["wal_level"] == "'replica'"
    assert restart["listen_addresses"] == "'localhost,10.0.0.10'"
    assert reload["archive_command"] == (
        f"'pgbackrest --stanza={defaults.PGBACKREST_STANZA} archive-push %p'"
    )
    assert reload["archive_timeout"] == str(defaults.ARCHIVE_TIMEOUT_SECONDS)
    assert reload["password_encryption"] == "'scram-sha-256'"
    # TLS on, the deploy's key pair, TLS 1.3 at least (all reloadable).
    assert reload["ssl"] == "on"
    assert reload["ssl_cert_file"] == f"'{layout.POSTGRES_TLS_CERT}'"
    assert reload["ssl_key_file"] == f"'{layout.POSTGRES_TLS_KEY}'"
    assert reload["ssl_min_protocol_version"] == "'TLSv1.3'"
    text = support.render("postgresql/settings.conf.j2", settings=reload, purpose="x")
    assert "archive_command = 'pgbackrest --stanza=spark archive-push %p'" in text


def _pgbouncer_ini(data: dict) -> configparser.ConfigParser:
    text = support.render(
        "pgbouncer/pgbouncer.ini.j2",
        databases=data["pgbouncer_databases"],
        settings=pgbouncer.settings(data, "10.0.0.10"),
    )
    assert text.startswith(";; managed by Spark Ops - do not edit")
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=(";",))
    parser.read_string(text)
    return parser


def test_postgresql_unit_dropin_makes_every_stop_a_fast_shutdown():
    text = support.render("postgresql/unit-override.conf.j2", service=postgresql.SERVICE)
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(text)
    assert dict(unit["Service"]) == {"killsignal": "SIGINT"}
    assert (
        f"/etc/systemd/system/{postgresql.SERVICE}.d/sparkops.conf" == layout.POSTGRES_UNIT_DROPIN
    )


def test_pgbouncer_ini_is_valid_with_pools_from_group_data():
    data = {**pgbouncer.DEFAULTS, **group_data("db")}
    ini = _pgbouncer_ini(data)
    db_line = ini["databases"][defaults.DATABASE_NAME]
    assert f"port={defaults.POSTGRES_PORT}" in db_line
    section = ini["pgbouncer"]
    assert section["default_pool_size"] == str(defaults.PGBOUNCER_DEFAULT_POOL_SIZE)
    assert section["auth_type"] == "scram-sha-256"
    assert section["auth_query"] == "SELECT uname, phash FROM pgbouncer.user_lookup($1)"
    assert section["pool_mode"] == "transaction"
    assert section["listen_addr"] == "127.0.0.1,10.0.0.10"
    assert section["listen_port"] == str(defaults.PGBOUNCER_PORT)
    assert section["default_pool_size"] == str(defaults.PGBOUNCER_DEFAULT_POOL_SIZE)


def test_pgbouncer_tls_both_ways():
    tls = pgbouncer.tls_settings("/c.crt", "/c.key", "/ca.crt")
    assert tls["client_tls_sslmode"] == "require"
    assert (tls["client_tls_cert_file"], tls["client_tls_key_file"]) == ("/c.crt", "/c.key")
    assert tls["server_tls_sslmode"] == "verify-full"
    assert tls["server_tls_ca_file"] == "/ca.crt"
    assert tls["client_tls_protocols"] == tls["server_tls_protocols"] == "tlsv1.3"


def test_pgbouncer_settings_match_the_test_fixture(tmp_path):
    fixture = PgBouncer(
        upstream=SimpleNamespace(host="h", port=1),
        dbname="spark",
        auth_password="x",
        workdir=tmp_path,
        tls=SimpleNamespace(cert="/c.crt", key="/c.key", ca="/ca.crt"),
    )
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(fixture.render_ini())
    fixture_keys = set(parser["pgbouncer"])
    deploy = {
        **pgbouncer.settings(pgbouncer.DEFAULTS, "10.0.0.10"),
        **pgbouncer.tls_settings("/c.crt", "/c.key", "/ca.crt"),
    }
    assert fixture_keys == set(deploy)
    paths = {"listen_addr", "listen_port", "unix_socket_dir", "auth_file", "pidfile", "logfile"}
    for key in fixture_keys - paths:
        assert parser["pgbouncer"][key] == deploy[key], key


def test_pgbouncer_auth_file_plain_for_auth_user_scram_for_the_others():
    text = support.render("pgbouncer/userlist.txt.j2", entries=pgbouncer.userlist_entries(CREDS))
    entries = dict(
        line.replace('"', "").split(" ", 1) for line in text.splitlines() if line.startswith('"')
    )
    assert entries[defaults.ROLE_PGBOUNCER_AUTH] == CREDS["postgresql_pgbouncer_auth"]
    assert entries[defaults.ROLE_PGBOUNCER_ADMIN].startswith("SCRAM-SHA-256$")
    assert entries[defaults.ROLE_PGBOUNCER_STATS].startswith("SCRAM-SHA-256$")
    # Stable: a second render is byte-identical, so a redeploy does not reload pgBouncer.
    again = support.render("pgbouncer/userlist.txt.j2", entries=pgbouncer.userlist_entries(CREDS))
    assert again == text


def test_pgbackrest_posix_and_s3_configurations():
    data = {**pgbackrest.DEFAULTS, **group_data("db")}
    glob, stanza = pgbackrest.options(data, CREDS)
    text = support.render(
        "pgbackrest/pgbackrest.conf.j2", stanza="spark", global_options=glob, stanza_options=stanza
    )
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    assert parser["global"]["repo1-type"] == "posix"
    assert parser["global"]["repo1-retention-full"] == str(data["pgbackrest_retention_full"])
    assert 10 <= int(parser["global"]["io-timeout"]) <= 15
    assert parser["global"]["archive-async"] == "y"
    assert parser["global"]["archive-get-queue-max"] == "1GiB"
    assert parser["global"]["repo1-cipher-type"] == "aes-256-cbc"
    assert parser["global"]["repo1-cipher-pass"] == CREDS["pgbackrest_cipher_pass"]
    assert parser["spark"]["pg1-path"] == f"/var/lib/postgresql/{defaults.POSTGRES_VERSION}/main"

    s3 = {
        **data,
        "pgbackrest_repo_type": "s3",
        "pgbackrest_repo_path": "/spark",
        "pgbackrest_s3": {
            "bucket": "b",
            "endpoint": "s3.lab",
            "region": "eu-central-1",
            "ca_file": "/etc/ssl/lab-ca.crt",
        },
    }
    glob, _ = pgbackrest.options(s3, CREDS, ("db-key", "db-secret"))
    assert glob["repo1-s3-bucket"] == "b"
    assert glob["repo1-s3-uri-style"] == "path"
    # The db hosts' own keys, never the deploy's bucket-administration keys.
    assert (glob["repo1-s3-key"], glob["repo1-s3-key-secret"]) == ("db-key", "db-secret")
    assert CREDS["s3_secret_key"] not in glob.values()
    assert glob["repo1-storage-ca-file"] == "/etc/ssl/lab-ca.crt"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"pgbackrest_repo_type": "ftp"}, "use 'posix' or 's3'"),
        ({"pgbackrest_repo_type": "s3", "pgbackrest_s3": {"bucket": "b"}}, "lacks"),
    ],
)
def test_pgbackrest_bad_data_is_refused(change, message):
    with pytest.raises(pgbackrest.ConfigError, match=message):
        pgbackrest.options({**pgbackrest.DEFAULTS, **change}, CREDS)


def test_pgbackrest_encryption_can_be_turned_off_and_needs_the_passphrase():
    glob, _ = pgbackrest.options({**pgbackrest.DEFAULTS, "pgbackrest_repo_cipher": False}, None)
    assert not any(k.startswith("repo1-cipher") for k in glob)
    with pytest.raises(pgbackrest.ConfigError, match="pgbackrest_cipher_pass"):
        pgbackrest.options(pgbackrest.DEFAULTS, None)


def test_block_incremental_is_off_by_default_and_bundles_blocks_when_on():
    glob, _ = pgbackrest.options(pgbackrest.DEFAULTS, CREDS)
    assert "repo1-bundle" not in glob and "repo1-block" not in glob
    on = {**pgbackrest.DEFAULTS, "pgbackrest_block_incremental": True}
    glob, stanza = pgbackrest.options(on, CREDS)
    text = support.render(
        "pgbackrest/pgbackrest.conf.j2", stanza="spark", global_options=glob, stanza_options=stanza
    )
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    # pgBackRest wants bundling before block incremental; never the beta switch.
    assert parser["global"]["repo1-bundle"] == "y" and parser["global"]["repo1-block"] == "y"
    assert "beta" not in parser["global"]
    with pytest.raises(pgbackrest.ConfigError, match="'yes': use true or false"):
        pgbackrest.options({**pgbackrest.DEFAULTS, "pgbackrest_block_incremental": "yes"}, CREDS)


@pytest.mark.parametrize(
    ("found", "refused"),
    [
        ("pgBackRest 2.45", "beta that pgBackRest says not to use in production"),  # Debian 12
        ("2.45-1", "beta"),  # apt's candidate, not installed yet
        ("pgBackRest 2.41", "needs pgBackRest 2.46 or later"),
        (None, "cannot tell which pgBackRest"),
        ("pgBackRest 2.46", None),
        ("2.54.2-1.pgdg120+1", None),  # apt.postgresql.org's package
        ("pgBackRest 3.0", None),
    ],
)
def test_block_incremental_is_refused_where_it_is_a_beta(found, refused):
    refusal = pgbackrest.block_incremental_refusal(True, found)
    if refused is None:
        assert refusal is None
    else:
        assert refused in refusal and "nothing was changed" in refusal
        assert "pgbackrest_block_incremental to false" in refusal
    # Off: never refused, whatever the host has.
    assert pgbackrest.block_incremental_refusal(False, found) is None


def test_the_version_fact_reads_this_machines_pgbackrest():
    """The fact's command and parsing against the real pgBackRest installed here (Debian 12's
    2.45): the deploy would refuse block incremental on this machine."""
    fact = PgBackRestVersion()
    out = subprocess.run(
        ["sh", "-c", fact.command()], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    found = fact.process(out.splitlines())
    installed = subprocess.run(
        ["pgbackrest", "version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert found == installed and found.startswith("pgBackRest 2.")
    expected_refusal = pgbackrest.version_of(found) < pgbackrest.BLOCK_INCREMENTAL_SINCE
    assert (pgbackrest.block_incremental_refusal(True, found) is not None) == expected_refusal
    assert fact.process(["(none)"]) is None and fact.process([]) is None
    assert fact.process(["", "2.45-1"]) == "2.45-1"


def _stanza(cipher: str) -> dict:
    return {"status": {"code": 0, "message": "ok"}, "cipher": cipher, "backup": []}


def test_an_existing_unencrypted_stanza_is_refused_not_switched():
    glob, _ = pgbackrest.options(pgbackrest.DEFAULTS, CREDS)
    here = pgbackrest.repository_identity(glob)
    # New stanza, or already encrypted: go on.
    assert pgbackrest.cipher_refusal({}, None, glob) is None
    assert pgbackrest.cipher_refusal({"status": {"code": 1}}, None, glob) is None
    assert pgbackrest.cipher_refusal(_stanza("aes-256-cbc"), here, glob) is None
    # Unencrypted where the configuration asks for encryption: refused, saying how to go on.
    refusal = pgbackrest.cipher_refusal(_stanza("none"), here, glob)
    assert "exists unencrypted" in refusal and "pgbackrest_repo_cipher = False" in refusal
    assert "new, empty location" in refusal and "Nothing was changed" in refusal
    # The same, deployed before the repository marker existed.
    assert pgbackrest.cipher_refusal(_stanza("none"), None, glob) == refusal
    # The migration: the repository moves, its new stanza is created encrypted.
    assert (
        pgbackrest.cipher_refusal(_stanza("none"), "repo1-type=posix repo1-path=/old", glob) is None
    )
    # The reverse: turning encryption off on an encrypted stanza is refused too.
    plain, _ = pgbackrest.options({**pgbackrest.DEFAULTS, "pgbackrest_repo_cipher": False}, None)
    assert "is encrypted" in pgbackrest.cipher_refusal(_stanza("aes-256-cbc"), here, plain)


def test_backup_units_and_timers():
    unit = support.render("pgbackrest/backup@.service.j2", stanza="spark", metric_script="/x",
                          timeout="12h", hardening=[], condition=None,
                          backup_script=None)  # fmt: skip
    assert "ExecStart=/usr/bin/pgbackrest --stanza=spark --type=%i backup" in unit
    assert "User=postgres" in unit
    assert "ExecCondition" not in unit  # a single host backs up, whatever its state
    # On a Patroni node only the primary backs up (tests/ha runs the condition for real).
    cluster = support.render("pgbackrest/backup@.service.j2", stanza="spark",
                             metric_script="/x", timeout="12h", hardening=[],
                             condition=hacluster.role_condition("primary"),
                             backup_script="/usr/local/sbin/b")  # fmt: skip
    assert "ExecCondition=/bin/sh -c" in cluster and "pg_is_in_recovery()" in cluster
    # ... and copies the files from a replica through the script (tests/ha runs it for real).
    assert "ExecStart=/usr/local/sbin/b %i" in cluster
    assert "ExecStart=/usr/bin/pgbackrest" not in cluster
    timer = support.render("pgbackrest/backup.timer.j2", kind="full", schedule="Sun 01:00")
    assert "Unit=pgbackrest-backup@full.service" in timer
    assert "OnCalendar=Sun 01:00" in timer
    # Full, differential and incremental, each with a schedule in the defaults.
    assert pgbackrest.BACKUP_KINDS == ("full", "diff", "incr")
    for kind in pgbackrest.BACKUP_KINDS:
        assert pgbackrest.DEFAULTS[f"pgbackrest_{kind}_schedule"]


def test_app_units_run_the_current_release():
    unit = support.render(
        "app/spark-app.service.j2",
        user="spark",
        current="/opt/spark-app/current",
        env_file="/etc/spark-app/app.env",
        keep_alive=defaults.APP_KEEP_ALIVE_SECONDS,
        graceful_seconds=defaults.APP_GRACEFUL_SHUTDOWN_SECONDS,
        hardening=[],
    )
    assert "--factory app.main:create_app" in unit
    assert f"--timeout-keep-alive {defaults.APP_KEEP_ALIVE_SECONDS}" in unit
    timeout = f"--timeout-graceful-shutdown {defaults.APP_GRACEFUL_SHUTDOWN_SECONDS}"
    assert timeout in unit
    # Socket activation: the app listens on the socket unit's fd 3, never binds the port.
    assert "--fd 3" in unit and "--port" not in unit
    assert f"Requires={layout.APP_SOCKET}" in unit
    socket_unit = support.render(
        f"app/{layout.APP_SOCKET}.j2",
        listen_host="0.0.0.0",
        port=defaults.APP_PORT,
        backlog=defaults.APP_LISTEN_BACKLOG,
    )
    assert f"ListenStream=0.0.0.0:{defaults.APP_PORT}" in socket_unit
    assert f"Backlog={defaults.APP_LISTEN_BACKLOG}" in socket_unit
    assert "EnvironmentFile=/opt/spark-app/current/release.env" in unit
    script = support.render(
        "app/spark-app-activate.sh.j2",
        root=layout.APP_ROOT,
        current=layout.APP_CURRENT_LINK,
        port=defaults.APP_PORT,
        preflight_port=defaults.APP_PREFLIGHT_PORT,
        user=layout.APP_USER,
        env_file=layout.APP_ENV_FILE,
        hardening=[],
        ready_timeout=60,
        services="spark-app.service",
    )
    assert 'mv -T "$root/current.tmp" "$root/current"' in script
    # the preflight, on loopback beside the live app, before the switch
    assert f"127.0.0.1:{defaults.APP_PREFLIGHT_PORT}/readyz" in script
    assert script.index("preflight_ready; then") < script.index('switch "$target"')
    # a restart that fails must still reach the gate and the switch back (set -e)
    assert "systemctl restart spark-app.service || " in script
    # restarts go to the service; the socket is only started (the first time), never restarted
    assert f"systemctl start {layout.APP_SOCKET}" in script
    assert f"restart {layout.APP_SOCKET}" not in script
    assert f"127.0.0.1:{defaults.APP_PORT}/readyz" in script


def test_app_env_binds_metrics_to_the_private_address():
    """The names the template writes are the ones app.config reads."""
    from app.config import Settings

    text = support.render("app/app.env.j2", user="spark", database_url="host=db",
                          metrics_host="10.0.0.21", metrics_port=defaults.APP_METRICS_PORT,
                          extra={})  # fmt: skip
    env = dict(
        (name, value.strip('"'))
        for name, _, value in (line.partition("=") for line in text.splitlines())
        if name and not name.startswith("#")
    )
    settings = Settings.from_env(env)
    assert (settings.metrics_host, settings.metrics_port) == ("10.0.0.21", 9311)


def test_idempotency_keys_expire_through_an_hourly_timer():
    unit = support.render(
        "app/spark-idempotency-purge.service.j2",
        user="spark",
        current="/opt/spark-app/current",
        env_file="/etc/spark-app/app.env",
        ttl_hours=defaults.IDEMPOTENCY_KEY_TTL_HOURS,
        timeout=app.PURGE_TIMEOUT,
        hardening=[],
    )
    assert (
        "ExecStart=/opt/spark-app/current/venv/bin/sparkops app purge-idempotency-keys "
        f"--older-than-hours {defaults.IDEMPOTENCY_KEY_TTL_HOURS} --yes"
    ) in unit
    assert "EnvironmentFile=/etc/spark-app/app.env" in unit and "Type=oneshot" in unit
    assert "OnCalendar=hourly" in support.render("app/spark-idempotency-purge.timer.j2")


def test_app_database_urls_go_through_pgbouncer_except_migrations():
    urls = app.database_urls("10.0.0.10", CREDS)
    assert f"@10.0.0.10:{defaults.PGBOUNCER_PORT}/{defaults.DATABASE_NAME}" in urls["app"]
    assert urls["app"].startswith(f"postgresql://{defaults.ROLE_APP}:")
    assert f"@10.0.0.10:{defaults.POSTGRES_PORT}/" in urls["migrations"]
    assert f"/{defaults.PGBOUNCER_ADMIN_DB}?" in urls["exporter"]
    # TLS inside: every client verifies the server's name against the environment's CA;
    # migrations (PostgreSQL direct) also bind SCRAM to the TLS channel.
    tls = f"sslmode=verify-full&sslrootcert={layout.TLS_CA_FILE}"
    for name in ("app", "migrations", "exporter"):
        assert urls[name].endswith(tls) or urls[name].endswith(tls + "&channel_binding=require")
    assert urls["migrations"].endswith("&channel_binding=require")
    assert "channel_binding" not in urls["app"] + urls["exporter"]


def test_releases_to_remove_keeps_the_newest_and_the_current():
    newest_first = ["r7", "r6", "r5", "r4", "r3", "r2", "r1", "r0.tar"]
    assert app.releases_to_remove(newest_first, "r6", 5) == ["r2", "r1"]
    assert app.releases_to_remove(newest_first, "r1", 5) == ["r2"]
    assert app.releases_to_remove(newest_first[:3], "r7", 5) == []


def test_prometheus_config_scrapes_every_exporter_by_job():
    jobs = monitoring.scrape_jobs(INVENTORY, {})
    text = support.render(
        "monitoring/prometheus.yml.j2",
        scrape_interval="15s",
        environment="lab",
        alertmanagers=["10.0.0.12:9093"],
        rules_dir=monitoring.RULES_DIR,
        jobs=jobs,
        web_auth={"ca_file": "/ca.crt", "username": "u", "password_file": "/pw"},
    )
    config = yaml.safe_load(text)
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    # the app's metrics port, not the public one (which answers 404 for /metrics)
    assert targets["spark-app"] == ["10.0.0.11:9311", "10.0.0.21:9311"]
    assert defaults.APP_METRICS_PORT == 9311
    # the dispatcher is its own job: OutboxDispatcherDown selects job="spark-outbox"
    assert targets["spark-outbox"] == ["10.0.0.11:9310", "10.0.0.21:9310"]
    assert targets["pgbouncer"] == ["10.0.0.11:9127", "10.0.0.21:9127"]
    assert targets["postgres"] == ["10.0.0.10:9187"]
    assert targets["node"] == ["10.0.0.10:9100"]
    assert targets["prometheus"] == ["10.0.0.12:9090"]
    assert config["rule_files"] == [f"{monitoring.RULES_DIR}/*.yml"]


def test_alertmanager_config_is_valid_yaml_with_and_without_receivers():
    from deploys import alerting

    def render(receivers, routes, default):
        alerting.validate(receivers, routes, default)
        text = support.render(
            "monitoring/alertmanager.yml.j2",
            receivers=receivers,
            routes=alerting.child_routes(routes),
            default_receiver=default,
            secrets_dir=alerting.SECRETS_DIR,
        )
        return yaml.safe_load(text)

    plain = render([], [], "null")
    assert plain["route"]["receiver"] == "null" and "routes" not in plain["route"]
    hooks = [{"name": "ops", "webhook": {"url": "https://hooks.example/x"}}]
    route = {"severity": "critical", "receivers": ["ops"], "group_wait": "10s",
             "group_interval": "5m", "repeat_interval": "1h"}  # fmt: skip
    paged = render(hooks, [route], "ops")
    assert paged["receivers"][1]["webhook_configs"][0]["url"] == "https://hooks.example/x"
    assert paged["route"]["routes"][0]["matchers"] == ['severity="critical"']


def test_inventories_hold_hosts_and_groups_only():
    for name in ("staging", "production"):
        text = (support.REPO_ROOT / "inventories" / f"{name}.py").read_text()
        assert "password" not in text.lower()
        groups = runpy.run_path(str(support.REPO_ROOT / "inventories" / f"{name}.py"))
        for group in ("db", "app", "monitor"):
            assert groups[group], f"{name}.py has no {group} hosts"


def test_templates_need_every_variable(tmp_path):
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        support.render("pgbouncer/pgbouncer.ini.j2", databases=[])
    assert Path(support.TEMPLATES_DIR).is_dir()


def test_backup_metric_script_renders_to_valid_python():
    script = pgbackrest.backup_metric_script()
    compile(script, "backup-metric", "exec")
    assert 'STANZA = "spark"' in script
    assert f'SOURCE_FILE = "{layout.PGBACKREST_BACKUP_SOURCE_FILE}"' in script
    assert "{{" not in script  # every placeholder filled


def test_the_wal_budget_check_renders_to_valid_python_with_its_logic_embedded():
    script = pgbackrest.wal_budget_script(pgbackrest.wal_budget(pgbackrest.DEFAULTS))
    compile(script, "wal-budget", "exec")
    assert "{{" not in script
    assert 'BUDGET = "5%"' in script and 'BUDGET_MIN = "1GiB"' in script
    assert f'REQUEST_FILE = "{layout.PGBACKREST_BACKUP_REQUEST_FILE}"' in script
    # The module's logic whole (not its docstring): what tests/unit/test_walbudget.py tests.
    logic = Path(pgbackrest.walbudget.__file__).read_text()
    assert logic[logic.index("\nimport re") :].strip() in script


def test_the_path_unit_starts_the_incremental_backup_on_each_request():
    path = pgbackrest.backup_due_path()
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(path.split("\n", 1)[1])  # after the managed-file header
    assert unit["Path"]["PathChanged"] == layout.PGBACKREST_BACKUP_REQUEST_FILE
    assert unit["Path"]["Unit"] == "pgbackrest-backup@incr.service"
    # The check's messages name the unit the path unit starts.
    script = pgbackrest.wal_budget_script(pgbackrest.wal_budget(pgbackrest.DEFAULTS))
    assert 'UNIT = "pgbackrest-backup@incr.service"' in script
    timer = support.render(
        "pgbackrest/wal-budget.timer.j2", service=layout.PGBACKREST_WAL_BUDGET_SERVICE,
        check_seconds=30,
    )  # fmt: skip
    assert "OnUnitInactiveSec=30s" in timer and "OnActiveSec=30s" in timer
    assert f"Unit={layout.PGBACKREST_WAL_BUDGET_SERVICE}" in timer


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("pgbackrest_incr_wal_budget", "5 percent", "is not a size"),
        ("pgbackrest_incr_wal_budget", "0%", "above 0%"),
        ("pgbackrest_incr_wal_budget_min", "lots", "is not a size"),
        ("pgbackrest_wal_budget_check_seconds", 0, "at least 1"),
        ("pgbackrest_wal_budget_check_seconds", "30", "a whole number of seconds"),
        ("pgbackrest_incr_wal_min_interval_seconds", -1, "at least 0"),
    ],
)
def test_a_wal_budget_the_check_cannot_use_is_refused_by_the_deploy(key, value, said):
    with pytest.raises(pgbackrest.ConfigError, match=said):
        pgbackrest.wal_budget({**pgbackrest.DEFAULTS, key: value})


def test_a_wal_budget_of_none_turns_the_check_off():
    assert (
        pgbackrest.wal_budget({**pgbackrest.DEFAULTS, "pgbackrest_incr_wal_budget": None}) is None
    )


def test_the_unit_runs_the_dispatcher_under_its_hosts_name():
    unit = support.render(
        "app/spark-outbox.service.j2",
        user="spark",
        current="/opt/spark-app/current",
        env_file="/etc/spark-app/outbox.env",
        publisher="redis",
        metrics_host="10.0.0.11",
        metrics_port=9310,
        dispatcher_name=app.outbox_name("app2"),
        hardening=[],
    )
    assert "--name spark-outbox@app2 " in unit
    assert "--metrics-host 10.0.0.11 --metrics-port 9310" in unit  # private address only
    assert "%N" not in unit  # the unit's name is the same on every host


def test_the_app_trusts_forwarded_addresses_from_the_load_balancers_only():
    context = dict(user="spark", current="/opt/spark-app/current", env_file="/etc/x.env",
                   keep_alive=1, graceful_seconds=2, hardening=[])  # fmt: skip
    behind = support.render("app/spark-app.service.j2", forwarded_allow_ips="10.0.0.30", **context)
    alone = support.render("app/spark-app.service.j2", forwarded_allow_ips="", **context)
    start = [line for line in behind.splitlines() if line.startswith("ExecStart=")]
    assert start[0].endswith(" --forwarded-allow-ips 10.0.0.30"), start
    assert "\nRestart=on-failure\n" in behind and "\nRestart=on-failure\n" in alone
    alone_start = [line for line in alone.splitlines() if line.startswith("ExecStart=")]
    assert "--forwarded-allow-ips" not in alone_start[0]  # uvicorn's default: loopback only


def test_the_wal_budget_unit_runs_the_check_then_publishes_its_figures():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(pgbackrest.wal_budget_unit("/var/lib/pgbackrest", cluster=False))
    service = unit["Service"]
    assert service["User"] == "postgres" and service["Type"] == "oneshot"
    assert service["ExecStart"] == layout.PGBACKREST_WAL_BUDGET_SCRIPT
    # As root, with the check's own reading of the repository (no second `pgbackrest info`).
    assert service["ExecStartPost"] == f"+{pgbackrest.METRIC_SCRIPT} --after-check"
    assert "ExecCondition" not in service
    clustered = pgbackrest.wal_budget_unit("/var/lib/pgbackrest", cluster=True)
    assert "ExecCondition=" in clustered
