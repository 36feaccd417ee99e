"""The chaos scenarios of issue 13, each a function that runs the whole experiment on a fresh
stack (chaos.stack) under client load (chaos.load) and returns what it measured.

Shape of each: steady state first (orders acknowledged), then the fault for a while, then
healing; recovery is the time from healing until /readyz answers 200 and a client has an
order acknowledged again. The expectations are asserted by tests/chaos/test_scenarios.py;
bench/chaos_report.py prints the same runs as a table.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from app.config import Settings
from chaos.load import Client, OrderLoad, Tally, audit
from chaos.stack import ChaosStack
from sparkops.wait import wait_until

# The app's timeouts in these runs: shorter than production's so a run takes seconds.
SETTINGS = Settings(
    database_url="set by ChaosStack",
    release_id="chaos",
    db_timeout_s=2.0,  # wait for a pooled connection
    request_timeout_s=4.0,  # a request's whole time on the database, then 503
    idempotency_in_flight_timeout_s=5,
    api_key_cache_ttl_s=0.5,
)
# What a client may see at most: the request budget, plus the event loop's slack on a
# loaded 2-core machine.
LATENCY_BOUND_S = SETTINGS.request_timeout_s + 2.0
WORKERS = 8
STEADY_ORDERS = 20
RECOVERY_TIMEOUT_S = 30.0


@dataclass
class Probe:
    """/readyz asked every 0.25 s during the fault: the worst latency and the reasons."""

    url: str
    max_latency_s: float = 0.0
    statuses: set[int] = dataclasses.field(default_factory=set)
    reasons: set[str] = dataclasses.field(default_factory=set)
    no_retry_after: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=20) as http:
            while not self._stop.wait(0.25):
                start = time.monotonic()
                try:
                    answer = http.get(f"{self.url}/readyz")
                except httpx.HTTPError as exc:
                    self.statuses.add(0)
                    self.reasons.add(f"transport: {exc!r}")
                    continue
                self.max_latency_s = max(self.max_latency_s, time.monotonic() - start)
                self.statuses.add(answer.status_code)
                if answer.status_code == 503:
                    self.reasons.add(answer.json().get("reason", ""))
                    self.no_retry_after += "retry-after" not in answer.headers

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def ready(stack: ChaosStack) -> bool:
    try:
        return httpx.get(f"{stack.app.url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def run(name: str, fault: Callable[[ChaosStack, Tally], None], *, settings: Settings = SETTINGS,
        workers: int = WORKERS, **stack_args) -> Tally:  # fmt: skip
    """Steady state, `fault` (which heals before it returns), recovery, then the audit."""
    tally = Tally(name)
    with ChaosStack(settings, **stack_args) as stack:
        with stack.direct() as conn:
            client = Client.create(conn, workers)
        with OrderLoad(stack.app.url, client, tally):
            wait_until(lambda: tally.ok >= STEADY_ORDERS, timeout=30, what="steady state")
            fault(stack, tally)
            stack.heal()
            healed = time.monotonic()
            try:
                wait_until(lambda: tally.last_ack_at > healed and ready(stack),
                           timeout=RECOVERY_TIMEOUT_S, what="recovery")  # fmt: skip
                tally.recovered, tally.recover_s = True, time.monotonic() - healed
            except TimeoutError:
                tally.recovered = False
            # A little more load after recovery, so retries of the fault's orders finish.
            acked = len(tally.acked)
            wait_until(lambda: len(tally.acked) >= acked + STEADY_ORDERS, timeout=30,
                       what="orders after recovery")  # fmt: skip
        with stack.direct() as conn:
            audit(conn, client, tally)
    return tally


def hold(seconds: float) -> None:
    """The fault's duration: a deliberate wait, not a poll (nothing to wait *for*)."""
    time.sleep(seconds)


BOTH = ("upstream", "downstream")


def _probe_notes(tally: Tally, probe: Probe) -> None:
    tally.readyz = probe
    reasons = "; ".join(sorted(probe.reasons)) or "-"
    tally.notes.append(f"/readyz during the fault: {sorted(probe.statuses)}, worst "
                       f"{probe.max_latency_s:.2f}s, reasons: {reasons}")  # fmt: skip


def slow_database() -> Tally:
    """1. Latency app<->pgBouncer, then pgBouncer<->PostgreSQL, then beyond the budget."""

    def fault(stack: ChaosStack, tally: Tally) -> None:
        with Probe(stack.app.url) as probe:
            with stack.to_bouncer.toxic("latency", streams=BOTH, latency=50, jitter=25):
                hold(4)
            with stack.to_postgres.toxic("latency", streams=BOTH, latency=50, jitter=25):
                hold(4)
            ok, shed = tally.ok, tally.shed
            with stack.to_bouncer.toxic("latency", streams=BOTH, latency=1000):
                hold(8)
            tally.over_budget = (tally.ok - ok, tally.shed - shed)
        _probe_notes(tally, probe)
        tally.notes.append(f"in the over-budget phase: {tally.over_budget[0]} ok, "
                           f"{tally.over_budget[1]} shed")  # fmt: skip

    return run("1 slow database", fault)


def partition() -> Tally:
    """2. The db host black-holed (no RST, no FIN: packets vanish) for 8 s, then healed."""

    def fault(stack: ChaosStack, tally: Tally) -> None:
        with Probe(stack.app.url) as probe, stack.to_bouncer.toxic("timeout", streams=BOTH,
                                                                   timeout=0):  # fmt: skip
            hold(8)
        _probe_notes(tally, probe)

    return run("2 partition (black hole)", fault)
