"""The database, its roles and their privileges, as idempotent SQL.

Used by the PostgreSQL deploy (on real hosts and lab hosts) and by the test fixtures, so
tests run against the same least-privilege layout as production:

- the migrations role owns the database and every table (DDL only through migrations);
- the app role reads and writes rows, nothing else;
- the pgBouncer auth role may only call the lookup function pgBouncer's auth_query uses;
- the monitoring role has pg_monitor, for postgres_exporter;
- the operator role (NOLOGIN) alone writes the kill switch; the schema owner is a member, so
  `sparkops app halt|resume` with the owner's connection act as it (`SET ROLE`), and a
  person's own login role can be granted it (`GRANT spark_operator TO alice`);
- the app role's sessions start with bounded statements and idle transactions
  (`role_settings`), whatever connects as it (the app, the outbox dispatcher, the jobs).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from sparkops import defaults


@dataclass(frozen=True)
class RolePasswords:
    app: str
    migrations: str
    pgbouncer_auth: str
    monitoring: str


def _role(name: str, password: str, extra: str = "") -> list[sql.Composable]:
    """CREATE if missing, then set the password.

    Callers that must not report a change on a second run (the deploy) first compare the
    stored verifier with `sparkops.scram.verifier_matches` and skip the ALTER.
    """
    create = sql.SQL(
        "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {lit}) THEN "
        "CREATE ROLE {ident} LOGIN {extra}; END IF; END$$"
    ).format(lit=sql.Literal(name), ident=sql.Identifier(name), extra=sql.SQL(extra))
    password_stmt = sql.SQL("ALTER ROLE {ident} PASSWORD {pw}").format(
        ident=sql.Identifier(name), pw=sql.Literal(password)
    )
    return [create, password_stmt]


def role_statements(passwords: RolePasswords) -> list[sql.Composable]:
    statements: list[sql.Composable] = []
    statements += _role(defaults.ROLE_MIGRATIONS, passwords.migrations)
    statements += _role(defaults.ROLE_APP, passwords.app)
    statements += _role(defaults.ROLE_PGBOUNCER_AUTH, passwords.pgbouncer_auth)
    statements += _role(defaults.ROLE_MONITORING, passwords.monitoring)
    statements.append(
        sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(defaults.ROLE_MONITORING))
    )
    return statements


def role_settings() -> dict[str, dict[str, str]]:
    """Per role, the settings each of its new sessions starts with (ALTER ROLE ... SET).

    Values are spelled as pg_db_role_setting stores them, so a deploy can compare the two.
    Only the app role is bounded: the migrations role builds indexes CONCURRENTLY and sets
    its own lock_timeout (app.migrate); the others run no transactions of the app's.
    """
    return {
        defaults.ROLE_APP: {
            "statement_timeout": f"{defaults.APP_STATEMENT_TIMEOUT_SECONDS}s",
            "idle_in_transaction_session_timeout": (
                f"{defaults.APP_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS}s"
            ),
        }
    }


def role_setting_statements(
    current: dict[str, dict[str, str]] | None = None,
) -> list[sql.Composable]:
    """ALTER ROLE ... SET for each wanted setting that `current` (role -> {name: value}, as
    read from pg_db_role_setting for all databases) lacks or holds with another value; every
    one of them when `current` is None. New sessions get the new value; pgBouncer's open
    server connections keep theirs until they are replaced (server_lifetime)."""
    statements: list[sql.Composable] = []
    for role, wanted in role_settings().items():
        have = (current or {}).get(role, {})
        for name, value in wanted.items():
            if current is not None and have.get(name) == value:
                continue
            statements.append(
                sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    sql.Identifier(role), sql.Identifier(name), sql.Literal(value)
                )
            )
    return statements


def database_exists_sql(dbname: str = defaults.DATABASE_NAME) -> sql.Composable:
    return sql.SQL("SELECT 1 FROM pg_database WHERE datname = {}").format(sql.Literal(dbname))


def create_database_sql(dbname: str = defaults.DATABASE_NAME) -> sql.Composable:
    return sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0").format(
        sql.Identifier(dbname), sql.Identifier(defaults.ROLE_MIGRATIONS)
    )


def privilege_statements(dbname: str = defaults.DATABASE_NAME) -> list[sql.Composable]:
    """Run inside `dbname` as a superuser."""
    owner = sql.Identifier(defaults.ROLE_MIGRATIONS)
    app = sql.Identifier(defaults.ROLE_APP)
    auth = sql.Identifier(defaults.ROLE_PGBOUNCER_AUTH)
    operator = sql.Identifier(defaults.ROLE_OPERATOR)
    return [
        sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname)),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}, {}, {}").format(
            sql.Identifier(dbname), app, auth, sql.Identifier(defaults.ROLE_MONITORING)
        ),
        sql.SQL("ALTER SCHEMA public OWNER TO {}").format(owner),
        sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(app),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public "
            "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}"
        ).format(owner, app),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public "
            "GRANT USAGE, SELECT ON SEQUENCES TO {}"
        ).format(owner, app),
        # The kill switch's writer (its table privileges come with migration 0013).
        sql.SQL(
            "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {lit}) THEN "
            "CREATE ROLE {ident} NOLOGIN; END IF; END$$"
        ).format(lit=sql.Literal(defaults.ROLE_OPERATOR), ident=operator),
        sql.SQL("GRANT {} TO {}").format(operator, owner),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(operator),
        sql.SQL("CREATE EXTENSION IF NOT EXISTS amcheck"),
        # pgBouncer's auth_query: a SECURITY DEFINER lookup owned by the superuser, so the
        # auth role never reads pg_authid itself.
        sql.SQL("CREATE SCHEMA IF NOT EXISTS pgbouncer AUTHORIZATION {}").format(auth),
        sql.SQL(
            "CREATE OR REPLACE FUNCTION pgbouncer.user_lookup(in i_username text, "
            "out uname text, out phash text) RETURNS record AS $$ "
            "SELECT usename::text, passwd::text FROM pg_catalog.pg_shadow "
            "WHERE usename = i_username $$ LANGUAGE sql SECURITY DEFINER "
            "SET search_path = pg_catalog"
        ),
        sql.SQL("REVOKE ALL ON FUNCTION pgbouncer.user_lookup(text) FROM PUBLIC"),
        sql.SQL("GRANT EXECUTE ON FUNCTION pgbouncer.user_lookup(text) TO {}").format(auth),
    ]
