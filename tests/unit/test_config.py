"""app.config: the request budget is an operator's setting (SPARK_REQUEST_TIMEOUT_SECONDS),
checked like the others: a clear error for a value that is not one, the default otherwise."""

from __future__ import annotations

import pytest

from app.config import ConfigError, Settings
from sparkops import defaults, envvars

BASE = {envvars.DATABASE_URL: "postgresql://spark_app:x@127.0.0.1:6432/spark"}


def test_the_request_budget_defaults_and_can_be_set():
    assert Settings.from_env(BASE).request_timeout_s == defaults.APP_REQUEST_TIMEOUT_SECONDS
    env = {**BASE, envvars.REQUEST_TIMEOUT_SECONDS: "4.5"}
    assert Settings.from_env(env).request_timeout_s == 4.5


@pytest.mark.parametrize("raw", ["soon", "0", "0.1", "121", "-3"])
def test_a_bad_request_budget_is_refused_by_name(raw):
    with pytest.raises(ConfigError, match=envvars.REQUEST_TIMEOUT_SECONDS):
        Settings.from_env({**BASE, envvars.REQUEST_TIMEOUT_SECONDS: raw})
