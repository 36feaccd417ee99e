"""Monitoring: exporters on the db hosts; Prometheus and Alertmanager on the monitor host,
with the generated alert rules and dashboard files when they exist.

Scrape jobs (names from alerts/config.py, which the rules select on):
  spark-app     the app's /metrics (app hosts, APP_METRICS_PORT on the private address)
  spark-outbox  the outbox dispatcher's /metrics (app hosts; OutboxDispatcherDown selects it)
  pgbouncer   app/pgbouncer_exporter.py (app hosts; see docs/deploys.md for why ours)
  postgres    postgres_exporter (db hosts)
  node        node_exporter, for the backup-time and drill textfile metrics (db hosts)
  prometheus, alertmanager   themselves (monitor host)
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from alerts import config as alert_config
from dashboards.build import GRAFANA_DASHBOARDS_DIR
from deploys import alerting, hardening, secretfiles, support, tls
from deploys.common import service
from sparkops import defaults, layout, secrets, webaccess

RULES_DIR = "/etc/prometheus/rules"
DASHBOARDS_DIR = GRAFANA_DASHBOARDS_DIR
GRAFANA_PROVISIONING = "/etc/grafana/provisioning/dashboards/spark-ops.yaml"
ALERT_RULES_SRC = support.REPO_ROOT / "alerts" / "generated"
DASHBOARDS_SRC = support.REPO_ROOT / "dashboards" / "generated"

DEFAULTS = {
    "monitoring_scrape_interval": "15s",
    "monitoring_retention": "15d",
    # Receivers (Slack, PagerDuty, e-mail, webhook) and routes by severity: the shapes are
    # in deploys/alerting.py. None: alerts are kept in Alertmanager but sent nowhere.
    "monitoring_alertmanager_receivers": [],
    "monitoring_alertmanager_routes": [],
    "monitoring_alertmanager_default_receiver": alerting.NULL_RECEIVER,
    # systemd [Service] settings over Debian's prometheus.service, e.g. {"PrivateUsers":
    # "false"} where systemd cannot make a user namespace (the lab, nested namespaces).
    "monitoring_prometheus_unit_overrides": {},
}
ALERTMANAGER_DEFAULTS = "/etc/default/prometheus-alertmanager"


def drop_in_path(unit: str) -> str:
    return f"/etc/systemd/system/{unit}.d/sparkops.conf"


def sandboxed(unit: str, what: str, overrides: dict | None = None):
    """Our sandbox (deploys/hardening.py) over Debian's `unit` as a drop-in, then any
    settings group data gives; systemd reloaded when it changed. Returns the put operation
    (a restart follows its change)."""
    drop_in = files.put(
        name=f"Sandbox {what} (a drop-in over Debian's unit)",
        src=support.rendered(
            "monitoring/unit-override.conf.j2",
            unit=unit,
            hardening=hardening.monitoring_service(unit),
            settings=overrides or {},
            source="monitoring_prometheus_unit_overrides",
            reason="settings this environment's hosts need over the sandbox",
        ),
        dest=drop_in_path(unit),
        mode="644",
    )
    systemd.daemon_reload(name=f"Reload systemd for {what}'s drop-in", _if=drop_in.did_change)
    return drop_in


def scrape_jobs(inventory_, app_data) -> list[dict]:
    """The scrape configuration, as a list of {name, metrics_path, targets}."""

    def targets(group: str, port: int) -> list[str]:
        return [f"{addr}:{port}" for addr in support.group_addresses(inventory_, group)]

    jobs = [
        {"name": "prometheus", "targets": targets("monitor", defaults.PROMETHEUS_PORT)},
        {"name": "alertmanager", "targets": targets("monitor", defaults.ALERTMANAGER_PORT)},
        # The app's /metrics is on its own port, on the private address (never APP_PORT).
        {"name": alert_config.JOB_APP, "targets": targets("app", defaults.APP_METRICS_PORT)},
        {
            "name": alert_config.JOB_POSTGRES,
            "targets": targets("db", defaults.POSTGRES_EXPORTER_PORT),
        },
        {"name": alert_config.JOB_NODE, "targets": targets("db", defaults.NODE_EXPORTER_PORT)},
    ]
    # A Patroni cluster (an etcd group): each node's REST API and each etcd member.
    if support.group_addresses(inventory_, "etcd"):
        jobs.append(
            {"name": alert_config.JOB_PATRONI, "targets": targets("db", defaults.PATRONI_REST_PORT)}
        )
        jobs.append(
            {"name": alert_config.JOB_ETCD, "targets": targets("etcd", defaults.ETCD_CLIENT_PORT)}
        )
    # Group data may leave these unset: the app deploy's defaults (enabled) then apply.
    if app_data.get("app_outbox_enabled") is not False:
        jobs.append(
            {
                "name": alert_config.JOB_OUTBOX,
                "targets": targets("app", defaults.OUTBOX_METRICS_PORT),
            }
        )
    if app_data.get("app_pgbouncer_exporter_enabled") is not False:
        jobs.append(
            {
                "name": alert_config.JOB_PGBOUNCER,
                "targets": targets("app", defaults.PGBOUNCER_EXPORTER_PORT),
            }
        )
    for job in jobs:
        job["metrics_path"] = defaults.APP_METRICS_PATH
        # Prometheus and Alertmanager sit behind their web.config.file: HTTPS, basic auth.
        job["web_auth"] = job["name"] in ("prometheus", "alertmanager")
        # Patroni's REST API is HTTPS (deploys/hacluster.RestApiTls): verified, no password
        # (its reads are open to the hosts the firewall lets in).
        job["https"] = job["name"] == alert_config.JOB_PATRONI
    return [job for job in jobs if job["targets"]]


def web_access() -> list:
    """Prometheus' and Alertmanager's web.config.file (TLS from the environment's CA, basic
    auth with the password's bcrypt hash), their key pair, and the plain password Prometheus
    sends to itself and to Alertmanager. Returns the operations (the servers read these files
    again on every connection or scrape: a change needs no restart)."""
    environment = support.environment(host)
    password = secrets.load(environment)[webaccess.SECRET_NAME]
    ops = tls.key_pair(
        "monitor",
        layout.MONITOR_TLS_CERT,
        layout.MONITOR_TLS_KEY,
        owner="prometheus",
        what="Prometheus and Alertmanager",
    )
    for what, dest in (
        ("Prometheus", layout.PROMETHEUS_WEB_CONFIG),
        ("Alertmanager", layout.ALERTMANAGER_WEB_CONFIG),
    ):
        ops.append(
            files.put(
                name=f"Configure {what}'s web.config.file (HTTPS and basic auth)",
                src=support.rendered(
                    "monitoring/web-config.yml.j2",
                    what=what,
                    cert_file=layout.MONITOR_TLS_CERT,
                    key_file=layout.MONITOR_TLS_KEY,
                    username=webaccess.USERNAME,
                    password_hash=webaccess.stable_bcrypt(password),
                ),
                dest=dest,
                user="root",
                group="prometheus",
                mode="640",
            )
        )
    ops.append(
        secretfiles.secret_file(
            name="Give Prometheus the password for itself and Alertmanager",
            src=StringIO(password),
            dest=layout.MONITOR_WEB_PASSWORD_FILE,
            user="root",
            group="prometheus",
            mode="640",
        )
    )
    return ops


def generated_files(directory: Path, pattern: str) -> list[Path]:
    """Generated artefacts (alert rules, dashboards) present in this checkout, sorted."""
    return sorted(directory.glob(pattern)) if directory.is_dir() else []


@deploy("Exporters", data_defaults=DEFAULTS)
def exporters() -> None:
    """postgres_exporter and node_exporter on a db host."""
    creds = secrets.load(support.environment(host))
    apt.packages(
        name="Install postgres_exporter and node_exporter",
        packages=["prometheus-postgres-exporter", "prometheus-node-exporter"],
        no_recommends=True,
    )
    dsn = (
        f"postgresql://{defaults.ROLE_MONITORING}:{creds['postgresql_monitoring']}@127.0.0.1:"
        f"{defaults.POSTGRES_PORT}/{defaults.DATABASE_NAME}"
    )
    # lib/pq (postgres_exporter) knows verify-full and sslrootcert, not channel_binding.
    dsn = tls.with_tls(dsn)
    pg_env = secretfiles.secret_file(
        name="Configure postgres_exporter",
        src=support.rendered(
            "monitoring/postgres-exporter.default.j2",
            dsn=dsn,
            address=support.address(host),
            port=defaults.POSTGRES_EXPORTER_PORT,
        ),
        dest="/etc/default/prometheus-postgres-exporter",
        user="root",
        group="prometheus",
        mode="640",
    )
    pg_unit = sandboxed("prometheus-postgres-exporter.service", "postgres_exporter")
    server.shell(
        name="Forget postgres_exporter's failed starts (it crash-loops until configured)",
        # The package starts it with an empty DSN; its restarts (100 ms apart) can reach the
        # start limit before the settings land, and the restart below would then be refused.
        commands=["systemctl reset-failed prometheus-postgres-exporter.service"],
        _if=lambda: pg_env.did_change() or pg_unit.did_change(),
    )
    service(
        "prometheus-postgres-exporter.service",
        changed=[pg_env, pg_unit],
        what="postgres_exporter",
    )
    node_env = files.put(
        name="Configure node_exporter (textfile collector)",
        src=support.rendered(
            "monitoring/node-exporter.default.j2",
            address=support.address(host),
            port=defaults.NODE_EXPORTER_PORT,
            textfile_dir=layout.NODE_EXPORTER_TEXTFILE_DIR,
        ),
        dest="/etc/default/prometheus-node-exporter",
        mode="644",
    )
    node_unit = sandboxed("prometheus-node-exporter.service", "node_exporter")
    service(
        "prometheus-node-exporter.service",
        changed=[node_env, node_unit],
        what="node_exporter",
    )


@deploy("Monitoring packages", data_defaults=DEFAULTS)
def monitoring_packages() -> None:
    """Prometheus and Alertmanager packages: needs nothing else, so it runs early."""
    apt.packages(
        name="Install Prometheus and Alertmanager",
        packages=["prometheus", "prometheus-alertmanager"],
        no_recommends=True,
    )


@deploy("Monitoring", data_defaults=DEFAULTS)
def monitoring() -> None:
    """Prometheus and Alertmanager configured on a monitor host, after the other tiers."""
    app_hosts = list(inventory.get_group("app", []))
    app_data = app_hosts[0].data if app_hosts else {}
    web = web_access()
    files.directory(name=f"Create {RULES_DIR}", path=RULES_DIR, mode="755")
    rules = [
        files.put(
            name=f"Install alert rules {path.name}",
            src=str(path),
            dest=f"{RULES_DIR}/{path.name}",
            mode="644",
        )
        for path in generated_files(ALERT_RULES_SRC, "*.yml")
    ]
    config = files.put(
        name="Configure Prometheus scrape jobs",
        src=support.rendered(
            "monitoring/prometheus.yml.j2",
            scrape_interval=host.data.monitoring_scrape_interval,
            environment=support.environment(host),
            alertmanagers=[f"{support.address(host)}:{defaults.ALERTMANAGER_PORT}"],
            rules_dir=RULES_DIR,
            jobs=scrape_jobs(inventory, app_data),
            web_auth={
                "ca_file": layout.TLS_CA_FILE,
                "username": webaccess.USERNAME,
                "password_file": layout.MONITOR_WEB_PASSWORD_FILE,
            },
        ),
        dest="/etc/prometheus/prometheus.yml",
        mode="644",
    )
    args = files.put(
        name="Set Prometheus retention",
        src=support.rendered(
            "monitoring/prometheus.default.j2",
            address=support.address(host),
            port=defaults.PROMETHEUS_PORT,
            retention=host.data.monitoring_retention,
            web_config=layout.PROMETHEUS_WEB_CONFIG,
        ),
        dest="/etc/default/prometheus",
        mode="644",
    )
    drop_in = sandboxed(
        "prometheus.service", "Prometheus", host.data.monitoring_prometheus_unit_overrides
    )
    server.shell(
        name="Check the Prometheus configuration and rules (promtool)",
        # Checks the rule files it names too; a bad file stops the deploy before the reload
        # (Prometheus would keep its old configuration and only log the error).
        commands=["promtool check config /etc/prometheus/prometheus.yml"],
        _if=lambda: any(op.did_change() for op in [config, *rules]),
    )
    service(
        "prometheus.service",
        changed=[args, drop_in],
        reload_on=[config, *rules, *web],
        what="Prometheus",
    )
    am_config = alertmanager_config()
    am_args = files.put(
        name="Set Alertmanager's listen address (no cluster port on a single node)",
        src=support.rendered(
            "monitoring/alertmanager.default.j2",
            address=support.address(host),
            port=defaults.ALERTMANAGER_PORT,
            web_config=layout.ALERTMANAGER_WEB_CONFIG,
        ),
        dest=ALERTMANAGER_DEFAULTS,
        mode="644",
    )
    am_unit = sandboxed("prometheus-alertmanager.service", "Alertmanager")
    service(
        "prometheus-alertmanager.service",
        changed=[am_args, am_unit],
        reload_on=am_config,
        what="Alertmanager",
    )
    dashboards = generated_files(DASHBOARDS_SRC, "*.json")
    if dashboards:
        files.directory(name=f"Create {DASHBOARDS_DIR}", path=DASHBOARDS_DIR, mode="755")
    for path in dashboards:
        files.put(
            name=f"Install dashboard {path.name}",
            src=str(path),
            dest=f"{DASHBOARDS_DIR}/{path.name}",
            mode="644",
        )
    provisioning = DASHBOARDS_SRC / "provisioning.yaml"
    if provisioning.exists():
        files.put(
            name="Install Grafana's dashboard provisioning file",
            src=str(provisioning),
            dest=GRAFANA_PROVISIONING,
            mode="644",
        )


def alertmanager_config() -> list:
    """Alertmanager's receivers and routes from group data, its secrets in files only it reads;
    `amtool check-config` before the reload. Returns the operations a reload follows."""
    receivers = host.data.monitoring_alertmanager_receivers
    routes = host.data.monitoring_alertmanager_routes
    default = host.data.monitoring_alertmanager_default_receiver
    alerting.validate(receivers, routes, default)
    needed = alerting.secret_files(receivers)
    changed = []
    if needed:
        files.directory(
            name=f"Create {alerting.SECRETS_DIR}",
            path=alerting.SECRETS_DIR,
            user="root",
            group="prometheus",
            mode="750",
        )
        environment = support.environment(host)
        for secret in needed:
            changed.append(
                secretfiles.secret_file(
                    name=f"Install Alertmanager secret {secret.name}",
                    src=StringIO(secrets.provided(environment, secret.name)),
                    dest=secret.path,
                    user="root",
                    group="prometheus",
                    mode="640",
                )
            )
    config = files.put(
        name="Configure Alertmanager",
        src=support.rendered(
            "monitoring/alertmanager.yml.j2",
            receivers=receivers,
            routes=alerting.child_routes(routes),
            default_receiver=default,
            secrets_dir=alerting.SECRETS_DIR,
        ),
        dest="/etc/prometheus/alertmanager.yml",
        # Receivers' addresses and routes: read by Alertmanager (group prometheus) only.
        user="root",
        group="prometheus",
        mode="640",
    )
    server.shell(
        name="Check the Alertmanager configuration (amtool)",
        commands=["amtool check-config /etc/prometheus/alertmanager.yml"],
        _if=config.did_change,
    )
    return [config, *changed]
