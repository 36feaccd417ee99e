"""The db hosts' own S3 keys, made through IAM (a real moto server on loopback: its IAM API
stores users, policies and keys; it does not enforce IAM policies on S3 requests, so that
limit is shown here by the policy document, not by a refusal)."""

from __future__ import annotations

import pytest
from moto.server import ThreadedMotoServer

from deploys import s3_access
from sparkops import secrets
from testkit.proc import free_port

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
