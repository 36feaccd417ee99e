"""Where outbox events go: one small interface, three destinations.

A publisher's `publish(event)` returns when the destination has the event and raises when
it may not have it; the dispatcher retries what raised, so every destination gets each
event at least once and must deduplicate on `event_id` (present in every message).

`publish_runs` takes a batch as runs: each run consecutive events of one aggregate, in
order. It returns, per run, how many of its events the destination has (a prefix: a run
stops at its first failure, and nothing after a failure is sent) and the error that stopped
it. The default publishes in rounds, round k carrying the k-th event of every run still
going, through `publish_many` (events of *distinct* aggregates, one outcome each, None for
success), which by default runs `publish` concurrently. Redis overrides `publish_runs`: the
whole batch in one script call (one round trip). A new destination subclasses `Publisher`
and registers in `build_publisher`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

import httpx
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.outbox import settings
from app.outbox.store import OutboxEvent

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """The destination refused or may not have stored the event."""


ENVELOPE_FIELDS = (
    "event_id", "aggregate_type", "aggregate_id", "event_type", "payload", "created_at",
)  # fmt: skip


def envelope_values(event: OutboxEvent) -> list[str]:
    """The values of ENVELOPE_FIELDS, in order; the payload stays JSON text. A list, not a
    dict: the Redis publisher's hot path builds one per event."""
    return [event.event_id, event.aggregate_type, event.aggregate_id, event.event_type,
            event.payload_json, event.created_at.isoformat()]  # fmt: skip


def envelope(event: OutboxEvent) -> dict[str, str]:
    """The message fields every destination carries, in ENVELOPE_FIELDS order."""
    return dict(zip(ENVELOPE_FIELDS, envelope_values(event), strict=True))


# What `publish_runs` returns per run: events published (a prefix), the error that stopped it.
RunOutcome = tuple[int, BaseException | None]


class Publisher:
    name = "base"

    async def publish(self, event: OutboxEvent) -> None:
        raise NotImplementedError

    async def publish_many(self, events: Sequence[OutboxEvent]) -> list[BaseException | None]:
        results = await asyncio.gather(*(self.publish(e) for e in events), return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    async def publish_runs(
        self,
        runs: Sequence[Sequence[OutboxEvent]],
        *,
        timeout: float,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> list[RunOutcome]:
        """Publish each run in order, stopping it at its first failure; in rounds, each
        within `timeout` (a round that times out fails all its events). Stops between
        rounds when `keep_going()` is false: the rest of each run is left unpublished."""
        counts = [0] * len(runs)
        errors: list[BaseException | None] = [None] * len(runs)
        going = [i for i, run in enumerate(runs) if run]
        while going and keep_going():
            round_events = [runs[i][counts[i]] for i in going]
            try:
                results = await asyncio.wait_for(self.publish_many(round_events), timeout)
            except Exception as exc:  # a timeout or a publisher bug: none of the round counts
                results = [exc] * len(round_events)
            still = []
            for i, error in zip(going, results, strict=True):
                if error is not None:
                    errors[i] = error
                    continue
                counts[i] += 1
                if counts[i] < len(runs[i]):
                    still.append(i)
            going = still
        return list(zip(counts, errors, strict=True))

    async def aclose(self) -> None:
        return None


# KEYS[1]: the stream. ARGV[1]: MAXLEN (0: none); ARGV[2]: the runs as one JSON array, each
# run an array of events, each event the values of ENVELOPE_FIELDS in order. Returns, per
# run, the events added and the error that stopped the run ("" if none). The batch travels
# as one argument: as thousands of arguments (one per field), encoding them was a quarter
# of the dispatcher's CPU; Redis decodes the JSON in C (cjson). One XADD call per event, its
# field names spelled out (a table built per event would cost more than the XADD).
_FIELDS_LUA = ", ".join(f"'{name}', ev[{n + 1}]" for n, name in enumerate(ENVELOPE_FIELDS))
PUBLISH_RUNS_SCRIPT = """
local stream, maxlen = KEYS[1], tonumber(ARGV[1])
local runs = cjson.decode(ARGV[2])
local out = {}
for r = 1, #runs do
    local run = runs[r]
    local added, err = 0, ''
    for e = 1, #run do
        local ev = run[e]
        local res
        if maxlen > 0 then
            res = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, '*', FIELDS)
        else
            res = redis.pcall('XADD', stream, '*', FIELDS)
        end
        if type(res) == 'table' and res.err then
            err = res.err
            break
        end
        added = added + 1
    end
    out[#out + 1] = added
    out[#out + 1] = err
end
return out
""".replace("FIELDS", _FIELDS_LUA)


class RedisStreamPublisher(Publisher):
    """XADD to one stream. Entry ids are Redis's own (they must increase); the outbox
    event id travels as the `event_id` field for consumers to deduplicate on."""

    name = "redis"

    def __init__(
        self,
        url: str = settings.REDIS_URL,
        stream: str = settings.REDIS_STREAM,
        *,
        maxlen: int | None = settings.REDIS_STREAM_MAXLEN,
        timeout: float = settings.PUBLISH_TIMEOUT_SECONDS,
        password: str | None = None,
    ) -> None:
        self.stream = stream
        self.maxlen = maxlen
        # One immediate retry (a pooled connection gone stale after a Redis restart); backoff
        # beyond that is the dispatcher's, per event, where it is counted and visible.
        self.client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            **({"password": password} if password else {}),
        )

        self._publish_script = self.client.register_script(PUBLISH_RUNS_SCRIPT)

    def _xadd_kwargs(self) -> dict:
        return {"maxlen": self.maxlen, "approximate": True} if self.maxlen else {}

    async def publish(self, event: OutboxEvent) -> None:
        await self.client.xadd(self.stream, envelope(event), **self._xadd_kwargs())

    async def publish_many(self, events: Sequence[OutboxEvent]) -> list[BaseException | None]:
        # One round trip for the whole round; a connection error fails every event of it
        # (some may have landed: the consumer's dedupe on event_id absorbs that).
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            pipe.xadd(self.stream, envelope(event), **self._xadd_kwargs())
        try:
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            return [exc] * len(events)
        return [r if isinstance(r, BaseException) else None for r in results]

    async def publish_runs(
        self,
        runs: Sequence[Sequence[OutboxEvent]],
        *,
        timeout: float,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> list[RunOutcome]:
        """The whole batch in one call of a script that XADDs each run in order and stops a
        run at its first refusal (a pipeline cannot: the commands after a refused one still
        run, and would land ahead of it). The script runs atomically: if the call fails (no
        answer in time, connection lost), either every event landed or none did, and every
        run is reported failed (the consumer's dedupe on event_id absorbs the copies)."""
        runs = [run for run in runs]
        if not keep_going():
            return [(0, None)] * len(runs)
        batch = json.dumps(
            [[envelope_values(event) for event in run] for run in runs], separators=(",", ":")
        )
        args = [self.maxlen or 0, batch]
        try:
            reply = await asyncio.wait_for(
                self._publish_script(keys=[self.stream], args=args), timeout
            )
        except Exception as exc:
            return [(0, exc)] * len(runs)
        outcomes: list[RunOutcome] = []
        for count, error in zip(reply[0::2], reply[1::2], strict=True):
            message = error.decode() if isinstance(error, bytes) else error
            outcomes.append((int(count), PublishError(f"redis: {message}") if message else None))
        return outcomes

    async def aclose(self) -> None:
        await self.client.aclose()


class ConsolePublisher(Publisher):
    """One JSON line per event on a text stream (stdout by default): for development and
    for feeding a log pipeline."""

    name = "console"

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    async def publish(self, event: OutboxEvent) -> None:
        self.out.write(json.dumps(envelope(event), separators=(",", ":")) + "\n")
        self.out.flush()


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`: the timestamp is signed too, so a
    receiver can refuse replays older than its tolerance."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: bytes, header: str, body: bytes) -> bool:
    """The receiver's side of `sign` (used by tests and by anyone writing a receiver)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        expected = sign(secret, parts["t"], body)
    except (KeyError, ValueError):
        return False
    return hmac.compare_digest(expected, header)


def load_redis_password() -> str | None:
    """Redis' password from the file SPARK_OUTBOX_REDIS_PASSWORD_FILE names, when it is set
    (the deploy writes it 0640 for production's Redis); None: Redis without a password."""
    path = os.environ.get(settings.ENV_REDIS_PASSWORD_FILE)
    if not path:
        return None
    try:
        password = open(path).read().strip()  # noqa: SIM115 - read whole, closed by GC
    except OSError as exc:
        raise ValueError(f"cannot read the Redis password file {path}: {exc}") from exc
    if not password:
        raise ValueError(f"the Redis password file {path} is empty")
    return password


def check_webhook_url(url: str) -> None:
    """https:// only: events carry orders. http:// is let through to a loopback address alone
    (a receiver on the same machine, as in the tests)."""
    parsed = httpx.URL(url) if url.startswith(("http://", "https://")) else None
    if parsed is None or not parsed.host:
        raise ValueError(f"webhook URL must start with https://, got {url!r}")
    if parsed.scheme == "http" and parsed.host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(
            f"webhook URL {url!r} is http://: events go only over https:// "
            "(http:// is accepted for a loopback receiver alone)"
        )


def load_webhook_secret() -> bytes:
    """From SPARK_OUTBOX_WEBHOOK_SECRET_FILE (preferred: the deploy writes it 0600) or
    SPARK_OUTBOX_WEBHOOK_SECRET."""
    path = os.environ.get(settings.ENV_WEBHOOK_SECRET_FILE)
    if path:
        try:
            secret = open(path, "rb").read().strip()  # noqa: SIM115 - read whole, closed by GC
        except OSError as exc:
            raise ValueError(f"cannot read the webhook secret file {path}: {exc}") from exc
    else:
        secret = os.environ.get(settings.ENV_WEBHOOK_SECRET, "").encode()
    if not secret:
        raise ValueError(
            f"the webhook publisher needs a signing secret: set {settings.ENV_WEBHOOK_SECRET_FILE}"
            f" to a file holding it, or {settings.ENV_WEBHOOK_SECRET}"
        )
    return secret


class WebhookPublisher(Publisher):
    """POST each event as JSON, signed; any answer but 2xx (or no answer) is a failure."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        timeout: float = settings.PUBLISH_TIMEOUT_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        check_webhook_url(url)
        if not secret:
            raise ValueError("the webhook publisher needs a non-empty signing secret")
        self.url = url
        self.secret = secret
        self.client = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def publish(self, event: OutboxEvent) -> None:
        fields = envelope(event)
        # The payload is embedded as the stored JSON text, not re-encoded (no float ever
        # touches a decimal in it) and not as a string holding JSON.
        head = {k: v for k, v in fields.items() if k != "payload"}
        body = (json.dumps(head, separators=(",", ":"))[:-1] + ',"payload":').encode()
        body += fields["payload"].encode() + b"}"
        headers = {
            "Content-Type": "application/json",
            settings.WEBHOOK_SIGNATURE_HEADER: sign(self.secret, str(int(time.time())), body),
            settings.WEBHOOK_EVENT_ID_HEADER: event.event_id,
        }
        response = await self.client.post(self.url, content=body, headers=headers)
        if not 200 <= response.status_code < 300:
            raise PublishError(
                f"webhook {self.url} answered {response.status_code}: {response.text[:200]}"
            )

    async def aclose(self) -> None:
        await self.client.aclose()


def build_publisher(
    kind: str,
    *,
    redis_url: str | None = None,
    stream: str = settings.REDIS_STREAM,
    stream_maxlen: int | None = settings.REDIS_STREAM_MAXLEN,
    webhook_url: str | None = None,
    webhook_secret: bytes | None = None,
    timeout: float = settings.PUBLISH_TIMEOUT_SECONDS,
) -> Publisher:
    if kind == "redis":
        return RedisStreamPublisher(
            redis_url or settings.REDIS_URL,
            stream,
            maxlen=stream_maxlen,
            timeout=timeout,
            password=load_redis_password(),
        )
    if kind == "console":
        return ConsolePublisher()
    if kind == "webhook":
        if not webhook_url:
            raise ValueError(
                f"the webhook publisher needs a URL: --webhook-url or {settings.ENV_WEBHOOK_URL}"
            )
        return WebhookPublisher(
            webhook_url, webhook_secret or load_webhook_secret(), timeout=timeout
        )
    raise ValueError(f"unknown publisher {kind!r}: choose one of {', '.join(settings.PUBLISHERS)}")
