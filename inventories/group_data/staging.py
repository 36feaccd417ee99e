"""Staging-only parameters (every host of inventories/staging.py is in this group)."""

# The firewall (deploys/firewall.py): the bastion that runs deploys and runbooks and from which
# operators reach Prometheus and Alertmanager.
firewall_control_addresses = ["10.20.0.5"]
