"""Schemathesis drives the app from its own OpenAPI document (app.openapi), through a real
uvicorn and a real pgBouncer: positive cases (what the document allows) and negative ones
(what it forbids), at least MIN_REQUESTS of them. Every answer passes schemathesis's checks
(no server error, a documented status, content type, headers and body; a negative request
is refused) and ours (tests/api/openapi_check.py), and no refused request writes a row.

tests/api/test_fuzz.py is the hand-written fuzzer for the hostile inputs a schema-driven one
does not reach (deep nesting, huge and non-ASCII numbers, NUL, repeated headers); this one
covers whatever the document says, so a new route or parameter is fuzzed without new code.
"""

from __future__ import annotations

import time
from collections import Counter

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app import openapi
from tests.api.openapi_check import problems
from tests.conftest import AUTH, create_account

EXAMPLES = 1300
MIN_REQUESTS = 1000
TABLES = ("orders", "positions", "idempotency_keys", "outbox_events")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]  # fmt: skip


def row_counts(conn) -> dict[str, int]:
    query = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES)
    return dict(zip(TABLES, conn.execute(query).fetchone(), strict=True))


def allowed_writes(method: str, template: str, r: httpx.Response) -> dict[str, set[int]]:
    """Only a fresh 201 or a fresh risk block writes rows; a refused request writes none."""
    none = {t: {0} for t in TABLES}
    if (method, template) != ("POST", "/orders") or "idempotent-replayed" in r.headers:
        return none
    if r.status_code == 201:
        return {"orders": {1}, "positions": {0, 1}, "idempotency_keys": {1}, "outbox_events": {1}}
    if r.status_code == 422 and r.json().get("error") == "risk_blocked":
        return {**none, "idempotency_keys": {1}}
    return none


def test_schemathesis_against_the_app_through_pgbouncer(app_server, app_conn, record_property):
    for account in ("a", "b", "acct-1"):
        create_account(app_conn, account, "1000000000")
    schema = schemathesis.openapi.from_dict(openapi.document())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == set(openapi.document()["paths"])
    cases = st.one_of(
        *(op.as_strategy(GenerationMode.POSITIVE) for op in operations),
        *(op.as_strategy(GenerationMode.NEGATIVE) for op in operations
          if op.path in ("/orders", "/orders/{order_id}", "/positions", "/csp-report")),
    )  # fmt: skip
    stats: Counter[str] = Counter()
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, print_blob=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=cases)
    def one_request(case) -> None:
        # Nine requests in ten carry the test key, so they get past authentication; the
        # tenth sends whatever was drawn (Hypothesis would draw "no key" far more often).
        headers = dict(AUTH) if stats["requests"] % 10 != 9 else None
        before = row_counts(app_conn)
        response = case.call(base_url=app_server.url, headers=headers, timeout=30)
        after = row_counts(app_conn)
        r = httpx.Response(response.status_code, content=response.content, headers=[
            (name, value) for name, values in response.headers.items() for value in values
        ])  # fmt: skip
        template, method = case.operation.path, case.method.upper()
        mode = case.meta.generation.mode if case.meta else GenerationMode.POSITIVE
        stats["requests"] += 1
        stats[str(r.status_code)] += 1
        stats[f"{mode.value}"] += 1
        stats["5xx"] += r.status_code >= 500
        ours = problems(template, method, r)
        stats["schema_violations"] += bool(ours)
        assert not ours, (case, r.status_code, r.text[:300], ours)
        checks = CHECKS + ([negative_data_rejection] if mode == GenerationMode.NEGATIVE else [])
        case.validate_response(response, checks=checks, headers=headers)
        writes = allowed_writes(method, template, r)
        for table in TABLES:
            assert after[table] - before[table] in writes[table], (case, r.status_code, table)

    try:
        one_request()
    finally:
        seconds = time.monotonic() - started
        by_status = {k: v for k, v in sorted(stats.items()) if k.isdigit()}
        print(f"\nschemathesis: {stats['requests']} requests ({stats['positive']} positive, "
              f"{stats['negative']} negative), {stats['5xx']} 5xx, "
              f"{stats['schema_violations']} schema violations, {seconds:.1f} s, "
              f"by status {by_status}")  # fmt: skip
        record_property("schemathesis_requests", stats["requests"])
        record_property("schemathesis_5xx", stats["5xx"])
    assert stats["5xx"] == 0 and stats["schema_violations"] == 0
    assert stats["requests"] >= MIN_REQUESTS
    assert stats["negative"] > 0 and stats["400"] > 0 and stats["200"] > 0
