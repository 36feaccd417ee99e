"""The switchover's and failover's plans on a cluster described by `patronictl list` (pure
logic: the members are what Patroni 3.0 prints; tests/ha runs the runbooks on a real cluster),
and the app's rule for which database errors it runs an order again after; what the runbooks
say they leave when a signal lands as a step begins."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from app import dbretry
from runbooks import cluster
from runbooks.checklist import STATE_FIRST, Interrupted, Refused, Run, interruptible
from runbooks.executor import Executor

LEADER = {"Cluster": "spark", "Member": "db", "Host": "10.0.0.2", "Role": "Leader",
          "State": "running", "TL": 3}  # fmt: skip
SYNC = {"Cluster": "spark", "Member": "db2", "Host": "10.0.0.3", "Role": "Sync Standby",
        "State": "running", "TL": 3, "Lag in MB": 0}  # fmt: skip
ASYNC = {"Cluster": "spark", "Member": "db3", "Host": "10.0.0.4", "Role": "Replica",
         "State": "streaming", "TL": 3, "Lag in MB": 0}  # fmt: skip


class _Patronictl(Executor):
    """Answers `patronictl list -f json` with the given rows; records every other command."""

    def __init__(self, rows: list[dict], synchronous_mode: bool = False) -> None:
        super().__init__()
        self.rows = rows
        self.synchronous_mode = synchronous_mode
        self.ran: list[list[str]] = []

    def _spawn(self, argv, *, user, env, input, timeout):
        if argv[0] == cluster.PATRONICTL and argv[3:] == ["list", "-f", "json"]:
            return 0, json.dumps(self.rows), ""
        if argv[0] == cluster.PATRONICTL and argv[3:] == ["show-config"]:
            mode = "true" if self.synchronous_mode else "false"
            return 0, f"loop_wait: 5\nsynchronous_mode: {mode}\nttl: 20\n", ""
        self.ran.append(list(argv))
        return 1, "", "not in this test"


def _cluster(
    rows: list[dict], synchronous_mode: bool = False, kind: type[_Patronictl] = _Patronictl
) -> tuple[cluster.Cluster, _Patronictl]:
    executor = kind(rows, synchronous_mode)
    names = [r["Member"] for r in rows] or ["db"]
    return cluster.Cluster([cluster.Node(n, executor) for n in names], label="test"), executor


def test_members_are_read_from_patronictl_json():
    members = cluster.parse_members(json.dumps([LEADER, SYNC, {**ASYNC, "Lag in MB": "unknown"}]))
    assert [(m.name, m.role, m.state, m.timeline, m.lag_mb) for m in members] == [
        ("db", "leader", "running", 3, None),
        ("db2", "sync_standby", "running", 3, 0.0),
        ("db3", "replica", "streaming", 3, None),
    ]
    assert members[0].leads and members[1].replicates and not members[0].replicates


def test_switchover_plan_takes_the_synchronous_standby_and_runs_nothing():
    found, executor = _cluster([LEADER, ASYNC, SYNC])
    run = Run("switchover")
    plan = cluster.prepare_switchover(found, run, to=None)
    assert (plan.leader.name, plan.candidate.name) == ("db", "db2")
    assert any("patronictl switchover --leader db --candidate db2" in line for line in run.plan)
    assert executor.ran == []


@pytest.mark.parametrize(
    ("rows", "to", "words"),
    [
        ([LEADER, SYNC], "db9", "not a member of the cluster"),
        ([LEADER, SYNC], "db", "already the primary"),
        ([LEADER, SYNC, ASYNC], "db3", "not the synchronous standby"),
        ([LEADER, {**SYNC, "Lag in MB": 40}], "db2", "behind the primary by 40 MB"),
        ([LEADER, {**SYNC, "State": "stopped"}], None, "no replica is running"),
        ([{**LEADER, "State": "stopped"}, SYNC], "db2", "no running leader"),
        ([LEADER], None, "no replica is running"),
    ],
)
def test_switchover_refuses_in_the_plan(rows, to, words):
    found, executor = _cluster(rows)
    with pytest.raises(Refused) as refused:
        cluster.prepare_switchover(found, Run("switchover"), to=to)
    assert words in str(refused.value)
    assert refused.value.hint
    assert executor.ran == []


def test_in_synchronous_mode_with_no_synchronous_standby_yet_the_switchover_is_refused():
    """Patroni would answer 412 ("candidate name does not match with sync_standby"): seen when
    a switchover followed another before the old primary took the standby's part again."""
    found, executor = _cluster([LEADER, ASYNC], synchronous_mode=True)
    with pytest.raises(Refused, match="no replica is its synchronous standby yet") as refused:
        cluster.prepare_switchover(found, Run("switchover"), to="db3")
    assert "sync_standby" in refused.value.hint
    assert executor.ran == []
    assert found.synchronous_mode() is True
    # The same members outside synchronous mode: the replica is taken.
    found, _ = _cluster([LEADER, ASYNC], synchronous_mode=False)
    assert cluster.prepare_switchover(found, Run("switchover"), to=None).candidate.name == "db3"


def test_without_synchronous_mode_the_replica_least_behind_is_taken():
    rows = [LEADER, {**ASYNC, "Lag in MB": 0.5}, {**ASYNC, "Member": "db4", "Lag in MB": 0}]
    found, _ = _cluster(rows)
    assert cluster.prepare_switchover(found, Run("switchover"), to=None).candidate.name == "db4"


def test_failover_is_refused_while_a_leader_runs_and_planned_without_one():
    found, executor = _cluster([LEADER, SYNC])
    with pytest.raises(Refused, match="has a running leader"):
        cluster.prepare_failover(found, Run("failover"), to="db2")
    found, executor = _cluster([{**LEADER, "State": "stopped"}, SYNC])
    run = Run("failover")
    plan = cluster.prepare_failover(found, run, to="db2")
    assert plan.candidate.name == "db2"
    assert any("patronictl failover --candidate db2" in line for line in run.plan)
    assert executor.ran == []


class _Switching(_Patronictl):
    """A cluster that has moved once `patronictl switchover` or `failover` ran: db2 leads on
    the next timeline and db is its synchronous standby."""

    def _spawn(self, argv, *, user, env, input, timeout):
        if argv[0] == cluster.PATRONICTL and argv[3] in ("switchover", "failover"):
            self.ran.append(list(argv))
            self.rows = [{**SYNC, "Role": "Leader", "TL": 4},
                         {**LEADER, "Role": "Sync Standby", "TL": 4, "Lag in MB": 0}]  # fmt: skip
            return 0, 'Successfully switched over to "db2"', ""
        return super()._spawn(argv, user=user, env=env, input=input, timeout=timeout)


class _SignalAtHeader(Run):
    """SIGTERM as step `number`'s header prints: the runbook's handler raises `Interrupted`
    there, before the step's body runs (seen in CI: a switchover said no state left)."""

    def __init__(self, runbook: str, number: int) -> None:
        super().__init__(runbook, quiet=True)
        self.number = number

    def say(self, text: str = "") -> None:
        super().say(text)
        if text.startswith(f"[{self.number}] "):
            raise Interrupted(signal.SIGTERM)


@pytest.mark.parametrize("number", [1, 2, 3])
def test_a_switchover_interrupted_as_any_step_begins_says_the_state_left(number):
    found, _ = _cluster([LEADER, SYNC], kind=_Switching)
    plan = cluster.prepare_switchover(found, Run("switchover"), to=None)
    run = _SignalAtHeader("switchover", number)
    with pytest.raises(Interrupted):
        cluster.execute_switchover(plan, run)
    assert len(run.steps) == number and not run.steps[-1].ok
    leader = "db" if number == 1 else "db2"  # from step 2 on, Patroni has switched
    assert len(run.left) == 1 and run.left[0].startswith(f"primary now: {leader};"), run.left
    assert run.undo is None  # no pgBouncer was paused


@pytest.mark.parametrize("number", [1, 2])
def test_a_failover_interrupted_as_any_step_begins_says_the_state_left(number):
    found, _ = _cluster([{**LEADER, "State": "stopped"}, SYNC], kind=_Switching)
    plan = cluster.prepare_failover(found, Run("failover"), to="db2")
    run = _SignalAtHeader("failover", number)
    with pytest.raises(Interrupted):
        cluster.execute_failover(plan, run)
    assert len(run.steps) == number
    assert run.left and run.left[0].startswith(
        "primary now: " + ("NONE" if number == 1 else "db2")
    ), run.left


def _interrupted(runbook: str, kind: type[_Patronictl]) -> tuple[Run, list[str], _Patronictl]:
    """A switchover (leader db, db2 its synchronous standby) or a failover to db2 (db
    stopped) planned on `kind`'s cluster and executed until a signal ends it: the run, what
    the signal handler told, the stand-in."""
    stopped = runbook == "failover"
    found, executor = _cluster([{**LEADER, "State": "stopped"} if stopped else LEADER, SYNC],
                               kind=kind)  # fmt: skip
    if stopped:
        plan, execute = (
            cluster.prepare_failover(found, Run(runbook), to="db2"),
            cluster.execute_failover,
        )
    else:
        plan, execute = (
            cluster.prepare_switchover(found, Run(runbook), to=None),
            cluster.execute_switchover,
        )
    run, told = Run(runbook, quiet=True), []
    with interruptible(told.append), pytest.raises(Interrupted):
        execute(plan, run)
    return run, told, executor


class _SignalledWhileSwitching(_Switching):
    """SIGTERM reaches the runbook while patronictl waits for Patroni's answer."""

    def _spawn(self, argv, *, user, env, input, timeout):
        if argv[0] == cluster.PATRONICTL and argv[3] in ("switchover", "failover"):
            os.kill(os.getpid(), signal.SIGTERM)
        return super()._spawn(argv, user=user, env=env, input=input, timeout=timeout)


@pytest.mark.parametrize("runbook", ["switchover", "failover"])
def test_a_signal_while_patroni_moves_the_primary_waits_for_its_answer(runbook):
    """Killing patronictl would not stop a switch Patroni has begun; the runbook lets it
    answer, says so, then ends interrupted with the state after the move."""
    run, told, executor = _interrupted(runbook, _SignalledWhileSwitching)
    assert told == [f"SIGTERM received: {cluster.PATRONI_FINISHES}"]
    assert [argv[3] for argv in executor.ran] == [runbook]
    assert len(run.steps) == 1 and run.steps[0].detail == "interrupted by SIGTERM"
    assert run.left[0].startswith("primary now: db2;"), run.left


class _SignalWhileReadingState(_Patronictl):
    """Patroni refuses the move; SIGTERM reaches the runbook as it then reads the cluster's
    state to leave (an operator stopping a failed run that seems to hang)."""

    failed = False

    def _spawn(self, argv, *, user, env, input, timeout):
        if argv[0] == cluster.PATRONICTL and argv[3] in ("switchover", "failover"):
            self.ran.append(list(argv))
            self.failed = True
            return 1, "", "Error: Patroni refused"
        if self.failed and argv[3:] == ["list", "-f", "json"]:
            os.kill(os.getpid(), signal.SIGTERM)
        return super()._spawn(argv, user=user, env=env, input=input, timeout=timeout)


@pytest.mark.parametrize("runbook", ["switchover", "failover"])
def test_a_signal_while_the_state_is_read_waits_until_it_is_said(runbook):
    run, told, _ = _interrupted(runbook, _SignalWhileReadingState)
    assert told == [f"SIGTERM received: {STATE_FIRST}"]
    assert not run.steps[0].ok and "Patroni refused" in run.steps[0].detail
    leader = "db" if runbook == "switchover" else "NONE"
    assert len(run.left) == 1 and run.left[0].startswith(f"primary now: {leader};"), run.left


def test_a_single_host_inventory_is_refused_before_any_connection(tmp_path):
    inventory = tmp_path / "staging.py"
    inventory.write_text('db = [("db.example.invalid", {"ssh_user": "ops"})]\n')
    for args in (["switchover", "--yes"], ["failover", "--to", "db2", "--yes"], ["status"]):
        done = subprocess.run(
            [sys.executable, "-m", "sparkops_cli.main", "cluster", *args,
             "--inventory", str(inventory)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode in (1, 2) if args == ["status"] else done.returncode == 2
        assert "not a Patroni cluster (no etcd group)" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg.errors.ReadOnlySqlTransaction("read-only"), True),
        (psycopg.errors.AdminShutdown("terminating connection"), True),
        (PoolTimeout("couldn't get a connection after 5.00 sec"), False),
        (psycopg.errors.QueryCanceled("canceling statement"), False),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
        (psycopg.errors.CheckViolation("check"), False),
        (ValueError("not a database error"), False),
    ],
)
def test_the_app_runs_an_order_again_only_after_the_database_moved(exc, retried):
    assert dbretry.retryable(exc) is retried
