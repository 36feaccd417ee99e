"""Publishers against real receivers: the webhook against a local HTTP server, Redis against
redis-server; plus the pure pieces (signature, backoff, settings, durations)."""

from __future__ import annotations

import asyncio
import io
import json
import random
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import click
import pytest

from app.outbox import settings
from app.outbox.dispatcher import backoff_delay
from app.outbox.publishers import (
    ConsolePublisher,
    PublishError,
    RedisStreamPublisher,
    WebhookPublisher,
    build_publisher,
    envelope,
    envelope_values,
    sign,
    verify,
)
from app.outbox.settings import DispatcherSettings
from app.outbox.store import OutboxEvent
from sparkops_cli.commands.outbox import parse_duration
from testkit.redis import RedisServer

SECRET = b"test-only-secret"
PAYLOAD = '{"price": "12345.678901234567890123", "qty": "0.00000001"}'


def event(n: int = 1) -> OutboxEvent:
    return OutboxEvent(
        id=n,
        event_id=f"00000000-0000-0000-0000-{n:012d}",
        aggregate_type="order",
        aggregate_id=f"o-{n}",
        event_type="order.created",
        payload_json=PAYLOAD,
        attempts=0,
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


class Receiver(BaseHTTPRequestHandler):
    answer = 204
    received: list[tuple[dict, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(Receiver.answer)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver():
    Receiver.received = []
    Receiver.answer = 204
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/events"
    server.shutdown()
    server.server_close()


def test_webhook_posts_signed_json_with_decimals_intact(receiver):
    async def go():
        publisher = WebhookPublisher(receiver, SECRET, timeout=2)
        try:
            await publisher.publish(event())
        finally:
            await publisher.aclose()

    asyncio.run(go())
    [(headers, body)] = Receiver.received
    assert verify(SECRET, headers[settings.WEBHOOK_SIGNATURE_HEADER], body)
    assert not verify(b"another secret", headers[settings.WEBHOOK_SIGNATURE_HEADER], body)
    assert not verify(SECRET, headers[settings.WEBHOOK_SIGNATURE_HEADER], body + b" ")
    assert headers[settings.WEBHOOK_EVENT_ID_HEADER] == event().event_id
    message = json.loads(body, parse_float=lambda s: pytest.fail(f"float in message: {s}"))
    assert message["payload"]["price"] == "12345.678901234567890123"
    assert message["event_id"] == event().event_id


def test_webhook_non_2xx_raises(receiver):
    Receiver.answer = 500

    async def go():
        publisher = WebhookPublisher(receiver, SECRET, timeout=2)
        try:
            await publisher.publish(event())
        finally:
            await publisher.aclose()

    with pytest.raises(PublishError, match="answered 500"):
        asyncio.run(go())


def test_webhook_bad_configuration_is_refused_clearly(monkeypatch):
    monkeypatch.delenv(settings.ENV_WEBHOOK_SECRET, raising=False)
    monkeypatch.delenv(settings.ENV_WEBHOOK_SECRET_FILE, raising=False)
    with pytest.raises(ValueError, match="needs a URL"):
        build_publisher("webhook")
    with pytest.raises(ValueError, match="signing secret"):
        build_publisher("webhook", webhook_url="https://example.invalid/hook")
    with pytest.raises(ValueError, match="must start with https://"):
        WebhookPublisher("ftp://example.invalid", SECRET)
    # Events carry orders: plain http only to a receiver on this machine.
    with pytest.raises(ValueError, match="is http://: events go only over https://"):
        build_publisher("webhook", webhook_url="http://hooks.example/x", webhook_secret=SECRET)
    with pytest.raises(ValueError, match="unknown publisher 'kafka'"):
        build_publisher("kafka")


def test_redis_publisher_puts_event_id_in_a_field(redis_server, redis_client):
    async def go():
        publisher = RedisStreamPublisher(redis_server.url, "s", maxlen=None)
        try:
            results = await publisher.publish_many([event(1), event(2)])
            await publisher.publish(event(3))
        finally:
            await publisher.aclose()
        return results

    assert asyncio.run(go()) == [None, None]
    entries = redis_client.xrange("s")
    assert [fields[b"event_id"].decode() for _, fields in entries] == [
        event(n).event_id for n in (1, 2, 3)
    ]
    assert entries[0][1][b"payload"].decode() == PAYLOAD


# What JSON and Lua could bend on the way: quotes, backslashes, escapes, non-ASCII (a
# 4-byte one too), control characters, an empty string, and something that looks like a number.
AWKWARD_PAYLOAD = (
    '{"note": "say \\"hi\\" \\\\ back\\nslash", "name": "Zürich ✓ 𝄞", '
    '"qty": "1e-8", "tab": "\\t", "empty": ""}'
)


def test_a_batch_reaches_the_stream_byte_for_byte_through_the_script(redis_server, redis_client):
    when = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    cases = [(1, "o-ü", AWKWARD_PAYLOAD), (2, "o-ü", "{}"), (3, "12", '"0.10"')]
    awkward = [
        OutboxEvent(n, f"e-{n}", "order", agg, "order.created", payload, 0, when)
        for n, agg, payload in cases
    ]

    async def go():
        publisher = RedisStreamPublisher(redis_server.url, "s2", maxlen=1000)
        try:
            return await publisher.publish_runs([awkward[:2], awkward[2:]], timeout=5)
        finally:
            await publisher.aclose()

    assert asyncio.run(go()) == [(2, None), (1, None)]
    entries = redis_client.xrange("s2")
    assert [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries] == [
        envelope(e) for e in awkward
    ]
    assert [list(envelope(e).values()) for e in awkward] == [envelope_values(e) for e in awkward]


def test_redis_publisher_reports_each_failure_when_redis_is_down():
    async def go():
        # A port nothing listens on: connection refused, for every event of the round.
        publisher = RedisStreamPublisher("redis://127.0.0.1:1/0", timeout=1)
        try:
            return await publisher.publish_many([event(1), event(2)])
        finally:
            await publisher.aclose()

    results = asyncio.run(go())
    assert len(results) == 2 and all(isinstance(r, Exception) for r in results)


def test_console_publisher_writes_json_lines():
    out = io.StringIO()
    asyncio.run(ConsolePublisher(out).publish(event()))
    line = json.loads(out.getvalue())
    assert line["event_id"] == event().event_id and line["payload"] == PAYLOAD


def test_signature_covers_timestamp():
    body = b"{}"
    assert sign(SECRET, "100", body) != sign(SECRET, "101", body)
    assert not verify(SECRET, "garbage", body)


def test_backoff_is_full_jitter_capped():
    rng = random.Random(7)
    for attempts in range(0, 30):
        ceiling = min(60.0, 0.5 * 2**attempts)
        delays = [backoff_delay(attempts, 0.5, 60.0, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # spread over the whole range, not clustered
    assert backoff_delay(10_000, 0.5, 60.0, rng) <= 60.0


def test_settings_refuse_a_lease_shorter_than_a_publish():
    with pytest.raises(ValueError, match="lease"):
        DispatcherSettings(lease_seconds=5, publish_timeout=5)
    with pytest.raises(ValueError, match="max attempts"):
        DispatcherSettings(max_attempts=0)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["7", "7 weeks", "-1d", "0h", "", "d7"])
def test_parse_duration_rejects(text):
    with pytest.raises(click.BadParameter, match="not a duration"):
        parse_duration(text)


def test_redis_with_a_password_from_a_file_never_from_the_url(tmp_path, monkeypatch):
    """Production's Redis has requirepass: the dispatcher reads the password from the file
    SPARK_OUTBOX_REDIS_PASSWORD_FILE names (the deploy writes it), not from its URL or argv."""
    password = "redis-test-" + "x" * 20
    with RedisServer(password=password) as server:
        monkeypatch.delenv(settings.ENV_REDIS_PASSWORD_FILE, raising=False)

        async def publish_one() -> list:
            publisher = build_publisher("redis", redis_url=server.url, stream="p")
            try:
                return await publisher.publish_many([event(1)])
            finally:
                await publisher.aclose()

        refused = asyncio.run(publish_one())
        assert type(refused[0]).__name__ == "AuthenticationError", refused
        secret_file = tmp_path / "redis-password"
        secret_file.write_text(password + "\n")
        monkeypatch.setenv(settings.ENV_REDIS_PASSWORD_FILE, str(secret_file))
        assert asyncio.run(publish_one()) == [None]
        assert server.client().xlen("p") == 1
        secret_file.write_text("")
        with pytest.raises(ValueError, match="is empty"):
            build_publisher("redis", redis_url=server.url)
