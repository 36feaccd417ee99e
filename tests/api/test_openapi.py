"""The OpenAPI document (app.openapi): valid OpenAPI 3.1, served at /openapi.json exactly as
committed, naming every route, and kept by the app's real answers: each status below is
produced by a real uvicorn through a real pgBouncer and checked against the document (its
status, headers and body)."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from openapi_spec_validator import validate

from app import idempotency, openapi
from app.config import Settings
from app.instruments import DEFAULT_INSTRUMENTS
from app.openapi_build import OPENAPI_PATH
from app.validation import parse_order
from sparkops.artefacts import REPO_ROOT
from testkit.appserver import AppServer
from testkit.proc import free_port
from tests.api.openapi_check import problems
from tests.api.test_auth import make_key
from tests.api.test_orders import ORDER, post
from tests.conftest import AUTH, TEST_KEY_ID, create_account


def test_the_document_is_valid_openapi_3_1_and_served_as_committed(app_server):
    validate(openapi.document())
    served = httpx.get(f"{app_server.url}{openapi.PATH}")
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    assert served.text == (REPO_ROOT / OPENAPI_PATH).read_text() == openapi.render()
    assert served.json()["openapi"] == "3.1.0"


def test_every_route_of_the_app_is_in_the_document_and_only_those(app_settings):
    from app.main import create_app

    app = create_app(app_settings)
    while not hasattr(app, "routes"):
        app = app.app
    served = {(route.path, m.lower()) for route in app.routes for m in route.methods - {"HEAD"}}
    documented = {(p, m) for p, ops in openapi.document()["paths"].items() for m in ops}
    assert served == documented
    for path, ops in openapi.document()["paths"].items():
        for method, op in ops.items():
            data = path.startswith(("/orders", "/positions"))
            assert bool(op.get("security")) == data, (path, method)
            if data:  # every route that touches data documents its auth and limit errors
                assert {"400", "401", "403", "429", "503"} <= set(op["responses"]), path


@pytest.fixture
def app_settings(db_stack):
    return Settings(database_url=db_stack.app_conninfo(), release_id="openapi")


def conforms(template: str, method: str, r: httpx.Response) -> httpx.Response:
    found = problems(template, method, r)
    assert not found, (method, template, r.status_code, r.text[:300], found)
    return r


def test_real_answers_keep_to_the_document(db_stack, app_server, app_conn):
    url = app_server.url
    create_account(app_conn)
    _, reader = make_key(db_stack, "acct-1", permissions=("read",))
    _, slow = make_key(db_stack, "acct-1", rate_limit=1)
    seen: set[int] = set()

    def check(template: str, method: str, r: httpx.Response) -> int:
        seen.add(r.status_code)
        return conforms(template, method, r).status_code

    def order(body=ORDER, key=None, headers=AUTH, **kw) -> int:
        sent = {**headers, "idempotency-key": key or str(uuid.uuid4()), **kw.pop("extra", {})}
        r = httpx.post(f"{url}/orders", json=body, headers=sent, timeout=30, **kw)
        return check("/orders", "POST", r)

    def get(template: str, path: str, headers=AUTH) -> int:
        return check(template, "GET", httpx.get(f"{url}{path}", headers=headers, timeout=30))

    key = str(uuid.uuid4())
    filled = post(app_server, ORDER, key)
    assert check("/orders", "POST", filled) == 201
    replay = post(app_server, ORDER, key)
    assert check("/orders", "POST", replay) == 201 and replay.headers["idempotent-replayed"]
    assert order({**ORDER, "price": "1"}, key) == 422  # the key with another body
    assert order({**ORDER, "price": "65000.001"}) == 400  # off the tick
    assert order({**ORDER, "account_id": "nobody"}) == 422
    blocked = post(app_server, {**ORDER, "price": "90000.00"})
    assert check("/orders", "POST", blocked) == 422 and blocked.json()["rule"] == "price_band"
    assert order(headers={}) == 401
    assert order(headers=reader) == 403
    assert order(body=None, content=json.dumps(ORDER), extra={"content-type": "text/plain"}) == 415
    assert order(body=None, content=b"{" + b" " * 20_000 + b"}",
                 extra={"content-type": "application/json"}) == 413  # fmt: skip
    # 409: the same key and body while the first request is still in flight (its claim made
    # here as the app makes it).
    in_flight, body = str(uuid.uuid4()), {**ORDER, "quantity": "0.02000"}
    fields = parse_order(json.dumps(body).encode(), DEFAULT_INSTRUMENTS).fingerprint_fields()
    app_conn.execute(
        "INSERT INTO idempotency_keys (key, request_hash, state) VALUES (%s, %s, 'in_flight')",
        (f"{TEST_KEY_ID}/{in_flight}", idempotency.request_hash("POST", "/orders", fields)),
    )
    assert order(body, in_flight) == 409
    assert 429 in {order(headers=slow) for _ in range(4)}

    order_id = filled.json()["id"]
    assert get("/orders/{order_id}", f"/orders/{order_id}") == 200
    assert get("/orders/{order_id}", f"/orders/{uuid.uuid4()}") == 404
    assert get("/orders/{order_id}", "/orders/nope") == 400
    assert get("/positions", "/positions?account_id=acct-1&limit=1&status=all") == 200
    assert get("/positions", "/positions?account_id=not-mine") == 404
    assert get("/positions", "/positions?account_id=acct-1", headers={}) == 401
    report = {"csp-report": {"violated-directive": "script-src", "blocked-uri": "x"}}
    r = httpx.post(f"{url}/csp-report", content=json.dumps(report),
                   headers={"content-type": "application/csp-report"})  # fmt: skip
    assert check("/csp-report", "POST", r) == 204
    for path in ("/", "/healthz", "/readyz", "/version", openapi.PATH):
        assert get(path, path) == 200
    assert check("/healthz", "DELETE", httpx.delete(f"{url}/healthz")) == 405

    dead = f"host=127.0.0.1 port={free_port()} dbname=spark user=x password=y connect_timeout=1"
    with AppServer(Settings(database_url=dead, db_timeout_s=1.5, api_key_cache_ttl_s=0)) as down:
        url = down.url
        assert get("/readyz", "/readyz") == 503
        assert get("/positions", "/positions?account_id=acct-1") == 503

    assert {400, 401, 403, 404, 409, 413, 415, 422, 429, 503} <= seen, sorted(seen)
