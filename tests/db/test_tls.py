"""TLS inside, on the real programs: PostgreSQL with the deploy's hostssl-only pg_hba.conf and
pgBouncer with the deploy's TLS settings (both ways), certificates from the deploy's CA code.

A client without TLS is refused, verify-full refuses a name the certificate does not carry and
a certificate from another CA, and accepts the right one; pgBouncer's own connection to
PostgreSQL is TLS too. Channel binding: PostgreSQL offers it, pgBouncer 1.18 does not.
"""

from __future__ import annotations

import shutil
import signal

import psycopg
import pytest

from sparkops import defaults
from sparkops.wait import wait_until
from testkit.postgres import conninfo
from testkit.stack import DbStack
from testkit.tls import make_tls_files


@pytest.fixture(scope="module")
def tls_stack():
    with DbStack(tls=True) as stack:
        yield stack


def _app(stack: DbStack, port: int, **params) -> str:
    return conninfo(
        "127.0.0.1",
        port,
        defaults.ROLE_APP,
        stack.passwords.app,
        defaults.DATABASE_NAME,
        connect_timeout=5,
        **params,
    )


def _ssl_in_use(info: str) -> tuple[bool, str]:
    with psycopg.connect(info, autocommit=True, prepare_threshold=None) as conn:
        return conn.pgconn.ssl_in_use, conn.info.parameter_status("server_version") or ""


def test_postgresql_refuses_a_connection_without_tls(tls_stack):
    pg = tls_stack.pg
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry.*no encryption"):
        psycopg.connect(_app(tls_stack, pg.port, sslmode="disable"))


def test_postgresql_verify_full_checks_the_name_and_the_ca(tls_stack):
    pg, files = tls_stack.pg, tls_stack.tls_files
    right = {"sslmode": "verify-full", "sslrootcert": str(files.ca)}
    # The address is right, the name checked is not one the certificate carries.
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        psycopg.connect(_app(tls_stack, pg.port, **right).replace(
            "host=127.0.0.1", "host=db.elsewhere hostaddr=127.0.0.1"))  # fmt: skip
    other_ca = make_tls_files()
    try:
        with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
            psycopg.connect(
                _app(tls_stack, pg.port, sslmode="verify-full", sslrootcert=str(other_ca.ca))
            )
    finally:
        shutil.rmtree(other_ca.workdir, ignore_errors=True)
    for host in ("127.0.0.1", "localhost"):
        info = _app(tls_stack, pg.port, **right).replace("host=127.0.0.1", f"host={host}")
        assert _ssl_in_use(info)[0] is True


def test_postgresql_offers_channel_binding(tls_stack):
    info = tls_stack.owner_conninfo() + " channel_binding=require"
    with psycopg.connect(info, connect_timeout=5) as conn:
        row = conn.execute(
            "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()"
        ).fetchone()
    assert row == (True, "TLSv1.3")


def test_pgbouncer_refuses_clients_without_tls(tls_stack):
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        psycopg.connect(_app(tls_stack, tls_stack.bouncer.port, sslmode="disable"))


def test_pgbouncer_verify_full_and_tls_to_postgresql(tls_stack):
    bouncer = tls_stack.bouncer
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        psycopg.connect(tls_stack.app_conninfo().replace(
            "host=127.0.0.1", "host=db.elsewhere hostaddr=127.0.0.1"))  # fmt: skip
    with psycopg.connect(tls_stack.app_conninfo(), autocommit=True, prepare_threshold=None) as c:
        assert c.pgconn.ssl_in_use
        # The server connection pgBouncer opened for this query: TLS, verified (verify-full).
        row = c.execute(
            "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()"
        ).fetchone()
    assert row == (True, "TLSv1.3")
    assert any(r[0] == defaults.DATABASE_NAME for r in bouncer.admin("SHOW POOLS"))


def test_pgbouncer_does_not_offer_channel_binding(tls_stack):
    """pgBouncer 1.18 (Debian 12) advertises SCRAM-SHA-256 only: a client that requires
    channel binding is refused, which is why the app's URL cannot ask for it."""
    info = tls_stack.app_conninfo() + " channel_binding=require"
    with pytest.raises(psycopg.OperationalError, match="channel binding"):
        psycopg.connect(info, connect_timeout=5)


def test_pgbouncer_turns_tls_on_at_a_reload():
    """An environment deployed before TLS inside gets it by a reload (the deploy reloads
    pgBouncer when only pgbouncer.ini changed): after SIGHUP, clients without TLS are refused."""
    with DbStack() as plain:
        bouncer = plain.bouncer
        info = plain.app_conninfo()
        assert _ssl_in_use(info + " sslmode=disable")[0] is False
        files = make_tls_files()
        try:
            bouncer.tls = files
            ini = bouncer.workdir / "pgbouncer.ini"
            ini.write_text(bouncer.render_ini())
            # PostgreSQL is still without TLS: pgBouncer's verify-full would refuse it, so
            # this reload turns on the client side only.
            text = ini.read_text()
            ini.write_text(
                text.replace("server_tls_sslmode = verify-full", "server_tls_sslmode = disable")
            )
            bouncer.proc.send_signal(signal.SIGHUP)

            def refuses_plain() -> bool:
                try:
                    psycopg.connect(info + " sslmode=disable", connect_timeout=3).close()
                except psycopg.OperationalError as exc:
                    return "SSL required" in str(exc)
                return False

            wait_until(refuses_plain, timeout=10, what="pgBouncer to require TLS after a reload")
            verified = f"{info} sslmode=verify-full sslrootcert={files.ca}"
            assert _ssl_in_use(verified)[0] is True
        finally:
            bouncer.tls = None
            shutil.rmtree(files.workdir, ignore_errors=True)
