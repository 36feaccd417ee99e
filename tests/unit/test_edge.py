"""The edge's pure logic: the JSON depth scan, forbidden characters, `shown`, the terms."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import vocabulary as vocab
from app.edge import EdgeGuard, JsonNumber, RequestError, nesting_depth_exceeds, parse_json
from sparkops import defaults

# Strings full of what could fool a scanner: quotes, backslashes, brackets, non-ASCII.
TRICKY_TEXT = st.text(st.sampled_from('"\\[]{}a\u00e9\u2028\U0001f600'), max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY_TEXT, inner, max_size=3),
    max_leaves=30,
)


def depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@given(JSON_VALUES, st.booleans(), st.integers(min_value=0, max_value=6))
def test_depth_scan_agrees_with_the_parsed_depth(value, ascii_only, limit):
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert nesting_depth_exceeds(raw, limit) == (depth(value) > limit)


def test_depth_scan_refuses_deep_bodies_the_parser_would_recurse_on():
    for raw in (b"[" * 100_000, b'{"a":' * 5000, b"[" * 9 + b'"' + b"]" * 9):
        assert nesting_depth_exceeds(raw, defaults.MAX_JSON_DEPTH)
        with pytest.raises(RequestError) as info:
            parse_json(raw)
        assert info.value.code == "json_too_deep"


def test_brackets_in_strings_are_not_depth():
    raw = json.dumps({"a": "[" * 1000 + '\\"' + "{" * 1000}).encode()
    assert not nesting_depth_exceeds(raw, 1)
    assert parse_json(raw)["a"].startswith("[[[")


@pytest.mark.parametrize(
    ("raw", "field"),
    [(b'{"a": "x\\u0000"}', "a"), (b'{"a": {"b": ["\\ud800"]}}', "a.b[0]"),
     (b'[{"\\udfff": 1}]', "body[0]"), (b'{"\\u0000": 1}', "body")],
)  # fmt: skip
def test_nul_and_lone_surrogates_are_refused_where_they_are(raw, field):
    with pytest.raises(RequestError) as info:
        parse_json(raw)
    assert info.value.code == "forbidden_character" and info.value.extra["field"] == field


HOSTILE_TEXT = st.text(st.sampled_from(["\x00", "\ud800", "\udfff", "a", "\u00e9", '"', "\\"]))
HOSTILE_VALUES = st.recursive(
    st.integers() | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=12,
)


def texts(value):
    if isinstance(value, list):
        return [t for v in value for t in texts(v)]
    if isinstance(value, dict):
        return [*value, *(t for v in value.values() for t in texts(v))]
    return [value] if isinstance(value, str) else []


@given(HOSTILE_VALUES.filter(lambda v: depth(v) <= defaults.MAX_JSON_DEPTH))
def test_parse_refuses_exactly_the_values_holding_nul_or_a_lone_surrogate(value):
    raw = json.dumps(value).encode()  # ensure_ascii: surrogates travel as \ud800 escapes
    # Decoded first: "\ud800" next to "\udfff" is a surrogate pair, one valid character.
    decoded = json.loads(raw, parse_int=JsonNumber)
    if any(vocab.forbidden_character(t) for t in texts(decoded)):
        with pytest.raises(RequestError) as info:
            parse_json(raw)
        assert info.value.code == "forbidden_character"
    else:
        assert parse_json(raw) == decoded


def test_numbers_keep_their_text_and_are_not_strings():
    value = parse_json(b'{"a": 1e999999, "b": -0.10}')
    assert [v.text for v in value.values()] == ["1e999999", "-0.10"]
    assert not any(isinstance(v, str) for v in value.values())


def test_surrogate_pairs_are_text_not_lone_surrogates():
    assert parse_json(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}


@given(st.text() | st.binary() | st.lists(st.text()))
def test_shown_is_ascii_and_bounded(value):
    text = vocab.shown(value)
    assert text.isascii()
    assert len(text) <= vocab.SHOWN_LIMIT + 40


@given(st.text(max_size=45))
def test_decimal_term_takes_only_ascii_plain_decimals(text):
    if vocab.DECIMAL.matches(text):
        assert text.isascii() and "\n" not in text and Decimal(text) >= 0
        assert set(text) <= set("0123456789.")


@pytest.mark.parametrize(
    "text", ["\u0666\u0665", "\uff16", "1\n", "1.5\n", "+1", "1e3", " 1", "1.", ".5", "1" * 21]
)
def test_decimal_term_refuses_what_decimal_would_take(text):
    assert not vocab.DECIMAL.matches(text)


@pytest.mark.parametrize(
    ("term", "text"),
    [(vocab.ACCOUNT_ID, "acct-1\n"), (vocab.ACCOUNT_ID, ""), (vocab.ACCOUNT_ID, "a" * 65),
     (vocab.STRATEGY, "s1\n"), (vocab.STRATEGY, "s\u0131"), (vocab.SYMBOL, "BTCUSDT\n"),
     (vocab.SYMBOL, "btcusdt"), (vocab.UUID, "\u0660" * 32), (vocab.CONTENT_LENGTH, "\u00b2")],
)  # fmt: skip
def test_terms_refuse_newlines_non_ascii_and_bad_lengths(term, text):
    assert not term.matches(text)


def _call(guard: EdgeGuard, headers, query=b"") -> tuple[int, bytes, list]:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers,
             "query_string": query}  # fmt: skip
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], sent[1]["body"], sent


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_edge_guard_refuses_nul_in_a_header_naming_it():
    # uvicorn's HTTP parsers never pass such a header on; another ASGI server might.
    status, body, _ = _call(EdgeGuard(_ok), [(b"idempotency-key", b"abc\x00defgh")])
    assert status == 400
    assert json.loads(body) == {
        "error": "forbidden_character", "field": "idempotency-key",
        "message": "header idempotency-key contains a NUL byte (U+0000)",
    }  # fmt: skip


def test_edge_guard_passes_clean_requests_on():
    status, _, _ = _call(EdgeGuard(_ok), [(b"accept", b"*/*")], b"status=open&x=%C3%A9")
    assert status == 204
