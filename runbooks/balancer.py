"""An app host out of the load balancers' rotation while a runbook restarts it.

With lb hosts in the inventory (HAProxy, deploys/haproxy.py), `sparkops rollback` drains each
app host on every lb before its switch (no new requests; those in flight finish) and readies
it after the health gate, one host at a time: the other app hosts take the traffic and no
request meets a restarting or unready release. The lb hosts run `spark-lb-server`
(sparkops/lbruntime.py, which the deploy uploads) against HAProxy's runtime socket; this
module reaches them over SSH. Without lb hosts, nothing here runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from runbooks.checklist import Run
from runbooks.executor import Executor
from sparkops import defaults, layout, lbruntime


@dataclass
class Balancers:
    executors: list[Executor]

    def lines(self, server: str) -> list[str]:
        names = ", ".join(e.name for e in self.executors)
        return [
            f"       load balancers ({names}): drain {defaults.LB_BACKEND}/{server} before the "
            f"switch (in flight -> 0, {defaults.LB_DRAIN_TIMEOUT_SECONDS:.0f} s), ready after "
            "the gate (HAProxy's check UP)"
        ]

    def _tool(
        self, executor: Executor, action: str, server: str, timeout: float
    ) -> tuple[bool, str]:
        args = lbruntime.tool_args(
            action, server, defaults.LB_BACKEND, layout.HAPROXY_RUNTIME_SOCKET, timeout
        )
        result = executor.run([layout.LB_SERVER_TOOL, *args], check=False, timeout=timeout + 30)
        return result.ok, result.output().strip()

    def drain(self, server: str, run: Run) -> None:
        for executor in self.executors:
            with run.step(f"Drain {server} on {executor.name}"):
                ok, said = self._tool(executor, "drain", server, defaults.LB_DRAIN_TIMEOUT_SECONDS)
                # Past the deadline the switch goes on: the restart's graceful shutdown lets
                # what is left finish.
                run.note(said if ok else f"not drained in time, going on: {said}")

    def ready(self, server: str, run: Run) -> bool:
        all_up = True
        for executor in self.executors:
            with run.step(f"Ready {server} on {executor.name}"):
                ok, said = self._tool(executor, "ready", server, defaults.LB_READY_TIMEOUT_SECONDS)
                run.note(said)
            all_up = (
                run.check(f"{executor.name} sends requests to {server} again", ok, said) and all_up
            )
        return all_up

    @contextlib.contextmanager
    def drained(self, server: str, run: Run) -> Iterator[None]:
        """Out of rotation for the block; back in after it, however it ends (a failed switch
        went back to a release that passed its gate; HAProxy's check keeps out one that is
        not ready)."""
        started = time.monotonic()
        self.drain(server, run)
        run.facts.setdefault("lb_drain_seconds", {})[server] = round(time.monotonic() - started, 3)
        try:
            yield
        finally:
            self.ready(server, run)
