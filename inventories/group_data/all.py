"""Parameters for every host, whatever the inventory (lab, staging, production).

Precedence (pyinfra): command line > host data > group data > this file > the defaults each
deploy declares (`DEFAULTS` in deploys/<component>.py). Among groups the last one wins: the
environment's group (lab.py, staging.py, production.py: named after the inventory file, so
it comes after db/app/monitor) overrides the role groups (db.py, app.py, monitor.py).
"""

# Packages every host gets; each component installs its own on top.
common_packages = ["ca-certificates", "curl", "python3", "python3-venv"]

# An apt proxy for hosts without direct mirror access, e.g. "http://10.0.0.1:3142".
# The lab's hosts already have theirs (set up by `sparkops lab up`).
common_apt_proxy = None

# apt-get update only when the package lists are older than this (seconds). A redeploy
# inside this window changes nothing.
common_apt_cache_seconds = 6 * 3600
