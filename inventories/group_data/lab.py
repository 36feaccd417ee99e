"""Parameters for the local lab only (every host of inventories/lab.py is in group "lab").

The lab has no Redis: the outbox dispatcher prints events (console publisher).
"""

import json as _json
import os as _os
import pathlib as _pathlib

from lab import config as _lab_config

app_outbox_publisher = "console"

# No drill on its own soon after the deploy: the lab's tests restore and drill on the db host
# themselves, and start the drill unit when they test it.
drill_first_run_after = None

# systemd cannot give Prometheus a user namespace inside the lab host's namespaces (Debian's
# unit sets PrivateUsers=true: the unit fails with 217/USER); real hosts keep the hardening.
monitoring_prometheus_unit_overrides = {"PrivateUsers": "false"}

# pgBackRest's repository: the posix default, or the lab's S3 endpoint (moto behind stunnel
# on this machine, testkit/lab_s3.py) when SPARKOPS_LAB_S3 names its data file.
if _os.environ.get("SPARKOPS_LAB_S3"):
    pgbackrest_repo_type = "s3"
    pgbackrest_repo_path = "/spark"
    pgbackrest_s3 = _json.loads(_pathlib.Path(_os.environ["SPARKOPS_LAB_S3"]).read_text())

# The firewall (deploys/firewall.py): this machine, on the lab bridge, is the control machine
# (SSH, Prometheus, Alertmanager) and the app's only client (the tests' orders).
firewall_control_addresses = [_lab_config.BRIDGE_IP]
firewall_app_clients = [_lab_config.BRIDGE_IP]
