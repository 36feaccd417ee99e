"""Facts the component deploys read to decide whether anything needs doing.

Each reads state with one command and parses it in `process`, which is pure and therefore
unit-tested on captured output (tests/deploys/test_facts.py).
"""

from __future__ import annotations

import json

from pyinfra.api import FactBase

from sparkops import defaults, envvars

# Tags that start each line of the PostgreSQL state query, so one psql call answers all.
_ROLE, _MEMBER, _DB, _COMMENT, _SETTING = "role", "member", "db", "comment", "setting"


def _as_postgres(command: str) -> str:
    # Peer authentication over the local socket: no password on any command line.
    return f"runuser -u postgres -- {command}"


class PostgresState(FactBase):
    """Roles' stored verifiers and settings, pg_monitor membership, the database and its
    setup comment.

    .. code:: python

        {"roles": {"spark_app": "SCRAM-SHA-256$4096:..."},  # "" when no password is set
         # ALTER ROLE ... SET values for every database (pg_db_role_setting), as stored
         "role_settings": {"spark_app": {"statement_timeout": "15s"}},
         "pg_monitor_members": ["spark_monitor"],
         "database_exists": True,
         "database_comment": "sparkops-privileges:..."}
    """

    default = dict

    def requires_command(self, *args, **kwargs) -> str:
        return "psql"

    def command(self, roles: list[str], dbname: str = defaults.DATABASE_NAME) -> str:
        return _as_postgres(f'psql -XAtq -d postgres -c "{self.query(roles, dbname)}"')

    @staticmethod
    def query(roles: list[str], dbname: str = defaults.DATABASE_NAME) -> str:
        """The one query (tests run it against a real PostgreSQL and parse its rows)."""
        names = ", ".join(f"'{r}'" for r in roles)
        return (
            f"SELECT '{_ROLE}|' || rolname || '|' || coalesce(rolpassword, '') FROM pg_authid "
            f"WHERE rolname IN ({names}) "
            f"UNION ALL SELECT '{_SETTING}|' || r.rolname || '|' || c FROM pg_db_role_setting s "
            "JOIN pg_roles r ON r.oid = s.setrole CROSS JOIN unnest(s.setconfig) c "
            f"WHERE s.setdatabase = 0 AND r.rolname IN ({names}) "
            f"UNION ALL SELECT '{_MEMBER}|' || m.rolname FROM pg_auth_members a "
            "JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member "
            "WHERE r.rolname = 'pg_monitor' "
            f"UNION ALL SELECT '{_DB}|' || datname FROM pg_database WHERE datname = '{dbname}' "
            f"UNION ALL SELECT '{_COMMENT}|' || coalesce(shobj_description(oid, 'pg_database'), '')"
            f" FROM pg_database WHERE datname = '{dbname}'"
        )

    def process(self, output: list[str]) -> dict:
        state: dict = {
            "roles": {},
            "role_settings": {},
            "pg_monitor_members": [],
            "database_exists": False,
            "database_comment": "",
        }
        for line in output:
            tag, _, rest = line.partition("|")
            if tag == _ROLE:
                name, _, verifier = rest.partition("|")
                state["roles"][name] = verifier
            elif tag == _SETTING:
                name, _, setting = rest.partition("|")
                key, _, value = setting.partition("=")
                state["role_settings"].setdefault(name, {})[key] = value
            elif tag == _MEMBER:
                state["pg_monitor_members"].append(rest)
            elif tag == _DB:
                state["database_exists"] = True
            elif tag == _COMMENT:
                state["database_comment"] = rest
        return state


class PgBackRestInfo(FactBase):
    """`pgbackrest info` for one stanza as a dict; {} when pgBackRest cannot answer.

    .. code:: python

        {"status": {"code": 0, "message": "ok"}, "backup": [...], "archive": [...]}
    """

    default = dict

    def requires_command(self, *args, **kwargs) -> str:
        return "pgbackrest"

    def command(self, stanza: str) -> str:
        return _as_postgres(f"pgbackrest --stanza={stanza} --output=json info || true")

    def process(self, output: list[str]) -> dict:
        text = "\n".join(output).strip()
        if not text:
            return {}
        try:
            stanzas = json.loads(text)
        except ValueError:
            return {}
        return stanzas[0] if stanzas else {}


class PgBackRestVersion(FactBase):
    """The pgBackRest this host runs (`pgbackrest version`: "pgBackRest 2.45") or, when it is
    not installed yet, the version apt would install ("2.45-1"); None when neither answers."""

    def command(self) -> str:
        return (
            "pgbackrest version 2>/dev/null || "
            "apt-cache policy pgbackrest 2>/dev/null | sed -n 's/^ *Candidate: *//p' || true"
        )

    def process(self, output: list[str]) -> str | None:
        lines = [line.strip() for line in output if line.strip()]
        return lines[0] if lines and lines[0] != "(none)" else None


# pgBackRest's info status codes that mean the stanza exists: ok, no valid backup yet, a
# backup or expire running. Anything else (1 missing stanza path, 3 missing stanza data, 99
# other, no answer) goes to stanza-create, which creates it or fails saying why.
STANZA_PRESENT_CODES = (0, 2, 6)


def stanza_missing(info: dict) -> bool:
    return info.get("status", {}).get("code") not in STANZA_PRESENT_CODES


def has_full_backup(info: dict) -> bool:
    return any(b.get("type") == "full" for b in info.get("backup", []))


class DirectoryEntries(FactBase):
    """Names in a directory, newest first (by modification time); [] when it does not exist."""

    default = list

    def command(self, path: str) -> str:
        return f"ls -1t {path} 2>/dev/null || true"

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class MigrationState(FactBase):
    """The database's Alembic revision and the release's head, as the release's code sees them.

    Reads the owner's connection string from an env file, so no password is on a command line.

    .. code:: python

        {"current": "0002", "head": "0002"}   # {} when the release or database cannot answer
    """

    default = dict

    def command(self, python: str, env_file: str) -> str:
        url = f"os.environ['{envvars.MIGRATIONS_URL}']"
        code = (
            "import os; from app import migrate; "
            f"print('current=' + str(migrate.current({url}))); "
            "print('head=' + migrate.head())"
        )
        return f'( set -a; . {env_file}; {python} -c "{code}" ) 2>/dev/null || true'

    def process(self, output: list[str]) -> dict:
        found = {}
        for line in output:
            key, sep, value = line.partition("=")
            if sep and key in ("current", "head"):
                found[key] = None if value == "None" else value
        return found


class PostgresInRecovery(FactBase):
    """Whether the local PostgreSQL is a standby: True on a replica, False on a primary (or a
    single host), None when it does not answer. Operations that write (roles, the database,
    the pgBackRest stanza and its first backup) run only where this is False."""

    default = lambda self: None  # noqa: E731  (pyinfra calls it)

    def requires_command(self, *args, **kwargs) -> str:
        return "psql"

    def command(self) -> str:
        return _as_postgres('psql -XAtq -d postgres -c "SELECT pg_is_in_recovery()" || true')

    def process(self, output: list[str]) -> bool | None:
        value = "".join(output).strip()
        return {"t": True, "f": False}.get(value)
