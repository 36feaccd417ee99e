"""No command a deploy or a runbook builds carries a secret: the operations that handle
passwords are run against a host whose facts say "nothing there yet" (so every command they
can issue is issued), with known secrets, and every command is scanned for them. Secrets
reach a host as files uploaded privately (deploys/secretfiles.py), never as arguments."""

from __future__ import annotations

from io import StringIO

import pytest
from pyinfra.api import FileUploadCommand, StringCommand
from pyinfra.context import ctx_host
from pyinfra.facts.files import Directory, File, Sha1File

from deploys import pgbouncer, postgresql, secretfiles
from runbooks.executor import Executor
from runbooks.target import Bouncer, DbTarget
from sparkops import defaults, secrets

ENVIRONMENT = "lab"


class BareHost:
    """A host on which nothing exists yet: every fact is empty."""

    name = "db"
    data: dict = {}

    def __init__(self, facts: dict | None = None):
        self.facts = facts or {}
        self.noops: list[str] = []

    def get_fact(self, cls, **_kwargs):
        return self.facts.get(cls)

    def noop(self, text: str) -> None:
        self.noops.append(text)


@pytest.fixture
def creds(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKOPS_SECRETS_DIR", str(tmp_path / "secrets"))
    loaded = secrets.load(ENVIRONMENT)
    return loaded


def _secret_values(creds) -> list[str]:
    values = [creds[name] for name in secrets.NAMES if creds[name]]
    passwords = creds.role_passwords()
    roles = {
        defaults.ROLE_MIGRATIONS: passwords.migrations,
        defaults.ROLE_APP: passwords.app,
        defaults.ROLE_PGBOUNCER_AUTH: passwords.pgbouncer_auth,
        defaults.ROLE_MONITORING: passwords.monitoring,
    }
    values += [secrets.stable_verifier(role, pw) for role, pw in roles.items()]
    return [v for v in values if len(v) >= 8]


def _commands(generator) -> tuple[list[str], list[FileUploadCommand]]:
    texts, uploads = [], []
    for command in generator:
        if isinstance(command, FileUploadCommand):
            uploads.append(command)
        elif isinstance(command, StringCommand):
            texts.append(command.get_raw_value())
        else:
            texts.append(str(command))
    return texts, uploads


def _assert_clean(texts: list[str], values: list[str]) -> None:
    for text in texts:
        for value in values:
            assert value not in text, f"a secret is on a command line: {text[:120]}"


def test_role_passwords_go_to_psql_through_a_private_file(creds):
    from deploys.facts import PostgresState

    with ctx_host.use(BareHost({PostgresState: {}})):
        texts, uploads = _commands(postgresql.roles._inner(environment=ENVIRONMENT))
    _assert_clean(texts, _secret_values(creds))
    assert [u.dest for u in uploads] == [postgresql.SECRET_SQL]
    sql = uploads[0].src.getvalue()
    assert "SCRAM-SHA-256$" in sql and "CREATE ROLE" in sql
    # Made private before the content goes in; read on psql's stdin; removed after.
    assert any(t.startswith("umask 077;") and "chmod 600" in t for t in texts)
    assert any(f"-f - < {postgresql.SECRET_SQL}" in t and "rm -f" in t for t in texts)


def test_pgbouncers_admin_password_reaches_psql_through_a_private_file(creds):
    with ctx_host.use(BareHost()):
        texts, uploads = _commands(pgbouncer.servers_reconnected._inner(environment=ENVIRONMENT))
    _assert_clean(texts, _secret_values(creds))
    assert [u.dest for u in uploads] == [pgbouncer.ADMIN_PASSFILE]
    assert creds["pgbouncer_admin"] in uploads[0].src.getvalue()


def test_a_secret_file_is_private_before_its_content_arrives():
    with ctx_host.use(BareHost()):
        texts, uploads = _commands(
            secretfiles.secret_file._inner(
                src=StringIO("password=hunter2-long\n"),
                dest="/etc/x/y.env",
                user="root",
                group="prometheus",
                mode="640",
            )
        )
    _assert_clean(texts, ["hunter2-long"])
    parent, make, stage = texts[-3:]
    assert "/etc/x" in parent  # made first when missing, as files.put does
    assert make.index("umask 077") < make.index("chown root:prometheus") < make.index("chmod 640")
    assert secretfiles.STAGE_DIR in stage and "-m 700" in stage
    (upload,) = uploads
    assert upload.remote_temp_filename.startswith(secretfiles.STAGE_DIR + "/")


def test_an_unchanged_secret_file_changes_nothing():
    content = "password=hunter2-long\n"
    from pyinfra.api.util import get_file_sha1

    facts = {
        Directory: {"user": "root", "group": "root", "mode": 755},
        File: {"user": "root", "group": "root", "mode": 600},
        Sha1File: get_file_sha1(StringIO(content)),
    }
    host = BareHost(facts)
    with ctx_host.use(host):
        texts, uploads = _commands(
            secretfiles.secret_file._inner(src=StringIO(content), dest="/etc/x/y.env")
        )
    assert (texts, uploads) == ([], [])
    assert host.noops
    # Same content, loose mode: only the owner and mode are fixed, nothing is uploaded.
    facts[File] = {"user": "root", "group": "root", "mode": 644}
    with ctx_host.use(BareHost(facts)):
        texts, uploads = _commands(
            secretfiles.secret_file._inner(src=StringIO(content), dest="/etc/x/y.env")
        )
    assert len(texts) == 1 and "chmod 600" in texts[0] and not uploads


class RecordingExecutor(Executor):
    def _spawn(self, argv, *, user, env, input, timeout):
        self.seen.append((list(argv), dict(env or {})))
        return 0, "name\tpaused\nspark\t0\n", ""


def test_the_runbooks_pass_pgbouncers_password_in_the_environment_only():
    executor = RecordingExecutor(name="db")
    executor.seen = []
    password = "admin-password-for-the-test"
    target = DbTarget(
        executor=executor,
        data_dir="/var/lib/postgresql/15/main",
        service=None,  # not used by the admin console
        bouncer=Bouncer(
            host="/var/run/postgresql",
            port=defaults.PGBOUNCER_PORT,
            user=defaults.ROLE_PGBOUNCER_ADMIN,
            password=password,
            database=defaults.DATABASE_NAME,
        ),
    )
    target.bouncer_admin("PAUSE spark")
    target.bouncer_rows("SHOW DATABASES")
    assert len(executor.seen) == 2
    for argv, env in executor.seen:
        assert password not in " ".join(argv)
        assert env == {"PGPASSWORD": password}
    shown = [r.shown for r in [executor.run(["psql"], env={"PGPASSWORD": password})]]
    assert password not in shown[0]
