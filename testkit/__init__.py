"""Throwaway local services for tests and benchmarks: PostgreSQL, pgBouncer, Redis.

Each runs as an ordinary user (PostgreSQL and pgBouncer refuse root), listens on loopback
on a free port, lives in its own temporary directory and is stopped by the process id it
was started with.
"""
