"""What counting costs in app.money: each operation timed with and without its increment.

Every public operation of app.money ends with `if COUNTING: counter.inc()`. This script
times each operation with `app.money.COUNTING` on and off; the difference is the whole cost
of instrumentation. Each variant runs `--calls` times per round, the fastest of `--rounds`
rounds counts, and the two variants alternate within a round so drift on a shared machine
hits both alike.

    .venv/bin/python bench/money_instrumentation.py [--calls 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import timeit
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import REGISTRY

from app import money
from app.metric_names import MONEY_OPERATIONS
from app.money import FeeSchedule, PositionState, Rounding

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
        return timeit.Timer("f(*a)", globals={"f": function, "a": args}).timeit(calls) / calls * 1e9
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
    parser.add_argument("--calls", type=int, default=200_000, help="calls per round and variant")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the fastest counts")
    options = parser.parse_args()
    if options.calls < 1 or options.rounds < 1:
        parser.error("--calls and --rounds must be at least 1")

    counter = money._ALIGN_PRICE
    increment = min(
        timeit.Timer("inc()", globals={"inc": counter.inc}).timeit(options.calls) / options.calls
        for _ in range(options.rounds)
    )
    print(f"app.money instrumentation: {options.calls} calls x {options.rounds} rounds, fastest")
    print(f"a bare Counter child .inc(): {increment * 1e9:.0f} ns\n")
    header = f"{'operation':<16}{'counted ns':>12}{'bare ns':>10}{'cost ns':>10}{'overhead':>10}"
    print(header)
    print("-" * len(header))
    worst = 0.0
    for kind, operation, args in OPERATIONS:
        if not counts_once_only_when_counting(kind, operation, args):
            raise SystemExit(f"{kind}: COUNTING does not switch its increment; fix before timing")
        counted_ns, bare_ns = [], []
        for _ in range(options.rounds):
            counted_ns.append(per_call_ns(operation, args, options.calls, counting=True))
            bare_ns.append(per_call_ns(operation, args, options.calls, counting=False))
        counted, plain = min(counted_ns), min(bare_ns)
        overhead = (counted - plain) / plain * 100
        worst = max(worst, overhead)
        print(f"{kind:<16}{counted:>12.0f}{plain:>10.0f}{counted - plain:>10.0f}{overhead:>9.1f}%")
    print(f"\nlargest overhead: {worst:.1f}% of the operation it counts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
