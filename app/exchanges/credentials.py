"""API secrets from the environment or from a file outside the repository, never logged.

`NAME` holds the value, or `NAME_FILE` the path of a file holding it (the deploy writes such
files with mode 0600 under /etc; systemd credentials work the same way). A file inside the
repository is refused: secrets are never committed, so they are never read from there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from sparkops import layout

REPO_ROOT = Path(__file__).resolve().parents[2]


class Secret:
    """A string that does not show itself in repr(), str(), logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a secret must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def load_secret(name: str, environ: Mapping[str, str] | None = None) -> Secret:
    """The secret `name` from the environment (`name` or `name_FILE`)."""
    env = os.environ if environ is None else environ
    value = env.get(name)
    path_value = env.get(f"{name}_FILE")
    if value and path_value:
        raise ValueError(f"both {name} and {name}_FILE are set: set only one")
    if value:
        return Secret(value)
    if not path_value:
        raise ValueError(
            f"secret {name} is not set: export {name}, or {name}_FILE with the path of a "
            "file outside the repository that holds it"
        )
    path = Path(path_value).resolve()
    if path.is_relative_to(REPO_ROOT):
        raise ValueError(
            f"{name}_FILE points inside the repository ({path}): keep secrets outside it, "
            f"e.g. under {layout.APP_ETC_DIR}/"
        )
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"{name}_FILE={path} cannot be read: {exc.strerror}") from exc
    if not text:
        raise ValueError(f"{name}_FILE={path} is empty")
    return Secret(text)
