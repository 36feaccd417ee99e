"""The db hosts' own S3 keys, made through IAM (a real moto server on loopback: its IAM API
stores users, policies and keys; it does not enforce IAM policies on S3 requests, so that
limit is shown here by the policy document, not by a refusal)."""

from __future__ import annotations

from io import StringIO

import pytest
from moto.server import ThreadedMotoServer
from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.context import ctx_host

from deploys import pgbackrest, s3_access
from sparkops import layout, secrets
from testkit.proc import free_port
from tests.deploys.test_secrets_off_command_lines import BareHost

BUCKET = "spark-backups-iam"


@pytest.fixture(scope="module")
def endpoint():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKOPS_SECRETS_DIR", str(tmp_path))
    for name in s3_access.KEY_NAMES:
        monkeypatch.delenv(f"SPARKOPS_SECRET_{name.upper()}", raising=False)
    return "staging"


def test_the_policy_allows_only_the_repository_objects_and_listing():
    policy = s3_access.db_host_policy(BUCKET, "/spark")
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    assert actions == {
        "s3:ListBucket",
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:PutObject",
        "s3:PutObjectTagging",
        "s3:DeleteObject",
    }
    assert all(st["Effect"] == "Allow" for st in policy["Statement"])
    resources = {r for st in policy["Statement"] for r in st["Resource"]}
    assert resources == {f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/spark/*"}
    # Listing only under the repository's prefix.
    listing = [st for st in policy["Statement"] if st["Action"] == ["s3:ListBucket"]]
    assert all("Condition" in st for st in listing)


def test_iam_keys_are_made_once_kept_and_the_policy_kept_current(endpoint, environment):
    iam = s3_access.make_iam_client(endpoint=endpoint, access_key="admin", secret_key="admin")
    s3 = {"bucket": BUCKET, "db_keys": "iam"}
    first = s3_access.db_keys(environment, s3, "/spark", iam=iam)
    user = s3_access.user_name(BUCKET)
    assert [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]] == [
        first[0]
    ]
    assert secrets.issued(environment, s3_access.KEY_NAMES) == dict(
        zip(s3_access.KEY_NAMES, first, strict=True)
    )
    path = secrets.secrets_path(environment)
    assert path.stat().st_mode & 0o777 == 0o600
    # A second deploy: the same keys, no new key, nothing to change.
    assert s3_access.db_keys(environment, s3, "/spark", iam=iam) == first
    assert len(iam.list_access_keys(UserName=user)["AccessKeyMetadata"]) == 1
    wanted = s3_access.db_host_policy(BUCKET, "/spark")
    assert s3_access.user_differences(iam, user, wanted) == []
    # The repository path changed: the policy is rewritten, the keys stay.
    assert s3_access.db_keys(environment, s3, "/spark2", iam=iam) == first
    assert s3_access.user_differences(iam, user, s3_access.db_host_policy(BUCKET, "/spark2")) == []
    # The key was deleted in IAM (or the store is new): another is made and kept.
    iam.delete_access_key(UserName=user, AccessKeyId=first[0])
    again = s3_access.db_keys(environment, s3, "/spark", iam=iam)
    assert again[0] != first[0]
    assert secrets.issued(environment, s3_access.KEY_NAMES)["s3_db_access_key"] == again[0]


def test_provided_keys_must_be_there(environment, monkeypatch):
    s3 = {"bucket": BUCKET, "db_keys": "provided"}
    with pytest.raises(s3_access.AccessError, match="SPARKOPS_SECRET_S3_DB_ACCESS_KEY"):
        s3_access.db_keys(environment, s3, "/spark")
    monkeypatch.setenv("SPARKOPS_SECRET_S3_DB_ACCESS_KEY", "AK")
    monkeypatch.setenv("SPARKOPS_SECRET_S3_DB_SECRET_KEY", "SK")
    assert s3_access.db_keys(environment, s3, "/spark") == ("AK", "SK")
    with pytest.raises(s3_access.AccessError, match="use one of"):
        s3_access.db_keys(environment, {**s3, "db_keys": "admin"}, "/spark")


def test_planning_reads_iam_and_changes_nothing(endpoint, environment):
    """What a dry run does: every answer from reads alone; the user, policy and key appear
    only when `db_keys` runs (the deploy executing)."""
    iam = s3_access.make_iam_client(endpoint=endpoint, access_key="admin", secret_key="admin")
    bucket = "spark-backups-plan"
    s3 = {"bucket": bucket, "db_keys": "iam"}
    user = s3_access.user_name(bucket)
    users = lambda: [u["UserName"] for u in iam.list_users()["Users"]]  # noqa: E731
    plan = s3_access.plan_db_keys(environment, s3, "/spark", iam=iam)
    assert plan == s3_access.KeysPlan(None, ("user", "policy", "key"))
    assert user not in users()
    assert secrets.issued(environment, s3_access.KEY_NAMES) == {}
    made = s3_access.db_keys(environment, s3, "/spark", iam=iam)
    assert s3_access.plan_db_keys(environment, s3, "/spark", iam=iam) == s3_access.KeysPlan(
        made, ()
    )
    # Another repository path: the keys serve as they are, the policy is to be rewritten,
    # and planning did not rewrite it.
    assert s3_access.plan_db_keys(environment, s3, "/other", iam=iam) == s3_access.KeysPlan(
        made, ("policy",)
    )
    assert s3_access.user_differences(iam, user, s3_access.db_host_policy(bucket, "/other")) == [
        "policy"
    ]
    # The key deleted in IAM: one is to be made; planning made none.
    iam.delete_access_key(UserName=user, AccessKeyId=made[0])
    assert s3_access.plan_db_keys(environment, s3, "/spark", iam=iam) == s3_access.KeysPlan(
        None, ("key",)
    )
    assert iam.list_access_keys(UserName=user)["AccessKeyMetadata"] == []


def test_provided_keys_are_planned_as_they_are(environment, monkeypatch):
    monkeypatch.setenv("SPARKOPS_SECRET_S3_DB_ACCESS_KEY", "AK")
    monkeypatch.setenv("SPARKOPS_SECRET_S3_DB_SECRET_KEY", "SK")
    s3 = {"bucket": BUCKET, "db_keys": "provided"}
    assert s3_access.plan_db_keys(environment, s3, "/spark") == s3_access.KeysPlan(("AK", "SK"), ())


def test_the_configuration_makes_the_key_when_it_runs_not_when_planned(endpoint, environment):
    """pgBackRest's configuration on a first S3 deploy: planning it (a dry run) leaves IAM
    as it was; running it makes the user and key, and the file uploaded holds that key,
    which no command line carries."""
    bucket = "spark-backups-op"
    s3 = {"bucket": bucket, "db_keys": "iam", "iam_endpoint": endpoint}
    iam = s3_access.make_iam_client(endpoint=endpoint, access_key="admin", secret_key="admin")
    plan = s3_access.plan_db_keys(environment, s3, "/spark")
    assert plan.keys is None

    def conf(keys):  # stands for the template: the keys it is given, or the planned ones
        key, secret = keys or pgbackrest.PLANNED_KEYS
        return StringIO(f"[global]\nrepo1-s3-key={key}\nrepo1-s3-key-secret={secret}\n")

    with ctx_host.use(BareHost()):
        commands = list(
            pgbackrest.conf_with_s3_keys._inner(
                plan=plan, environment=environment, s3=s3, repo_path="/spark", conf=conf,
                dest=layout.PGBACKREST_CONF, user="postgres", group="postgres", mode="640",
            )
        )  # fmt: skip
    user = s3_access.user_name(bucket)
    assert user not in [u["UserName"] for u in iam.list_users()["Users"]]
    kinds = [type(c) for c in commands]
    assert kinds.count(FunctionCommand) == 1 and kinds.count(FileUploadCommand) == 1
    # The key is made before the upload that carries it.
    assert kinds.index(FunctionCommand) < kinds.index(FileUploadCommand)
    upload = commands[kinds.index(FileUploadCommand)]
    assert upload.dest == layout.PGBACKREST_CONF and upload.remote_temp_filename

    made = commands[kinds.index(FunctionCommand)]
    made.function(*made.args, **made.kwargs)
    issued = secrets.issued(environment, s3_access.KEY_NAMES)
    assert [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]] == [
        issued["s3_db_access_key"]
    ]
    text = upload.src.getvalue().decode()
    assert f"repo1-s3-key={issued['s3_db_access_key']}" in text
    assert f"repo1-s3-key-secret={issued['s3_db_secret_key']}" in text
    assert pgbackrest.PLANNED_KEYS[0] not in text
    lines = [c.get_raw_value() if isinstance(c, StringCommand) else str(c) for c in commands]
    assert not [ln for ln in lines if issued["s3_db_secret_key"] in ln]
    # The next plan uses the stored key as it is: the ordinary private upload, IAM untouched.
    assert s3_access.plan_db_keys(environment, s3, "/spark") == s3_access.KeysPlan(
        (issued["s3_db_access_key"], issued["s3_db_secret_key"]), ()
    )
