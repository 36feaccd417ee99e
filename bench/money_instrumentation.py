"""What counting costs in app.money: each operation timed with and without its increment.

The public functions of app.money are `result = _impl(...); counter.inc(); return result`,
so the uninstrumented path is the `_impl` function called with the same arguments. The
difference is the whole cost of instrumentation (the increment plus the extra call).
Each variant runs `--calls` times per round; the fastest of `--rounds` rounds counts, and
the two variants alternate within a round so drift on a shared machine hits both alike.

    .venv/bin/python bench/money_instrumentation.py [--calls 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import timeit
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import money
from app.money import FeeSchedule, PositionState, Rounding

D = Decimal
SCHEDULE = FeeSchedule(maker_rate=D("0.0008"), taker_rate=D("0.0010"), minimum_fee=D("0.01"))
LONG = PositionState(D("0.5"), D("64000.00"), D("0"))

# (kind, public function, uninstrumented function, arguments): arguments shaped like an order
# for BTCUSDT as the order service sends them (Decimals, already parsed).
OPERATIONS = [
    ("align_price", money.align_price, money._align_price, (D("65000.123"), D("0.01"), Rounding.DOWN)),
    ("align_quantity", money.align_quantity, money._align_quantity, (D("0.123456"), D("0.00001"), Rounding.DOWN)),
    ("round", money.bankers_round, money._bankers_round, (D("81.2500125"), 2)),
    ("commission", money.commission, money._commission, (D("8125.00"), SCHEDULE, "taker")),
    ("realized_pnl", money.realized_pnl, money._realized_pnl, ("long", D("64000.00"), D("65000.00"), D("0.125"))),
    ("unrealized_pnl", money.unrealized_pnl, money._unrealized_pnl, (D("0.5"), D("64000.00"), D("65000.00"))),
    ("average_price", money.weighted_average_price, money._weighted_average_price, ([(D("0.5"), D("64000.00")), (D("0.25"), D("65000.01"))],)),
    ("apply_fill", money.apply_fill, money._apply_fill, (LONG, "buy", D("0.25"), D("65000.01"))),
]  # fmt: skip


def per_call_ns(function, args, calls: int) -> float:
    timer = timeit.Timer("f(*a)", globals={"f": function, "a": args})
    return timer.timeit(calls) / calls * 1e9


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
    for kind, public, bare, args in OPERATIONS:
        if public(*args) != bare(*args):
            raise SystemExit(f"{kind}: the counted and bare paths disagree; fix before timing")
        counted_ns, bare_ns = [], []
        for _ in range(options.rounds):
            counted_ns.append(per_call_ns(public, args, options.calls))
            bare_ns.append(per_call_ns(bare, args, options.calls))
        counted, plain = min(counted_ns), min(bare_ns)
        overhead = (counted - plain) / plain * 100
        worst = max(worst, overhead)
        print(f"{kind:<16}{counted:>12.0f}{plain:>10.0f}{counted - plain:>10.0f}{overhead:>9.1f}%")
    print(f"\nlargest overhead: {worst:.1f}% of the operation it counts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
