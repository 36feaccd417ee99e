"""pgBackRest with an S3 repository on the lab: moto behind stunnel on this machine
(testkit/lab_s3.py), the bucket prepared by the deploy, WAL and a full backup in it, and a
second run that changes nothing. Afterwards the lab is redeployed with its posix default.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from deploys import s3_access, s3_bucket
from lab import config as lab_config
from lab import ssh
from sparkops import defaults, secrets
from sparkops.wait import wait_until
from testkit import lab_s3
from testkit import pyinfra_runner as runner
from tests.interruptions import SPARKOPS
from tests.lab.stack import site_env

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _db(hosts):
    return next(h for h in hosts if "db" in h["groups"])


def _ssh(h, command: str, timeout: float = 120) -> str:
    proc = ssh.run(h["ip"], command, timeout=timeout)
    assert proc.returncode == 0, f"{h['name']}: {command}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _iam_users(s3: dict) -> list[str]:
    return [u["UserName"] for u in s3_access.admin_iam("lab", s3).list_users()["Users"]]


@pytest.fixture(scope="module")
def s3_deployed(lab_hosts):
    pinned = site_env()
    started = time.time()
    with lab_s3.LabS3(lab_config.BRIDGE_IP).start() as s3:
        env = {**pinned, "SPARKOPS_LAB_S3": str(s3.data_file)}
        data = json.loads(s3.data_file.read_text())
        # A dry run of the db host first: it plans the IAM user and key, and makes neither.
        dry = runner.run_site(env=env, dry=True, extra_args=("--limit", _db(lab_hosts)["name"]))
        assert dry.returncode == 0, dry.output[-6000:]
        assert "to make in IAM first" in dry.output, dry.output[-6000:]
        dry_users = _iam_users(data)
        first = runner.run_site(env=env)
        assert first.returncode == 0 and first.errors == 0, first.output[-6000:]
        second = runner.run_site(env=env)
        state = {"hosts": lab_hosts, "second": second, "s3": data, "pinned": pinned,
                 "started": started, "dry_users": dry_users}  # fmt: skip
        try:
            yield state
        finally:
            # Back to the lab's default (posix), so the lab does not archive to a dead store
            # (the last test does it and checks it; this is for a module cut short).
            if "back" not in state:
                runner.run_site(env=pinned)


def test_second_s3_run_changes_nothing(s3_deployed):
    second = s3_deployed["second"]
    assert second.returncode == 0, second.output[-4000:]
    assert second.changed == 0, second.changed_operations()


def test_wal_and_a_full_backup_are_in_the_bucket(s3_deployed):
    db = _db(s3_deployed["hosts"])
    sql = "SELECT pg_switch_wal() FROM (SELECT txid_current()) AS t"
    _ssh(db, f'runuser -u postgres -- psql -XAtq -d {defaults.DATABASE_NAME} -c "{sql}"')

    def archived():
        info = json.loads(
            _ssh(
                db,
                f"runuser -u postgres -- pgbackrest --stanza={defaults.PGBACKREST_STANZA}"
                " --output=json info",
            )
        )[0]
        return info if info.get("archive") and info["archive"][0].get("max") else None

    info = wait_until(archived, timeout=120, what="WAL archived to the S3 repository")
    assert info["status"]["code"] == 0
    assert any(b["type"] == "full" for b in info["backup"])
    conf = _ssh(db, "cat /etc/pgbackrest/pgbackrest.conf")
    assert "repo1-type=s3" in conf and "repo1-storage-ca-file=" in conf

    s3 = s3_deployed["s3"]
    creds = secrets.load("lab")
    client = s3_bucket.make_client(
        endpoint=s3["controller_endpoint"],
        region=s3["region"],
        access_key=creds["s3_access_key"],
        secret_key=creds["s3_secret_key"],
    )
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3["bucket"])["Contents"]]
    assert any(k.startswith("spark/archive/") for k in keys), keys[:10]
    assert any(k.startswith("spark/backup/") for k in keys), keys[:10]
    spec = s3_bucket.BucketSpec(
        name=s3["bucket"], region=s3["region"], repo_path="/spark", tls_only=s3["tls_only"]
    )
    assert s3_bucket.differences(client, spec) == []
    block = client.get_public_access_block(Bucket=s3["bucket"])["PublicAccessBlockConfiguration"]
    assert block == s3_bucket.PUBLIC_ACCESS_BLOCK
    # The repository is encrypted by pgBackRest: its files in the bucket are not plaintext.
    stanza = defaults.PGBACKREST_STANZA
    for key in (f"spark/backup/{stanza}/backup.info", f"spark/archive/{stanza}/archive.info"):
        body = client.get_object(Bucket=s3["bucket"], Key=key)["Body"].read()
        assert body.startswith(b"Salted__") and b"backrest" not in body, key


def test_the_db_host_has_its_own_keys_limited_to_the_repository(s3_deployed):
    """The db host's pgbackrest.conf holds the IAM user's key (made through moto's IAM), not
    the deploy's bucket-administration key; the user's policy is the one generated."""
    db = _db(s3_deployed["hosts"])
    s3 = s3_deployed["s3"]
    conf = _ssh(db, "cat /etc/pgbackrest/pgbackrest.conf")
    admin = secrets.load("lab")
    issued = secrets.issued("lab", s3_access.KEY_NAMES)
    assert f"repo1-s3-key={issued['s3_db_access_key']}" in conf
    assert f"repo1-s3-key-secret={issued['s3_db_secret_key']}" in conf
    assert admin["s3_access_key"] not in conf and admin["s3_secret_key"] not in conf
    iam = s3_access.admin_iam("lab", s3)
    user = s3_access.user_name(s3["bucket"])
    # Made by the deploy, not by the dry run before it (which only planned them).
    assert user not in s3_deployed["dry_users"]
    wanted = s3_access.db_host_policy(s3["bucket"], "/spark")
    assert s3_access.user_differences(iam, user, wanted) == []


def test_back_to_posix_a_full_backup_closes_the_archive_gap(s3_deployed):
    """The WAL archived to S3 meanwhile is not in the posix repository: back there, the deploy
    takes a full backup, so a restore of everything archived has no gap to stop at."""
    db = _db(s3_deployed["hosts"])
    s3_deployed["back"] = back = runner.run_site(env=s3_deployed["pinned"])
    assert back.returncode == 0 and back.errors == 0, back.output[-6000:]
    assert any("after the repository moved" in op for op in back.changed_operations())
    stanza = defaults.PGBACKREST_STANZA
    info = json.loads(_ssh(db, f"runuser -u postgres -- pgbackrest --stanza={stanza} "
                               "--output=json info"))[0]  # fmt: skip
    newest = max(b["timestamp"]["stop"] for b in info["backup"] if b["type"] == "full")
    assert newest >= s3_deployed["started"], "no full backup in posix after the move back"
    dry = subprocess.run([SPARKOPS, "restore", "--host", db["name"], "--latest", "--dry-run"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    assert "missing" not in dry.stdout + dry.stderr
