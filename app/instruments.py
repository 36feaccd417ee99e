"""Tradable instruments: tick size, lot step, fees and the default reference price.

The reference price anchors the price-band risk rule. In production it comes from the
exchange ticker; the defaults here keep a fresh deploy and the tests self-contained, and
`SPARK_REFERENCE_PRICES` overrides them (see app.config).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from app.money import FeeSchedule


@dataclass(frozen=True)
class Instrument:
    symbol: str
    tick_size: Decimal
    lot_step: Decimal
    min_quantity: Decimal
    fees: FeeSchedule
    reference_price: Decimal


_SPOT_FEES = FeeSchedule(
    maker_rate=Decimal("0.0008"), taker_rate=Decimal("0.0010"), minimum_fee=Decimal("0.01")
)

DEFAULT_INSTRUMENTS: dict[str, Instrument] = {
    i.symbol: i
    for i in (
        Instrument(
            "BTCUSDT", Decimal("0.01"), Decimal("0.00001"), Decimal("0.00001"), _SPOT_FEES,
            Decimal("65000.00"),
        ),
        Instrument(
            "ETHUSDT", Decimal("0.01"), Decimal("0.0001"), Decimal("0.0001"), _SPOT_FEES,
            Decimal("3000.00"),
        ),
        Instrument(
            "SOLUSDT", Decimal("0.01"), Decimal("0.001"), Decimal("0.001"), _SPOT_FEES,
            Decimal("150.00"),
        ),
        Instrument(
            "BTCTRY", Decimal("1"), Decimal("0.00001"), Decimal("0.00001"), _SPOT_FEES,
            Decimal("2200000"),
        ),
    )
}  # fmt: skip
