"""The whole platform, by host group: `pyinfra -y inventories/<env>.py deploys/site.py`.

The tiers run in order across hosts: the database (db) is ready before the app (app)
migrates it and switches releases (the load balancers, group lb, when the inventory has
any, are up before that switch, which drains each app host through them), and both before
monitoring is configured to scrape them.
pyinfra alone would interleave hosts whose operations differ; the barriers
(deploys.common.barrier) keep the tiers apart. What needs no other tier (the app's release
venv, the monitoring packages) runs alongside the database tier.
"""

from pyinfra import host, inventory

from deploys import support
from deploys.app import app_release, app_switch
from deploys.common import barrier, common
from deploys.dbroute import dbroute
from deploys.drill import restore_drill
from deploys.etcd import etcd
from deploys.firewall import firewall
from deploys.haproxy import haproxy
from deploys.monitoring import exporters, monitoring, monitoring_packages
from deploys.patroni import patroni
from deploys.pgbackrest import pgbackrest
from deploys.pgbouncer import pgbouncer
from deploys.postgresql import postgresql
from deploys.tls import ca_certificate

# An inventory with an etcd group makes the db hosts a Patroni cluster (docs/ha.md).
CLUSTER = support.is_cluster(inventory)

common()
firewall()
ca_certificate()
barrier(name="Wait for every host's base packages", what="base packages are in")

if CLUSTER:
    if "etcd" in host.groups:
        etcd()
    barrier(name="Wait for the etcd members", what="etcd has a quorum")

if "db" in host.groups:
    database = patroni() if CLUSTER else postgresql()
# The route's checks ask Patroni's REST API: right after Patroni, so a change of how it
# answers (HTTPS on a cluster deployed before it was) leaves the route blind for seconds,
# not for the rest of the database tier.
if CLUSTER and "app" in host.groups:
    dbroute()
if "db" in host.groups:
    pgbackrest()
    pgbouncer(reconnect_for=database["role_settings"])
    exporters()
    restore_drill()
if "app" in host.groups:
    prepared = app_release()
if "monitor" in host.groups:
    monitoring_packages()
# Before the app's switch: the switch drains each app host through it (deploys/app.py).
if "lb" in host.groups:
    haproxy()
barrier(name="Wait for the database tier", what="PostgreSQL, pgBackRest, pgBouncer are up")

if "app" in host.groups:
    app_switch(prepared)
barrier(name="Wait for the app tier", what="the app is up")

if "monitor" in host.groups:
    monitoring()
