"""The sandboxed units on the lab's hosts (systemd 252 as PID 1, as on a server): each of our
units scores below deploys/hardening.py's threshold as the running systemd sees it, the app's
three services run as users of their own with no capabilities, and the oneshots do their
work inside their sandbox. Then a deploy that has secrets to send (a role's password and the
app's settings changed behind its back) runs while every process's argv is sampled on the db
and app hosts: no secret is seen there, in the journal or in pyinfra's output."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploys import hardening, secretfiles
from deploys.support import REPO_ROOT
from lab import ssh
from sparkops import defaults, layout, secrets
from testkit import pyinfra_runner as runner
from tests.lab.stack import by_group, on_host, psql, site_env

pytestmark = [pytest.mark.lab, pytest.mark.slow]

UNITS = {
    "app": [*layout.APP_SERVICES, "spark-idempotency-purge.service"],
    "db": [
        layout.PGBOUNCER_SERVICE,
        "pgbackrest-backup@incr.service",
        layout.PGBACKREST_WAL_BUDGET_SERVICE,
        "spark-restore-drill.service",
    ],
}
SAMPLES = "/run/sparkops-ps-samples"
STOP = "/run/sparkops-ps-stop"
# Every process's argv, every 50 ms, for at most 30 minutes or until STOP exists.
SAMPLER = (
    f"rm -f {SAMPLES} {STOP}; nohup sh -c 'end=$(($(date +%s)+1800)); "
    f"while [ ! -e {STOP} ] && [ $(date +%s) -lt $end ]; do ps -eo args >> {SAMPLES}; "
    "sleep 0.05; done' >/dev/null 2>&1 &"
)


def _exposure(h, unit: str) -> float:
    out = on_host(h, f"systemd-analyze security --no-pager {unit} 2>&1")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert found, out
    return float(found.group(1))


def test_every_unit_of_ours_scores_below_the_threshold_on_its_host(deployed):
    scores = {}
    for group, units in UNITS.items():
        h = by_group(deployed["hosts"], group)
        for unit in units:
            scores[unit] = _exposure(h, unit)
    too_exposed = {u: s for u, s in scores.items() if s > hardening.EXPOSURE_THRESHOLD}
    assert not too_exposed, scores


def test_the_app_services_run_as_users_of_their_own_without_capabilities(deployed):
    app = by_group(deployed["hosts"], "app")
    users = {}
    for unit in layout.APP_SERVICES:
        pid = on_host(app, f"systemctl show -p MainPID --value {unit}").strip()
        assert pid not in ("", "0"), f"{unit} is not running"
        status = dict(
            line.split(":", 1) for line in on_host(app, f"cat /proc/{pid}/status").splitlines()
        )
        users[unit] = status["Uid"].split()[0]
        assert status["CapEff"].strip() == "0" * 16, unit
        assert status["CapBnd"].strip() == "0" * 16, unit
        assert status["NoNewPrivs"].strip() == "1", unit
        assert status["Seccomp"].strip() == "2", unit  # a filter
    assert len(set(users.values())) == 3, users
    # The env files are root's alone: no service user reads one (systemd hands each its own).
    for user in (layout.APP_USER, layout.OUTBOX_USER, layout.EXPORTER_USER):
        for env_file in (layout.APP_ENV_FILE, layout.OUTBOX_ENV_FILE, layout.EXPORTER_ENV_FILE):
            denied = on_host(app, f"runuser -u {user} -- cat {env_file} >/dev/null 2>&1 || echo no")
            assert denied.strip() == "no", f"{user} reads {env_file}"


def test_the_oneshots_do_their_work_in_their_sandbox(deployed):
    app, db = by_group(deployed["hosts"], "app"), by_group(deployed["hosts"], "db")
    for h, unit in (
        (app, "spark-idempotency-purge.service"),
        (db, "pgbackrest-backup@incr.service"),
        (db, layout.PGBACKREST_WAL_BUDGET_SERVICE),
    ):
        on_host(h, f"systemctl start {unit}", timeout=600)  # a oneshot: returns when done
        assert on_host(h, f"systemctl show -p Result --value {unit}").strip() == "success", unit


def test_a_deploy_sending_secrets_shows_none_on_a_command_line(deployed):
    hosts = deployed["hosts"]
    db, app = by_group(hosts, "db"), by_group(hosts, "app")
    creds = secrets.load(secrets.environment_name(["lab"]))
    values = [creds[name] for name in secrets.NAMES if len(creds[name] or "") >= 8]
    verifiers = [
        secrets.stable_verifier(defaults.ROLE_APP, creds.role_passwords().app),
        secrets.stable_verifier(defaults.ROLE_MIGRATIONS, creds.role_passwords().migrations),
    ]
    # Something to send: the app role's password and the app's settings file changed.
    psql(db, f"ALTER ROLE {defaults.ROLE_APP} PASSWORD 'changed-behind-the-deploy'")
    on_host(app, f"rm -f {layout.APP_ENV_FILE}")
    since = on_host(db, "date '+%Y-%m-%d %H:%M:%S'").strip()
    for h in (db, app):
        on_host(h, SAMPLER)
    try:
        result = runner.run_site(env=site_env())
    finally:
        for h in (db, app):
            on_host(h, f"touch {STOP}")
    assert result.returncode == 0 and result.errors == 0, result.output[-6000:]
    assert result.changed > 0
    for h in (db, app):
        lines = on_host(h, f"wc -l < {SAMPLES}").strip()
        assert int(lines) > 100, f"{h['name']}: the sampler saw almost nothing ({lines} lines)"
        for value in [*values, *verifiers]:
            quoted = value.replace("'", "'\\''")
            seen = on_host(h, f"grep -cF -- '{quoted}' {SAMPLES} || true").strip()
            assert seen == "0", f"{h['name']}: a secret was on a command line ({seen} samples)"
            journal = f"journalctl --since '{since}' --no-pager -q | grep -cF -- '{quoted}' || true"
            assert on_host(h, journal).strip() == "0", f"{h['name']}: a secret in the journal"
        on_host(h, f"rm -f {SAMPLES} {STOP}")
    for value in [*values, *verifiers]:
        assert value not in result.output
    # The deploy put the password back: the app is ready through pgBouncer again.
    role = psql(db, f"SELECT rolpassword FROM pg_authid WHERE rolname = '{defaults.ROLE_APP}'")
    assert role.strip() == verifiers[0]


OPS_USER = "ops"
SUDO_LOGIN = f"""set -e
id {OPS_USER} >/dev/null 2>&1 || useradd -m -s /bin/bash {OPS_USER}
echo '{OPS_USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{OPS_USER}
chmod 440 /etc/sudoers.d/{OPS_USER}
install -d -m 700 -o {OPS_USER} -g {OPS_USER} /home/{OPS_USER}/.ssh
install -m 600 -o {OPS_USER} -g {OPS_USER} /root/.ssh/authorized_keys /home/{OPS_USER}/.ssh/
"""


def _sudo_inventory(tmp_path, hosts) -> str:
    """inventories/lab.py's hosts reached as a non-root login: the same file name (its stem
    names the environment and the group whose data applies) beside the same group data."""
    folder = tmp_path / "inventory"
    folder.mkdir()
    (folder / "group_data").symlink_to(REPO_ROOT / "inventories" / "group_data")
    source = (REPO_ROOT / "inventories" / "lab.py").read_text()
    patched = source.replace('"ssh_user": h["ssh_user"]', f'"ssh_user": "{OPS_USER}"')
    assert patched != source, "inventories/lab.py no longer names ssh_user as expected"
    (folder / "lab.py").write_text(patched)
    return str(folder / "lab.py")


def test_a_sudo_login_deploys_and_runs_a_runbook_with_no_secret_on_a_command_line(
    deployed, tmp_path
):
    """Production's shape: a non-root login and `--sudo`. The deploy stages secret files in a
    directory only the login enters and the runbook's pgBouncer password rides in the script
    sudo reads on stdin: the samples of `ps`, the journal (sudo logs every command line it
    runs) and the outputs hold no secret."""
    hosts = deployed["hosts"]
    db, app = by_group(hosts, "db"), by_group(hosts, "app")
    for h in hosts:
        on_host(h, SUDO_LOGIN)
    inventory = _sudo_inventory(tmp_path, hosts)
    creds = secrets.load(secrets.environment_name(["lab"]))
    values = [creds[name] for name in secrets.NAMES if len(creds[name] or "") >= 8]
    values.append(secrets.stable_verifier(defaults.ROLE_APP, creds.role_passwords().app))
    psql(db, f"ALTER ROLE {defaults.ROLE_APP} PASSWORD 'changed-behind-the-deploy'")
    on_host(app, f"rm -f {layout.APP_ENV_FILE}")
    since = on_host(db, "date '+%Y-%m-%d %H:%M:%S'").strip()
    for h in (db, app):
        on_host(h, SAMPLER)
    try:
        result = runner.run_site(inventory, env=site_env(), extra_args=("--sudo",))
        status = subprocess.run(
            [str(Path(sys.executable).parent / "sparkops"), "pgbouncer", "status",
             "--inventory", inventory, "--host", "db"],
            capture_output=True, text=True, timeout=120, check=False, cwd=REPO_ROOT,
        )  # fmt: skip
    finally:
        for h in (db, app):
            on_host(h, f"touch {STOP}")
    assert result.returncode == 0 and result.errors == 0, result.output[-6000:]
    assert result.changed > 0
    assert status.returncode == 0, status.stdout + status.stderr  # 0: not paused
    for h in (db, app):
        # sudo logged the deploy's commands: the journal has them to scan.
        sudo_lines = on_host(
            h, f"journalctl --since '{since}' -q --no-pager | grep -c 'sudo' || true"
        )
        assert int(sudo_lines.strip()) > 0, f"{h['name']}: sudo logged nothing"
        stage = on_host(
            h, f"stat -c '%U %a' {secretfiles.STAGE_DIR} && ls -A {secretfiles.STAGE_DIR}"
        )
        assert stage.splitlines() == [f"{OPS_USER} 700"], stage  # the login's, and empty
        for value in values:
            quoted = value.replace("'", "'\\''")
            seen = on_host(h, f"grep -cF -- '{quoted}' {SAMPLES} || true").strip()
            assert seen == "0", f"{h['name']}: a secret was on a command line ({seen} samples)"
            journal = f"journalctl --since '{since}' --no-pager -q | grep -cF -- '{quoted}' || true"
            assert on_host(h, journal).strip() == "0", f"{h['name']}: a secret in the journal"
        on_host(h, f"rm -f {SAMPLES} {STOP}")
    for value in values:
        assert value not in result.output and value not in status.stdout + status.stderr


def test_the_dispatchers_password_file_is_read_by_the_dispatcher_alone(deployed):
    """Production's Redis password file (root:spark-dispatcher 0640 in the 0711
    /etc/spark-app): read under the dispatcher's user and sandbox, not by the app's or the
    exporter's user. (LoadCredential= would hand it over better, but systemd 252 in the lab's
    namespaces leaves the credential directory empty, so it is not used.)"""
    app = by_group(deployed["hosts"], "app")
    secret_path = f"{layout.APP_ETC_DIR}/sparkops-password-probe"
    unit = "sparkops-password-probe.service"
    lines = [
        "[Service]",
        "Type=oneshot",
        f"User={layout.OUTBOX_USER}",
        *hardening.app_service(),
        f"ExecStart=/bin/sh -c 'test \"$(cat {secret_path})\" = s3cret-probe'",
        f"ExecStart=/bin/sh -c '! cat {layout.OUTBOX_ENV_FILE}'",
    ]
    body = "\n".join(lines) + "\n"
    on_host(
        app,
        f"printf s3cret-probe > {secret_path} && chown root:{layout.OUTBOX_USER} {secret_path} "
        f"&& chmod 640 {secret_path}",
    )
    on_host(app, f"cat > /run/systemd/system/{unit} <<'EOF'\n{body}EOF\nsystemctl daemon-reload")
    try:
        assert on_host(app, f"stat -c %a {layout.APP_ETC_DIR}").strip() == "711"
        proc = ssh.run(app["ip"], f"systemctl start {unit}", timeout=60)
        result = on_host(app, f"systemctl show -p Result --value {unit}").strip()
        log = on_host(app, f"journalctl -u {unit} --no-pager -q | tail -5")
        assert proc.returncode == 0 and result == "success", f"{result}\n{log}"
        for other in (layout.APP_USER, layout.EXPORTER_USER):
            denied = on_host(app, f"runuser -u {other} -- cat {secret_path} 2>/dev/null || echo no")
            assert denied.strip() == "no", f"{other} reads the dispatcher's password"
    finally:
        on_host(app, f"rm -f {secret_path} /run/systemd/system/{unit}; systemctl daemon-reload")
