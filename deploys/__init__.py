"""pyinfra deploys of the Spark Trading Platform, one module per component.

Run from the repository root: `pyinfra -y inventories/lab.py deploys/site.py`.
"""
