"""The local lab's hosts, read from the state `sparkops lab up` writes.

    sparkops lab up
    pyinfra inventories/lab.py deploys/site.py

Hosts are named as in the lab (db, app, monitor) and reached over the lab bridge with the
lab's key; host keys are checked against the lab's own known_hosts file.
"""

import json

from lab import config as _lab_config

_HOSTS_FILE = _lab_config.hosts_file()  # <repo>/.lab/hosts.json unless SPARKOPS_LAB_DIR

if not _HOSTS_FILE.exists():
    raise SystemExit(f"no lab is up: run `sparkops lab up` (looked for {_HOSTS_FILE})")

_HOSTS = json.loads(_HOSTS_FILE.read_text())


def _entry(h):
    return (
        h["name"],
        {
            "ssh_hostname": h["ip"],
            "ssh_user": h["ssh_user"],
            "ssh_key": h["ssh_key"],
            "ssh_known_hosts_file": h["known_hosts"],
            "ssh_strict_host_key_checking": "yes",
        },
    )


def _group(name):
    return [_entry(h) for h in _HOSTS if name in h["groups"]]


# Every lab host, also those started with other names (`sparkops lab up --hosts x,y`).
all = [_entry(h) for h in _HOSTS]  # pyinfra's name for the group of every host
db = _group("db")
app = _group("app")
monitor = _group("monitor")
lb = _group("lb")  # `sparkops lab up --hosts db,app,app2,lb`: HAProxy in front of the app
