"""The chaos scenarios of issue 13 against the real app, pgBouncer and PostgreSQL, with the
fault proxy on the database hops (chaos.scenarios has the experiments; here: expectations).

Every scenario: no acknowledged order lost, none written twice, none half written; every
answer within the request budget (never a hung request), sheds answered 503 with
Retry-After; recovered by itself after healing.
"""

from __future__ import annotations

import logging

import pytest

from chaos import scenarios
from chaos.load import Tally
from chaos.report import render

pytestmark = pytest.mark.chaos


def check_common(tally: Tally) -> None:
    print("\n" + render([tally]))
    assert tally.lost == 0, f"{tally.lost} acknowledged orders lost"
    assert tally.duplicates == 0, f"{tally.duplicates} orders written twice"
    assert tally.half_written == [], tally.half_written[:5]
    assert tally.recovered, "no recovery within the deadline after healing"
    assert tally.max_latency_s <= scenarios.LATENCY_BOUND_S, tally.statuses
    assert tally.shed_without_retry_after == 0
    assert tally.errors == 0, tally.statuses
    if tally.outbox_missing is not None:  # the scenario ran the outbox dispatcher too
        assert tally.outbox_survived
        assert tally.outbox_missing == 0


def test_slow_database():
    tally = scenarios.slow_database()
    check_common(tally)
    assert tally.shed > 0  # the over-budget phase was answered 503, not waited out
    assert tally.readyz.max_latency_s <= scenarios.SETTINGS.request_timeout_s


def test_partition(caplog):
    caplog.set_level(logging.WARNING, logger="spark.readiness")
    tally = scenarios.partition()
    check_common(tally)
    assert tally.shed > 0
    assert 503 in tally.readyz.statuses
    # The public is told "not ready" and no more (issue 11); why is in the app's log.
    assert tally.readyz.reasons == {"not ready"}, tally.readyz.reasons
    logged = [r.getMessage() for r in caplog.records if r.name == "spark.readiness"]
    assert any("no answer within" in m for m in logged), logged
    assert tally.readyz.no_retry_after == 0


def test_lossy_link():
    check_common(scenarios.lossy_link())


def test_pool_exhaustion():
    tally = scenarios.pool_exhaustion()
    check_common(tally)
    assert tally.shed > 0  # the app shed instead of queueing past its budget
    worst_wait, threshold = tally.saturation
    assert tally.saturation_fired  # PgBouncerPoolSaturation's expression held on Prometheus
    assert worst_wait > threshold
    assert worst_wait <= scenarios.POOL_EXHAUSTION_WAIT_S + 1.5  # bounded by query_wait_timeout


def test_restarts_under_load():
    check_common(scenarios.restarts())
