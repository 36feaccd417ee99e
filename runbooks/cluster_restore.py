"""Point-in-time restore of a whole Patroni cluster (docs/ha.md).

One node cannot be restored in place under Patroni: it would restart the stopped server, or
promote a replica over it. So, as Patroni's own documentation has it, the cluster is made
again from one restored node:

1. Patroni stops on the replicas first (nothing left to promote), then on the node to restore
   (the leader by default), inside the single-host restore (runbooks/restoring.py: pgBouncer
   paused, the live WAL archived, `pgbackrest restore --delta` to the target, PostgreSQL
   started alone with pg_ctl, recovery to the target and promotion, verification);
2. the restore's recovery settings are cleared and that PostgreSQL stopped; the cluster's
   state is removed from etcd (`patronictl remove`), so the restored data is not measured
   against the old timeline;
3. Patroni starts on the restored node and takes the leader key with its data (a data
   directory Patroni finds with no cluster in etcd is the new cluster's);
4. each replica's data directory is moved aside (kept, named in the plan, never deleted) and
   Patroni starts there: it clones the new primary.

The old replicas' data is the only copy of the history after the target: it is moved aside,
not removed, so an operator who chose the wrong target still has it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from runbooks import pitr, restoring
from runbooks.checklist import Refused, Run, StepFailed, deferred, shielded
from runbooks.cluster import Cluster, Member, Node, _replicates, _wait_for, status_lines
from runbooks.executor import CommandFailed
from runbooks.services import PatroniNodePostgres

ASIDE_SUFFIX = ".before-restore-"


@dataclass
class ClusterRestorePlan:
    cluster: Cluster
    node: Node
    others: list[Node]
    restore: pitr.Plan
    members: list[Member]
    timeout: float
    stamp: str
    rerun_command: str

    def aside(self, node: Node) -> str:
        assert node.db is not None
        return f"{node.db.data_dir}{ASIDE_SUFFIX}{self.stamp}"


def prepare(
    cluster: Cluster,
    run: Run,
    req: pitr.Request,
    *,
    on: str | None,
    timeout: float,
) -> ClusterRestorePlan:
    members = cluster.members()
    leader = cluster.leader(members)
    if on is None and leader is None:
        raise Refused(
            "the cluster has no running leader to restore on",
            "name the node whose repository and data to restore with --on NAME",
        )
    name = on or leader.name
    node = cluster.node(name)
    if leader is not None and leader.name != name:
        raise Refused(
            f"{name} is not the primary ({leader.name} is): the live WAL is archived from the "
            "primary before the restore, and the cluster is made again from the node restored",
            f"use --on {leader.name}, or leave --on out",
        )
    others = [n for n in cluster.nodes if n.name != name]
    for each in [node, *others]:
        if each.db is None or each.patroni is None:
            raise Refused(
                f"{each.name}: no way to control its Patroni and PostgreSQL is known",
                "run it against a cluster inventory (its db hosts answer SSH)",
            )
    if not isinstance(node.db.service, PatroniNodePostgres):
        raise Refused(
            f"{name}: its PostgreSQL is not described as a Patroni node's",
            "run it against a cluster inventory",
        )
    req.cluster_restore = True
    restore = pitr.prepare(node.db, req, run)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    plan = ClusterRestorePlan(
        cluster, node, others, restore, members, timeout, stamp, req.rerun_command or ""
    )
    replicas = ", ".join(n.name for n in others) or "none"
    run.plan = [
        *status_lines(cluster, members),
        f"Cluster restore: {name} is restored, the cluster is made again from it",
        f"  first: stop Patroni on the replicas ({replicas}): nothing is left to promote",
        *restore.lines,
        "  then, for the cluster:",
        "    a. stop PostgreSQL (the restore cleared its recovery settings when recovery ended)",
        f"    b. remove the cluster's state from etcd (patronictl remove {cluster.scope})",
        f"    c. start Patroni on {name}: it leads with the restored data",
        *[
            f"    d. {n.name}: move its data directory aside to {plan.aside(n)} (kept) and "
            "start Patroni: it clones the new primary"
            for n in others
        ],
        f"    e. wait until every replica streams (at most {timeout:g} s)",
    ]
    run.facts.update(node=name, replicas=[n.name for n in others], stamp=stamp)
    return plan


def execute(plan: ClusterRestorePlan, run: Run) -> None:
    cluster, node = plan.cluster, plan.node
    run.watch(*(n.executor for n in cluster.nodes))
    started = time.monotonic()
    stopped: list[Node] = []
    moved: list[Node] = []
    state = {"removed": False, "leading": False}
    try:
        with run.step("Stop Patroni on the replicas"):
            for other in plan.others:
                stopped.append(other)
                other.patroni.stop()
        restoring.execute(plan.restore, run)
        if not run.verified:
            failed = ", ".join(c.name for c in run.checks if not c.ok)
            raise StepFailed(f"the restored data failed verification ({failed})")
        with run.step("Stop PostgreSQL for Patroni"):
            node.db.service.postgres.stop()
        with run.step(f"Remove the cluster's state from etcd ({cluster.scope})"), deferred():
            # The removal and its note together: a signal between them would make the state
            # left say the old state is still in etcd when it is gone (a short command,
            # bounded by its timeout; the signal is raised right after it).
            _remove_cluster_state(cluster, node)
            state["removed"] = True
        with run.step(f"Start Patroni on {node.name}"):
            node.patroni.start()
            _wait_for(
                cluster,
                lambda ms: any(m.name == node.name and m.leads for m in ms),
                time.monotonic() + plan.timeout,
                f"{node.name} did not lead with the restored data",
            )
            state["leading"] = True
        run.facts["primary_serving_seconds"] = round(time.monotonic() - started, 3)
        for other in plan.others:
            with run.step(f"Re-create {other.name} from the new primary"):
                # Never over an earlier run's copy: a name in use fails the step instead.
                with deferred():  # the move and its note together, as the removal above
                    other.executor.run(
                        ["sh", "-c", 'if [ -e "$1" ]; then [ ! -e "$2" ] && mv -- "$1" "$2"; fi',
                         "sh", other.db.data_dir, plan.aside(other)],
                        user=other.db.os_user,
                    )  # fmt: skip
                    moved.append(other)
                other.patroni.start()
        with run.step("Wait until every replica streams"):
            # In synchronous mode the cluster survives its next loss only with a synchronous
            # standby again (Patroni promotes no other).
            synchronous = any(m.role == "sync_standby" for m in plan.members)
            members = _wait_for(
                cluster,
                lambda ms: all(_replicates(ms, o.name) for o in plan.others)
                and (not synchronous or not plan.others
                     or any(m.role == "sync_standby" for m in ms)),
                time.monotonic() + plan.timeout,
                "the replicas did not stream from the new primary"
                + (" with a synchronous standby" if synchronous else ""),
            )  # fmt: skip
        run.facts["replicas_streaming_seconds"] = round(time.monotonic() - started, 3)
    except BaseException:
        _leave(plan, run, stopped, moved, state)
        raise
    leader = cluster.leader(members)
    run.facts.update(new_leader=leader.name if leader else None,
                     timeline_after_cluster=leader.timeline if leader else None)  # fmt: skip
    run.check("the restored node leads", leader is not None and leader.name == node.name,
              f"leader: {leader.name if leader else 'none'}")  # fmt: skip
    for other in plan.others:
        member = next((m for m in members if m.name == other.name), None)
        run.check(f"{other.name} streams from it", member is not None and member.replicates,
                  member.line() if member else "not listed")  # fmt: skip
    if moved:
        run.say("kept (remove when satisfied): " + ", ".join(
            f"{o.name}:{plan.aside(o)}" for o in moved))  # fmt: skip


def _remove_cluster_state(cluster: Cluster, node: Node) -> None:
    """`patronictl remove` asks for the cluster's name and a sentence; both go on stdin."""
    result = node.executor.run(
        ["patronictl", "-c", node.config, "remove", cluster.scope],
        user=node.os_user,
        input=f"{cluster.scope}\nYes I am aware\n",
        timeout=60,
        check=False,
    )
    if not result.ok and "does not exist" not in result.output():
        raise CommandFailed(result)


def _leave(
    plan: ClusterRestorePlan, run: Run, stopped: list[Node], moved: list[Node], state: dict
) -> None:
    """After a failure: put back what can be (nothing restored yet: the cluster as it was),
    and say what is where."""
    node = plan.node
    restore_begun = run.step_seconds(restoring.COPY_STEP) is not None
    lines = []
    with shielded():
        if not restore_begun:
            # Nothing was restored: the cluster as it was, its leader first.
            def back() -> None:
                node.db.service.postgres.stop()
                node.patroni.start()
                for other in stopped:
                    other.patroni.start()

            if restoring._attempt(run, "Start Patroni again everywhere (nothing restored)", back):
                lines.append("nothing was restored; Patroni was started again on every node")
            else:
                lines.append(
                    "nothing was restored, but Patroni could not be started again everywhere: "
                    f"start it on {node.name} first, then on the others (systemctl start patroni)"
                )
            run.leave(lines + list(run.left), None)
            return
    lines.append(
        f"{node.name}'s data was restored (pgbackrest restore ran); the cluster is being made "
        "again from it" + ("" if state["leading"] else "; Patroni does not lead there yet")
    )
    if not state["removed"]:
        lines.append("the cluster's old state is still in etcd")
    waiting = [o.name for o in plan.others if o not in moved]
    if waiting:
        lines.append(f"Patroni is stopped on {', '.join(waiting)} (their data untouched)")
    for other in moved:
        lines.append(f"{other.name}: old data kept at {plan.aside(other)}")
    rerun = plan.rerun_command
    if rerun and "--on" not in rerun:
        rerun += f" --on {node.name}"
    run.leave(lines + list(run.left), rerun or None)
