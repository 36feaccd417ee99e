"""Pre-trade risk checks: pure functions of the order, the position and the limits.

The rules run in a fixed order and the first that blocks wins, so the reported rule is
deterministic: kill switch, max notional, max position, price band.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from app.config import RiskLimits


@dataclass(frozen=True)
class RiskBlock:
    rule: str  # one of sparkops.metric_names.RISK_RULES
    message: str


def check_order(
    *,
    side: str,
    quantity: Decimal,
    price: Decimal,
    current_position: Decimal,
    reference_price: Decimal,
    limits: RiskLimits,
    halted_by: str | None,
) -> RiskBlock | None:
    """Return the first rule the order breaks, or None when it may go ahead."""
    if halted_by is not None:
        return RiskBlock("kill_switch", f"trading is halted: {halted_by}")
    notional = quantity * price
    if notional > limits.max_notional:
        return RiskBlock(
            "max_notional",
            f"order notional {notional} exceeds the limit {limits.max_notional}",
        )
    signed = quantity if side == "buy" else -quantity
    resulting = current_position + signed
    if abs(resulting) > limits.max_position and abs(resulting) > abs(current_position):
        # An order that shrinks an oversized position is allowed: it reduces risk.
        return RiskBlock(
            "max_position",
            f"resulting position {resulting} exceeds the limit ±{limits.max_position}",
        )
    deviation = abs(price - reference_price) / reference_price
    if deviation > limits.price_band:
        return RiskBlock(
            "price_band",
            f"price {price} is {deviation:.2%} from the reference {reference_price}; "
            f"the band is ±{limits.price_band:.2%}",
        )
    return None
