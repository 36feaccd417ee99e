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

from alerts import config as alert_config
from alerts import rules as alert_rules
from app import pgbouncer_exporter
from app.config import Settings
from chaos.load import Client, OrderLoad, Tally, audit
from chaos.stack import ChaosStack
from sparkops.wait import wait_until
from testkit.proc import free_port
from testkit.prometheus import Prometheus, ScrapeTarget

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
                wait_until(lambda: ready(stack), timeout=RECOVERY_TIMEOUT_S, what="ready")
                tally.notes.append(f"/readyz 200 again {time.monotonic() - healed:.2f}s after "
                                   "healing")  # fmt: skip
                wait_until(lambda: tally.last_ack_at > healed, timeout=RECOVERY_TIMEOUT_S,
                           what="an order acknowledged after healing")  # fmt: skip
                tally.recovered, tally.recover_s = True, time.monotonic() - healed
                if tally.recover_override is not None:
                    tally.recover_s = tally.recover_override
            except TimeoutError:
                tally.recovered = False
            # A little more load after recovery, so retries of the fault's orders finish.
            acked = len(tally.acked)
            wait_until(lambda: len(tally.acked) >= acked + STEADY_ORDERS, timeout=30,
                       what="orders after recovery")  # fmt: skip
        with stack.direct() as conn:
            audit(conn, client, tally)
            if stack.outbox is not None:
                tally.outbox_survived = stack.outbox.alive()
                tally.outbox_missing = stack.outbox.missing(conn, client.key_id)
                tally.notes.append(
                    f"outbox: dispatcher survived: {tally.outbox_survived}, "
                    f"order events not published: {tally.outbox_missing}"
                )
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
    """2. The db host black-holed (no RST, no FIN: packets vanish) for 8 s, then healed;
    then the same between pgBouncer and PostgreSQL for 6 s (pgBouncer's server connections
    hang, the app's queries with them)."""

    def fault(stack: ChaosStack, tally: Tally) -> None:
        with Probe(stack.app.url) as probe:
            with stack.to_bouncer.toxic("timeout", streams=BOTH, timeout=0):
                hold(8)
            wait_until(lambda: ready(stack), timeout=RECOVERY_TIMEOUT_S, what="ready between")
            with stack.to_postgres.toxic("timeout", streams=BOTH, timeout=0):
                hold(6)
        _probe_notes(tally, probe)

    return run("2 partition (black hole)", fault, with_outbox=True)


def lossy_link() -> Tally:
    """4. Packet loss between app and pgBouncer, as TCP shows it to the endpoints.

    No iptables `statistic` or netem outside a network namespace, so the loss is emulated by
    its effects, each on a random fraction of connections (Toxiproxy's toxicity): a quarter
    of the connections see retransmission delays (200 +- 200 ms per segment), every request
    is cut into small segments, and many die: a quarter reset after 1 s, another quarter after
    3 s, 5 s and 7 s (as a stack gives up on a lost segment; a connection lives through the
    10 s with a chance of 0.32), a tenth stall and are closed after 2 s (the black hole a
    lost FIN/ACK leaves). Each new connection draws again."""

    def fault(stack: ChaosStack, tally: Tally) -> None:
        p = stack.to_bouncer
        toxics = [
            p.add("latency", "downstream", 0.25, "retransmit_down", latency=200, jitter=200),
            p.add("latency", "upstream", 0.25, "retransmit_up", latency=200, jitter=200),
            p.add(
                "slicer", "upstream", 1.0, "segments", average_size=64, size_variation=32, delay=200
            ),
            *(
                p.add("reset_peer", "downstream", 0.25, f"reset_{t}s", timeout=t * 1000)
                for t in (1, 3, 5, 7)
            ),
            p.add("timeout", "downstream", 0.1, "stall_2s", timeout=2000),
        ]
        proxy = stack.chaos.api.proxies[p.name] if stack.chaos else None  # ours, not Toxiproxy
        accepted = proxy.accepted if proxy else 0
        hold(10)
        for name in toxics:
            p.remove(name)
        if proxy is not None:
            tally.notes.append(f"{proxy.accepted - accepted} new connections in the fault; "
                               f"ended by reset: {proxy.ended_by['reset_peer']}, by stall "
                               f"and close: {proxy.ended_by['timeout']}")  # fmt: skip

    return run("4 lossy link (emulated)", fault)


POOL_EXHAUSTION_POOL = 3
POOL_EXHAUSTION_WAIT_S = 3  # pgBouncer's query_wait_timeout in this scenario
SLOW_CLIENTS = 6
SLOW_QUERY_S = 4


def pool_exhaustion() -> Tally:
    """5. More slow clients than pgBouncer's pool: the app's queries queue in pgBouncer,
    which ends a wait at query_wait_timeout; the app answers 503 within its budget. Our
    pgBouncer exporter is scraped by a throwaway Prometheus, which evaluates
    PgBouncerPoolSaturation's own expression during the fault."""
    alert = alert_rules.by_name()["PgBouncerPoolSaturation"]

    def fault(stack: ChaosStack, tally: Tally) -> None:
        stop = threading.Event()
        bouncer = stack.db.bouncer
        stats_dsn = bouncer.conninfo(bouncer.stats_user, bouncer.stats_password).replace(
            f"dbname={stack.db.dbname}", "dbname=pgbouncer"
        )
        port = free_port()
        exporter, _ = pgbouncer_exporter.serve(stats_dsn, "127.0.0.1", port)
        target = ScrapeTarget(alert_config.JOB_PGBOUNCER, f"127.0.0.1:{port}")

        def slow_client() -> None:
            for _ in range(100):  # bounded; the stop event ends it long before
                if stop.is_set():
                    return
                try:
                    with stack.direct() as conn:
                        conn.execute(f"SELECT pg_sleep({SLOW_QUERY_S})")
                except Exception:  # queued past query_wait_timeout, or the like: again
                    pass

        worst, fired = 0.0, False
        threads = [threading.Thread(target=slow_client, daemon=True) for _ in range(SLOW_CLIENTS)]
        try:
            with Prometheus(targets=[target]) as prometheus:
                for t in threads:
                    t.start()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    result = prometheus.query(alert.expr).get("data", {}).get("result", [])
                    for series in result:
                        fired, worst = True, max(worst, float(series["value"][1]))
                    hold(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=SLOW_QUERY_S + POOL_EXHAUSTION_WAIT_S + 5)
            exporter.shutdown()
        tally.saturation = (worst, alert_config.PGBOUNCER_MAX_WAIT_SECONDS)
        tally.saturation_fired = fired
        tally.notes.append(
            f"pgBouncer pool {POOL_EXHAUSTION_POOL}, {SLOW_CLIENTS} clients running "
            f"pg_sleep({SLOW_QUERY_S}): PgBouncerPoolSaturation's expression true on "
            f"Prometheus: {fired}, longest wait it saw {worst:.2f}s (threshold "
            f"{alert_config.PGBOUNCER_MAX_WAIT_SECONDS:g}s)"
        )

    return run(
        "5 pool exhaustion",
        fault,
        pool_size=POOL_EXHAUSTION_POOL,
        bouncer_extra={"query_wait_timeout": str(POOL_EXHAUSTION_WAIT_S)},
    )


def restarts() -> Tally:
    """8. PostgreSQL restarted, then pgBouncer restarted, under load (each down 2 s).

    Time to recover: from the restarted server being back to an order acknowledged again
    (the worse of the two), not from the end of the fault as in the other scenarios."""

    def fault(stack: ChaosStack, tally: Tally) -> None:
        recoveries = []
        for name, server in (("PostgreSQL", stack.db.pg), ("pgBouncer", stack.db.bouncer)):
            if server is stack.db.pg:
                server.stop("fast")
            else:
                server.remove()
            hold(2)
            server.start()
            back = time.monotonic()
            wait_until(lambda b=back: tally.last_ack_at > b, timeout=RECOVERY_TIMEOUT_S,
                       what=f"orders again after the {name} restart")  # fmt: skip
            recoveries.append(tally.last_ack_at - back)
            tally.notes.append(f"{name} down 2 s: orders again {recoveries[-1]:.2f}s after "
                               "it was back")  # fmt: skip
        tally.recover_override = max(recoveries)

    return run("8 restarts under load", fault, with_outbox=True)


ALL = (slow_database, partition, lossy_link, pool_exhaustion, restarts)
