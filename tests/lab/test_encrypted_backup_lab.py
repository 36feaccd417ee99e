"""The deployed pgBackRest repository is encrypted (aes-256-cbc, the generated passphrase) and
restores from it work: the repository's files are not plaintext, the passphrase is only in
pgbackrest.conf (0640, postgres) and in no evidence file, the backup schedule has its
incremental timer, and a PITR in place restores an incremental backup plus its WAL (fetched
ahead by the asynchronous archive-get) from the encrypted repository."""

from __future__ import annotations

import json
import shlex

import pytest

from deploys import pgbackrest
from sparkops import defaults, layout, metric_names, secrets
from sparkops.wait import wait_until
from tests.lab.stack import by_group, on_host, orders, present, psql, snapshot, sparkops

pytestmark = [pytest.mark.lab, pytest.mark.slow]

STANZA = defaults.PGBACKREST_STANZA
REPO = pgbackrest.DEFAULTS["pgbackrest_repo_path"]


def _info(db) -> dict:
    out = on_host(db, f"runuser -u postgres -- pgbackrest --stanza={STANZA} --output=json info")
    return json.loads(out)[0]


def test_the_repository_is_encrypted_and_its_files_are_not_plaintext(deployed):
    db = by_group(deployed["hosts"], "db")
    info = _info(db)
    assert info["cipher"] == pgbackrest.CIPHER_TYPE
    stat = on_host(db, f"stat -c '%a %U %G' {layout.PGBACKREST_CONF}").split()
    assert stat == ["640", "postgres", "postgres"]
    conf = on_host(db, f"cat {layout.PGBACKREST_CONF}")
    assert f"repo1-cipher-type={pgbackrest.CIPHER_TYPE}" in conf
    assert f"repo1-cipher-pass={secrets.load('lab')['pgbackrest_cipher_pass']}" in conf
    label = info["backup"][-1]["label"]
    # Plaintext, backup.info is an INI file ("[backrest]") and a manifest names the
    # cluster's files; encrypted, both are OpenSSL's salted format and name nothing.
    for path in (
        f"{REPO}/backup/{STANZA}/backup.info",
        f"{REPO}/backup/{STANZA}/{label}/backup.manifest",
        f"{REPO}/archive/{STANZA}/archive.info",
    ):
        head = on_host(db, f"head -c 8 {shlex.quote(path)}")
        assert head == "Salted__", (path, head)
        found = on_host(db, f"grep -c -a -e backrest -e pg_control {shlex.quote(path)} || true")
        assert found.strip() == "0", path


def test_backups_are_scheduled_full_differential_and_incremental(deployed):
    db = by_group(deployed["hosts"], "db")
    for kind in pgbackrest.BACKUP_KINDS:
        state = on_host(db, f"systemctl is-enabled pgbackrest-backup-{kind}.timer").strip()
        assert state == "enabled", kind
    # The incremental unit itself runs (as the timer would start it) and records an incr.
    on_host(db, "systemctl start pgbackrest-backup@incr.service", timeout=600)
    assert _info(db)["backup"][-1]["type"] == "incr"


def test_past_the_wal_budget_the_path_unit_takes_an_incremental_backup(deployed):
    """The chain as systemd runs it: the timer and the path unit are on, the check runs in
    its sandbox and publishes its figures; asked past the budget (the check by hand with a
    1 MiB budget, after orders have written WAL), the path unit starts the incremental
    backup unit and a new incremental backup appears in the repository."""
    db, app = by_group(deployed["hosts"], "db"), by_group(deployed["hosts"], "app")
    for unit in (layout.PGBACKREST_WAL_BUDGET_TIMER, layout.PGBACKREST_BACKUP_DUE_PATH):
        assert on_host(db, f"systemctl is-active {unit}").strip() == "active", unit
    on_host(db, f"systemctl start {layout.PGBACKREST_WAL_BUDGET_SERVICE}", timeout=120)
    published = on_host(db, f"cat {pgbackrest.METRIC_FILE}")
    assert f'{metric_names.PGBACKREST_WAL_BUDGET}{{stanza="{STANZA}"}}' in published, published
    before = {b["label"] for b in _info(db)["backup"]}
    orders(app, 20)
    asked = on_host(db, f"runuser -u postgres -- {layout.PGBACKREST_WAL_BUDGET_SCRIPT} "
                        "--budget 1MiB --min-interval 0")  # fmt: skip
    assert "asking for an incremental backup" in asked, asked
    new = wait_until(
        lambda: [b for b in _info(db)["backup"] if b["label"] not in before],
        timeout=300,
        what="the incremental backup the path unit starts",
    )
    # (The check the timer runs may have asked too, after an earlier test's restore.)
    assert new and {b["type"] for b in new} == {"incr"}, on_host(
        db, "journalctl -u pgbackrest-backup@incr.service -n 20 --no-pager"
    )


def test_pitr_in_place_from_the_encrypted_repository(deployed, tmp_path):
    db, app = by_group(deployed["hosts"], "db"), by_group(deployed["hosts"], "app")
    on_host(db, "systemctl start pgbackrest-backup@incr.service", timeout=600)
    kept = orders(app, 5)  # after the incremental backup: only in the archived WAL
    before = snapshot(db)
    lsn = psql(db, "SELECT pg_current_wal_insert_lsn()").strip()
    lost = orders(app, 3)
    evidence = tmp_path / "ev"
    run = sparkops("restore", "--host", db["name"], "--lsn", lsn, "--yes", "--json",
                   "--evidence-dir", str(evidence))  # fmt: skip
    assert run.exit_code == 0, run.output
    result = json.loads(run.stdout)
    assert result["facts"]["check_values"] == before
    assert present(db, kept) == set(kept) and present(db, lost) == set()
    assert orders(app, 1)  # pgBouncer resumed
    passphrase = secrets.load("lab")["pgbackrest_cipher_pass"]
    written = [p for p in evidence.rglob("*") if p.is_file()]
    assert written
    for path in written:
        assert passphrase not in path.read_text(errors="replace"), path
