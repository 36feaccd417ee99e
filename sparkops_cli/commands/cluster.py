"""`sparkops cluster status|switchover|failover`: a Patroni cluster's primary (docs/ha.md).

The cluster is the db group of a cluster inventory (one with an `etcd` group), reached over
SSH like every runbook's hosts; Patroni is asked through patronictl on those hosts.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from runbooks import bouncer, cluster, flows
from runbooks.checklist import Refused
from sparkops_cli.conduct import (
    finish,
    invocation,
    restore_target,
    restore_target_options,
    runbook_options,
)


def cluster_options(func):
    func = click.option(
        "--target-file",
        type=click.Path(path_type=Path),
        help="A JSON description of a local cluster instead of an inventory (tests).",
    )(func)
    return click.option(
        "--inventory",
        type=click.Path(path_type=Path),
        default=None,
        help="The pyinfra inventory of the cluster (its db and etcd groups) [inventories/lab.py].",
    )(func)


@click.group("cluster")
def command() -> None:
    """A Patroni cluster: who is primary, and moving the primary."""


@command.command("status")
@cluster_options
@click.option("--json", "json_output", is_flag=True, help="Print the members as JSON.")
def status(inventory, target_file, json_output) -> None:
    """Print the members (role, state, timeline, lag). Exit 0 with a running leader, 1
    without one."""
    try:
        found = flows.ClusterWhere(inventory, target_file).cluster()
        members = found.members()
    except Refused as exc:
        raise click.ClickException(f"{exc} ({exc.hint})") from None
    leader = found.leader(members)
    if json_output:
        click.echo(json.dumps(
            {"leader": leader.name if leader else None,
             "members": [m.__dict__ for m in members]}, indent=2))  # fmt: skip
    else:
        click.echo("\n".join(cluster.status_lines(found, members)))
    raise SystemExit(0 if leader else 1)


@command.command("switchover")
@cluster_options
@click.option(
    "--to",
    metavar="NAME",
    default=None,
    help="The replica to promote (default: the synchronous standby, else the replica least "
    "behind).",
)
@click.option(
    "--pause-wait",
    type=float,
    default=bouncer.DEFAULT_PAUSE_WAIT_SECONDS,
    show_default=True,
    help="Seconds PAUSE may wait for transactions in flight on the old primary's pgBouncer.",
)
@click.option(
    "--disconnect-blockers",
    is_flag=True,
    help="When PAUSE times out, end the transactions holding it and pause again.",
)
@click.option(
    "--timeout",
    type=float,
    default=cluster.SWITCHOVER_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds for Patroni to switch over and the old primary to replicate again.",
)
@runbook_options
def switchover(inventory, target_file, to, pause_wait, disconnect_blockers, timeout, options):
    """Planned switchover: pause the old primary's pgBouncer, let Patroni move the primary to
    the candidate, wait until the candidate leads and the old primary replicates, resume.
    Refuses before any change when the cluster has no leader, the candidate is unknown, not
    a running replica, behind, or (synchronous mode) not the synchronous standby.
    Exit codes: 0 done, 1 failed, 2 refused, 3 not confirmed, 4 interrupted."""
    order = flows.SwitchoverOrder(
        where=flows.ClusterWhere(inventory, target_file),
        to=to,
        pause_wait=pause_wait,
        disconnect_blockers=disconnect_blockers,
        timeout=timeout,
    )
    finish(flows.switchover_runbook(order), options)


@command.command("failover")
@cluster_options
@click.option("--to", metavar="NAME", required=True, help="The member to promote.")
@click.option(
    "--timeout",
    type=float,
    default=cluster.SWITCHOVER_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds for the candidate to lead.",
)
@runbook_options
def failover(inventory, target_file, to, timeout, options):
    """Manual failover, for a cluster with no running leader that Patroni does not heal by
    itself: promote NAME (commits it did not receive are lost; the plan shows its lag).
    Refused while a leader runs: use `switchover`."""
    finish(flows.failover_runbook(flows.ClusterWhere(inventory, target_file), to, timeout), options)


@command.command("restore")
@cluster_options
@restore_target_options
@click.option(
    "--on",
    metavar="NAME",
    default=None,
    help="The node to restore and make the cluster from (default: the primary; needed when "
    "the cluster has no leader).",
)
@click.option(
    "--timeout",
    type=float,
    default=600,
    show_default=True,
    help="Seconds for the restored node to lead and the replicas to stream again.",
)
@runbook_options
def restore(
    inventory,
    target_file,
    at_time,
    lsn,
    restore_point,
    latest,
    on,
    check_sql,
    target_timeline,
    recovery_timeout,
    pause_wait,
    disconnect_blockers,
    timeout,
    options,
) -> None:
    """Point-in-time restore of the whole cluster: stop Patroni on the replicas, restore the
    primary in place (pgBouncer paused, live WAL archived, pgbackrest restore, recovery,
    verification), clear its state from etcd, start Patroni on it (it leads with the restored
    data), then move each replica's data aside (kept) and let it clone the new primary.
    Exit codes: 0 done, 1 failed, 2 refused, 3 not confirmed, 4 interrupted."""
    kind, value = restore_target(at_time, lsn, restore_point, latest)
    order = flows.ClusterRestoreOrder(
        kind=kind,
        value=value,
        where=flows.ClusterWhere(inventory, target_file),
        on=on,
        check_sql=tuple(check_sql),
        target_timeline=target_timeline,
        recovery_timeout=recovery_timeout,
        pause_wait=pause_wait,
        disconnect_blockers=disconnect_blockers,
        timeout=timeout,
        rerun_command=invocation(),
    )
    finish(flows.cluster_restore_runbook(order), options)
