"""Each db and app runbook as one `Runbook` (runbooks/conduct.py): target resolution, multi-host
sequencing, preconditions and the work, with no command line in sight. `sparkops restore`,
`drill`, `rollback`, `restore-point create` and `pgbouncer resume` parse their options into
an order and hand the result to `conduct`; the benchmark builds the same orders.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from runbooks import (
    balancer,
    bouncer,
    checks,
    cluster,
    cluster_restore,
    drill,
    pitr,
    restore_point,
    restoring,
    rollback,
    sites,
)
from runbooks.checklist import Refused, StepFailed
from runbooks.conduct import Runbook
from sparkops import defaults, layout
from sparkops.localhost import free_port, make_workdir

LSN_FACTS = ("lsn_before", "lsn_sealed", "lsn_after", "timeline_before", "timeline_after")


@dataclass
class DbWhere:
    """Where a db runbook acts: a host of an inventory, or a local target file."""

    host: str = "db"
    inventory: Path | None = None
    target_file: Path | None = None
    stanza: str | None = None
    # A target already in hand (the benchmark's throwaway cluster) instead of the above.
    resolved: sites.DbTarget | None = None

    def target(self) -> sites.DbTarget:
        if self.resolved is not None:
            return self.resolved
        return sites.db_target(self.host, self.inventory, self.target_file, self.stanza)

    def options(self) -> str:
        """The same target as command-line options (for the command that undoes a run)."""
        if self.target_file:
            return f"--target-file {shlex.quote(str(self.target_file))}"
        where = f"--host {shlex.quote(self.host)}"
        if self.inventory:
            where += f" --inventory {shlex.quote(str(self.inventory))}"
        return where


# --- restore ----------------------------------------------------------------------------
@dataclass
class RestoreOrder:
    kind: str  # time | lsn | name | latest
    value: str | None
    where: DbWhere = field(default_factory=DbWhere)
    to_host: str | None = None
    to_data_dir: str | None = None
    to_port: int = defaults.POSTGRES_PORT + 1  # 0: any free port (a local copy)
    check_sql: tuple[str, ...] = ()
    target_timeline: str | None = None
    recovery_timeout: float = 3600
    pause_bouncer: bool = True
    pause_wait: float = bouncer.DEFAULT_PAUSE_WAIT_SECONDS
    disconnect_blockers: bool = False
    rerun_command: str = ""
    # Settings for the copy's PostgreSQL while it replays (the benchmark sizes it for replay).
    copy_settings: dict[str, str] = field(default_factory=dict)


def restore(order: RestoreOrder) -> Runbook:
    def prepare(run):
        source = order.where.target()
        dest = None
        if order.to_host or order.to_data_dir:
            if order.to_host and order.to_host != source.label and order.where.target_file:
                raise Refused("--to-host with --target-file", "use --to-data-dir locally")
            executor = source.executor
            if order.to_host and order.to_host != source.label:
                executor = sites.ssh_executor(
                    order.to_host, sites.load_inventory(order.where.inventory)
                )
            port = order.to_port or free_port()
            data_dir = order.to_data_dir or layout.RESTORE_SCRATCH_DIR
            dest = sites.scratch_target(
                source, data_dir, port, executor, label=order.to_host or f"{source.label}-copy"
            )
            dest.service.options.update(order.copy_settings)
        req = pitr.Request(
            kind=order.kind,
            value=None if order.kind == "latest" else order.value,
            checks=checks.named_queries(order.check_sql),
            dest=dest,
            target_timeline=order.target_timeline,
            pause_bouncer=order.pause_bouncer,
            pause_wait=order.pause_wait,
            disconnect_blockers=order.disconnect_blockers,
            recovery_timeout=order.recovery_timeout,
            rerun_command=order.rerun_command,
            resume_command=f"sparkops pgbouncer resume {order.where.options()}",
        )
        return pitr.prepare(source, req, run)

    def act(run, plan):
        if run.evidence:
            run.evidence.write_json("pgbackrest-info.json", plan.info.raw)
            text = plan.source.pgbackrest("info", check=False)
            run.evidence.write("pgbackrest-info.txt", text.output())
        try:
            restoring.execute(plan, run, cleanup_copy=True)
            if not plan.in_place:  # the copy serves on: where, and how to remove it
                run.leave_as_read(lambda: restoring.copy_state(plan))
                if run.verified:
                    restoring.say_kept(run)
        finally:  # also after a failure: where the WAL was is what the operator needs next
            if run.evidence:
                run.evidence.write_json("lsn.json", {k: run.facts.get(k) for k in LSN_FACTS})

    return Runbook(
        "restore", prepare, act, question="Restore now? This replaces the database's contents"
    )


# --- drill ------------------------------------------------------------------------------
@dataclass
class DrillOrder:
    where: DbWhere = field(default_factory=DbWhere)
    to_host: str | None = None
    scratch_dir: str | None = None
    scratch_port: int = defaults.POSTGRES_PORT + 2  # 0: any free port (locally)
    metrics_file: str | None = None
    keep: bool = False


def drill_runbook(order: DrillOrder) -> Runbook:
    made: list[str] = []  # a temporary parent this run made (local targets)

    def prepare(run):
        source = order.where.target()
        executor = source.executor
        if order.to_host and order.to_host != source.label:
            executor = sites.ssh_executor(
                order.to_host, sites.load_inventory(order.where.inventory)
            )
        data_dir, own_parent = order.scratch_dir, False
        if data_dir is None and order.where.target_file:
            # A temporary directory of this run's own (owned by the postgres user).
            data_dir, own_parent = f"{make_workdir('drill')}/data", True
            made.append(data_dir)
        elif data_dir is None:
            data_dir = layout.DRILL_SCRATCH_DIR
        port = order.scratch_port or free_port()
        scratch = sites.scratch_target(
            source, data_dir, port, executor, label=order.to_host or f"{source.label}-drill"
        )
        metrics = order.metrics_file or drill.default_metrics_path(source.executor)
        # Metrics go where node_exporter runs: the db host.
        return drill.prepare(
            source,
            scratch,
            run,
            metrics_path=metrics,
            metrics_executor=source.executor,
            keep=order.keep,
            own_parent=own_parent,
        )

    def cleanup() -> None:
        # Refused, dry run or kept: the teardown did not remove it; an empty one goes.
        for parent in made:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(parent))

    return Runbook(
        "drill",
        prepare,
        lambda run, prepared: drill.execute(prepared, run),
        question="",
        destructive=False,
        cleanup=cleanup,
    )


# --- restore point ----------------------------------------------------------------------
def restore_point_runbook(name: str, where: DbWhere, archive_timeout: float) -> Runbook:
    state: dict = {}

    def prepare(run):
        state["target"] = where.target()
        return restore_point.prepare(state["target"], name, run)

    def act(run, prepared):
        lsn = restore_point.create(state["target"], prepared, run, archive_timeout)
        run.say(f"restore point {prepared} at {lsn}")

    return Runbook("restore-point", prepare, act, question="", destructive=False)


# --- pgBouncer --------------------------------------------------------------------------
def bouncer_target(where: DbWhere) -> sites.DbTarget:
    target = where.target()
    if target.bouncer is None:
        raise Refused(
            f"no pgBouncer admin console is known for {target.label}",
            "deploy pgBouncer there first (its admin password comes from the deploy's secrets)",
        )
    return target


def bouncer_resume_runbook(where: DbWhere) -> Runbook:
    def prepare(run):
        target = bouncer_target(where)
        paused = bouncer.is_paused(target)
        run.facts["paused_before"] = paused
        run.plan = [
            f"pgBouncer on {target.label}: {target.bouncer.database} is "
            f"{'PAUSED' if paused else 'not paused'}",
            "  steps:",
            f"    1. {'RESUME ' + target.bouncer.database if paused else 'nothing to do'}",
        ]
        return target

    def act(run, target):
        run.watch(target.executor)
        with run.step("Resume pgBouncer"):
            bouncer.resume(target)
        run.check("not paused", not bouncer.is_paused(target), target.bouncer.database)

    return Runbook("pgbouncer-resume", prepare, act, question="", destructive=False)


# --- rollback ---------------------------------------------------------------------------
def _each(read, items) -> list:
    """`read` on every item at once (SSH round trips to several hosts that only read), in
    order; the first item's error is raised."""
    items = list(items)
    if len(items) < 2:
        return [read(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(len(items), 8)) as pool:
        return list(pool.map(read, items))


def _agreed_revision(answers: list[tuple[str | None, str | None]]) -> str | None:
    """The db hosts' (revision, error) answers: the revision they agree on."""
    revisions = {rev for rev, error in answers if error is None}
    errors = [error for _, error in answers if error is not None]
    if not revisions:
        raise Refused(
            "no db host answered the database's schema revision: " + "; ".join(errors),
            "check the db hosts (on the lab: `sparkops lab status`); nothing was changed",
        )
    if len(revisions) > 1:
        raise Refused(
            f"the db hosts disagree on the schema revision ({', '.join(map(str, revisions))}): "
            "a replica has not replayed a migration yet",
            "wait for the replicas and run the rollback again; nothing was changed",
        )
    return revisions.pop()


@dataclass
class RollbackOrder:
    wanted: str | None = None  # a release; default: the previous one not marked BAD
    force: bool = False
    hosts: tuple[str, ...] = ()  # default: every host of the app group, in turn
    inventory: Path | None = None
    target_file: Path | None = None
    gate_timeout: float | None = None


def rollback_runbook(order: RollbackOrder) -> Runbook:
    held: dict = {}  # the load balancers (lb hosts) of the inventory, when it has any

    def prepare(run):
        if order.target_file:
            apps = [sites.app_target_from_file(order.target_file)]
            apps[0].command_args = f"--target-file {shlex.quote(str(order.target_file))}"
            readings = [rollback.read(apps[0])]
        else:
            found = sites.load_inventory(order.inventory)
            names = order.hosts or [h.name for h in found.group("app")]
            lb_names = [h.name for h in found.members("lb")]

            # The database's revision from psql on the db hosts when the inventory has them
            # (each answers, a replica too; they must agree), else from each app host.
            db_names = [h.name for h in found.members("db")]

            def reach(item: tuple[str, str]):
                group, name = item
                if group == "lb":
                    return sites.ssh_executor(name, found)
                if group == "db":
                    try:
                        return sites.db_revision_on_db_host(name, found), None
                    except Refused as exc:
                        return None, f"{name}: {exc}"
                return sites.app_host_for_rollback(name, found, revision=not db_names)

            # The lb hosts' probe, each app host's one read (its units and releases) and the
            # db hosts' revision at once: one round trip in all.
            items = [("lb", n) for n in lb_names] + [("app", n) for n in names]
            reached = _each(reach, items + [("db", n) for n in db_names])
            lbs = reached[: len(lb_names)]
            read = reached[len(lb_names) : len(items)]
            held["balancers"] = balancer.Balancers(lbs) if lbs else None
            apps = [app for app, _ in read]
            readings = [reading for _, reading in read]
            if db_names:
                revision = _agreed_revision(reached[len(items) :])
                readings = [replace(r, db_revision=revision) for r in readings]
            for app in apps:
                app.command_args = f"--host {shlex.quote(app.label)}" + (
                    f" --inventory {shlex.quote(str(order.inventory))}" if order.inventory else ""
                )
        # Every host's preconditions before any host changes.
        gate = {} if order.gate_timeout is None else {"gate_timeout": order.gate_timeout}
        plans = [
            rollback.prepare(app, order.wanted, order.force, reading=reading, **gate)
            for app, reading in zip(apps, readings, strict=True)
        ]
        lbs = held.get("balancers")
        run.plan = [line for plan in plans for line in plan.lines
                    + (lbs.lines(plan.app.label) if lbs else [])]  # fmt: skip
        rollback.record(plans, run)
        return plans

    def act(run, plans):
        done = []
        try:
            for plan in plans:
                started = time.monotonic()
                lbs = held.get("balancers")
                with lbs.drained(plan.app.label, run) if lbs else contextlib.nullcontext():
                    live = rollback.execute(plan, run)
                if lbs:  # from the drain to the release serving through the load balancers
                    plan.facts["lb_serving_seconds"] = round(time.monotonic() - started, 3)
                # From the command's start (planning included) to this host serving.
                since = datetime.now(UTC) - run.started
                plan.facts["since_command_seconds"] = round(since.total_seconds(), 3)
                if not live:
                    raise StepFailed(
                        f"{plan.target.name} failed its health gate on {plan.app.label}: marked "
                        f"BAD, back on {plan.origin}"
                        + (f"; already rolled back: {', '.join(done)}" if done else "")
                    )
                done.append(plan.app.label)
                run.say(
                    f"{plan.app.label}: release {plan.target.name} is live "
                    f"({plan.facts.get('rollback_seconds')} s from switch to healthy)"
                )
        finally:
            rollback.record(plans, run)

    return Runbook("rollback", prepare, act, question="Roll back now?")


# --- a Patroni cluster ------------------------------------------------------------------
@dataclass
class ClusterWhere:
    """Which cluster: a cluster inventory's db hosts, or a local target file (the test kit)."""

    inventory: Path | None = None
    target_file: Path | None = None
    resolved: cluster.Cluster | None = None

    def cluster(self) -> cluster.Cluster:
        if self.resolved is not None:
            return self.resolved
        if self.target_file:
            return sites.cluster_from_file(self.target_file)
        return sites.cluster_from_inventory(self.inventory)


@dataclass
class SwitchoverOrder:
    where: ClusterWhere = field(default_factory=ClusterWhere)
    to: str | None = None
    pause_wait: float = bouncer.DEFAULT_PAUSE_WAIT_SECONDS
    disconnect_blockers: bool = False
    timeout: float = cluster.SWITCHOVER_TIMEOUT_SECONDS


def switchover_runbook(order: SwitchoverOrder) -> Runbook:
    def prepare(run):
        return cluster.prepare_switchover(
            order.where.cluster(),
            run,
            to=order.to,
            pause_wait=order.pause_wait,
            disconnect_blockers=order.disconnect_blockers,
            timeout=order.timeout,
        )

    return Runbook(
        "switchover",
        prepare,
        lambda run, plan: cluster.execute_switchover(plan, run),
        question="Switch over now? Writes wait while the primary moves",
    )


def failover_runbook(where: ClusterWhere, to: str, timeout: float) -> Runbook:
    def prepare(run):
        return cluster.prepare_failover(where.cluster(), run, to=to, timeout=timeout)

    return Runbook(
        "failover",
        prepare,
        lambda run, plan: cluster.execute_failover(plan, run),
        question="Fail over now? Commits the candidate did not receive are lost",
    )


@dataclass
class ClusterRestoreOrder:
    kind: str  # time | lsn | name | latest
    value: str | None
    where: ClusterWhere = field(default_factory=ClusterWhere)
    on: str | None = None
    check_sql: tuple[str, ...] = ()
    target_timeline: str | None = None
    recovery_timeout: float = 3600
    pause_wait: float = bouncer.DEFAULT_PAUSE_WAIT_SECONDS
    disconnect_blockers: bool = False
    timeout: float = 600.0  # for the cluster to lead and stream again after the restore
    rerun_command: str = ""


def cluster_restore_runbook(order: ClusterRestoreOrder) -> Runbook:
    def prepare(run):
        found = order.where.cluster()
        req = pitr.Request(
            kind=order.kind,
            value=None if order.kind == "latest" else order.value,
            checks=checks.named_queries(order.check_sql),
            target_timeline=order.target_timeline,
            pause_wait=order.pause_wait,
            disconnect_blockers=order.disconnect_blockers,
            recovery_timeout=order.recovery_timeout,
            rerun_command=order.rerun_command,
        )
        plan = cluster_restore.prepare(found, run, req, on=order.on, timeout=order.timeout)
        node = plan.node.name
        req.resume_command = f"sparkops pgbouncer resume --host {node} " + found.command_args
        return plan

    def act(run, plan):
        if run.evidence:
            run.evidence.write_json("pgbackrest-info.json", plan.restore.info.raw)
        try:
            cluster_restore.execute(plan, run)
        finally:
            if run.evidence:
                run.evidence.write_json("lsn.json", {k: run.facts.get(k) for k in LSN_FACTS})

    return Runbook(
        "cluster-restore",
        prepare,
        act,
        question="Restore the whole cluster now? This replaces the database's contents",
    )
