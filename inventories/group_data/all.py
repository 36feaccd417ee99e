"""Parameters for every host, whatever the inventory (lab, staging, production).

Group data holds only what differs from the deploys' own defaults (`DEFAULTS` in
deploys/<component>.py, where each parameter is described); tests/deploys/test_group_data.py
fails on a value that merely repeats a default, or on a name no deploy reads.

Precedence (pyinfra): command line > host data > group data > this file > the defaults each
deploy declares. Among groups the last one wins: the environment's group (lab.py,
staging.py, production.py: named after the inventory file, so it comes after db/app/monitor)
overrides the role groups (db.py, app.py, monitor.py).
"""
