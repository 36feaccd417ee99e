"""Production-only parameters (every host of inventories/production.py is in this group).

Backups go to S3 (the bucket is prepared by the deploy: versioning, encryption, lifecycle);
the keys come from SPARKOPS_SECRET_S3_ACCESS_KEY / SPARKOPS_SECRET_S3_SECRET_KEY.
"""

from sparkops import envvars

pgbackrest_repo_type = "s3"
pgbackrest_repo_path = "/spark"
pgbackrest_s3 = {
    "bucket": "spark-prod-pgbackrest",
    "endpoint": "s3.eu-central-1.amazonaws.com",
    "region": "eu-central-1",
    "wal_noncurrent_days": 14,
}
pgbackrest_retention_full = 4

app_outbox_settings = {envvars.OUTBOX_REDIS_URL: "redis://10.10.0.40:6379/0"}
# Production's Redis requires a password: SPARKOPS_SECRET_OUTBOX_REDIS_PASSWORD.
app_outbox_redis_password = True

# Who hears about alerts (shapes: deploys/alerting.py). The Slack webhook URL, the PagerDuty
# routing key and the SMTP password are secrets: `alertmanager_chat_slack`,
# `alertmanager_pager_pagerduty`, `alertmanager_mail_email` in the production secrets file or
# SPARKOPS_SECRET_ALERTMANAGER_... variables, never here.
monitoring_alertmanager_receivers = [
    {"name": "chat", "slack": {"channel": "#spark-ops-alerts"}},
    {"name": "pager", "pagerduty": {}},
    {
        "name": "mail",
        "email": {
            "to": "spark-ops@spark-trading.internal",
            "from": "alertmanager@spark-trading.internal",
            "smarthost": "smtp.spark-trading.internal:587",
            "auth_username": "alertmanager",
        },
    },
]
# Escalation by severity. critical: page at once (PagerDuty's escalation policy takes an
# unacknowledged page to the next person) and post to chat; re-sent hourly while it fires,
# which PagerDuty folds into the open incident. warning: chat and an e-mail ticket for
# working hours, repeated twice a day at most. group_wait: 10 s before a page (related alerts
# from one failure arrive together), 30 s for the rest; group_interval 5 m: a new alert in an
# open group is told within 5 minutes.
monitoring_alertmanager_routes = [
    {
        "severity": "critical",
        "receivers": ["pager", "chat"],
        "group_wait": "10s",
        "group_interval": "5m",
        "repeat_interval": "1h",
    },
    {
        "severity": "warning",
        "receivers": ["chat", "mail"],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "12h",
    },
]
# An alert without a known severity still reaches a person.
monitoring_alertmanager_default_receiver = "mail"

# The firewall (deploys/firewall.py): the bastion that runs deploys and runbooks and from which
# operators reach Prometheus and Alertmanager. The app port stays open to any address (the
# load balancer passes clients' addresses through); name the balancers in
# firewall_app_clients when it does not.
firewall_control_addresses = ["10.10.0.5"]
