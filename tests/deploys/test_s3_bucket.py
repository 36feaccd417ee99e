"""The pgBackRest bucket preparation against a real moto S3 server on loopback."""

from __future__ import annotations

import pytest
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
    everything = ["bucket", "versioning", "encryption", "lifecycle"]
    assert s3_bucket.differences(client, spec) == everything

    assert s3_bucket.prepare(client, spec) == everything

    assert client.get_bucket_versioning(Bucket=spec.name)["Status"] == "Enabled"
    enc = client.get_bucket_encryption(Bucket=spec.name)["ServerSideEncryptionConfiguration"]
    assert enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    (rule,) = client.get_bucket_lifecycle_configuration(Bucket=spec.name)["Rules"]
    assert rule["Filter"] == {"Prefix": "spark/archive/"}
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == spec.wal_noncurrent_days
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
