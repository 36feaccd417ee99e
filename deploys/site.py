"""The whole platform, by host group: `pyinfra -y inventories/<env>.py deploys/site.py`.

Order matters across hosts: pyinfra runs each operation on every host before the next, so
the database (db) is ready before the app (app) migrates it, and both before monitoring.
"""

from pyinfra import host

from deploys.app import app
from deploys.common import common
from deploys.monitoring import exporters, monitoring
from deploys.pgbackrest import pgbackrest
from deploys.pgbouncer import pgbouncer
from deploys.postgresql import postgresql

common()

if "db" in host.groups:
    postgresql()
    pgbackrest()
    pgbouncer()
    exporters()

if "app" in host.groups:
    app()

if "monitor" in host.groups:
    monitoring()
