"""Parameters for the local lab only (every host of inventories/lab.py is in group "lab").

The lab has no Redis: the outbox dispatcher prints events (console publisher).
"""

app_outbox_publisher = "console"

# systemd cannot give Prometheus a user namespace inside the lab host's namespaces (Debian's
# unit sets PrivateUsers=true: the unit fails with 217/USER); real hosts keep the hardening.
monitoring_prometheus_unit_overrides = {"PrivateUsers": "false"}
