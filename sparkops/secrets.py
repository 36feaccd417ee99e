"""Deploy-time secrets: generated on the machine that runs pyinfra, kept outside the repository.

Each environment (inventory) has one file, `~/.config/sparkops/<environment>/secrets.json`
(mode 0600; `SPARKOPS_SECRETS_DIR` moves the parent directory). A missing value is generated
once and written back, so every later run reads the same passwords and changes nothing. An
environment variable `SPARKOPS_SECRET_<NAME>` (e.g. `SPARKOPS_SECRET_S3_SECRET_KEY`) wins
over the file, for production keys that come from a vault. Values never reach pyinfra's
command lines: they go into files (rendered templates) or hidden values.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sparkops.scram import make_verifier

if TYPE_CHECKING:
    from sparkops import dbroles

NAMES = (
    "postgresql_app",
    "postgresql_migrations",
    "postgresql_pgbouncer_auth",
    "postgresql_monitoring",
    "pgbouncer_admin",
    "pgbouncer_stats",
    "s3_access_key",
    "s3_secret_key",
    # pgBackRest's repository passphrase (repo1-cipher-pass): only in pgbackrest.conf on the
    # db hosts (0640 postgres). Lose it and the repository cannot be read: keep a copy of
    # this file somewhere safe, apart from the backups.
    "pgbackrest_cipher_pass",
    # Basic auth in front of Prometheus and Alertmanager (sparkops/webaccess.py).
    "monitoring_web",
    # The Patroni cluster's own roles and its REST API (deploys/hacluster.py).
    "patroni_superuser",
    "patroni_replication",
    "patroni_rewind",
    "patroni_restapi",
)


# The environments the secrets files are named after: an inventory file's name (pyinfra puts
# every host of inventories/<name>.py in group <name>) when it is one of these.
ENVIRONMENTS = ("lab", "staging", "production")
DEFAULT_ENVIRONMENT = "default"
# Host data that names the environment outright (for an inventory called something else).
ENVIRONMENT_KEY = "sparkops_environment"


def environment_name(groups: Iterable[str], explicit: str | None = None) -> str:
    """Which environment's secrets a run reads: the one rule the deploys (a pyinfra host's
    groups and data) and the runbooks (their inventory file's name and hosts' data) share.
    `explicit` (host data `sparkops_environment`) wins; else the first of ENVIRONMENTS among
    the groups; else "default"."""
    if explicit:
        return str(explicit)
    present = set(groups)
    for name in ENVIRONMENTS:
        if name in present:
            return name
    return DEFAULT_ENVIRONMENT


class SecretsError(RuntimeError):
    """The secrets file is unusable; the message says which file and what to do."""


def secrets_dir() -> Path:
    base = os.environ.get("SPARKOPS_SECRETS_DIR")
    return Path(base) if base else Path.home() / ".config" / "sparkops"


def secrets_path(environment: str) -> Path:
    return secrets_dir() / environment / "secrets.json"


def _read(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    if path.stat().st_mode & 0o077:
        raise SecretsError(f"{path} is readable by other users: run `chmod 600 {path}`")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise SecretsError(f"{path} is not valid JSON ({exc}): fix or remove it") from exc
    if not isinstance(data, dict):
        raise SecretsError(f"{path} must hold a JSON object of name -> secret")
    return {str(k): str(v) for k, v in data.items()}


def _write(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Secrets:
    values: dict[str, str]

    def __getitem__(self, name: str) -> str:
        return self.values[name]

    def role_passwords(self) -> dbroles.RolePasswords:
        from sparkops import dbroles  # psycopg with it: not for every command that reads secrets

        return dbroles.RolePasswords(
            app=self["postgresql_app"],
            migrations=self["postgresql_migrations"],
            pgbouncer_auth=self["postgresql_pgbouncer_auth"],
            monitoring=self["postgresql_monitoring"],
        )

    def __repr__(self) -> str:  # never print the values
        return f"Secrets({sorted(self.values)})"


def load(environment: str) -> Secrets:
    """Read the environment's secrets, generating (and saving) any that are missing."""
    path = secrets_path(environment)
    stored = _read(path)
    missing = [name for name in NAMES if name not in stored]
    if missing:
        for name in missing:
            stored[name] = secrets.token_urlsafe(24)
        _write(path, stored)
    values = dict(stored)
    for name in NAMES:
        override = os.environ.get(f"SPARKOPS_SECRET_{name.upper()}")
        if override:
            values[name] = override
    return Secrets(values)


def issued(environment: str, names: Iterable[str]) -> dict[str, str]:
    """Secrets a service issued (access keys an IAM API made): never generated here. Those of
    `names` that are set, `SPARKOPS_SECRET_<NAME>` over the file."""
    stored = _read(secrets_path(environment))
    found = {}
    for name in names:
        value = os.environ.get(f"SPARKOPS_SECRET_{name.upper()}") or stored.get(name)
        if value:
            found[name] = value
    return found


def remember(environment: str, values: dict[str, str]) -> None:
    """Keep issued secrets in the environment's file (mode 0600) beside the generated ones."""
    path = secrets_path(environment)
    stored = _read(path)
    stored.update(values)
    _write(path, stored)


def provided(environment: str, name: str) -> str:
    """A secret that comes from outside (a Slack webhook URL, a PagerDuty routing key, an SMTP
    password): never generated, since a made-up value would only fail later and quietly.

    `SPARKOPS_SECRET_<NAME>` wins over the environment's secrets file; neither: an error
    saying where to put it.
    """
    override = os.environ.get(f"SPARKOPS_SECRET_{name.upper()}")
    if override:
        return override
    path = secrets_path(environment)
    value = _read(path).get(name)
    if not value:
        raise SecretsError(
            f"secret {name!r} for environment {environment!r} is not set: add it to {path} "
            f"(mode 600) or export SPARKOPS_SECRET_{name.upper()}"
        )
    return value


def stable_verifier(user: str, password: str) -> str:
    """A SCRAM verifier whose salt derives from the secret, so re-rendering is byte-identical.

    A random salt would rewrite pgBouncer's auth file (and reload it) on every run.
    """
    salt = hashlib.sha256(f"sparkops:{user}:{password}".encode()).digest()[:16]
    return make_verifier(password, salt=salt)
