"""What counting costs in app.money: each operation timed with and without its increment.

Every public operation of app.money ends with `if COUNTING: counter.inc()`. This script
times each operation with `app.money.COUNTING` on and off; the difference is the whole cost
of instrumentation. Each variant makes `--calls` calls in `--slices` slices that alternate
with the other variant's, so drift on a shared machine hits both alike. Time is this
process's CPU time (`time.process_time`), so waiting for a core does not count; the fastest
slice is the figure (interference only ever adds time), the median is printed beside it.

    .venv/bin/python bench/money_instrumentation.py [--calls 200000] [--slices 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import REGISTRY

from app import money
from app.money import FeeSchedule, PositionState, Rounding
from sparkops.metric_names import MONEY_OPERATIONS

D = Decimal
SCHEDULE = FeeSchedule(maker_rate=D("0.0008"), taker_rate=D("0.0010"), minimum_fee=D("0.01"))
LONG = PositionState(D("0.5"), D("64000.00"), D("0"))
FILLS = [(D("0.5"), D("64000.00")), (D("0.25"), D("65000.01"))]

# (kind, operation, arguments): arguments shaped like an order for BTCUSDT as the order
# service sends them (Decimals, already parsed).
OPERATIONS = [
    ("align_price", money.align_price, (D("65000.123"), D("0.01"), Rounding.DOWN)),
    ("align_quantity", money.align_quantity, (D("0.123456"), D("0.00001"), Rounding.DOWN)),
    ("round", money.bankers_round, (D("81.2500125"), 2)),
    ("commission", money.commission, (D("8125.00"), SCHEDULE, "taker")),
    ("realized_pnl", money.realized_pnl, ("long", D("64000.00"), D("65000.00"), D("0.125"))),
    ("unrealized_pnl", money.unrealized_pnl, (D("0.5"), D("64000.00"), D("65000.00"))),
    ("average_price", money.weighted_average_price, (FILLS,)),
    ("apply_fill", money.apply_fill, (LONG, "buy", D("0.25"), D("65000.01"))),
]


def per_call_ns(function, args, calls: int, counting: bool) -> float:
    money.COUNTING = counting
    try:
        return (
            timeit.Timer("f(*a)", time.process_time, globals={"f": function, "a": args}).timeit(
                calls
            )
            / calls
            * 1e9
        )
    finally:
        money.COUNTING = True


def counts_once_only_when_counting(kind: str, operation, args) -> bool:
    """The two variants really differ by the increment: one count with, none without."""

    def count() -> float:
        return REGISTRY.get_sample_value(MONEY_OPERATIONS, {"kind": kind})

    before = count()
    operation(*args)
    counted = count() - before
    money.COUNTING = False
    try:
        operation(*args)
    finally:
        money.COUNTING = True
    return counted == 1 and count() - before == 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="calls per variant")
    parser.add_argument("--slices", type=int, default=50, help="alternating slices per variant")
    options = parser.parse_args()
    if options.slices < 1 or options.calls < options.slices:
        parser.error("--slices must be at least 1 and --calls at least --slices")
    per_slice = options.calls // options.slices

    counter = money._ALIGN_PRICE
    increment = min(
        timeit.Timer("inc()", time.process_time, globals={"inc": counter.inc}).timeit(per_slice)
        / per_slice
        for _ in range(options.slices)
    )
    print(
        f"app.money instrumentation: {options.slices} x {per_slice} calls per variant; "
        "fastest slice (median in brackets)"
    )
    print(f"a bare Counter child .inc(): {increment * 1e9:.0f} ns\n")
    header = f"{'operation':<16}{'counted ns':>18}{'bare ns':>18}{'cost ns':>10}{'overhead':>10}"
    print(header)
    print("-" * len(header))
    worst = 0.0
    for kind, operation, args in OPERATIONS:
        if not counts_once_only_when_counting(kind, operation, args):
            raise SystemExit(f"{kind}: COUNTING does not switch its increment; fix before timing")
        counted_ns, bare_ns = [], []
        for _ in range(options.slices):
            counted_ns.append(per_call_ns(operation, args, per_slice, counting=True))
            bare_ns.append(per_call_ns(operation, args, per_slice, counting=False))
        counted, plain = min(counted_ns), min(bare_ns)
        overhead = (counted - plain) / plain * 100
        worst = max(worst, overhead)
        both = [
            f"{fastest:.0f} ({statistics.median(times):.0f})"
            for fastest, times in ((counted, counted_ns), (plain, bare_ns))
        ]
        print(f"{kind:<16}{both[0]:>18}{both[1]:>18}{counted - plain:>10.0f}{overhead:>9.1f}%")
    print(f"\nlargest overhead: {worst:.1f}% of the operation it counts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
