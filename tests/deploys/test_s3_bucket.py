"""The pgBackRest bucket preparation against a real moto S3 server on loopback."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from deploys import s3_bucket
from testkit.proc import free_port


@pytest.fixture(scope="module")
def s3_endpoint():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def client(s3_endpoint):
    return s3_bucket.make_client(
        endpoint=s3_endpoint, region="eu-central-1", access_key="lab", secret_key="lab-secret"
    )


def test_prepare_creates_a_conforming_bucket_then_changes_nothing(client):
    spec = s3_bucket.BucketSpec(name="spark-backups-a", region="eu-central-1", repo_path="/spark")
    everything = [
        "bucket",
        "versioning",
        "encryption",
        "lifecycle",
        "public-access-block",
        "tls-policy",
    ]
    assert s3_bucket.differences(client, spec) == everything

    assert s3_bucket.prepare(client, spec) == everything

    assert client.get_bucket_versioning(Bucket=spec.name)["Status"] == "Enabled"
    enc = client.get_bucket_encryption(Bucket=spec.name)["ServerSideEncryptionConfiguration"]
    assert enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    (rule,) = client.get_bucket_lifecycle_configuration(Bucket=spec.name)["Rules"]
    assert rule["Filter"] == {"Prefix": "spark/archive/"}
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == spec.wal_noncurrent_days
    block = client.get_public_access_block(Bucket=spec.name)["PublicAccessBlockConfiguration"]
    assert block == s3_bucket.PUBLIC_ACCESS_BLOCK
    assert s3_bucket.differences(client, spec) == []
    assert s3_bucket.prepare(client, spec) == []


def test_prepare_repairs_only_what_drifted_and_keeps_foreign_rules(client):
    spec = s3_bucket.BucketSpec(name="spark-backups-b", region="eu-central-1")
    s3_bucket.prepare(client, spec)
    foreign = {
        "ID": "someone-elses",
        "Status": "Enabled",
        "Filter": {"Prefix": "other/"},
        "Expiration": {"Days": 30},
    }
    client.put_bucket_lifecycle_configuration(
        Bucket=spec.name, LifecycleConfiguration={"Rules": [foreign]}
    )
    client.put_bucket_versioning(Bucket=spec.name, VersioningConfiguration={"Status": "Suspended"})

    assert s3_bucket.prepare(client, spec) == ["versioning", "lifecycle"]

    ids = {r["ID"] for r in client.get_bucket_lifecycle_configuration(Bucket=spec.name)["Rules"]}
    assert ids == {"someone-elses", s3_bucket.LIFECYCLE_RULE_ID}
    assert s3_bucket.differences(client, spec) == []


def test_changed_retention_is_a_difference(client):
    spec = s3_bucket.BucketSpec(name="spark-backups-c", region="eu-central-1")
    s3_bucket.prepare(client, spec)
    longer = s3_bucket.BucketSpec(name=spec.name, region=spec.region, wal_noncurrent_days=30)
    assert s3_bucket.differences(client, longer) == ["lifecycle"]


def test_the_tls_only_policy_refuses_plain_http_and_keeps_foreign_statements(client):
    """moto honours the policy's aws:SecureTransport condition on object requests (this
    client speaks plain HTTP to it: refused), not on bucket-level ones (the deploy's own
    reads and writes of the bucket's settings), and it stores the public access block without
    enforcing it (a public-read ACL is still accepted): what the lab can and cannot show."""
    spec = s3_bucket.BucketSpec(name="spark-backups-d", region="eu-central-1", tls_only=False)
    s3_bucket.prepare(client, spec)
    client.put_object(Bucket=spec.name, Key="spark/before", Body=b"x")
    foreign = {"Sid": "someone-elses", "Effect": "Deny", "Principal": "*",
               "Action": "s3:DeleteBucket", "Resource": f"arn:aws:s3:::{spec.name}"}  # fmt: skip
    client.put_bucket_policy(
        Bucket=spec.name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [foreign]})
    )
    tls = s3_bucket.BucketSpec(name=spec.name, region=spec.region)
    assert s3_bucket.differences(client, tls) == ["tls-policy"]
    assert s3_bucket.prepare(client, tls) == ["tls-policy"]
    statements = json.loads(client.get_bucket_policy(Bucket=spec.name)["Policy"])["Statement"]
    assert foreign in statements and tls.tls_only_statement() in statements
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=spec.name, Key="spark/after", Body=b"x")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert s3_bucket.differences(client, tls) == []
