"""The drill refuses a scratch place that would hurt production, on the lab, before it acts:
the exact command that once deleted the db host's data directory, and its variants (a symlink
to the data directory, its parent, a directory inside it, another cluster's directory, a
running server's port). Afterwards the same postmaster runs, the data directory is as it was,
and the app still takes orders."""

from __future__ import annotations

import pytest

from sparkops import defaults
from tests.lab.stack import by_group, on_host, orders, sparkops

pytestmark = [pytest.mark.lab, pytest.mark.slow]

DATA = f"/var/lib/postgresql/{defaults.POSTGRES_VERSION}/main"
# Made on the db host for the variants, and removed after each test.
LINK = "/var/tmp/sparkops-refusal-link"
OTHER = "/var/tmp/sparkops-refusal-other-cluster"
SETUP = (
    f"rm -rf {LINK} {OTHER}; ln -s {DATA} {LINK}; "
    f"install -d -o postgres -g postgres -m 700 {OTHER}; "
    f"echo {defaults.POSTGRES_VERSION} > {OTHER}/PG_VERSION"
)


@pytest.mark.parametrize(
    ("scratch", "extra", "message"),
    [
        (DATA, [], "is the data directory"),  # the typo that destroyed production once
        (f"{DATA}/", [], "is the data directory"),
        (LINK, [], "is the data directory"),
        (f"/var/lib/postgresql/{defaults.POSTGRES_VERSION}", [], "contains the data directory"),
        (f"{DATA}/drill", [], "inside the data directory"),
        (OTHER, [], "data directory"),
        (
            "/var/tmp/sparkops-refusal-new",
            ["--scratch-port", str(defaults.POSTGRES_PORT)],
            "is in use",  # a running server's port
        ),
    ],
    ids=["exact-typo", "trailing-slash", "symlink", "parent", "inside", "other-cluster", "port"],
)
def test_drill_refuses_what_would_hurt_production(deployed, scratch, extra, message):
    db, app = by_group(deployed["hosts"], "db"), by_group(deployed["hosts"], "app")
    on_host(db, SETUP)
    pid = on_host(db, f"head -n 1 {DATA}/postmaster.pid").strip()
    listing = on_host(db, f"ls -A {DATA}")
    try:
        run = sparkops("drill", "--host", db["name"], "--scratch-dir", scratch, *extra, "--yes")
        assert run.exit_code == 2, run.output
        assert "REFUSED" in run.output and message in run.output, run.output
        assert "nothing was changed" in run.output
        assert on_host(db, f"head -n 1 {DATA}/postmaster.pid").strip() == pid
        assert on_host(db, f"ls -A {DATA}") == listing
        assert on_host(db, "ls -A /var/tmp/sparkops-refusal-new 2>/dev/null || true") == ""
        assert orders(app, 1)
    finally:
        on_host(db, f"rm -rf {LINK} {OTHER} /var/tmp/sparkops-refusal-new")
