"""The whole platform, by host group: `pyinfra -y inventories/<env>.py deploys/site.py`.

The tiers run in order across hosts: the database (db) is ready before the app (app)
migrates it, and both before monitoring scrapes them. pyinfra alone would interleave hosts
whose operations differ; the barriers (deploys.common.barrier) keep the tiers apart.
"""

from pyinfra import host

from deploys.app import app
from deploys.common import barrier, common
from deploys.monitoring import exporters, monitoring
from deploys.pgbackrest import pgbackrest
from deploys.pgbouncer import pgbouncer
from deploys.postgresql import postgresql

common()
barrier(name="Wait for every host's base packages", what="base packages are in")

if "db" in host.groups:
    postgresql()
    pgbackrest()
    pgbouncer()
    exporters()
barrier(name="Wait for the database tier", what="PostgreSQL, pgBackRest, pgBouncer are up")

if "app" in host.groups:
    app()
barrier(name="Wait for the app tier", what="the app is up")

if "monitor" in host.groups:
    monitoring()
