"""Production: an example inventory (hosts and groups only; parameters live in group_data/,
production-only values in group_data/production.py).

    pyinfra -y inventories/production.py deploys/site.py --sudo

Every host here is also in group "production": its secrets come from
~/.config/sparkops/production/secrets.json or, better, from the environment
(SPARKOPS_SECRET_<NAME>, e.g. SPARKOPS_SECRET_S3_SECRET_KEY) filled from your vault.
Two app hosts behind the load balancer; one db host; one monitor host.
"""

db = [
    ("db-1.prod.spark.internal", {"private_address": "10.10.0.10"}),
]

app = [
    ("app-1.prod.spark.internal", {"private_address": "10.10.0.21"}),
    ("app-2.prod.spark.internal", {"private_address": "10.10.0.22"}),
]

monitor = [
    ("mon-1.prod.spark.internal", {"private_address": "10.10.0.30"}),
]

# The load balancer tier (HAProxy, deploys/haproxy.py), once you have its certificate: the
# chain and key in one PEM file on the machine that runs the deploy (docs/deploys.md).
# lb = [
#     ("lb-1.prod.spark.internal", {"private_address": "10.10.0.40",
#                                   "haproxy_tls_bundle": "/secure/spark/lb-1.pem"}),
# ]
