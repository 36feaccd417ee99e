"""Every benchmark in turn (`make bench`), each printing its own figures; a summary at the end.

The local benchmarks run on this machine (throwaway PostgreSQL, pgBouncer, Redis, the app);
`--lab` adds the ones that bring up and deploy the local lab (several minutes each). A
benchmark that fails is reported and the others still run; the exit code says whether all
finished.

Usage: .venv/bin/python bench/run_all.py [--lab] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# name -> arguments: short runs, so the whole set takes minutes; each script's --help says
# how to run it longer.
LOCAL = {
    "money_instrumentation": ["--calls", "50000"],
    "orders_throughput": ["--seconds", "10"],
    "outbox_throughput": ["--events", "20000"],
    "api_attacks": [],
    "restore_rollback": ["--scale", "10", "--load-seconds", "20"],
    "restore_schedule": ["--scale", "10", "--interval-seconds", "5"],
    "zero_downtime": [],
}
LAB = {
    "lab_updown": ["--rounds", "1"],
    "deploy_times": ["--redeploys", "2"],
    "lb_switch": [],  # a lab of its own: db, app, app2, lb
    "restore_schedule_lab": ["--scale", "10", "--interval-seconds", "5"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", action="store_true", help="also the lab benchmarks")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these")
    args = parser.parse_args(argv)
    chosen = {**LOCAL, **(LAB if args.lab else {})}
    if args.only:
        unknown = sorted(set(args.only) - set(LOCAL) - set(LAB))
        if unknown:
            parser.error(f"no benchmark {unknown}; there are {sorted({**LOCAL, **LAB})}")
        chosen = {n: a for n, a in {**LOCAL, **LAB}.items() if n in args.only}
    results: list[tuple[str, int, float]] = []
    for name, extra in chosen.items():
        print(f"\n=== {name} {' '.join(extra)}", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, str(BENCH / f"{name}.py"), *extra])
        results.append((name, code, time.monotonic() - start))
    print("\nbenchmark              exit   seconds")
    for name, code, seconds in results:
        print(f"{name:<22} {code:>4} {seconds:>9.1f}")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
