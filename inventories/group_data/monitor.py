"""Parameters for the monitor host (prefix monitoring_): only what differs from
deploys/monitoring.py's DEFAULTS, where each parameter is described. None today; production's
receivers and routes are in production.py.
"""
