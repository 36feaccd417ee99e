"""Money arithmetic for the trading app: `Decimal` only, exact unless a rule says otherwise.

Rules the whole module keeps:

- Every money or quantity argument goes through `to_decimal` (app/decimals.py), so a float
  anywhere is refused with the argument's name and binary rounding never reaches a price or
  a balance.
- Inputs are bounded (at most `MAX_INTEGER_DIGITS` digits before the point and
  `MAX_DECIMAL_PLACES` after it). Arithmetic runs in a local context of `PRECISION` digits
  with `Inexact` trapped: within those bounds sums, differences and products are exact, and
  the trap turns any silent rounding into an exception instead of a wrong balance.
- The one division, an average price, is rounded half-even to `STORAGE_PLACES` (18, the
  scale of the database's numeric(38,18)) with exact integer arithmetic, clamped to the
  range of the prices averaged (only reachable when prices carry more than 18 places), and
  written without trailing zeros. `apply_fill` rounds the P&L it realises the same way, so
  for inputs of at most 18 places the state it returns is exactly what the positions table
  (numeric(38,18)) stores: nothing is rounded again on the way in.
- Results are never negative zero and never carry a positive exponent. Serialise them with
  `decimal_string`, not `str`: `str(Decimal("0.00000001"))` is "1E-8", which `to_decimal`
  (and the API) refuses.
- Each public operation that completes counts once in `spark_money_operations_total{kind}`;
  refused input raises before anything is counted. `to_decimal` and `is_aligned` are checks,
  not money operations, and are not counted. `COUNTING = False` turns counting off: it
  exists for bench/money_instrumentation.py, which times the operations both ways.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from enum import StrEnum

from app.decimals import (  # noqa: F401  (the bounds are part of this module's API too)
    EXACT,
    MAX_DECIMAL_PLACES,
    MAX_INTEGER_DIGITS,
    PRECISION,
    decimal_string,
    to_decimal,
)
from app.decimals import choice as _choice
from app.decimals import positive as _positive
from app.metrics import MONEY_OPERATIONS
from sparkops.metric_names import MONEY_OPERATION_KINDS

STORAGE_PLACES = 18
_EXACT = EXACT
# Rounding to a quantum is the one place the module means to round: the same context
# without the Inexact trap, used only by `bankers_round`.
_ROUNDER = Context(
    prec=PRECISION, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow]
)
_ZERO = Decimal(0)
_ONE = Decimal(1)
_TWO = Decimal(2)
_QUANTUM = tuple(_ONE.scaleb(-places) for places in range(MAX_DECIMAL_PLACES + 1))

COUNTING = True
# A renamed or removed kind fails here, at import, rather than as a missing series later.
_COUNTERS = {kind: MONEY_OPERATIONS.labels(kind) for kind in MONEY_OPERATION_KINDS}
_ALIGN_PRICE = _COUNTERS["align_price"]
_ALIGN_QUANTITY = _COUNTERS["align_quantity"]
_ROUND = _COUNTERS["round"]
_COMMISSION = _COUNTERS["commission"]
_REALIZED_PNL = _COUNTERS["realized_pnl"]
_UNREALIZED_PNL = _COUNTERS["unrealized_pnl"]
_AVERAGE_PRICE = _COUNTERS["average_price"]
_APPLY_FILL = _COUNTERS["apply_fill"]


class Rounding(StrEnum):
    """Direction in which a value that is not a multiple of its step moves onto one."""

    DOWN = "down"  # toward zero
    UP = "up"  # away from zero
    FLOOR = "floor"  # toward -infinity
    CEILING = "ceiling"  # toward +infinity
    HALF_EVEN = "half_even"  # nearest; ties to the even multiple (banker's rounding)


def _rounding(rounding) -> Rounding:
    if rounding.__class__ is Rounding:
        return rounding
    try:
        return Rounding(rounding)
    except ValueError:
        choices = ", ".join(member.value for member in Rounding)
        raise ValueError(
            f"rounding must be a Rounding or one of {choices}; got {reprlib.repr(rounding)}"
        ) from None


# --- alignment and rounding ----------------------------------------------------------------


def _align(value: Decimal, step: Decimal, rounding: Rounding) -> Decimal:
    # divmod is exact: the quotient is an integer, the remainder carries value's sign.
    quotient, remainder = divmod(value, step)
    if remainder:
        if rounding is Rounding.DOWN:
            away = False
        elif rounding is Rounding.UP:
            away = True
        elif rounding is Rounding.FLOOR:
            away = value < 0
        elif rounding is Rounding.CEILING:
            away = value > 0
        else:
            twice = abs(remainder) * _TWO
            away = twice > step or (twice == step and quotient % _TWO != 0)
        if away:
            quotient += _ONE if value > 0 else -_ONE
    return +(quotient * step)  # "+" turns -0 into 0; the result has the step's scale


def align_price(price, tick_size, rounding: Rounding) -> Decimal:
    """Move `price` onto a multiple of `tick_size` in the direction `rounding` names.

    Any sign is accepted: DOWN and UP act on the magnitude, FLOOR and CEILING on the value.
    A price already on the grid is returned unchanged in value. The result has the tick's
    scale (`align_price("100.1", "0.01", ...)` is `100.10`).
    """
    price = to_decimal(price, "price")
    tick_size = _positive(tick_size, "tick_size")
    rounding = _rounding(rounding)
    with localcontext(_EXACT):
        result = _align(price, tick_size, rounding)
    if COUNTING:
        _ALIGN_PRICE.inc()
    return result


def align_quantity(quantity, lot_step, rounding: Rounding) -> Decimal:
    """Move `quantity` onto a multiple of `lot_step`; the rules of `align_price` apply."""
    quantity = to_decimal(quantity, "quantity")
    lot_step = _positive(lot_step, "lot_step")
    rounding = _rounding(rounding)
    with localcontext(_EXACT):
        result = _align(quantity, lot_step, rounding)
    if COUNTING:
        _ALIGN_QUANTITY.inc()
    return result


def is_aligned(value, step) -> bool:
    """Whether `value` is an exact multiple of `step` (which must be greater than 0)."""
    value = to_decimal(value, "value")
    step = _positive(step, "step")
    with localcontext(_EXACT):
        return not value % step


def bankers_round(value, places: int) -> Decimal:
    """Round `value` half-even to `places` decimal places (0.125 -> 0.12, 0.135 -> 0.14).

    The result always has exactly `places` places (`bankers_round(1, 2)` is `1.00`).
    """
    value = to_decimal(value, "value")
    if type(places) is not int:
        raise TypeError(f"places must be an int, got {type(places).__name__} {places!r}")
    if not 0 <= places <= MAX_DECIMAL_PLACES:
        raise ValueError(f"places must be between 0 and {MAX_DECIMAL_PLACES}, got {places}")
    with localcontext(_ROUNDER):
        result = +value.quantize(_QUANTUM[places])
    if COUNTING:
        _ROUND.inc()
    return result


# --- commissions ---------------------------------------------------------------------------

LIQUIDITY_SIDES = ("maker", "taker")


@dataclass(frozen=True)
class FeeSchedule:
    """Commission rates as fractions of notional (0.001 is 0.1 %) and a minimum fee.

    A negative maker rate is a rebate. Rates above 1 (100 %) are refused: they are almost
    certainly a percentage written where a fraction belongs.
    """

    maker_rate: Decimal
    taker_rate: Decimal
    minimum_fee: Decimal

    def __post_init__(self) -> None:
        maker_rate = to_decimal(self.maker_rate, "maker_rate")
        taker_rate = to_decimal(self.taker_rate, "taker_rate")
        minimum_fee = to_decimal(self.minimum_fee, "minimum_fee")
        if not -1 <= maker_rate <= 1:
            raise ValueError(f"maker_rate must be between -1 and 1, got {maker_rate}")
        if not 0 <= taker_rate <= 1:
            raise ValueError(f"taker_rate must be between 0 and 1, got {taker_rate}")
        if minimum_fee < 0:
            raise ValueError(f"minimum_fee must be 0 or more, got {minimum_fee}")
        object.__setattr__(self, "maker_rate", maker_rate)
        object.__setattr__(self, "taker_rate", taker_rate)
        object.__setattr__(self, "minimum_fee", minimum_fee)


def commission(notional, schedule: FeeSchedule, liquidity: str) -> Decimal:
    """The fee for a trade of `notional` (> 0) as "maker" or "taker": max(notional*rate, minimum).

    A negative maker rate is a rebate: the result is notional*rate, below zero, and the
    minimum does not apply (a minimum fee would turn the rebate into a charge). The fee is
    exact; round it with `bankers_round` to the fee currency's places when it is charged.
    """
    notional = _positive(notional, "notional")
    if not isinstance(schedule, FeeSchedule):
        raise TypeError(f"schedule must be a FeeSchedule, got {type(schedule).__name__}")
    if _choice(liquidity, "liquidity", LIQUIDITY_SIDES) == "maker":
        rate = schedule.maker_rate
    else:
        rate = schedule.taker_rate
    with localcontext(_EXACT):
        fee = notional * rate
        result = +fee if rate < 0 else +max(fee, schedule.minimum_fee)
    if COUNTING:
        _COMMISSION.inc()
    return result


# --- profit and loss -----------------------------------------------------------------------

POSITION_SIDES = ("long", "short")
ORDER_SIDES = ("buy", "sell")


def realized_pnl(side: str, entry_price, exit_price, quantity) -> Decimal:
    """P&L of closing `quantity` (> 0) of a "long" or "short" position; prices > 0.

    long: (exit - entry) * quantity; short: (entry - exit) * quantity. Exact.
    """
    side = _choice(side, "side", POSITION_SIDES)
    entry_price = _positive(entry_price, "entry_price")
    exit_price = _positive(exit_price, "exit_price")
    quantity = _positive(quantity, "quantity")
    with localcontext(_EXACT):
        move = exit_price - entry_price if side == "long" else entry_price - exit_price
        result = +(move * quantity)
    if COUNTING:
        _REALIZED_PNL.inc()
    return result


def unrealized_pnl(position_quantity, avg_entry_price, mark_price) -> Decimal:
    """P&L of a signed position (+ long, - short) marked at `mark_price`: (mark - avg) * qty.

    A flat position (quantity 0) is worth 0 whatever its average. Exact.
    """
    position_quantity = to_decimal(position_quantity, "position_quantity")
    avg_entry_price = to_decimal(avg_entry_price, "avg_entry_price")
    mark_price = _positive(mark_price, "mark_price")
    if position_quantity and avg_entry_price <= 0:
        raise ValueError(
            f"avg_entry_price must be greater than 0 for an open position, got {avg_entry_price}"
        )
    with localcontext(_EXACT):
        result = +((mark_price - avg_entry_price) * position_quantity)
    if COUNTING:
        _UNREALIZED_PNL.inc()
    return result


# --- average prices ------------------------------------------------------------------------


def _average(cost: Decimal, quantity: Decimal, lowest: Decimal, highest: Decimal) -> Decimal:
    # cost / quantity rounded half-even to 18 places with integer arithmetic, so the result
    # is never rounded twice. Called inside the exact context; cost and quantity are > 0.
    whole, remainder = divmod(cost.scaleb(STORAGE_PLACES), quantity)
    twice = remainder * _TWO
    if twice > quantity or (twice == quantity and whole % _TWO != 0):
        whole += _ONE
    average = whole.scaleb(-STORAGE_PLACES)
    if average == average.to_integral_value():
        average = average.quantize(_ONE)
    else:
        average = average.normalize()
    # Only prices with more than 18 places can round past the range they average.
    return min(max(average, lowest), highest)


def weighted_average_price(fills: Iterable) -> Decimal:
    """Quantity-weighted average of `fills`, pairs of (quantity > 0, price > 0).

    Rounded half-even to 18 places (the database's numeric(38,18) scale), without trailing
    zeros, and always between the lowest and the highest fill price.
    """
    if isinstance(fills, str | bytes):
        raise TypeError("fills must be an iterable of (quantity, price) pairs, got a string")
    total_quantity = total_cost = _ZERO
    lowest = highest = None
    with localcontext(_EXACT):
        for index, fill in enumerate(fills):
            if isinstance(fill, str | bytes):
                raise TypeError(f"fills[{index}] must be a (quantity, price) pair, got a string")
            try:
                quantity, price = fill
            except (TypeError, ValueError):
                raise TypeError(
                    f"fills[{index}] must be a (quantity, price) pair, got {reprlib.repr(fill)}"
                ) from None
            quantity = _positive(quantity, f"fills[{index}].quantity")
            price = _positive(price, f"fills[{index}].price")
            total_quantity += quantity
            total_cost += quantity * price
            if lowest is None:
                lowest = highest = price
            else:
                lowest = min(lowest, price)
                highest = max(highest, price)
        if lowest is None:
            raise ValueError("fills must hold at least one (quantity, price) pair")
        result = _average(total_cost, total_quantity, lowest, highest)
    if COUNTING:
        _AVERAGE_PRICE.inc()
    return result


# --- positions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PositionState:
    """A position in one instrument: signed quantity, average entry, P&L realised so far."""

    quantity: Decimal  # signed: + long, - short
    avg_entry_price: Decimal  # 0 when flat
    realized_pnl: Decimal

    def __post_init__(self) -> None:
        quantity = to_decimal(self.quantity, "quantity")
        avg_entry_price = to_decimal(self.avg_entry_price, "avg_entry_price")
        realized = to_decimal(self.realized_pnl, "realized_pnl")
        if quantity and avg_entry_price <= 0:
            raise ValueError(
                f"avg_entry_price must be greater than 0 for an open position, "
                f"got {avg_entry_price}"
            )
        if not quantity and avg_entry_price:
            raise ValueError(f"avg_entry_price must be 0 when flat, got {avg_entry_price}")
        object.__setattr__(self, "quantity", quantity)
        object.__setattr__(self, "avg_entry_price", avg_entry_price)
        object.__setattr__(self, "realized_pnl", realized)

    @classmethod
    def flat(cls) -> PositionState:
        """No position and nothing realised yet."""
        return cls(_ZERO, _ZERO, _ZERO)


def _at_storage_scale(value: Decimal) -> Decimal:
    if value.as_tuple().exponent >= -STORAGE_PLACES:
        return value
    return value.quantize(_QUANTUM[STORAGE_PLACES], context=_ROUNDER)


def apply_fill(state: PositionState, side: str, quantity, price) -> PositionState:
    """The position after a fill of `quantity` (> 0) at `price` (> 0) on `side` buy or sell.

    Adding to a position re-averages the entry (rounded like `weighted_average_price`);
    reducing it realises (price - average) * closed on a long, the opposite on a short, at
    the old average, rounded half-even to 18 places (the database's scale); crossing through
    zero realises on the closed part and opens the rest at the fill price; flat means an
    average of 0. `state` is not changed.
    """
    if not isinstance(state, PositionState):
        raise TypeError(f"state must be a PositionState, got {type(state).__name__}")
    side = _choice(side, "side", ORDER_SIDES)
    quantity = _positive(quantity, "quantity")
    price = _positive(price, "price")
    held, average, realized = state.quantity, state.avg_entry_price, state.realized_pnl
    with localcontext(_EXACT):
        signed = quantity if side == "buy" else -quantity
        after = held + signed
        if not held:
            average = price
        elif (held > 0) == (signed > 0):  # adding to the position: re-average the entry
            size = abs(held)
            cost = size * average + quantity * price
            lowest, highest = min(average, price), max(average, price)
            average = _average(cost, size + quantity, lowest, highest)
        else:
            gain = (price - average) * min(abs(held), quantity)
            realized += _at_storage_scale(gain if held > 0 else -gain)
            if not after:
                average = _ZERO
            elif (after > 0) != (held > 0):  # crossed through zero: the rest opens here
                average = price
        # The result obeys PositionState's rules by construction: skip __post_init__.
        result = object.__new__(PositionState)
        object.__setattr__(result, "quantity", +after)
        object.__setattr__(result, "avg_entry_price", average)
        object.__setattr__(result, "realized_pnl", +realized)
    if COUNTING:
        _APPLY_FILL.inc()
    return result
