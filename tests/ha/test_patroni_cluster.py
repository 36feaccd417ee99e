"""A real Patroni cluster (etcd, two nodes, the database route) started from the deploy's own
configuration: it bootstraps, routes writes to the primary, switches over on request, and
fails over when the primary's host dies without losing an acknowledged write.

One cluster for the module (about 20 s to start): the tests run in file order, the
switchover leaves a healthy cluster behind and the failover, which does not, runs last."""

from __future__ import annotations

import getpass
import http.client
import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from deploys import drill, hacluster, pgbackrest, support, tlsca
from runbooks import cluster_restore, flows
from runbooks.checklist import EXIT_INTERRUPTED
from runbooks.conduct import Options, conduct
from sparkops import layout, metric_names
from sparkops.wait import DeadlineExceeded, wait_until
from testkit import traffic
from testkit.appserver import AppServer
from testkit.hacluster import DBNAME, HACluster, KitPatroni, Writer
from testkit.proc import chown_to_service_user, run_as_service_user, service_user
from testkit.tls import scratch_ca
from tests.conftest import AUTH, TEST_KEY_RATE_LIMIT, create_account
from tests.interruptions import TABLE, interrupt

pytestmark = pytest.mark.chaos


@pytest.fixture(scope="module")
def cluster():
    with HACluster(
        nodes_count=2, app_schema=True, archiving="per-node", backup_standby=True
    ) as kit:
        with psycopg.connect(kit.route_conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE acks (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")
        yield kit


def _rows(kit: HACluster) -> set[int]:
    with psycopg.connect(kit.route_conninfo(), autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM acks")}


def test_the_cluster_bootstraps_with_a_synchronous_standby_and_the_deploys_settings(cluster):
    members = {m["name"]: m for m in cluster.cluster()["members"]}
    leader = cluster.leader()
    assert members[leader]["role"] in ("leader", "master", "primary")
    (replica,) = [name for name in members if name != leader]
    assert members[replica]["role"] == "sync_standby"
    with psycopg.connect(cluster.node(replica).conninfo(), autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('wal_log_hints', 'hot_standby', 'password_encryption', 'data_checksums')"
            ).fetchall()
        )
    assert settings == {
        "wal_log_hints": "on",
        "hot_standby": "on",
        "password_encryption": "scram-sha-256",
        "data_checksums": "on",
    }


def test_the_route_sends_writes_to_the_primary_and_reads_to_the_replica(cluster):
    leader = cluster.leader()
    assert cluster.route_target("primary") == leader
    replica = cluster.route_target("replicas")
    assert replica is not None and replica != leader
    with (
        psycopg.connect(cluster.route_conninfo("replicas"), autocommit=True) as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        conn.execute("INSERT INTO acks (id) VALUES (-1)")


def _sparkops(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sparkops_cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_the_rest_api_speaks_only_https_with_a_certificate_of_the_environments_ca(cluster):
    """The REST API carries the switchover credentials and the cluster's state: plain HTTP
    gets no answer, a client that does not trust the environment's CA is refused by its own
    verification, and one that does (patronictl, the route's checks) reads it; a switchover
    without the credentials is refused even over HTTPS."""
    node = cluster.node(cluster.leader())
    assert node.rest.startswith("https://")
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(f"http://127.0.0.1:{node.rest_port}/patroni", timeout=3)
    with pytest.raises(urllib.error.URLError) as untrusted:
        urllib.request.urlopen(f"{node.rest}/patroni", timeout=3,
                               context=ssl.create_default_context())  # fmt: skip
    assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)
    assert node.state()["state"] == "running"  # with the CA, as the kit's clients ask
    trusted = ssl.create_default_context(cafile=node.rest_tls.ca)
    body = json.dumps({"leader": node.name}).encode()
    request = urllib.request.Request(f"{node.rest}/switchover", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10, context=trusted)
    assert refused.value.code == 401
    listed = subprocess.run(
        ["patronictl", "-c", str(node.workdir / "patroni.yml"), "list", "-f", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert {m["Member"] for m in json.loads(listed.stdout)} == {n.name for n in cluster.nodes}
    servers = [
        line for line in (cluster.workdir / "db-route.cfg").read_text().splitlines()
        if line.strip().startswith("server ")
    ]  # fmt: skip
    assert servers and all("check-ssl verify required ca-file" in line for line in servers)


def test_cluster_runbooks_refuse_bad_targets_and_change_nothing(cluster, tmp_path):
    target = cluster.target_file(tmp_path / "cluster.json")
    leader = cluster.leader()
    (replica,) = [n.name for n in cluster.nodes if n.name != leader]
    status = _sparkops("cluster", "status", "--target-file", target, "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["leader"] == leader
    assert {m["name"]: m["role"] for m in shown["members"]} == {
        leader: "leader",
        replica: "sync_standby",
    }
    refusals = [
        (("switchover", "--to", "nosuchnode"), "is not a member of the cluster"),
        (("switchover", "--to", leader), "is already the primary"),
        (("failover", "--to", replica), "has a running leader"),
        (("failover", "--to", "nosuchnode"), "has a running leader"),
    ]
    for args, words in refusals:
        done = _sparkops("cluster", *args, "--target-file", target, "--yes")
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert words in done.stdout + done.stderr, (args, done.stdout)
        assert "nothing was changed" in done.stdout + done.stderr
    dry = _sparkops("cluster", "switchover", "--target-file", target, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"Switchover: {leader} -> {replica}" in dry.stdout
    assert cluster.leader() == leader


def test_switchover_runbook_under_order_load_fails_no_order(cluster, tmp_path):
    """`sparkops cluster switchover` while the real app takes orders through the route: every
    order is answered 201 (the app runs one cut by the switchover again) and is stored once."""
    target = cluster.target_file(tmp_path / "cluster.json")
    old = cluster.leader()
    (candidate,) = [n.name for n in cluster.nodes if n.name != old]
    with psycopg.connect(cluster.app_conninfo(), autocommit=True) as conn:
        create_account(conn, "acct-ha")
    settings = Settings(
        database_url=cluster.app_conninfo(),
        release_id="kit",
        metrics_port=0,
        client_rate_limit=TEST_KEY_RATE_LIMIT,
    )
    run_id = uuid.uuid4().hex[:8]

    def order(i: int) -> traffic.Request:
        # Buys only: the position stays open (no race to open it anew on every other order).
        body = {"account_id": "acct-ha", "symbol": "BTCUSDT", "side": "buy",
                "quantity": "0.00100", "price": "65000.00"}  # fmt: skip
        headers = {**AUTH, "content-type": "application/json",
                   "idempotency-key": f"ha-{run_id}-{i}"}  # fmt: skip
        return traffic.Request("POST", "/orders", headers, json.dumps(body).encode())

    with AppServer(settings) as server:
        load = traffic.Traffic(server.url, order, rate=30, timeout=30, max_seconds=120).start()
        try:
            wait_until(lambda: len(load.outcomes) >= 30, timeout=30, what="orders flow")
            done = _sparkops(
                "cluster", "switchover", "--target-file", target, "--to", candidate,
                "--yes", "--json", "--evidence-dir", tmp_path / "evidence",
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            switched = len(load.outcomes)
            wait_until(lambda: len(load.outcomes) >= switched + 30, timeout=60,
                       what="orders flow after the switchover")  # fmt: skip
        finally:
            outcomes = load.stop()
    result = json.loads(done.stdout)
    assert result["outcome"] == "done"
    assert result["facts"]["new_leader"] == candidate
    assert all(c["ok"] for c in result["checks"]), result["checks"]
    assert cluster.leader() == candidate
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) == {201}, (
        f"orders not answered 201: {statuses}, {traffic.failures(outcomes)[:3]}"
    )
    with psycopg.connect(cluster.app_conninfo(), autocommit=True) as conn:
        stored = conn.execute(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM orders "
            "WHERE idempotency_key LIKE %s",
            (f"%ha-{run_id}-%",),
        ).fetchone()
    assert stored == (len(outcomes), len(outcomes))
    wait_until(lambda: cluster._all_streaming(), timeout=60, what="the old primary streams")
    # In synchronous mode only the synchronous standby may be promoted: the old primary must
    # take that part before the cluster survives another loss.
    wait_until(lambda: cluster.sync_standby() == old, timeout=60, what="a new sync standby")


def _full_backups(target) -> int:
    done = target.pgbackrest("info", "--output=json", check=False)
    try:
        info = json.loads(done.stdout)[0]
    except (ValueError, IndexError):
        return 0
    return sum(1 for b in info.get("backup", []) if b.get("type") == "full")


def test_a_new_primary_makes_its_own_repository_take_its_wal(cluster):
    """Each node has its own posix repository here (as the lab's db hosts): the switchover
    made a primary whose repository had no stanza. Patroni's role-change callback (the
    deploy's script) created it and took a full backup, and the new primary archives."""
    leader = cluster.leader()
    target = cluster.node_target(cluster.node(leader))
    log = cluster.node(leader).workdir / "role-change.log"
    try:
        wait_until(lambda: _full_backups(target) >= 1, timeout=120,
                   what=f"a full backup in {leader}'s own repository")  # fmt: skip
    except DeadlineExceeded:
        said = log.read_text() if log.exists() else "(the callback left no log)"
        pytest.fail(f"{said}\n{cluster.log_tail(leader)}")
    segment = target.psql(
        "SELECT pg_walfile_name(pg_switch_wal()) FROM (SELECT txid_current()) AS t",
        dbname="postgres",
    )
    wait_until(
        lambda: target.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                            dbname="postgres") >= segment,
        timeout=60,
        what=f"{segment} archived by the new primary",
    )  # fmt: skip
    said = log.read_text()
    assert "promoted" in said and "full backup taken" in said, said


def _condition_on(node, unit: str, user: str | None) -> int:
    """A unit's ExecCondition run for real on a kit node (its socket and port, not a host's)."""
    line = next(x for x in unit.splitlines() if x.startswith("ExecCondition="))
    argv = shlex.split(line.removeprefix("ExecCondition="))
    script = argv[2].replace(layout.SOCKET_DIR, str(node.workdir))
    done = subprocess.run(
        [*argv[:2], script], env={**os.environ, "PGPORT": str(node.pg_port)},
        user=user, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), (node.name, done.stderr)
    return done.returncode


def test_only_the_primary_backs_up_and_a_replica_drills(cluster):
    """The backup unit's and the drill's ExecCondition on a cluster node, run for real on both
    nodes: the backup runs on the primary only (skipped on the replica: exit 1), and with a
    shared repository the drill on the replica only (the drill unit runs as root and asks as
    postgres)."""
    backup = support.render("pgbackrest/backup@.service.j2", stanza="spark", metric_script="/x",
                            timeout="1h", hardening=[],
                            condition=hacluster.role_condition("primary"),
                            backup_script="/x")  # fmt: skip
    place = drill.drill_place(cluster=True, repo_type="s3")
    drill_unit = support.render(
        "drill/spark-restore-drill.service.j2", sparkops="/x", target_file="/x",
        scratch_dir="/x", scratch_port=1, metrics_file="/x", evidence_dir="/x", timeout="1h",
        hardening=[], place=place,
        condition=hacluster.role_condition(place, run_as=service_user() or "postgres"),
    )  # fmt: skip
    leader = cluster.leader()
    for node in cluster.nodes:
        on_primary = node.name == leader
        assert _condition_on(node, backup, service_user()) == (0 if on_primary else 1)
        assert _condition_on(node, drill_unit, None) == (1 if on_primary else 0), node.name


def _published_after_backup(kit: HACluster, node, tmp_path) -> dict[str, float]:
    """The backup unit's metric script (as its ExecStartPost runs it, as root) after a backup
    on `node`: the samples it wrote to the textfile directory, by metric name."""
    tmp_path.mkdir(parents=True)
    script = tmp_path / "backup-metric"
    script.write_text(pgbackrest.backup_metric_script(
        user=service_user() or getpass.getuser(), textfile_dir=str(tmp_path / "textfile"),
        source_file=str(kit.backup_source_file(node)),
    ))  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=90, check=False,
        env={**os.environ, "PGBACKREST_CONFIG": str(node.workdir / "pgbackrest.conf")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "textfile" / "pgbackrest.prom").read_text()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_the_primarys_backup_copies_the_files_from_the_replica(cluster, tmp_path):
    """The deploy's backup script on the primary: pgBackRest starts the backup there and
    copies the files from the replica through its TLS server (it waits for the replica to
    replay the backup's start). With the replica's server down the backup is still taken,
    from the primary, and says so, and the backup-time metric says it fell back (the alert
    PgBackRestBackupFellBackToPrimary reads it) until a backup comes from the replica again;
    a certificate the replica does not authorise is refused."""
    leader = cluster.node(cluster.leader())
    replica = next(n for n in cluster.nodes if n is not leader)
    from_replica = cluster.run_backup(leader, "incr")
    assert from_replica.returncode == 0, from_replica.stdout + from_replica.stderr
    assert "replay on the standby reached" in from_replica.stdout, from_replica.stdout
    published = _published_after_backup(cluster, leader, tmp_path / "1")
    assert published[metric_names.PGBACKREST_BACKUP_FELL_BACK] == 0, published
    assert published[metric_names.PGBACKREST_LAST_BACKUP_TIMESTAMP] > time.time() - 300

    # Another certificate of the same CA, whose name the replica's tls-server-auth lacks.
    with scratch_ca(cluster.workdir / "ca"):
        intruder = tlsca.issue("hakit", "intruder", dns_names=["intruder"], client=True)
    cert, key = leader.workdir / "intruder.crt", leader.workdir / "intruder.key"
    for path, text in ((cert, intruder.chain_pem), (key, intruder.key_pem)):
        path.write_text(text)
        path.chmod(0o600)
        chown_to_service_user(path)
    refused = run_as_service_user(
        ["pgbackrest", f"--config-include-path={leader.workdir / 'standby.d'}",
         "--backup-standby=y", f"--pg2-host-cert-file={cert}", f"--pg2-host-key-file={key}",
         "--stanza=spark", "--type=incr", "backup"],
        env={**os.environ, "PGBACKREST_CONFIG": str(leader.workdir / "pgbackrest.conf")},
        check=False, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 56, refused.stdout + refused.stderr
    assert "unable to find standby" in refused.stdout + refused.stderr

    cluster.stop_backup_server(replica)
    try:
        # pgBackRest tries a refused connection again for twice io-timeout (the deploy's 15 s).
        alone = cluster.run_backup(leader, "incr", PGBACKREST_IO_TIMEOUT="3")
    finally:
        cluster.start_backup_server(replica)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert "backing up from the primary instead" in alone.stderr
    assert "replay on the standby" not in alone.stdout
    published = _published_after_backup(cluster, leader, tmp_path / "2")
    assert published[metric_names.PGBACKREST_BACKUP_FELL_BACK] == 1, published
    # The replica's server back: the next backup comes from it and the metric clears.
    again = cluster.run_backup(leader, "incr")
    assert again.returncode == 0 and "replay on the standby reached" in again.stdout, again.stdout
    published = _published_after_backup(cluster, leader, tmp_path / "3")
    assert published[metric_names.PGBACKREST_BACKUP_FELL_BACK] == 0, published
    info = json.loads(
        run_as_service_user(
            ["pgbackrest", "--stanza=spark", "--output=json", "info"],
            env={**os.environ, "PGBACKREST_CONFIG": str(leader.workdir / "pgbackrest.conf")},
        ).stdout
    )
    assert len(info[0]["backup"]) >= 4  # the first full and the three incrementals


def _restore_order(kit: HACluster, kind: str, value: str | None, **kw) -> flows.Runbook:
    where = flows.ClusterWhere(resolved=kit.runbook_cluster())
    return flows.cluster_restore_runbook(
        flows.ClusterRestoreOrder(kind=kind, value=value, where=where, timeout=180, **kw)
    )


def test_cluster_restore_refuses_a_bad_target_and_changes_nothing(cluster, tmp_path):
    leader = cluster.leader()
    (replica,) = [n.name for n in cluster.nodes if n.name != leader]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    cases = [
        (_restore_order(cluster, "time", future), "is in the future"),
        (_restore_order(cluster, "time", "yesterday"), "is not a timestamp"),
        (_restore_order(cluster, "latest", None, on=replica), "is not the primary"),
        (_restore_order(cluster, "name", "no-such-point"), "no restore point named"),
    ]
    for book, words in cases:
        outcome = conduct(book, Options(yes=True, quiet=True, evidence_dir=tmp_path))
        assert outcome.code == 2, outcome.result
        assert words in outcome.result["message"], outcome.result["message"]
    assert cluster.leader() == leader
    assert all(n.proc is not None and n.proc.poll() is None for n in cluster.nodes)


def test_cluster_restore_to_a_time_brings_every_node_back_to_it(cluster, tmp_path):
    """The whole cluster restored to a moment between two commits: the primary serves the
    first and not the second, the replica streams from it with the same data, and the
    replica's old data directory is kept aside."""
    leader = cluster.leader()
    (replica,) = [n.name for n in cluster.nodes if n.name != leader]
    # A backup's stop time has whole seconds: the target must be clear of the newest one.
    done = cluster.node_target(cluster.node(leader)).pgbackrest("info", "--output=json")
    newest = max(b["timestamp"]["stop"] for b in json.loads(done.stdout)[0]["backup"])
    wait_until(lambda: time.time() > newest + 2, timeout=10, what="two seconds past the backup")
    with psycopg.connect(cluster.route_conninfo(dbname=DBNAME), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS restore_marks (name text PRIMARY KEY)")
        conn.execute("INSERT INTO restore_marks VALUES ('before')")
        target = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        conn.execute("INSERT INTO restore_marks VALUES ('after')")
    book = _restore_order(
        cluster, "time", target.isoformat(), check_sql=("marks=SELECT count(*) FROM restore_marks",)
    )
    outcome = conduct(book, Options(yes=True, quiet=True, evidence_dir=tmp_path))
    assert outcome.code == 0, (outcome.result["message"], outcome.result["state_after"])
    facts = outcome.result["facts"]
    print(
        f"\ncluster restore: primary serving after {facts['primary_serving_seconds']} s, "
        f"replicas streaming after {facts['replicas_streaming_seconds']} s"
    )
    assert cluster.leader() == leader
    assert facts["timeline_after_cluster"] > facts["timeline_before"]

    def marks(conninfo: str) -> set[str]:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            return {r[0] for r in conn.execute("SELECT name FROM restore_marks")}

    assert marks(cluster.route_conninfo(dbname=DBNAME)) == {"before"}
    # The restore's recovery settings are not left in postgresql.auto.conf, where a replica
    # cloned from this node would stop at its target. The restore clears them when recovery
    # ends (tests/runbooks/test_pitr.py: on a single host this is the only clearing); Patroni
    # 3.0 also strips them from that file when it starts (its _sanitize_auto_conf).
    with psycopg.connect(cluster.node(leader).conninfo(), autocommit=True) as conn:
        left = conn.execute(
            "SELECT name, setting FROM pg_file_settings "
            "WHERE (name = 'restore_command' OR name LIKE 'recovery_target%') "
            "AND sourcefile LIKE '%postgresql.auto.conf'"
        ).fetchall()
    assert left == [], left
    wait_until(
        lambda: marks(cluster.node(replica).conninfo(DBNAME)) == {"before"},
        timeout=60,
        what="the replica has the restored data",
    )
    aside = cluster.node(replica).workdir / f"data.before-restore-{facts['stamp']}"
    assert (aside / "PG_VERSION").exists(), "the replica's old data was not kept aside"
    # The cluster works as one again: writes through the route, a synchronous standby.
    with psycopg.connect(cluster.route_conninfo(dbname=DBNAME), autocommit=True) as conn:
        conn.execute("INSERT INTO restore_marks VALUES ('after-restore')")
    wait_until(lambda: cluster.sync_standby() == replica, timeout=60, what="a sync standby")


def _sigterm_when_called(monkeypatch, owner, name: str, *, before: bool = False) -> None:
    """`owner.name` sends this process SIGTERM once it has run (or, `before`, instead of
    running): the runbook's own handler (runbooks.checklist.interruptible, as under
    `sparkops`) turns it into an interruption right there, inside the step that called it."""
    real = getattr(owner, name)
    fired = []

    def interrupting(*args, **kwargs):
        if not fired and before:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        result = real(*args, **kwargs)
        if not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(owner, name, interrupting)


# Marked with the lab's matrix (make test runs both; make test-interruptions them alone):
# about 60 s, the cleanup path that changes nothing. The interruption after the restore,
# which leaves work to finish, is unmarked.
@pytest.mark.interruptions
def test_a_cluster_restore_interrupted_before_restoring_puts_the_cluster_back(
    cluster, tmp_path, monkeypatch
):
    """SIGTERM right after the first replica's Patroni stopped: nothing was restored, so the
    cleanup starts Patroni again everywhere, says so, and the cluster serves as before."""
    leader = cluster.leader()
    before = _rows(cluster)
    _sigterm_when_called(monkeypatch, KitPatroni, "stop")
    book = _restore_order(cluster, "latest", None)
    outcome = conduct(book, Options(yes=True, quiet=True, evidence_dir=tmp_path))
    monkeypatch.undo()
    assert outcome.code == EXIT_INTERRUPTED, outcome.result
    left = " ".join(outcome.result["state_after"])
    assert "nothing was restored; Patroni was started again on every node" in left, left
    assert outcome.result["undo"] is None
    wait_until(lambda: cluster.leader() and cluster._all_streaming(), timeout=90,
               what="the cluster leads and streams again")  # fmt: skip
    assert cluster.leader() == leader
    assert _rows(cluster) == before


def test_a_cluster_restore_interrupted_after_restoring_says_so_and_a_rerun_finishes(
    cluster, tmp_path, monkeypatch
):
    """SIGTERM as the cluster's old state is about to leave etcd (the node restored and
    verified, Patroni stopped everywhere): the removal and its note are not cut apart, so
    the signal takes effect once the state is gone and the state left says so truly (the
    data restored, Patroni not leading yet, the replica stopped with its data untouched;
    not "the old state is still in etcd"); the same restore run again on that node makes
    the cluster whole."""
    leader = cluster.leader()
    (replica,) = [n.name for n in cluster.nodes if n.name != leader]
    before = _rows(cluster)
    _sigterm_when_called(monkeypatch, cluster_restore, "_remove_cluster_state", before=True)
    book = _restore_order(cluster, "latest", None)
    outcome = conduct(book, Options(yes=True, quiet=True, evidence_dir=tmp_path / "first"))
    monkeypatch.undo()
    assert outcome.code == EXIT_INTERRUPTED, outcome.result
    left = " ".join(outcome.result["state_after"])
    assert f"{leader}'s data was restored" in left, left
    assert "Patroni does not lead there yet" in left, left
    assert "the cluster's old state is still in etcd" not in left, left
    assert outcome.result["steps"][-1]["name"].startswith("Remove the cluster's state"), [
        step["name"] for step in outcome.result["steps"]
    ]
    assert f"Patroni is stopped on {replica} (their data untouched)" in left, left
    again = conduct(_restore_order(cluster, "latest", None, on=leader),
                    Options(yes=True, quiet=True, evidence_dir=tmp_path / "again"))  # fmt: skip
    assert again.code == 0, (again.result["message"], again.result["state_after"])
    wait_until(lambda: cluster._all_streaming(), timeout=90, what="the replica streams")
    assert cluster.leader() == leader
    assert _rows(cluster) == before  # latest: every committed row is back
    # Whole again: the replica is the synchronous standby (what the next test relies on).
    wait_until(lambda: cluster.sync_standby() == replica, timeout=60, what="a sync standby")


# Marked with the lab's matrix: about 80 s for both (each waits for the cluster to settle).
@pytest.mark.interruptions
@pytest.mark.parametrize("step", [1, 3], ids=["while-patroni-switches", "while-waiting"])
def test_an_interrupted_switchover_says_the_state_left_and_the_cluster_settles(
    cluster, tmp_path, step
):
    """SIGTERM to `sparkops cluster switchover` while `patronictl switchover` runs (the
    signal is held until Patroni answers, so the move completes and the state left names the
    new primary) and while it waits for the old primary to rejoin: it exits 4, its last
    lines say the cluster's state, and the cluster settles with one leader, a streaming
    synchronous standby and every row."""
    target = cluster.target_file(tmp_path / "cluster.json")
    # The previous switchover's old primary takes the synchronous standby's part a few
    # seconds after it rejoins; until then the plan refuses (tests/runbooks/test_cluster_plan).
    wait_until(cluster.sync_standby, timeout=60, what="a synchronous standby")
    old = cluster.leader()
    before = _rows(cluster)
    outcome = interrupt(
        "cluster switchover", ["cluster", "switchover", "--target-file", str(target), "--yes",
         "--evidence-dir", str(tmp_path / "evidence")],
        step, "SIGTERM", timeout=240,
        # Step 1: once patronictl is asking Patroni to move the primary, not as the header prints.
        child=("patronictl", "switchover") if step == 1 else (),
    )  # fmt: skip
    assert outcome.acted, outcome.stderr[-2000:]
    assert outcome.exit_code == EXIT_INTERRUPTED, outcome.stderr[-3000:]
    tail = outcome.stderr.rsplit("INTERRUPTED", 1)[-1]
    assert "STATE LEFT:" in tail and "primary now:" in tail, outcome.stderr[-3000:]
    if step == 1:
        # Held, said so, and the move Patroni had begun completed before the state was read.
        assert "letting Patroni finish moving the primary first" in outcome.stderr
        primary_now = tail.split("primary now:", 1)[1].split(";", 1)[0].strip()
        assert primary_now not in (old, "NONE"), tail[-2000:]
    assert outcome.result["outcome"] == "interrupted"
    assert outcome.result.get("undo") is None  # no pgBouncer was paused: nothing to undo
    wait_until(lambda: cluster.leader() and cluster._all_streaming(), timeout=90,
               what="one leader and a streaming replica")  # fmt: skip
    wait_until(cluster.sync_standby, timeout=60, what="a synchronous standby")
    assert len(cluster.primaries()) == 1
    if step == 1:
        assert cluster.leader() != old  # the switch completed; nothing moved it back
    assert before <= _rows(cluster)
    outcome.state = f"leader {cluster.leader()}, replica streaming"
    outcome.recovered_by = "nothing (the cluster settles by itself)"
    TABLE.add(outcome)


def test_failover_after_the_primary_dies_loses_no_acknowledged_write(cluster):
    old = cluster.leader()
    # A replica that has just rejoined takes the synchronous standby's part within seconds.
    wait_until(cluster.sync_standby, timeout=60, what="a synchronous standby")
    assert cluster.sync_standby() != old
    with Writer(cluster.route_conninfo()) as writer:
        wait_until(lambda: writer.acked_since(20), timeout=30, what="writes flow")
        acked_before = len(writer.acked)
        killed_at = time.monotonic()
        cluster.kill_node(old)
        wait_until(
            lambda: writer.acked_since(acked_before + 20) and cluster.leader() not in (None, old),
            timeout=60,
            what="writes succeed again on a new primary",
        )
    new = cluster.leader()
    assert new not in (None, old)
    assert cluster.route_target("primary") == new
    missing = set(writer.acked) - _rows(cluster)
    assert missing == set(), f"acknowledged writes lost in the failover: {sorted(missing)[:20]}"
    gap = max((t for _, t in writer.failed), default=killed_at) - killed_at
    # The lease (ttl 12 s in the kit) bounds the gap; generous for a loaded 2-core machine.
    assert gap < 45, f"writes failed for {gap:.1f} s after the kill"
