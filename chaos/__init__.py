"""Chaos experiments: a small userspace TCP fault proxy that speaks a subset of Toxiproxy's
HTTP API and toxic names, its client, and the scenarios' bookkeeping.

There is no Toxiproxy server and no netem on these machines; the proxy fills the gap so the
experiments (tests/chaos) run unchanged against a real Toxiproxy where one exists.
"""
