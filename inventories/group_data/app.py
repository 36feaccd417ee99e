"""Parameters for the app hosts (prefix app_): only what differs from deploys/app.py's
DEFAULTS, where each parameter is described. None today: every app host runs the defaults.
"""
