"""Parameters for the monitor host (prefix monitoring_): Prometheus and Alertmanager."""

monitoring_scrape_interval = "15s"
monitoring_retention = "15d"

# Alertmanager receivers (webhooks), one dict each: {"name": ..., "url": ...}. Alerts go to
# the first; severity=critical ones to monitoring_critical_receiver when set. None: alerts
# are visible in Alertmanager but sent nowhere.
monitoring_alertmanager_receivers = []
monitoring_critical_receiver = None
