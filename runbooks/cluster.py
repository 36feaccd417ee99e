"""A Patroni cluster as the runbooks see it (docs/ha.md), and the two ways its primary moves
on an operator's word: a planned switchover and a manual failover.

Patroni is asked through `patronictl` on a db host, with the configuration the deploy wrote
(it holds the REST API's credentials and etcd's address), so nothing here needs a password.
Which member leads is what `patronictl list` says at the moment of asking, never what this
run believes.

Switchover, planned, under load: the old primary's pgBouncer is paused first (transactions
in flight finish, new ones wait in pgBouncer instead of failing), Patroni moves the primary,
and pgBouncer is resumed once the new primary leads. The clients that waited in pgBouncer
lose that connection when the database route drops the old primary's sessions; the app runs
such an order again on a fresh connection (app/dbretry.py), which reaches the new primary.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

from runbooks import bouncer
from runbooks.checklist import Refused, Run, StepFailed, shielded
from runbooks.executor import Executor
from runbooks.services import ServiceControl
from runbooks.target import DbTarget
from sparkops import defaults, layout
from sparkops.wait import DeadlineExceeded, wait_until

PATRONICTL = "patronictl"
SWITCHOVER_TIMEOUT_SECONDS = 120.0  # patronictl's own wait, then ours for the old primary
POLL_SECONDS = 0.5
# A signal while patronictl asks Patroni to move the primary waits for its answer (bounded
# by the step's timeout, seconds in practice): killing patronictl would not stop a switch
# Patroni has begun, and the state left would then show it halfway, with no leader.
PATRONI_FINISHES = "letting Patroni finish moving the primary first"
# Patroni's own bound (maximum_lag_on_failover, deploys/hacluster.DEFAULTS) in MB, for the
# plan's check of a candidate: a candidate further behind would be refused by Patroni anyway.
MAX_CANDIDATE_LAG_MB = 1.0


@dataclass
class Node:
    """A db host of the cluster: where to run patronictl; its PostgreSQL as a restore sees it
    (`db`: psql, pgBackRest, pg_ctl alone, and its pgBouncer's admin console when known);
    its Patroni service."""

    name: str
    executor: Executor
    config: str = layout.PATRONI_CONFIG
    os_user: str = "postgres"
    db: DbTarget | None = None
    patroni: ServiceControl | None = None

    @property
    def bouncer(self) -> DbTarget | None:
        """The node's PostgreSQL target when its pgBouncer can be paused, else None."""
        return self.db if self.db is not None and self.db.bouncer is not None else None


@dataclass(frozen=True)
class Member:
    """One line of `patronictl list`."""

    name: str
    host: str
    role: str  # leader | standby_leader | sync_standby | replica
    state: str  # running | streaming | stopped | starting | ...
    timeline: int | None
    lag_mb: float | None  # None: unknown, or the leader

    @property
    def leads(self) -> bool:
        return self.role == "leader" and self.state == "running"

    @property
    def replicates(self) -> bool:
        return self.role in ("sync_standby", "replica") and self.state in ("running", "streaming")

    def line(self) -> str:
        lag = "" if self.lag_mb is None or self.role == "leader" else f"  lag {self.lag_mb:g} MB"
        tl = f"TL {self.timeline}" if self.timeline is not None else "TL ?"
        return f"{self.name:<10} {self.role:<13} {self.state:<9} {tl}{lag}"


def parse_members(text: str) -> list[Member]:
    """`patronictl list -f json` (Patroni 3.0) as members."""
    rows = json.loads(text or "[]")
    members = []
    for row in rows:
        lag = row.get("Lag in MB")
        timeline = row.get("TL")
        members.append(
            Member(
                name=str(row["Member"]),
                host=str(row.get("Host", "")),
                role=str(row.get("Role", "")).strip().lower().replace(" ", "_"),
                state=str(row.get("State", "")).strip().lower(),
                timeline=int(timeline) if isinstance(timeline, int | float) else None,
                lag_mb=float(lag) if isinstance(lag, int | float) else None,
            )
        )
    return members


@dataclass
class Cluster:
    nodes: list[Node]
    label: str = "cluster"  # the inventory's name, for messages
    scope: str = defaults.PATRONI_SCOPE
    # The options that name this cluster on the command line (for the undo command).
    command_args: str = ""
    _asked: list[str] = field(default_factory=list)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise Refused(
            f"{name!r} is not a db host of the {self.label} cluster (its members: {known})",
            "pass one of those names with --to",
        )

    def patronictl(self, node: Node, *args: str, timeout: float = 30.0, check: bool = True):
        return node.executor.run(
            [PATRONICTL, "-c", node.config, *args],
            user=node.os_user,
            timeout=timeout,
            check=check,
        )

    def members(self) -> list[Member]:
        """The cluster as the first node that answers sees it (Patroni reads it from etcd)."""
        errors = []
        for node in self.nodes:
            result = self.patronictl(node, "list", "-f", "json", check=False)
            if result.ok:
                try:
                    return parse_members(result.stdout)
                except (ValueError, KeyError) as exc:
                    errors.append(f"{node.name}: unreadable answer ({exc})")
                    continue
            errors.append(f"{node.name}: {result.output().strip()[-200:] or 'no answer'}")
        raise Refused(
            f"no db host of the {self.label} cluster could list its members: " + "; ".join(errors),
            "check Patroni and etcd on the db hosts (`systemctl status patroni etcd`)",
        )

    def synchronous_mode(self) -> bool | None:
        """Patroni's `synchronous_mode` from the cluster's dynamic configuration (None: no node
        answered). Top-level YAML keys, read line by line: the runbooks ship without a YAML
        parser."""
        for node in self.nodes:
            result = self.patronictl(node, "show-config", check=False)
            if result.ok:
                match = re.search(r"^synchronous_mode:\s*(\w+)\s*$", result.stdout, re.M)
                return bool(match) and match.group(1).lower() in ("true", "on", "yes")
        return None

    def leader(self, members: list[Member] | None = None) -> Member | None:
        return next((m for m in (members or self.members()) if m.leads), None)


def status_lines(cluster: Cluster, members: list[Member]) -> list[str]:
    leader = cluster.leader(members)
    lines = [f"Patroni cluster {cluster.scope} ({cluster.label}): {len(members)} member(s)"]
    lines += [f"  {m.line()}" for m in members]
    if leader is None:
        lines.append("  NO LEADER: writes fail until one is elected or failed over to")
    missing = {n.name for n in cluster.nodes} - {m.name for m in members}
    if missing:
        lines.append(f"  not in the cluster: {', '.join(sorted(missing))}")
    return lines


# --- switchover -------------------------------------------------------------------------
@dataclass
class SwitchoverPlan:
    cluster: Cluster
    leader: Member
    candidate: Member
    pause_wait: float
    disconnect_blockers: bool
    timeout: float
    members: list[Member]

    @property
    def bouncer(self) -> DbTarget | None:
        return self.cluster.node(self.leader.name).bouncer


def pick_candidate(
    members: list[Member], leader: Member, wanted: str | None, synchronous_mode: bool = False
) -> Member:
    """The member to promote: `wanted`, checked; else the synchronous standby, else the
    running replica least behind. `synchronous_mode`: Patroni's setting (a cluster in it whose
    synchronous standby is not yet named has no member Patroni would promote)."""
    others = [m for m in members if m.name != leader.name]
    synchronous = any(m.role == "sync_standby" for m in members)
    if synchronous_mode and not synchronous and others:
        raise Refused(
            "the cluster is in synchronous mode and no replica is its synchronous standby yet "
            "(" + "; ".join(f"{m.name} {m.role} {m.state}" for m in others) + "): Patroni "
            "promotes no other",
            "wait until `sparkops cluster status` shows a sync_standby (a replica that has just "
            "rejoined takes a few seconds), then run this again",
        )
    if wanted is not None:
        found = next((m for m in members if m.name == wanted), None)
        if found is None:
            names = ", ".join(m.name for m in members)
            raise Refused(
                f"{wanted!r} is not a member of the cluster (members: {names})",
                "pass one of those names with --to",
            )
        if found.name == leader.name:
            raise Refused(
                f"{wanted} is already the primary",
                "name a replica with --to, or leave --to out to take the synchronous standby",
            )
        candidate = found
    else:
        ready = [m for m in others if m.replicates]
        sync = [m for m in ready if m.role == "sync_standby"]
        pool = sync or ready
        if not pool:
            raise Refused(
                "no replica is running to take over: "
                + ("; ".join(f"{m.name} {m.state}" for m in others) or "the cluster has none"),
                "bring a replica back (it clones itself from the primary) and run this again",
            )
        candidate = min(pool, key=lambda m: (m.lag_mb is None, m.lag_mb or 0.0))
    if not candidate.replicates:
        raise Refused(
            f"{candidate.name} is not a running replica ({candidate.role}, {candidate.state})",
            "wait until it streams again (`sparkops cluster status`), or name another with --to",
        )
    if synchronous and candidate.role != "sync_standby":
        sync_names = [m.name for m in members if m.role == "sync_standby"]
        raise Refused(
            f"{candidate.name} is not the synchronous standby ({', '.join(sync_names)}): in "
            "synchronous mode only a synchronous standby has every acknowledged commit, and "
            "Patroni refuses to promote another",
            f"use --to {sync_names[0]}, or leave --to out",
        )
    if candidate.lag_mb is None or candidate.lag_mb > MAX_CANDIDATE_LAG_MB:
        lag = "unknown" if candidate.lag_mb is None else f"{candidate.lag_mb:g} MB"
        raise Refused(
            f"{candidate.name} is behind the primary by {lag} (at most "
            f"{MAX_CANDIDATE_LAG_MB:g} MB for a switchover)",
            "wait until it catches up (`sparkops cluster status`) and run this again",
        )
    return candidate


def prepare_switchover(
    cluster: Cluster,
    run: Run,
    *,
    to: str | None,
    pause_wait: float = bouncer.DEFAULT_PAUSE_WAIT_SECONDS,
    disconnect_blockers: bool = False,
    timeout: float = SWITCHOVER_TIMEOUT_SECONDS,
) -> SwitchoverPlan:
    members = cluster.members()
    leader = cluster.leader(members)
    if leader is None:
        raise Refused(
            "the cluster has no running leader: a switchover moves a primary that is running",
            "let Patroni fail over by itself, or choose the new primary with "
            "`sparkops cluster failover --to NAME`",
        )
    candidate = pick_candidate(members, leader, to, cluster.synchronous_mode() is True)
    cluster.node(leader.name)  # a member the inventory does not know: refused here
    cluster.node(candidate.name)
    plan = SwitchoverPlan(
        cluster, leader, candidate, pause_wait, disconnect_blockers, timeout, members
    )
    database = defaults.DATABASE_NAME
    if plan.bouncer is not None:
        database = plan.bouncer.bouncer.database
        first = (
            f"PAUSE {database} on {leader.name}'s pgBouncer: transactions in flight finish, "
            f"new ones wait (at most {pause_wait:g} s, else RESUME and refuse)"
        )
        last = (
            f"RESUME {database} on {leader.name}'s pgBouncer (also when a step fails): the "
            "clients that waited reconnect through the route to the new primary"
        )
    else:
        first = (
            f"no pgBouncer known in front of {leader.name}: transactions in flight there are "
            "cut when it stops (the app runs an order cut so again)"
        )
        last = "nothing to resume"
    run.plan = [
        *status_lines(cluster, members),
        f"Switchover: {leader.name} -> {candidate.name} (planned; {leader.name} rejoins as a "
        "replica)",
        "  steps:",
        f"    1. {first}",
        f"    2. patronictl switchover --leader {leader.name} --candidate {candidate.name}",
        f"    3. wait until {candidate.name} leads (at most {timeout:g} s in all)",
        f"    4. {last}",
        f"    5. wait until {leader.name} replicates from {candidate.name}"
        + (
            " and a synchronous standby is in place"
            if any(m.role == "sync_standby" for m in members)
            else ""
        ),
        "  writes wait from step 1 until the route finds the new primary (a few seconds); "
        "reads through the replica route go on",
    ]
    run.facts.update(
        old_leader=leader.name,
        candidate=candidate.name,
        timeline_before=leader.timeline,
        pgbouncer_paused=plan.bouncer is not None,
    )
    return plan


def execute_switchover(plan: SwitchoverPlan, run: Run) -> None:
    cluster, old, new = plan.cluster, plan.leader.name, plan.candidate.name
    run.watch(*(n.executor for n in cluster.nodes))
    target = plan.bouncer
    paused = False
    started = time.monotonic()
    undo = f"sparkops pgbouncer resume --host {old}" + (
        f" {cluster.command_args}" if cluster.command_args else ""
    )
    try:
        if target is not None:
            with run.step(f"Pause pgBouncer on {old}"):
                paused = True  # a PAUSE cut short may still be pending: resume either way
                bouncer.pause(
                    target, run, wait=plan.pause_wait, disconnect=plan.disconnect_blockers
                )
        with run.step(f"Switch over {old} -> {new}"), shielded(PATRONI_FINISHES):
            switched = time.monotonic()
            result = cluster.patronictl(
                cluster.node(old),
                "switchover",
                "--leader",
                old,
                "--candidate",
                new,
                "--force",
                timeout=plan.timeout,
                check=False,
            )
            run.note(result.output())
            if not result.ok or "Successfully switched over" not in result.output():
                raise StepFailed(f"Patroni did not switch over: {result.output().strip()[-300:]}")
        with run.step(f"Wait until {new} leads"):
            _wait_for(cluster, lambda ms: _leads(ms, new), switched + plan.timeout,
                      f"{new} did not lead in time")  # fmt: skip
            run.facts["switchover_seconds"] = round(time.monotonic() - switched, 3)
    except BaseException:
        check = undo.replace(" resume ", " status ")
        resumed = [f"pgBouncer on {old}: resumed by this run's cleanup (check: {check})"]
        run.leave_as_read(
            lambda: ([_state_now(cluster)] + (resumed if paused else []), undo if paused else None)
        )
        raise
    finally:
        if paused:
            with shielded(), run.step(f"Resume pgBouncer on {old}"):
                bouncer.resume(target)
            run.facts["writes_waited_seconds"] = round(time.monotonic() - started, 3)
    # The try encloses the step: a signal that lands while its header prints interrupts the
    # step before its body runs, and the state left must still be said.
    try:
        with run.step(f"Wait until {old} replicates"):
            # In synchronous mode, until a replica is the synchronous standby again the
            # cluster cannot survive the next loss (Patroni promotes only that standby).
            synchronous = any(m.role == "sync_standby" for m in plan.members)
            members = _wait_for(
                cluster,
                lambda ms: (
                    _replicates(ms, old)
                    and (not synchronous or any(m.role == "sync_standby" for m in ms))
                ),
                switched + plan.timeout,
                f"{old} did not rejoin as a replica"
                + (" with a synchronous standby in place" if synchronous else ""),
            )
    except BaseException:
        # Failed or interrupted while the old primary rejoins: the switch itself is done.
        run.leave_as_read(lambda: ([_state_now(cluster)], None))
        raise
    leader = cluster.leader(members)
    run.facts.update(new_leader=leader.name if leader else None,
                     timeline_after=leader.timeline if leader else None)  # fmt: skip
    run.check("the candidate leads", leader is not None and leader.name == new,
              f"leader: {leader.name if leader else 'none'}")  # fmt: skip
    old_member = next((m for m in members if m.name == old), None)
    run.check(f"{old} replicates", old_member is not None and old_member.replicates,
              old_member.line() if old_member else "not listed")  # fmt: skip
    if leader is not None and plan.leader.timeline is not None:
        run.check("the timeline moved on", (leader.timeline or 0) > plan.leader.timeline,
                  f"{plan.leader.timeline} -> {leader.timeline}")  # fmt: skip
    if target is not None:
        run.check(f"pgBouncer on {old} not paused", not bouncer.is_paused(target))


def _leads(members: list[Member], name: str) -> bool:
    return any(m.name == name and m.leads for m in members)


def _replicates(members: list[Member], name: str) -> bool:
    return any(m.name == name and m.replicates for m in members)


def _wait_for(cluster: Cluster, done, deadline: float, failure: str) -> list[Member]:
    """Poll `patronictl list` until done(members), bounded by `deadline` (monotonic)."""
    seen: list[Member] = []

    def probe() -> list[Member] | None:
        nonlocal seen
        try:
            seen = cluster.members()
        except Refused:
            seen = []
        return seen if seen and done(seen) else None

    try:
        return wait_until(
            probe,
            timeout=max(0.0, deadline - time.monotonic()),
            what=failure,
            interval=POLL_SECONDS,
            max_interval=POLL_SECONDS,
        )
    except DeadlineExceeded:
        last = "; ".join(m.line() for m in seen) or "no answer"
        raise StepFailed(f"{failure} (last seen: {last})") from None


def _state_now(cluster: Cluster) -> str:
    try:
        members = cluster.members()
    except Refused as exc:
        return f"the cluster's state is unknown: {exc}"
    leader = cluster.leader(members)
    return (f"primary now: {leader.name if leader else 'NONE'}; members: "
            + "; ".join(m.line() for m in members))  # fmt: skip


# --- failover ---------------------------------------------------------------------------
@dataclass
class FailoverPlan:
    cluster: Cluster
    candidate: Member
    timeout: float


def prepare_failover(
    cluster: Cluster, run: Run, *, to: str, timeout: float = SWITCHOVER_TIMEOUT_SECONDS
) -> FailoverPlan:
    """A manual failover: for when the cluster has no leader and Patroni does not elect one by
    itself (say, synchronous mode lost the primary and its synchronous standby). With a
    running leader, the planned way is a switchover: refused."""
    members = cluster.members()
    leader = cluster.leader(members)
    if leader is not None:
        raise Refused(
            f"the cluster has a running leader ({leader.name}): a failover is for a cluster "
            "without one",
            f"move the primary with `sparkops cluster switchover --to {to}`",
        )
    found = next((m for m in members if m.name == to), None)
    if found is None:
        names = ", ".join(m.name for m in members) or "none answered"
        raise Refused(
            f"{to!r} is not a member of the cluster (members: {names})",
            "pass one of those names with --to",
        )
    if found.state not in ("running", "streaming"):
        raise Refused(f"{to} is not running ({found.state})", "start it first, or name another")
    cluster.node(to)
    run.plan = [
        *status_lines(cluster, members),
        f"Failover to {to} (manual: no leader is running)",
        "  steps:",
        f"    1. patronictl failover --candidate {to}",
        f"    2. wait until {to} leads (at most {timeout:g} s)",
        f"  {to}'s lag: {'unknown' if found.lag_mb is None else f'{found.lag_mb:g} MB'}: "
        "commits it did not receive are lost",
    ]
    run.facts.update(candidate=to, timeline_before=found.timeline)
    return FailoverPlan(cluster, found, timeout)


def execute_failover(plan: FailoverPlan, run: Run) -> None:
    cluster, new = plan.cluster, plan.candidate.name
    run.watch(*(n.executor for n in cluster.nodes))
    try:
        with run.step(f"Fail over to {new}"), shielded(PATRONI_FINISHES):
            started = time.monotonic()
            result = cluster.patronictl(
                cluster.node(new), "failover", "--candidate", new, "--force",
                timeout=plan.timeout, check=False,
            )  # fmt: skip
            run.note(result.output())
            if not result.ok:
                raise StepFailed(f"Patroni did not fail over: {result.output().strip()[-300:]}")
        with run.step(f"Wait until {new} leads"):
            try:
                members = _wait_for(cluster, lambda ms: cluster.leader(ms) is not None,
                                    started + plan.timeout, "no member leads")  # fmt: skip
            except StepFailed:
                members = []  # no leader in time: the check below fails and says so
            leader = cluster.leader(members) if members else None
            run.facts["failover_seconds"] = round(time.monotonic() - started, 3)
    except BaseException:
        # Failed or interrupted: what the cluster looks like now is what the operator needs.
        run.leave_as_read(lambda: ([_state_now(cluster)], None))
        raise
    run.facts["new_leader"] = leader.name if leader else None
    if leader is None or leader.name != new:
        run.leave_as_read(lambda: ([_state_now(cluster)], None))
    run.check("the candidate leads", leader is not None and leader.name == new,
              f"leader: {leader.name if leader else 'none'}")  # fmt: skip
