"""The pgBackRest S3 bucket, prepared with boto3 from the machine that runs pyinfra.

Versioning on (a deleted or overwritten backup file can be recovered), default encryption
(SSE-S3, AES256), and a lifecycle rule for old WAL: pgBackRest's own retention deletes WAL it
no longer needs, and with versioning on those deletions only leave noncurrent versions
behind, so the rule expires noncurrent versions under the archive prefix after
`wal_noncurrent_days` (and aborts multipart uploads left by a killed push).

Public access is blocked (all four settings), and a bucket policy refuses every request not
made over TLS (`aws:SecureTransport`), where the store supports it (`tls_only`; the lab's moto
sees stunnel's plain HTTP behind the TLS, so the lab turns it off: docs/deploys.md).

`differences` reads the bucket and says what is not as wanted; `prepare` changes only that,
so a second deploy changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import boto3
from botocore.client import Config
from botocore.exceptions import ClientError

LIFECYCLE_RULE_ID = "sparkops-expire-old-wal"
TLS_ONLY_SID = "sparkops-deny-insecure-transport"
PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


@dataclass(frozen=True)
class BucketSpec:
    name: str
    region: str
    # pgBackRest's repo path inside the bucket: WAL lives under <repo_path>/archive/.
    repo_path: str = "/spark"
    wal_noncurrent_days: int = 14
    abort_multipart_days: int = 2
    # A bucket policy denying requests without TLS (where the store honours it).
    tls_only: bool = True

    @property
    def arn(self) -> str:
        return f"arn:aws:s3:::{self.name}"

    def tls_only_statement(self) -> dict:
        return {
            "Sid": TLS_ONLY_SID,
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [self.arn, f"{self.arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }

    @property
    def wal_prefix(self) -> str:
        return self.repo_path.strip("/") + "/archive/"

    def lifecycle_rules(self) -> list[dict]:
        return [
            {
                "ID": LIFECYCLE_RULE_ID,
                "Status": "Enabled",
                "Filter": {"Prefix": self.wal_prefix},
                "NoncurrentVersionExpiration": {"NoncurrentDays": self.wal_noncurrent_days},
                "AbortIncompleteMultipartUpload": {
                    "DaysAfterInitiation": self.abort_multipart_days
                },
            }
        ]


ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def make_client(
    *, endpoint: str | None, region: str, access_key: str, secret_key: str, ca_file=None
):
    """An S3 client; path-style addressing, as pgBackRest is configured (repo1-s3-uri-style)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        verify=ca_file if ca_file else True,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3},
            connect_timeout=5,
            read_timeout=15,
        ),
    )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _bucket_exists(client, name: str) -> bool:
    try:
        client.head_bucket(Bucket=name)
        return True
    except ClientError as exc:
        if _error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise


def _encryption(client, name: str) -> dict | None:
    try:
        return client.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]
    except ClientError as exc:
        if _error_code(exc) == "ServerSideEncryptionConfigurationNotFoundError":
            return None
        raise


def _lifecycle(client, name: str) -> list[dict]:
    try:
        return client.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
    except ClientError as exc:
        if _error_code(exc) == "NoSuchLifecycleConfiguration":
            return []
        raise


def _policy(client, name: str) -> dict:
    try:
        return json.loads(client.get_bucket_policy(Bucket=name)["Policy"])
    except ClientError as exc:
        if _error_code(exc) in ("NoSuchBucketPolicy", "NoSuchBucket"):
            return {}
        raise


def _public_access_block(client, name: str) -> dict:
    try:
        return client.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    except ClientError as exc:
        if _error_code(exc) == "NoSuchPublicAccessBlockConfiguration":
            return {}
        raise


def _rule_matches(found: dict, wanted: dict) -> bool:
    return all(found.get(key) == value for key, value in wanted.items())


def differences(client, spec: BucketSpec) -> list[str]:
    """What is not as wanted, as short names ("bucket", "versioning", ...); [] when all is."""
    if not _bucket_exists(client, spec.name):
        return ["bucket", "versioning", "encryption", "lifecycle", "public-access-block"] + (
            ["tls-policy"] if spec.tls_only else []
        )
    missing = []
    if client.get_bucket_versioning(Bucket=spec.name).get("Status") != "Enabled":
        missing.append("versioning")
    encryption = _encryption(client, spec.name) or {}
    algorithms = [
        r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
        for r in encryption.get("Rules", [])
    ]
    if "AES256" not in algorithms and "aws:kms" not in algorithms:
        missing.append("encryption")
    rules = {r.get("ID"): r for r in _lifecycle(client, spec.name)}
    wanted = spec.lifecycle_rules()[0]
    if not _rule_matches(rules.get(LIFECYCLE_RULE_ID, {}), wanted):
        missing.append("lifecycle")
    if _public_access_block(client, spec.name) != PUBLIC_ACCESS_BLOCK:
        missing.append("public-access-block")
    statements = _policy(client, spec.name).get("Statement", [])
    if spec.tls_only and spec.tls_only_statement() not in statements:
        missing.append("tls-policy")
    return missing


def prepare(client, spec: BucketSpec) -> list[str]:
    """Make the bucket as wanted; returns what was changed (same names as `differences`)."""
    todo = differences(client, spec)
    if "bucket" in todo:
        kwargs = {"Bucket": spec.name}
        if spec.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": spec.region}
        client.create_bucket(**kwargs)
    if "versioning" in todo:
        client.put_bucket_versioning(
            Bucket=spec.name, VersioningConfiguration={"Status": "Enabled"}
        )
    if "encryption" in todo:
        client.put_bucket_encryption(Bucket=spec.name, ServerSideEncryptionConfiguration=ENCRYPTION)
    if "lifecycle" in todo:
        # Keep rules someone else added; replace only ours.
        others = [r for r in _lifecycle(client, spec.name) if r.get("ID") != LIFECYCLE_RULE_ID]
        client.put_bucket_lifecycle_configuration(
            Bucket=spec.name,
            LifecycleConfiguration={"Rules": others + spec.lifecycle_rules()},
        )
    if "public-access-block" in todo:
        client.put_public_access_block(
            Bucket=spec.name, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK
        )
    if "tls-policy" in todo:
        # Keep statements someone else added; replace only ours.
        policy = _policy(client, spec.name) or {"Version": "2012-10-17"}
        kept = [st for st in policy.get("Statement", []) if st.get("Sid") != TLS_ONLY_SID]
        policy["Statement"] = [*kept, spec.tls_only_statement()]
        client.put_bucket_policy(Bucket=spec.name, Policy=json.dumps(policy))
    return todo
