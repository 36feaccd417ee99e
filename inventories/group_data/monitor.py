"""Parameters for the monitor host (prefix monitoring_): Prometheus and Alertmanager."""

monitoring_scrape_interval = "15s"
monitoring_retention = "15d"

# Alertmanager receivers (Slack, PagerDuty, e-mail, webhook) and routes by severity; shapes
# and where their secrets come from: deploys/alerting.py. None (the lab): alerts are visible
# in Alertmanager but sent nowhere. Production's are in production.py.
monitoring_alertmanager_receivers = []
monitoring_alertmanager_routes = []
monitoring_alertmanager_default_receiver = "null"
