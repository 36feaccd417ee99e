"""Production-only parameters (every host of inventories/production.py is in this group).

Backups go to S3 (the bucket is prepared by the deploy: versioning, encryption, lifecycle);
the keys come from SPARKOPS_SECRET_S3_ACCESS_KEY / SPARKOPS_SECRET_S3_SECRET_KEY.
"""

pgbackrest_repo_type = "s3"
pgbackrest_repo_path = "/spark"
pgbackrest_s3 = {
    "bucket": "spark-prod-pgbackrest",
    "endpoint": "s3.eu-central-1.amazonaws.com",
    "region": "eu-central-1",
    "wal_noncurrent_days": 14,
}
pgbackrest_retention_full = 4

app_outbox_publisher = "redis"
app_outbox_settings = {"SPARK_OUTBOX_REDIS_URL": "redis://10.10.0.40:6379/0"}

monitoring_alertmanager_receivers = [
    {"name": "ops-pager", "url": "https://alerts.spark.internal/hooks/pager"},
]
monitoring_critical_receiver = "ops-pager"
