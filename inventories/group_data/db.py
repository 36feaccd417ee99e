"""Parameters for the db hosts (prefixes postgresql_, pgbackrest_, pgbouncer_): only what
differs from the DEFAULTS of deploys/postgresql.py, deploys/pgbackrest.py and
deploys/pgbouncer.py, where each parameter is described. None today.
"""
