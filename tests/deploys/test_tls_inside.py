"""TLS inside for monitoring: the rendered web.config.file taken by the real Prometheus and
Alertmanager (HTTPS only, basic auth: no credentials or a wrong password is 401, the
environment's is 200, plain HTTP gets no API), Prometheus' configuration reaching itself and
Alertmanager over HTTPS with basic auth (promtool), and the pieces that make it stable."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import bcrypt
import httpx
import pytest
import yaml

from alerts import config as alert_config
from deploys import monitoring, support, tlsca
from sparkops import layout, webaccess
from sparkops.wait import wait_until
from testkit.proc import free_port, make_workdir, popen_as_service_user, stop_process
from testkit.tls import make_tls_files
from tests.deploys.test_templates import INVENTORY

PASSWORD = "web-test-password-1234"


@pytest.fixture
def tls_files():
    files = make_tls_files()
    yield files
    shutil.rmtree(files.workdir, ignore_errors=True)


def test_stable_bcrypt_is_byte_identical_and_checks():
    hashed = webaccess.stable_bcrypt(PASSWORD)
    assert hashed == webaccess.stable_bcrypt(PASSWORD)  # a redeploy rewrites nothing
    assert hashed.startswith("$2b$10$")
    assert bcrypt.checkpw(PASSWORD.encode(), hashed.encode())
    assert not bcrypt.checkpw(b"other", hashed.encode())
    assert webaccess.stable_bcrypt("other") != hashed


def test_webaccess_finds_the_ca_where_tlsca_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKOPS_SECRETS_DIR", str(tmp_path))
    tlsca.ca_pem("lab")
    assert webaccess.ca_file("lab") == tlsca.tls_dir("lab") / tlsca.CA_CERT_FILE
    assert webaccess.ca_file("lab").is_file()
    access = webaccess.for_environment("lab")
    assert access.username == webaccess.USERNAME and len(access.password) >= 24
    assert access.password not in repr(access)


def test_registered_access_goes_only_to_urls_under_its_base():
    access = webaccess.WebAccess("u", "p", Path("/nonexistent"))
    webaccess.register("https://10.9.9.9:9090", access)
    assert webaccess.access_for("https://10.9.9.9:9090/api/v1/query") is access
    assert webaccess.access_for("https://10.9.9.9:90900/api") is None
    assert webaccess.access_for("http://127.0.0.1:9090/api/v1/query") is None


def _render_prometheus_yml(tmp_path: Path, inventory=INVENTORY) -> str:
    return support.render(
        "monitoring/prometheus.yml.j2",
        scrape_interval="15s",
        environment="lab",
        alertmanagers=["10.0.0.12:9093"],
        rules_dir=str(tmp_path / "rules"),
        jobs=monitoring.scrape_jobs(inventory, {}),
        web_auth={
            "ca_file": str(tmp_path / "ca.crt"),
            "username": webaccess.USERNAME,
            "password_file": str(tmp_path / "password"),
        },
    )


def test_prometheus_reaches_itself_and_alertmanager_over_https_with_basic_auth(tmp_path, tls_files):
    config = yaml.safe_load(_render_prometheus_yml(tmp_path))
    (am,) = config["alerting"]["alertmanagers"]
    assert am["scheme"] == "https" and am["basic_auth"]["username"] == webaccess.USERNAME
    assert am["tls_config"]["ca_file"] == str(tmp_path / "ca.crt")
    by_job = {j["job_name"]: j for j in config["scrape_configs"]}
    for job in ("prometheus", "alertmanager"):
        assert by_job[job]["scheme"] == "https"
        assert by_job[job]["basic_auth"]["password_file"] == str(tmp_path / "password")
    # The exporters are plain HTTP on the private network (not part of this change).
    assert "scheme" not in by_job["postgres"] and "basic_auth" not in by_job["node"]
    shutil.copy(tls_files.ca, tmp_path / "ca.crt")
    (tmp_path / "password").write_text(PASSWORD)
    (tmp_path / "rules").mkdir()
    path = tmp_path / "prometheus.yml"
    path.write_text(_render_prometheus_yml(tmp_path))
    checked = subprocess.run(["promtool", "check", "config", str(path)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_scrapes_patroni_over_https_verified_and_etcd_as_before(tmp_path, tls_files):
    groups = {"db": ["10.0.0.10", "10.0.0.20"], "etcd": ["10.0.0.10", "10.0.0.20", "10.0.0.12"],
              "app": ["10.0.0.11"], "monitor": ["10.0.0.12"]}  # fmt: skip
    cluster = SimpleNamespace(
        get_group=lambda name, default=None: (
            [SimpleNamespace(name=a, data={"ssh_hostname": a}) for a in groups.get(name, [])]
            or default
        )
    )
    (tmp_path / "rules").mkdir()
    shutil.copy(tls_files.ca, tmp_path / "ca.crt")
    (tmp_path / "password").write_text(PASSWORD)
    text = _render_prometheus_yml(tmp_path, cluster)
    by_job = {j["job_name"]: j for j in yaml.safe_load(text)["scrape_configs"]}
    patroni = by_job[alert_config.JOB_PATRONI]
    assert patroni["scheme"] == "https" and "basic_auth" not in patroni
    assert patroni["tls_config"] == {"ca_file": str(tmp_path / "ca.crt")}
    assert patroni["static_configs"][0]["targets"] == ["10.0.0.10:8008", "10.0.0.20:8008"]
    assert "scheme" not in by_job[alert_config.JOB_ETCD]
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    checked = subprocess.run(["promtool", "check", "config", str(path)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_defaults_files_name_the_web_config_and_no_cluster_port():
    am = support.render("monitoring/alertmanager.default.j2", address="10.0.0.12", port=9093,
                        web_config=layout.ALERTMANAGER_WEB_CONFIG)  # fmt: skip
    args = next(line for line in am.splitlines() if line.startswith("ARGS="))
    assert f"--web.config.file={layout.ALERTMANAGER_WEB_CONFIG}" in args
    assert args.rstrip('"').endswith("--cluster.listen-address=")
    prom = support.render("monitoring/prometheus.default.j2", address="10.0.0.12", port=9090,
                          retention="15d", web_config=layout.PROMETHEUS_WEB_CONFIG)  # fmt: skip
    assert f"--web.config.file={layout.PROMETHEUS_WEB_CONFIG}" in prom


def _web_config(workdir: Path, files) -> Path:
    path = workdir / "web-config.yml"
    path.write_text(
        support.render(
            "monitoring/web-config.yml.j2",
            what="the test",
            cert_file=str(files.cert),
            key_file=str(files.key),
            username=webaccess.USERNAME,
            password_hash=webaccess.stable_bcrypt(PASSWORD),
        )
    )
    path.chmod(0o644)
    return path


def _server(kind: str, workdir: Path, web_config: Path, port: int) -> list[str]:
    listen = f"--web.listen-address=127.0.0.1:{port}"
    if kind == "prometheus":
        config = workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1m\n")
        return ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir}/data",
                listen, f"--web.config.file={web_config}"]  # fmt: skip
    config = workdir / "alertmanager.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    return ["prometheus-alertmanager", f"--config.file={config}",
            f"--storage.path={workdir}/data", listen, f"--web.config.file={web_config}",
            "--cluster.listen-address="]  # fmt: skip


@pytest.mark.parametrize("kind", ["prometheus", "alertmanager"])
def test_the_real_server_takes_the_web_config_https_and_basic_auth(kind, tls_files):
    workdir = make_workdir(f"web-{kind}")
    port = free_port()
    proc = popen_as_service_user(
        _server(kind, workdir, _web_config(workdir, tls_files), port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"https://127.0.0.1:{port}"
    access = webaccess.WebAccess(webaccess.USERNAME, PASSWORD, tls_files.ca)
    webaccess.register(base, access)
    try:

        def ready() -> bool:
            assert proc.poll() is None, f"{kind} exited"
            return webaccess.get(f"{base}/-/ready", timeout=2).status_code == 200

        wait_until(ready, timeout=30, what=f"{kind} to answer over HTTPS")
        anonymous = httpx.get(f"{base}/-/ready", verify=access.verify(), timeout=5)
        assert anonymous.status_code == 401
        wrong = httpx.get(f"{base}/-/ready", verify=access.verify(), timeout=5,
                          auth=(webaccess.USERNAME, "wrong"))  # fmt: skip
        assert wrong.status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=5).status_code == 400
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{base}/-/ready", timeout=5, auth=(webaccess.USERNAME, PASSWORD))
    finally:
        stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def test_outbox_settings_refuse_http_webhooks_and_credentials_in_the_redis_url():
    from deploys import app
    from sparkops import envvars

    ok = {envvars.OUTBOX_WEBHOOK_URL: "https://hooks.example/spark"}
    assert app.outbox_extra_settings(ok) == ok
    with pytest.raises(ValueError, match="https:// only"):
        app.outbox_extra_settings({envvars.OUTBOX_WEBHOOK_URL: "http://hooks.example/spark"})
    with pytest.raises(ValueError, match="app_outbox_redis_password"):
        app.outbox_extra_settings({envvars.OUTBOX_REDIS_URL: "redis://:pw@10.0.0.5:6379/0"})
    env = support.render(
        "app/outbox.env.j2",
        user="spark",
        database_url="postgresql://x",
        extra={envvars.OUTBOX_REDIS_PASSWORD_FILE: layout.OUTBOX_REDIS_PASSWORD_FILE},
    )
    assert f'{envvars.OUTBOX_REDIS_PASSWORD_FILE}="{layout.OUTBOX_REDIS_PASSWORD_FILE}"' in env


def test_production_redis_has_a_password_and_every_inventory_passes_the_checks():
    from deploys import app
    from tests.deploys.test_templates import group_data

    production = group_data("app", "production")
    assert production["app_outbox_redis_password"] is True
    for env in ("lab", "staging", "production"):
        app.outbox_extra_settings(group_data("app", env)["app_outbox_settings"])
