"""The chaos scenarios of issue 13 (chaos.scenarios), run one after another on fresh stacks,
printed as one table: requests sent, ok, shed (503), retried in-flight (409), errors, p99 and
max latency, lost and duplicate writes (both must be 0), recovered, time to recover.

The same runs are the `chaos`-marked tests in tests/chaos/test_scenarios.py, which assert the
expectations; this prints the figures for people (`make chaos-report`).

Usage: .venv/bin/python bench/chaos_report.py [--only NAME ...]   (names: see --help)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chaos import scenarios
from chaos.exchange_run import rate_limits_and_breaker
from chaos.report import render


def main(argv: list[str] | None = None) -> int:
    names = {f.__name__: f for f in (*scenarios.ALL, rate_limits_and_breaker)}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(names), help="run only these")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the app's 503 warnings are the point here
    tallies = []
    start = time.monotonic()
    for name in args.only or list(names):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        tallies.append(names[name]())
    print(render(tallies))
    print(f"\n{len(tallies)} scenarios in {time.monotonic() - start:.0f}s")
    bad = [t.scenario for t in tallies
           if t.lost or t.duplicates or t.half_written or not t.recovered]  # fmt: skip
    if bad:
        print(f"FAILED expectations: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
