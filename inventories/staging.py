"""Staging: an example inventory (hosts and groups only; parameters live in group_data/).

    pyinfra -y inventories/staging.py deploys/site.py

Every host here is also in group "staging": its secrets file is
~/.config/sparkops/staging/secrets.json (generated on the first run, mode 0600). Hosts are
reached over SSH as a user with sudo (`--sudo`), or as root. `private_address` is the
address the other hosts use (PostgreSQL and pgBouncer listen on it; pg_hba.conf admits it);
without it the SSH hostname is used.
"""

db = [
    ("db-1.staging.spark.internal", {"private_address": "10.20.0.10"}),
]

app = [
    ("app-1.staging.spark.internal", {"private_address": "10.20.0.21"}),
]

monitor = [
    ("mon-1.staging.spark.internal", {"private_address": "10.20.0.30"}),
]
