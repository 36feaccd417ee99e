"""SIGTERM ends a pytest session the way Ctrl-C does: with every fixture's teardown.

CI cancelling a run (or anyone ending `make test`) sends SIGTERM; by default it kills pytest
where it stands, and the servers its fixtures started outlive it: PostgreSQL and pgBouncer
daemonize out of the process group, the lab's namespaces and hosts stay up. Raised as
KeyboardInterrupt, pytest stops the session and tears the fixtures down. tests/conftest.py
installs it; `-p testkit.pytest_sigterm` does for any other session.
"""

from __future__ import annotations

import signal
import threading


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}: ending the session with its teardown")


def install() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def pytest_configure(config) -> None:
    install()
