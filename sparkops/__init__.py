"""Spark Ops: the operations bundle of the Spark Trading Platform."""

__version__ = "0.1.0"
