"""pgBackRest on the db hosts: configuration, stanza, a first full backup, scheduled full,
differential and incremental backups (systemd timers), retention, repository encryption; the
repository is a local path (posix) or S3, whose bucket is prepared from the machine running
pyinfra (deploys/s3_bucket.py).

Restore time is bounded by the schedule: a restore replays at most the WAL written since the
newest backup, so the incremental interval bounds the WAL (docs/deploys.md, "Restore time").
Restores in place fetch that WAL ahead of recovery (archive-async with a queue of
`pgbackrest_archive_get_queue_max`, `process-max` in parallel); copies beside the live
cluster fetch synchronously (runbooks/pitr.py restore_options).
"""

from __future__ import annotations

import re
import shlex
import threading
from io import BytesIO, StringIO
from pathlib import Path

from pyinfra import host, inventory
from pyinfra.api import FunctionCommand, deploy, operation
from pyinfra.facts.files import File, FileContents
from pyinfra.operations import apt, files, systemd

from deploys import hacluster, hardening, s3_access, s3_bucket, secretfiles, support, tls
from deploys.facts import (
    PgBackRestInfo,
    PgBackRestVersion,
    PostgresInRecovery,
    has_full_backup,
    stanza_missing,
)
from sparkops import defaults, layout, metric_names, secrets, walbudget

STANZA = defaults.PGBACKREST_STANZA
CONF = layout.PGBACKREST_CONF
SPOOL = layout.PGBACKREST_SPOOL_DIR
# Which repository the archive last went to (type and location, no secrets): when it
# changes, the new one's archive has a gap, so a full backup starts a chain it covers.
REPO_MARKER = layout.PGBACKREST_REPO_MARKER
# The options that say where the repository is (not how it is reached or kept).
REPO_LOCATION_KEYS = ("repo1-type", "repo1-path", "repo1-s3-bucket", "repo1-s3-endpoint")
DATA_DIR = layout.POSTGRES_DATA_DIR
BACKUP_KINDS = ("full", "diff", "incr")
CIPHER_TYPE = "aes-256-cbc"
METRIC_SCRIPT = "/usr/local/sbin/pgbackrest-backup-metric"
# A backup that hangs is ended (and fails) rather than holding back the next ones.
BACKUP_TIMEOUT = "12h"
# The WAL budget check reads `pgbackrest info` and one query: seconds, unless the repository
# stalls (io-timeout bounds each of its reads).
WAL_BUDGET_TIMEOUT = "5min"
# The unit a WAL budget request starts: the calendar's own incremental backup (its lock, its
# metric, its primary-only condition); named once for the path unit and the check's messages.
INCR_BACKUP_SERVICE = "pgbackrest-backup@incr.service"
METRIC_FILE = f"{layout.NODE_EXPORTER_TEXTFILE_DIR}/pgbackrest.prom"
SERVER_SERVICE = "pgbackrest-server.service"

DEFAULTS = {
    "pgbackrest_repo_type": "posix",  # or "s3"
    "pgbackrest_repo_path": "/var/lib/pgbackrest",  # a directory (posix) or a bucket prefix (s3)
    # Shape (s3 only): {"bucket": "spark-backups", "endpoint": "s3.eu-central-1.amazonaws.com",
    #   "region": "eu-central-1", "port": 443, "ca_file": None, "wal_noncurrent_days": 14,
    #   optional: "ca_cert_src" (a local CA file to install as ca_file), "endpoint_address"
    #   (an /etc/hosts entry for endpoint), "controller_endpoint" (how this machine reaches
    #   the store to prepare the bucket, when not as the hosts do), "tls_only" (default True:
    #   a bucket policy refusing requests without TLS), "db_keys" ("iam", default: the db
    #   hosts' keys made through IAM, limited to the repository; or "provided"),
    #   "iam_endpoint" (IAM's URL when not AWS's)}
    "pgbackrest_s3": {},
    "pgbackrest_retention_full": 2,
    "pgbackrest_retention_diff": 6,
    # An unreachable repository must not stall archive-push for minutes (default 60 s per
    # I/O, retried): a short timeout and asynchronous archiving with a local spool.
    "pgbackrest_io_timeout": 15,
    "pgbackrest_archive_async": True,
    "pgbackrest_process_max": 2,
    # How much WAL an asynchronous archive-get keeps fetched ahead of recovery (pgBackRest's
    # default is 128MiB: a few seconds of replay).
    "pgbackrest_archive_get_queue_max": "1GiB",
    # systemd OnCalendar per backup type. The incremental interval bounds the WAL a restore
    # replays (the worst moment is just before the next backup): shorten it when the
    # benchmark's replay rate says the WAL of one interval takes too long
    # (bench/restore_rollback.py prints the budget). A timer that fires while another backup
    # runs fails on pgBackRest's lock and the next one takes over.
    "pgbackrest_full_schedule": "Sun *-*-* 01:00:00",
    "pgbackrest_diff_schedule": "Mon..Sat *-*-* 01:00:00",
    "pgbackrest_incr_schedule": "*-*-* *:30:00",
    # The WAL budget: the calendar bounds the WAL a restore replays only at a given write rate;
    # past this much WAL since the newest backup, an incremental backup is taken now
    # (templates/pgbackrest/wal-budget.py.j2, checked every pgbackrest_wal_budget_check_seconds).
    # A share of the databases' size keeps the replay in proportion to the copy a restore
    # makes (docs/deploys.md, "Restore time"); a size (512MiB, 2GiB) bounds it outright; None
    # turns the check off. WAL is counted in LSNs, so each segment archive_timeout switches
    # counts whole (16MiB): the floor keeps a quiet database to about one backup an hour (as
    # the calendar's incremental), and the minimum interval caps the backups (and their
    # checkpoints) under heavy writes.
    "pgbackrest_incr_wal_budget": "5%",
    "pgbackrest_incr_wal_budget_min": "1GiB",
    "pgbackrest_incr_wal_min_interval_seconds": 300,
    "pgbackrest_wal_budget_check_seconds": 30,
    # Repository encryption (aes-256-cbc) with the generated pgbackrest_cipher_pass
    # (sparkops/secrets.py), for new stanzas. An existing unencrypted stanza is refused, not
    # switched (pgBackRest cannot mix): docs/deploys.md says how to migrate, or set False.
    "pgbackrest_repo_cipher": True,
    # Block incremental backup (repo1-bundle and repo1-block): a backup stores, and a delta
    # restore rewrites, only the changed blocks of a file instead of the whole file, so the
    # copy of a restore in place shrinks to what changed since the backup. It needs pgBackRest
    # 2.46 or later (Debian 12 ships 2.45, where it is a beta "not for production"): the
    # deploy refuses it on an older one (docs/deploys.md, "Block incremental backup").
    "pgbackrest_block_incremental": False,
}

# The first pgBackRest release whose block incremental backup is not a beta.
BLOCK_INCREMENTAL_SINCE = (2, 46)


class ConfigError(ValueError):
    """pgBackRest group data the deploy cannot use."""


def options(
    data, creds: secrets.Secrets | None, s3_keys: tuple[str, str] | None = None
) -> tuple[dict, dict]:
    """([global], [stanza]) options from group data; `s3_keys`: the db hosts' own S3 keys
    (deploys/s3_access.py), never the deploy's bucket-administration keys."""
    repo_type = data["pgbackrest_repo_type"]
    glob: dict[str, str] = {
        "repo1-type": repo_type,
        "repo1-path": data["pgbackrest_repo_path"],
        "repo1-retention-full": str(data["pgbackrest_retention_full"]),
        "repo1-retention-diff": str(data["pgbackrest_retention_diff"]),
    }
    if data["pgbackrest_repo_cipher"]:
        if creds is None:
            raise ConfigError("repository encryption needs pgbackrest_cipher_pass (secrets.py)")
        # In this file only (mode 0640, postgres): never on a command line.
        glob["repo1-cipher-type"] = CIPHER_TYPE
        glob["repo1-cipher-pass"] = creds["pgbackrest_cipher_pass"]
    if repo_type == "s3":
        s3 = data["pgbackrest_s3"]
        missing = {"bucket", "endpoint", "region"} - set(s3)
        if missing:
            raise ConfigError(f"pgbackrest_s3 lacks {sorted(missing)} for repo type s3")
        if s3_keys is None:
            raise ConfigError("repo type s3 needs the db hosts' S3 keys (deploys/s3_access.py)")
        glob.update(
            {
                "repo1-s3-bucket": s3["bucket"],
                "repo1-s3-endpoint": s3["endpoint"],
                "repo1-s3-region": s3["region"],
                "repo1-s3-uri-style": "path",
                "repo1-s3-key": s3_keys[0],
                "repo1-s3-key-secret": s3_keys[1],
            }
        )
        if s3.get("port"):
            glob["repo1-storage-port"] = str(s3["port"])
        if s3.get("ca_file"):
            glob["repo1-storage-ca-file"] = s3["ca_file"]
    elif repo_type != "posix":
        raise ConfigError(f"pgbackrest_repo_type is {repo_type!r}: use 'posix' or 's3'")
    block = data["pgbackrest_block_incremental"]
    if not isinstance(block, bool):
        raise ConfigError(f"pgbackrest_block_incremental is {block!r}: use true or false")
    if block:
        glob.update({"repo1-bundle": "y", "repo1-block": "y"})
    glob.update(
        {
            "io-timeout": str(data["pgbackrest_io_timeout"]),
            "process-max": str(data["pgbackrest_process_max"]),
            "start-fast": "y",
            "compress-type": "lz4",
            "log-level-console": "info",
            "log-level-file": "detail",
        }
    )
    if data["pgbackrest_archive_async"]:
        glob.update(
            {
                "archive-async": "y",
                "spool-path": SPOOL,
                "archive-get-queue-max": str(data["pgbackrest_archive_get_queue_max"]),
            }
        )
    stanza = {
        "pg1-path": DATA_DIR,
        "pg1-port": str(defaults.POSTGRES_PORT),
        "pg1-socket-path": layout.SOCKET_DIR,
    }
    return glob, stanza


def _run_as_postgres(command: str) -> str:
    return f"runuser -u postgres -- {command}"


@operation()
def stanza_created(stanza: str = STANZA):
    """Create the stanza when `pgbackrest info` says it is missing."""
    if host.get_fact(PostgresInRecovery):
        host.noop("a replica of a Patroni cluster: the primary creates the stanza")
        return
    info = host.get_fact(PgBackRestInfo, stanza=stanza)
    if stanza_missing(info):
        yield _run_as_postgres(f"pgbackrest --stanza={stanza} stanza-create")
    else:
        host.noop(f"stanza {stanza} exists")


def version_of(text: str | None) -> tuple[int, int] | None:
    """(major, minor) from `pgbackrest version` ("pgBackRest 2.45") or an apt version
    ("2.50-1.pgdg120+1"); None when the text names none."""
    found = re.search(r"(\d+)\.(\d+)", text or "")
    return (int(found[1]), int(found[2])) if found else None


def block_incremental_refusal(enabled: bool, version_text: str | None) -> str | None:
    """Why the deploy must not turn block incremental on, or None: the host's pgBackRest (or
    the one apt would install) is older than 2.46, where the feature is a beta whose own help
    says not to use it in production, or the version cannot be read."""
    if not enabled:
        return None
    version = version_of(version_text)
    since = ".".join(map(str, BLOCK_INCREMENTAL_SINCE))
    fix = (
        f"install pgBackRest {since} or later (apt.postgresql.org's packages) on the db hosts, "
        "or set pgbackrest_block_incremental to false; nothing was changed"
    )
    if version is None:
        return (
            "pgbackrest_block_incremental: cannot tell which pgBackRest this host has or would "
            f"install (neither `pgbackrest version` nor apt answered): {fix}"
        )
    if version < BLOCK_INCREMENTAL_SINCE:
        return (
            f"pgbackrest_block_incremental needs pgBackRest {since} or later; this host has "
            f"{version_text!r}, where block incremental backup is a beta that pgBackRest says "
            f"not to use in production: {fix}"
        )
    return None


def cipher_refusal(info: dict, recorded_identity: str | None, glob: dict[str, str]) -> str | None:
    """Why the deploy must not go on, or None: the configuration asks for an encrypted
    repository where the stanza already exists unencrypted (or the reverse) at the same
    location. pgBackRest cannot mix: with the new cipher options every command on that
    stanza would fail, archiving included. A repository that moves gets a new stanza (and a
    full backup), so a move is the way to migrate."""
    wanted = glob.get("repo1-cipher-type", "none")
    found = info.get("cipher")
    if stanza_missing(info) or not found or found == wanted:
        return None
    if recorded_identity is not None and recorded_identity != repository_identity(glob):
        return None  # moving to another repository: its stanza is created new
    if wanted == "none":
        return (
            f"stanza {STANZA} at {repository_identity(glob)} is encrypted ({found}) and "
            "pgbackrest_repo_cipher is False: set it back to True (the passphrase is "
            "pgbackrest_cipher_pass in the environment's secrets file)"
        )
    return (
        f"stanza {STANZA} at {repository_identity(glob)} exists unencrypted and pgBackRest "
        f"cannot switch a stanza to {wanted}. Nothing was changed. Either keep it unencrypted "
        "(pgbackrest_repo_cipher = False in group data), or migrate: point "
        "pgbackrest_repo_path (or the S3 bucket) at a new, empty location and deploy; the "
        "deploy creates an encrypted stanza there and takes a full backup, and the old "
        "repository stays readable for restores of older points with the previous "
        "configuration (docs/deploys.md, 'Encrypted repository')"
    )


def repository_identity(glob: dict[str, str]) -> str:
    return " ".join(f"{k}={glob[k]}" for k in REPO_LOCATION_KEYS if k in glob)


@operation()
def full_backup_for_repository(identity: str, stanza: str = STANZA):
    """Take a full backup when the repository holds none, or when the archive has just moved
    to this repository from another (posix to S3 and back): the WAL archived elsewhere is
    missing here, and a restore from an older backup would stop at that gap. Then the timers
    take over."""
    if host.get_fact(PostgresInRecovery):
        host.noop("a replica of a Patroni cluster: the primary takes the backups")
        return
    info = host.get_fact(PgBackRestInfo, stanza=stanza)
    recorded = host.get_fact(FileContents, path=REPO_MARKER)
    recorded = "\n".join(recorded).strip() if recorded else None
    backup = _run_as_postgres(f"pgbackrest --stanza={stanza} --type=full backup")
    record = f"printf '%s\\n' {shlex.quote(identity)} > {REPO_MARKER}"
    moved = recorded is not None and recorded != identity
    if not has_full_backup(info) or moved:
        yield backup
        yield record
    elif recorded is None:
        # A host deployed before the marker existed: its archive has been going here.
        yield record
    else:
        host.noop(f"stanza {stanza} has a full backup and the archive has not moved")


@operation()
def backup_metric_published():
    """Write the textfile metric once after the first backup; the backup unit keeps it fresh."""
    if host.get_fact(PostgresInRecovery):
        host.noop("a replica of a Patroni cluster: the primary publishes its backups' time")
        return
    if host.get_fact(File, path=METRIC_FILE):
        host.noop("the backup-time metric exists")
        return
    yield METRIC_SCRIPT


def backup_metric_script(
    *,
    user: str = "postgres",
    textfile_dir: str = layout.NODE_EXPORTER_TEXTFILE_DIR,
    source_file: str = layout.PGBACKREST_BACKUP_SOURCE_FILE,
    budget_file: str = layout.PGBACKREST_WAL_BUDGET_FILE,
) -> str:
    """The script the backup unit and the WAL budget check run after each run (as root): the
    newest backup's time, where the backup script last copied from and the check's figures,
    for node_exporter's textfile collector."""
    return support.render(
        "pgbackrest/backup-metric.py.j2",
        stanza=STANZA,
        user=user,
        textfile_dir=textfile_dir,
        metric=metric_names.PGBACKREST_LAST_BACKUP_TIMESTAMP,
        source_file=source_file,
        fell_back_metric=metric_names.PGBACKREST_BACKUP_FELL_BACK,
        fell_back=defaults.BACKUP_SOURCE_FELL_BACK,
        budget_file=budget_file,
        wal_metric=metric_names.PGBACKREST_WAL_SINCE_BACKUP,
        budget_metric=metric_names.PGBACKREST_WAL_BUDGET,
    )


def wal_budget(data) -> dict | None:
    """The WAL budget check's settings from group data, or None when it is off; a value the
    check could not read is refused before the deploy changes anything."""
    budget = data["pgbackrest_incr_wal_budget"]
    if budget is None:
        return None
    try:
        walbudget.parse_budget(budget)
        walbudget.parse_size(data["pgbackrest_incr_wal_budget_min"])
    except ValueError as exc:
        raise ConfigError(f"pgbackrest_incr_wal_budget: {exc}") from exc
    seconds = {
        "pgbackrest_incr_wal_min_interval_seconds": 0,  # the least each may be
        "pgbackrest_wal_budget_check_seconds": 1,
    }
    for key, least in seconds.items():
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{key} is {value!r}: a whole number of seconds, at least {least}")
    return {
        "budget": str(budget),
        "budget_min": str(data["pgbackrest_incr_wal_budget_min"]),
        "min_interval": data["pgbackrest_incr_wal_min_interval_seconds"],
        "check_seconds": data["pgbackrest_wal_budget_check_seconds"],
    }


def _walbudget_logic() -> str:
    """sparkops/walbudget.py from its first import on (its docstring is the module's)."""
    text = Path(walbudget.__file__).read_text(encoding="utf-8")
    return text[text.index("\nimport ") + 1 :].rstrip() + "\n"


def wal_budget_script(
    settings: dict,
    *,
    psql_argv: tuple[str, ...] = (
        "psql",
        "-h",
        layout.SOCKET_DIR,
        "-p",
        str(defaults.POSTGRES_PORT),
        "-d",
        "postgres",
    ),
    request_file: str = layout.PGBACKREST_BACKUP_REQUEST_FILE,
    figures_file: str = layout.PGBACKREST_WAL_BUDGET_FILE,
) -> str:
    """The WAL budget check the timer runs as postgres (templates/pgbackrest/wal-budget.py.j2),
    with sparkops/walbudget.py embedded; the keyword arguments point it elsewhere in tests
    (pgBackRest's configuration too: PGBACKREST_CONFIG in its environment)."""
    return support.render(
        "pgbackrest/wal-budget.py.j2",
        stanza=STANZA,
        psql=list(psql_argv),
        budget=settings["budget"],
        budget_min=settings["budget_min"],
        min_interval=int(settings["min_interval"]),
        request_file=request_file,
        figures_file=figures_file,
        unit=INCR_BACKUP_SERVICE,
        timer=layout.PGBACKREST_WAL_BUDGET_TIMER,
        path_unit=layout.PGBACKREST_BACKUP_DUE_PATH,
        logic=_walbudget_logic(),
    )


def _bucket_spec(data) -> s3_bucket.BucketSpec:
    s3 = data["pgbackrest_s3"]
    return s3_bucket.BucketSpec(
        name=s3["bucket"],
        region=s3["region"],
        repo_path=data["pgbackrest_repo_path"],
        wal_noncurrent_days=int(s3.get("wal_noncurrent_days", 14)),
        tls_only=bool(s3.get("tls_only", True)),
    )


def _bucket_client(data, environment: str):
    s3 = data["pgbackrest_s3"]
    creds = secrets.load(environment)
    # The machine running pyinfra may reach the store another way than the hosts do
    # (the lab: moto on loopback): controller_endpoint, else the hosts' endpoint.
    endpoint = s3.get("controller_endpoint") or f"https://{s3['endpoint']}"
    if s3.get("port") and "controller_endpoint" not in s3:
        endpoint += f":{s3['port']}"
    return s3_bucket.make_client(
        endpoint=endpoint,
        region=s3["region"],
        access_key=creds["s3_access_key"],
        secret_key=creds["s3_secret_key"],
        ca_file=s3.get("controller_ca_file") if endpoint.startswith("https") else None,
    )


@operation(is_idempotent=True)
def bucket_prepared(data: dict, environment: str):
    """Prepare the S3 bucket from this machine (boto3), only when something differs."""
    client = _bucket_client(data, environment)
    spec = _bucket_spec(data)
    todo = s3_bucket.differences(client, spec)
    if not todo:
        host.noop(f"bucket {spec.name} is prepared")
        return

    def _prepare():
        s3_bucket.prepare(client, spec)

    yield FunctionCommand(_prepare, (), {})


# pyinfra runs an operation on every host at once (gevent): the db hosts of a cluster share
# one key, made by the first and read from the secrets file by the others.
_IAM_LOCK = threading.Lock()


def _db_keys(environment: str, s3: dict, repo_path: str) -> tuple[str, str]:
    with _IAM_LOCK:
        return s3_access.db_keys(environment, s3, repo_path)


# Stands for the db hosts' S3 keys in the options planned before they exist (a first S3
# deploy): never written anywhere, `conf_with_s3_keys` puts the real ones in.
PLANNED_KEYS = ("(made when the deploy runs)", "(made when the deploy runs)")


@operation()
def conf_with_s3_keys(plan, environment: str, s3: dict, repo_path: str, conf, dest: str,
                      user: str, group: str, mode: str):  # fmt: skip
    """pgbackrest.conf when IAM has something to change first (the user, its policy, or the
    db hosts' key: a first S3 deploy, a changed repository path, a key deleted in IAM).

    IAM is written when this runs, never when the deploy is planned: a dry run (or a run
    stopped before this point) makes no user and no key. When a key is to be made its value
    is unknown until then, so the file is rendered at that moment and uploaded as
    `secretfiles.secret_file` does (private from the start)."""
    if plan.keys is not None:  # only the user's policy to rewrite; the keys stay
        yield FunctionCommand(_db_keys, (environment, s3, repo_path), {})
        yield from secretfiles.secret_file._inner(
            src=conf(plan.keys), dest=dest, user=user, group=group, mode=mode
        )
        return
    content = BytesIO()

    def make_keys_and_render() -> None:
        keys = _db_keys(environment, s3, repo_path)
        content.seek(0)
        content.truncate()
        content.write(conf(keys).getvalue().encode())

    yield FunctionCommand(make_keys_and_render, (), {})
    yield from secretfiles.upload_commands(content, dest, user, group, mode)


def backup_nodes() -> list[hacluster.BackupNode]:
    """The cluster's nodes as pgBackRest reaches them (every db host, the deploy's places)."""
    return [
        hacluster.BackupNode(hacluster.Member(h.name, support.address(h)))
        for h in inventory.get_group(hacluster.DB_GROUP, [])
    ]


def this_backup_node() -> hacluster.BackupNode:
    return hacluster.BackupNode(hacluster.Member(host.name, support.address(host)))


def backups_from_a_replica(configured) -> None:
    """A cluster node's part in backups copied from a replica: its certificate, the other
    nodes as pgBackRest hosts (read by the backup only), the TLS server, the backup script.
    `configured`: the operation writing pgbackrest.conf (its tls-server-* options)."""
    nodes, me = backup_nodes(), this_backup_node()
    tls_dir = layout.PGBACKREST_TLS_CERT.rsplit("/", 1)[0]
    files.directory(name=f"Create {tls_dir}", path=tls_dir, user="postgres", group="postgres",
                    mode="750")  # fmt: skip
    # Server and client certificate in one (tls.issue_for_pgbackrest says why).
    issued = tls.issue_for_pgbackrest(host)
    cert, key = tls.key_pair(
        "pgbackrest", layout.PGBACKREST_TLS_CERT, layout.PGBACKREST_TLS_KEY, "postgres",
        "pgBackRest", issued=issued,
    )  # fmt: skip
    files.directory(name=f"Create {layout.PGBACKREST_STANDBY_CONF_DIR}",
                    path=layout.PGBACKREST_STANDBY_CONF_DIR, user="postgres", group="postgres",
                    mode="750")  # fmt: skip
    files.put(
        name="Name the other nodes for backups copied from a replica",
        src=support.rendered(
            "pgbackrest/pgbackrest.conf.j2",
            stanza=STANZA,
            global_options={},
            stanza_options=hacluster.pgbackrest_standby_hosts(me, nodes),
        ),
        dest=f"{layout.PGBACKREST_STANDBY_CONF_DIR}/cluster.conf",
        user="postgres",
        group="postgres",
        mode="640",
    )
    files.put(
        name="Install the cluster's backup script",
        src=support.rendered_text(hacluster.backup_script()),
        dest=layout.PGBACKREST_BACKUP_SCRIPT,
        mode="755",
    )
    unit = files.put(
        name="Install pgBackRest's TLS server unit",
        src=support.rendered(
            "pgbackrest/pgbackrest-server.service.j2",
            conf=CONF,
            hardening=hardening.pgbackrest_server_service(),
        ),
        dest=f"/etc/systemd/system/{SERVER_SERVICE}",
        mode="644",
    )
    systemd.daemon_reload(name="Reload systemd for pgBackRest's TLS server",
                          _if=unit.did_change)  # fmt: skip
    systemd.service(
        name="Run pgBackRest's TLS server",
        service=SERVER_SERVICE,
        running=True,
        enabled=True,
        # The server reads its options and certificate when it starts.
        restarted=True,
        _if=lambda: any(op.did_change() for op in (cert, key, unit, configured)),
    )
    systemd.service(name="Keep pgBackRest's TLS server running", service=SERVER_SERVICE,
                    running=True, enabled=True)  # fmt: skip


def _data() -> dict:
    return {key: host.data.get(key) for key in DEFAULTS}


@deploy("pgBackRest", data_defaults=DEFAULTS)
def pgbackrest() -> None:
    data = _data()
    environment = support.environment(host)
    creds = secrets.load(environment)
    s3_keys = s3_plan = None
    if data["pgbackrest_repo_type"] == "s3":
        # Read only: the stored keys when they still serve; IAM is changed (a user limited
        # to the repository, its key) when the configuration is written, below.
        s3_plan = s3_access.plan_db_keys(
            environment, data["pgbackrest_s3"], data["pgbackrest_repo_path"]
        )
        s3_keys = s3_plan.keys or PLANNED_KEYS
    glob, stanza = options(data, creds, s3_keys)
    budget = wal_budget(data)
    cluster = support.is_cluster(inventory)
    # Read before the new configuration is written: pgbackrest info with the old one.
    recorded = host.get_fact(FileContents, path=REPO_MARKER)
    refusal = cipher_refusal(
        host.get_fact(PgBackRestInfo, stanza=STANZA),
        "\n".join(recorded).strip() if recorded else None,
        glob,
    )
    if refusal:
        raise ConfigError(refusal)
    if data["pgbackrest_block_incremental"]:
        refusal = block_incremental_refusal(True, host.get_fact(PgBackRestVersion))
        if refusal:
            raise ConfigError(refusal)
    apt.packages(name="Install pgBackRest", packages=["pgbackrest"], no_recommends=True)
    if data["pgbackrest_repo_type"] == "s3":
        s3 = data["pgbackrest_s3"]
        if s3.get("ca_cert_src"):
            files.put(
                name="Install the S3 endpoint's CA certificate",
                src=s3["ca_cert_src"],
                dest=s3["ca_file"],
                mode="644",
            )
        if s3.get("endpoint_address"):
            files.line(
                name=f"Resolve {s3['endpoint']} to {s3['endpoint_address']}",
                path="/etc/hosts",
                line=rf"^\S+\s+{re.escape(s3['endpoint'])}$",
                replace=f"{s3['endpoint_address']} {s3['endpoint']}",
            )
        bucket_prepared(
            name="Prepare the S3 bucket (versioning, encryption, lifecycle)",
            data=data,
            environment=environment,
            _run_once=True,
        )
    else:
        files.directory(
            name="Create the pgBackRest repository directory",
            path=data["pgbackrest_repo_path"],
            user="postgres",
            group="postgres",
            mode="750",
        )
    files.directory(
        name="Create the pgBackRest spool directory",
        path=SPOOL,
        user="postgres",
        group="postgres",
        mode="750",
    )
    if cluster:
        glob.update(hacluster.pgbackrest_server_options(this_backup_node(), backup_nodes()))

    def conf(keys: tuple[str, str] | None) -> StringIO:
        """The file; `keys` in place of the planned ones, once made."""
        wanted = dict(glob)
        if keys is not None:
            wanted.update({"repo1-s3-key": keys[0], "repo1-s3-key-secret": keys[1]})
        return support.rendered("pgbackrest/pgbackrest.conf.j2", stanza=STANZA,
                                global_options=wanted, stanza_options=stanza)  # fmt: skip

    # Holds the S3 keys (and the repository's passphrase): uploaded privately.
    owner = {"dest": CONF, "user": "postgres", "group": "postgres", "mode": "640"}
    if s3_plan is not None and s3_plan.todo:
        configured = conf_with_s3_keys(
            name=f"Configure pgBackRest ({', '.join(s3_plan.todo)} to make in IAM first)",
            plan=s3_plan,
            environment=environment,
            s3=data["pgbackrest_s3"],
            repo_path=data["pgbackrest_repo_path"],
            conf=conf,
            **owner,
        )
    else:
        configured = secretfiles.secret_file(name="Configure pgBackRest", src=conf(None), **owner)
    if cluster:
        backups_from_a_replica(configured)
    stanza_created(name=f"Create pgBackRest stanza {STANZA}")
    full_backup_for_repository(
        name="Take a full backup (the first, or after the repository moved)",
        identity=repository_identity(glob),
    )
    files.put(
        name="Install the backup-time metric script",
        src=support.rendered_text(backup_metric_script()),
        dest=METRIC_SCRIPT,
        mode="755",
    )
    backup_metric_published(name="Publish the last backup's time for node_exporter")
    unit = files.put(
        name="Install the pgBackRest backup unit",
        src=support.rendered(
            "pgbackrest/backup@.service.j2",
            stanza=STANZA,
            condition=hacluster.role_condition("primary") if cluster else None,
            backup_script=layout.PGBACKREST_BACKUP_SCRIPT if cluster else None,
            metric_script=METRIC_SCRIPT,
            timeout=BACKUP_TIMEOUT,
            hardening=hardening.backup_service(
                data["pgbackrest_repo_path"] if data["pgbackrest_repo_type"] == "posix" else None,
                SPOOL,
            ),
        ),
        dest="/etc/systemd/system/pgbackrest-backup@.service",
        mode="644",
    )
    timers = [
        files.put(
            name=f"Schedule {kind} backups",
            src=support.rendered(
                "pgbackrest/backup.timer.j2",
                kind=kind,
                schedule=data[f"pgbackrest_{kind}_schedule"],
            ),
            dest=f"/etc/systemd/system/pgbackrest-backup-{kind}.timer",
            mode="644",
        )
        for kind in BACKUP_KINDS
    ]
    repo_path = data["pgbackrest_repo_path"] if data["pgbackrest_repo_type"] == "posix" else None
    changed = [unit, *timers, *wal_budget_units(budget or wal_budget(DEFAULTS), repo_path, cluster)]
    systemd.daemon_reload(
        name="Reload systemd for the backup units",
        _if=lambda: any(op.did_change() for op in changed),
    )
    for kind in BACKUP_KINDS:
        systemd.service(
            name=f"Enable the {kind} backup timer",
            service=f"pgbackrest-backup-{kind}.timer",
            running=True,
            enabled=True,
        )
    for name in (layout.PGBACKREST_BACKUP_DUE_PATH, layout.PGBACKREST_WAL_BUDGET_TIMER):
        systemd.service(
            name=f"{'Enable' if budget else 'Disable'} {name} (the WAL budget)",
            service=name,
            running=budget is not None,
            enabled=budget is not None,
        )


def wal_budget_unit(repo_path: str | None, cluster: bool) -> str:
    """pgbackrest-wal-budget.service: the check as postgres in the backup's sandbox (it reads
    what a backup reads and writes only to the spool), on a cluster's primary only."""
    return support.render(
        "pgbackrest/wal-budget.service.j2",
        stanza=STANZA,
        condition=hacluster.role_condition("primary") if cluster else None,
        script=layout.PGBACKREST_WAL_BUDGET_SCRIPT,
        metric_script=METRIC_SCRIPT,
        timeout=WAL_BUDGET_TIMEOUT,
        hardening=hardening.backup_service(repo_path, SPOOL),
    )


def backup_due_path() -> str:
    """pgbackrest-backup-due.path: each request the WAL budget check writes starts the
    incremental backup unit."""
    return support.render(
        "pgbackrest/backup-due.path.j2",
        request_file=layout.PGBACKREST_BACKUP_REQUEST_FILE,
        unit=INCR_BACKUP_SERVICE,
    )


def wal_budget_units(settings: dict, repo_path: str | None, cluster: bool) -> list:
    """The WAL budget check: its script, its unit and timer, the path unit that turns its
    requests into incremental backups. Installed (with the default budget) even when the
    budget is off, so that turning it off stops a timer the deploy still manages."""
    return [
        files.put(
            name="Install the WAL budget check",
            src=support.rendered_text(wal_budget_script(settings)),
            dest=layout.PGBACKREST_WAL_BUDGET_SCRIPT,
            mode="755",
        ),
        files.put(
            name="Install the WAL budget check's unit",
            src=support.rendered_text(wal_budget_unit(repo_path, cluster)),
            dest=f"/etc/systemd/system/{layout.PGBACKREST_WAL_BUDGET_SERVICE}",
            mode="644",
        ),
        files.put(
            name="Schedule the WAL budget check",
            src=support.rendered(
                "pgbackrest/wal-budget.timer.j2",
                service=layout.PGBACKREST_WAL_BUDGET_SERVICE,
                check_seconds=settings["check_seconds"],
            ),
            dest=f"/etc/systemd/system/{layout.PGBACKREST_WAL_BUDGET_TIMER}",
            mode="644",
        ),
        files.put(
            name="Start an incremental backup when the WAL budget check asks",
            src=support.rendered_text(backup_due_path()),
            dest=f"/etc/systemd/system/{layout.PGBACKREST_BACKUP_DUE_PATH}",
            mode="644",
        ),
    ]
