"""The outbox dispatcher in a chaos run: its own process (`sparkops outbox run`), reading the
database through the same proxied hop as the app, publishing to a throwaway Redis.

After the run, every order's event must be in the Redis stream (at least once: the
outbox's promise), and the dispatcher must have lived through the fault.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

from app.outbox import settings as outbox_settings
from sparkops.wait import wait_until
from testkit.proc import stop_process
from testkit.redis import RedisServer

READY_LINE = "publishing to"  # logged by app.outbox.service once its loop runs


class Outbox:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.redis = RedisServer()
        self.proc: subprocess.Popen | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="sparkops-chaos-outbox-"))
        self.log = self.dir / "dispatcher.log"

    def start(self) -> Outbox:
        self.redis.start()
        command = [
            sys.executable, "-c", "from sparkops_cli.main import main; main()",
            "outbox", "run",
            "--database-url", self.database_url,
            "--publisher", "redis",
            "--redis-url", self.redis.url,
            "--name", "chaos",
            "--poll-interval", "0.05",
            "--metrics-port", "0",
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._started, timeout=30, what="the outbox dispatcher to start")
        return self

    def _started(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"dispatcher exited:\n{self.log.read_text()[-3000:]}")
        return READY_LINE in self.log.read_text()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def missing(self, conn: psycopg.Connection, api_key_id: str, timeout: float = 30) -> int:
        """Order events of this API key not in the stream once the outbox drained (0 wanted)."""
        wanted = {
            row[0]
            for row in conn.execute(
                "SELECT event_id::text FROM outbox_events "
                "WHERE payload->>'idempotency_key' LIKE %s",
                (f"{api_key_id}/%",),
            )
        }

        def not_yet() -> set[str]:
            return wanted - self._published()

        try:
            wait_until(lambda: not not_yet(), timeout=timeout, what="every event published")
        except TimeoutError:
            pass
        return len(not_yet())

    def _published(self) -> set[str]:
        client = self.redis.client()
        try:
            seen, last = set(), "-"
            for _ in range(1000):  # pages of 10k entries; bounded
                page = client.xrange(outbox_settings.REDIS_STREAM, min=last, count=10_000)
                page = page[1:] if last != "-" else page
                if not page:
                    break
                seen |= {fields[b"event_id"].decode() for _id, fields in page}
                last = page[-1][0].decode()
            return seen
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        self.redis.remove()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text().splitlines()[-lines:])
