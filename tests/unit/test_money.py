"""app.money: plain cases and properties checked against exact `Fraction` arithmetic."""

from __future__ import annotations

import math
from decimal import Context, Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from app import money
from app.money import (
    FeeSchedule,
    PositionState,
    Rounding,
    align_price,
    align_quantity,
    apply_fill,
    bankers_round,
    commission,
    decimal_string,
    is_aligned,
    realized_pnl,
    to_decimal,
    unrealized_pnl,
    weighted_average_price,
)
from sparkops.metric_names import MONEY_OPERATION_KINDS, MONEY_OPERATIONS

# Expected values are computed with Fraction: Decimal arithmetic in a test would run in the
# global context (28 digits) and round, which is the very thing app.money avoids.
# Modest runs keep the file at a few seconds; deadline off because the machine is shared.
PROPERTY = settings(max_examples=200, deadline=None)
HALF_UNIT_18 = Fraction(1, 2 * 10**18)


def decimals(low: str, high: str, places: int) -> st.SearchStrategy[Decimal]:
    return st.decimals(min_value=Decimal(low), max_value=Decimal(high), places=places)


values = st.one_of(decimals("-1000000", "1000000", 8), decimals("-1", "1", 20))
steps = st.one_of(
    st.sampled_from([Decimal(s) for s in ("0.01", "0.05", "0.25", "0.3", "1", "5", "1E-8")]),
    decimals("0.0001", "100", 4).filter(lambda d: d > 0),
)
prices = st.one_of(decimals("0.01", "100000", 2), decimals("0.00000001", "10", 8))
quantities = decimals("0.00000001", "1000", 8).filter(lambda d: d > 0)


def plain(value: Decimal) -> bool:
    """A result serialises to a plain decimal string that to_decimal takes back, never -0."""
    text = decimal_string(value)
    return to_decimal(text, "result") == value and not (value == 0 and text.startswith("-"))


# --- alignment -----------------------------------------------------------------------------


def _expected_multiple(value: Decimal, step: Decimal, rounding: Rounding) -> Fraction:
    ratio = Fraction(value) / Fraction(step)
    pick = {
        Rounding.DOWN: math.trunc,
        Rounding.UP: lambda r: math.floor(r) if r < 0 else math.ceil(r),
        Rounding.FLOOR: math.floor,
        Rounding.CEILING: math.ceil,
        Rounding.HALF_EVEN: round,  # Python rounds a Fraction half to even
    }[rounding]
    return Fraction(pick(ratio)) * Fraction(step)


@PROPERTY
@given(values, steps, st.sampled_from(list(Rounding)))
def test_alignment_lands_on_the_grid_in_the_stated_direction(value, step, rounding):
    result = align_price(value, step, rounding)
    assert is_aligned(result, step)
    assert Fraction(result) == _expected_multiple(value, step, rounding)
    moved, tick = Fraction(result) - Fraction(value), Fraction(step)
    assert abs(moved) < tick  # within one tick
    if rounding is Rounding.DOWN:
        assert abs(result) <= abs(value)
    elif rounding is Rounding.UP:
        assert abs(result) >= abs(value)
    elif rounding is Rounding.FLOOR:
        assert result <= value
    elif rounding is Rounding.CEILING:
        assert result >= value
    else:
        assert abs(moved) * 2 <= tick
    assert align_quantity(value, step, rounding) == result
    assert align_price(result, step, rounding) == result  # aligned input stays put
    assert plain(result)


@PROPERTY
@given(st.integers(min_value=-(10**6), max_value=10**6), steps)
def test_half_even_ties_go_to_the_even_multiple(k, step):
    with localcontext(Context(prec=100)):
        tie = (2 * k + 1) * step / 2  # exactly halfway between k*step and (k+1)*step
    result = align_price(tie, step, Rounding.HALF_EVEN)
    even = k if k % 2 == 0 else k + 1
    assert Fraction(result) == even * Fraction(step)


@pytest.mark.parametrize(
    ("price", "tick", "rounding", "expected"),
    [
        ("100.123", "0.01", "down", "100.12"),
        ("100.121", "0.01", "up", "100.13"),
        ("-100.121", "0.01", "up", "-100.13"),
        ("-100.121", "0.01", "floor", "-100.13"),
        ("-100.129", "0.01", "ceiling", "-100.12"),
        ("100.125", "0.01", "half_even", "100.12"),
        ("100.135", "0.01", "half_even", "100.14"),
        ("7.5", "5", "half_even", "10"),
        ("12.5", "5", "half_even", "10"),
        ("-0.004", "0.01", "down", "0.00"),
        ("100.1", "0.01", "down", "100.10"),
    ],
)
def test_alignment_cases(price, tick, rounding, expected):
    result = align_price(price, tick, Rounding(rounding))
    assert str(result) == expected


def test_alignment_matches_decimal_quantize_for_power_of_ten_ticks():
    for rounding, mode in [
        (Rounding.DOWN, "ROUND_DOWN"),
        (Rounding.UP, "ROUND_UP"),
        (Rounding.FLOOR, "ROUND_FLOOR"),
        (Rounding.CEILING, "ROUND_CEILING"),
        (Rounding.HALF_EVEN, "ROUND_HALF_EVEN"),
    ]:
        for text in ("2.345", "-2.345", "2.355", "-2.355", "0.001", "-0.009", "5"):
            expected = Decimal(text).quantize(Decimal("0.01"), rounding=mode)
            assert align_price(text, "0.01", rounding) == expected, (text, rounding)


def test_is_aligned():
    assert is_aligned("1.10", "0.1")
    assert is_aligned("-0.75", "0.25")
    assert not is_aligned("1.11", "0.1")
    assert not is_aligned("0.1", "0.3")


# --- banker's rounding ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "places", "expected"),
    [
        ("0.125", 2, "0.12"),
        ("0.135", 2, "0.14"),
        ("0.145", 2, "0.14"),
        ("-0.125", 2, "-0.12"),
        ("2.5", 0, "2"),
        ("3.5", 0, "4"),
        ("1", 2, "1.00"),
        ("-0.001", 2, "0.00"),
        ("0.1251", 2, "0.13"),
    ],
)
def test_bankers_round_cases(value, places, expected):
    assert str(bankers_round(value, places)) == expected


@PROPERTY
@given(values, st.integers(min_value=0, max_value=12))
def test_bankers_round_matches_exact_half_even(value, places):
    scale = 10**places
    expected = Fraction(round(Fraction(value) * scale), scale)
    result = bankers_round(value, places)
    assert Fraction(result) == expected
    assert -result.as_tuple().exponent == places
    assert plain(result)


# --- commission ----------------------------------------------------------------------------

rates = decimals("0", "0.01", 6)


@PROPERTY
@given(decimals("0.01", "10000000", 2), rates, rates, decimals("0", "5", 2))
def test_commission_is_never_below_minimum_and_follows_the_rates(notional, maker, taker, floor):
    schedule = FeeSchedule(maker_rate=maker, taker_rate=taker, minimum_fee=floor)
    maker_fee = commission(notional, schedule, "maker")
    taker_fee = commission(notional, schedule, "taker")
    notional_, floor_ = Fraction(notional), Fraction(floor)
    assert Fraction(maker_fee) == max(notional_ * Fraction(maker), floor_)
    assert Fraction(taker_fee) == max(notional_ * Fraction(taker), floor_)
    assert maker_fee >= floor and taker_fee >= floor
    if maker <= taker:
        assert maker_fee <= taker_fee
    if maker < taker and notional_ * Fraction(taker) > floor_:
        assert maker_fee < taker_fee


def test_commission_cases():
    schedule = FeeSchedule(maker_rate="0.0002", taker_rate="0.001", minimum_fee="0.50")
    assert commission("100", schedule, "taker") == Decimal("0.50")  # minimum applies
    assert commission("10000", schedule, "taker") == Decimal("10")
    assert commission("10000", schedule, "maker") == Decimal("2")


def test_negative_maker_rate_is_a_rebate_without_minimum():
    schedule = FeeSchedule(maker_rate="-0.0001", taker_rate="0.001", minimum_fee="1")
    assert commission("10000", schedule, "maker") == Decimal("-1")
    assert commission("10000", schedule, "taker") == Decimal("10")


def test_fee_schedule_refusals():
    with pytest.raises(TypeError, match="taker_rate"):
        FeeSchedule(maker_rate="0", taker_rate=0.001, minimum_fee="0")
    with pytest.raises(ValueError, match="taker_rate"):
        FeeSchedule(maker_rate="0", taker_rate="-0.001", minimum_fee="0")
    with pytest.raises(ValueError, match="maker_rate must be between -1 and 1"):
        FeeSchedule(maker_rate="5", taker_rate="0.1", minimum_fee="0")
    with pytest.raises(ValueError, match="minimum_fee"):
        FeeSchedule(maker_rate="0", taker_rate="0", minimum_fee="-1")
    schedule = FeeSchedule(maker_rate="0", taker_rate="0", minimum_fee="0")
    with pytest.raises(ValueError, match="liquidity must be one of maker, taker"):
        commission("1", schedule, "MAKER")
    with pytest.raises(ValueError, match="notional must be greater than 0"):
        commission("0", schedule, "maker")


# --- P&L -----------------------------------------------------------------------------------


@PROPERTY
@given(prices, prices, quantities)
def test_long_and_short_pnl_are_mirror_images(entry, exit_, quantity):
    long = realized_pnl("long", entry, exit_, quantity)
    short = realized_pnl("short", entry, exit_, quantity)
    assert Fraction(long) == (Fraction(exit_) - Fraction(entry)) * Fraction(quantity)
    assert Fraction(short) == -Fraction(long)
    assert (long > 0) == (exit_ > entry)
    assert unrealized_pnl(quantity, entry, exit_) == long
    assert unrealized_pnl(-quantity, entry, exit_) == short
    assert plain(long) and plain(short)


def test_pnl_cases():
    assert realized_pnl("long", "100", "110", "2") == Decimal("20")
    assert realized_pnl("short", "100", "110", "2") == Decimal("-20")
    assert unrealized_pnl("-3", "50", "40") == Decimal("30")
    assert unrealized_pnl("0", "0", "40") == 0
    with pytest.raises(ValueError, match="side must be one of long, short"):
        realized_pnl("buy", "1", "2", "1")
    with pytest.raises(ValueError, match="avg_entry_price must be greater than 0"):
        unrealized_pnl("1", "0", "40")


# --- average price -------------------------------------------------------------------------

fills = st.lists(
    st.tuples(quantities, st.one_of(prices, decimals("0.1", "2", 20))), min_size=1, max_size=30
)


@PROPERTY
@given(fills)
def test_average_price_lies_between_the_fills_and_rounds_by_the_rule(batch):
    average = weighted_average_price(batch)
    fill_prices = [price for _, price in batch]
    assert min(fill_prices) <= average <= max(fill_prices)
    exact = sum(Fraction(q) * Fraction(p) for q, p in batch) / sum(Fraction(q) for q, _ in batch)
    assert abs(Fraction(average) - exact) <= HALF_UNIT_18
    assert plain(average)


def test_average_price_cases():
    assert weighted_average_price([("1", "100"), ("1", "102")]) == Decimal("101")
    assert str(weighted_average_price([("1", "100"), ("1", "102")])) == "101"
    assert str(weighted_average_price([("1", "100"), ("2", "101")])) == "100.666666666666666667"
    # Exact tie at the 19th place goes to the even neighbour.
    tie = weighted_average_price([("1", "0.000000000000000001"), ("1", "0.000000000000000002")])
    assert tie == Decimal("0.000000000000000002")
    with pytest.raises(ValueError, match="at least one"):
        weighted_average_price([])
    with pytest.raises(ValueError, match=r"fills\[1\]\.quantity must be greater than 0"):
        weighted_average_price([("1", "100"), ("0", "100")])
    with pytest.raises(TypeError, match=r"fills\[0\] must be a \(quantity, price\) pair"):
        weighted_average_price(["12"])


# --- positions -----------------------------------------------------------------------------

fill_sequences = st.lists(
    st.tuples(st.sampled_from(["buy", "sell"]), quantities, prices), max_size=30
)


@PROPERTY
@given(fill_sequences, prices)
def test_apply_fill_conserves_cash(sequence, mark):
    """realised + unrealised at any mark equals the cash P&L of the fills.

    Exact but for the documented roundings to 18 places: each re-average may move the cost
    basis by half a unit in the 18th place per unit held, and each realisation may round by
    half a unit. Their sum is the slack.
    """
    state = PositionState.flat()
    cash = Fraction(0)
    held = Fraction(0)
    slack = Fraction(0)
    for side, quantity, price in sequence:
        signed = Fraction(quantity) if side == "buy" else -Fraction(quantity)
        if held and (held > 0) == (signed > 0):
            slack += abs(held + signed) * HALF_UNIT_18
        elif held:
            slack += HALF_UNIT_18
        state = apply_fill(state, side, quantity, price)
        cash -= signed * Fraction(price)
        held += signed
        assert Fraction(state.quantity) == held
        assert (state.avg_entry_price == 0) == (held == 0)
        # What apply_fill returns fits the positions table's numeric(38,18) unrounded.
        assert state.avg_entry_price.as_tuple().exponent >= -18
        assert state.realized_pnl.as_tuple().exponent >= -18
    unrealized = unrealized_pnl(state.quantity, state.avg_entry_price, mark)
    marked = Fraction(state.realized_pnl) + Fraction(unrealized)
    assert abs(marked - (cash + held * Fraction(mark))) <= slack


@PROPERTY
@given(fill_sequences)
def test_apply_fill_mirror_symmetry(sequence):
    """Swapping buy and sell negates quantity and realised P&L and keeps the average."""
    state = mirror = PositionState.flat()
    for side, quantity, price in sequence:
        state = apply_fill(state, side, quantity, price)
        mirror = apply_fill(mirror, "sell" if side == "buy" else "buy", quantity, price)
        assert Fraction(mirror.quantity) == -Fraction(state.quantity)
        assert mirror.avg_entry_price == state.avg_entry_price
        assert Fraction(mirror.realized_pnl) == -Fraction(state.realized_pnl)
        assert plain(state.quantity) and plain(state.realized_pnl)


def test_apply_fill_walkthrough():
    state = apply_fill(PositionState.flat(), "buy", "2", "100")
    assert state == PositionState(Decimal(2), Decimal(100), Decimal(0))
    state = apply_fill(state, "buy", "2", "110")  # re-average
    assert state == PositionState(Decimal(4), Decimal(105), Decimal(0))
    state = apply_fill(state, "sell", "1", "120")  # reduce: realise at the old average
    assert state == PositionState(Decimal(3), Decimal(105), Decimal(15))
    state = apply_fill(state, "sell", "5", "90")  # cross: close 3, open 2 short at 90
    assert state == PositionState(Decimal(-2), Decimal(90), Decimal(-30))
    state = apply_fill(state, "buy", "2", "80")  # close the short
    assert state == PositionState(Decimal(0), Decimal(0), Decimal(-10))


def test_position_state_refusals():
    with pytest.raises(TypeError, match="quantity"):
        PositionState(1.0, Decimal(1), Decimal(0))
    with pytest.raises(ValueError, match="avg_entry_price must be 0 when flat"):
        PositionState(Decimal(0), Decimal(1), Decimal(0))
    with pytest.raises(ValueError, match="avg_entry_price must be greater than 0"):
        PositionState(Decimal(1), Decimal(0), Decimal(0))
    with pytest.raises(ValueError, match="side must be one of buy, sell"):
        apply_fill(PositionState.flat(), "long", "1", "1")
    with pytest.raises(TypeError, match="state must be a PositionState"):
        apply_fill(None, "buy", "1", "1")


# --- refusals ------------------------------------------------------------------------------

SCHEDULE = FeeSchedule(maker_rate="0.0002", taker_rate="0.001", minimum_fee="0.5")
FLAT = PositionState.flat()

# (function, valid keyword arguments): each money or quantity argument gets each bad input.
CALLS = [
    (align_price, {"price": "100.123", "tick_size": "0.01", "rounding": Rounding.DOWN}),
    (align_quantity, {"quantity": "1.5", "lot_step": "0.1", "rounding": Rounding.UP}),
    (is_aligned, {"value": "1.5", "step": "0.5"}),
    (bankers_round, {"value": "0.125", "places": 2}),
    (commission, {"notional": "1000", "schedule": SCHEDULE, "liquidity": "maker"}),
    (realized_pnl, {"side": "long", "entry_price": "1", "exit_price": "2", "quantity": "3"}),
    (unrealized_pnl, {"position_quantity": "1", "avg_entry_price": "2", "mark_price": "3"}),
    (apply_fill, {"state": FLAT, "side": "buy", "quantity": "1", "price": "2"}),
]
MONEY_ARGUMENTS = [
    (function, kwargs, name)
    for function, kwargs in CALLS
    for name, value in kwargs.items()
    if name not in ("rounding", "places", "schedule", "liquidity", "side", "state")
]
BAD_INPUTS = [
    (1.5, TypeError, "decimal string.*got float 1.5"),
    (Decimal("NaN"), ValueError, "finite"),
    (Decimal("Infinity"), ValueError, "finite"),
    (Decimal("-Infinity"), ValueError, "finite"),
    (Decimal("sNaN"), ValueError, "finite"),
    ("1e5", ValueError, "no exponent"),
    ("1E-3", ValueError, "no exponent"),
    (" 1.0", ValueError, "spaces"),
    ("", ValueError, "decimal string"),
    ("+1", ValueError, "decimal string"),
    ("1.", ValueError, "decimal string"),
    ("1\n", ValueError, "decimal string"),
    (True, TypeError, "got bool True"),
    (None, TypeError, "got NoneType None"),
    ([1], TypeError, "got list"),
    ("1" + "0" * 40, ValueError, "41 digits before the decimal point"),
    ("0." + "0" * 40 + "1", ValueError, "41 decimal places"),
]


def _label(case) -> str:
    return f"{case[0].__name__}-{case[2]}"


@pytest.mark.parametrize("call", MONEY_ARGUMENTS, ids=_label)
@pytest.mark.parametrize(("bad", "error", "message"), BAD_INPUTS, ids=repr)
def test_every_money_argument_refuses_bad_input_by_name(call, bad, error, message):
    function, kwargs, name = call
    before = _counts()
    with pytest.raises(error, match=f"^{name} .*{message}"):
        function(**{**kwargs, name: bad})
    assert _counts() == before  # refused input is not counted as an operation


def test_the_float_message_tells_what_to_send():
    with pytest.raises(TypeError) as caught:
        to_decimal(1.5, "price")
    assert str(caught.value).startswith(
        'price must be a decimal string like "123.45", got float 1.5'
    )
    assert "send the amount as a string" in str(caught.value)


@pytest.mark.parametrize(
    ("function", "kwargs", "name"),
    [
        (align_price, {"price": "1", "tick_size": "0", "rounding": "down"}, "tick_size"),
        (align_price, {"price": "1", "tick_size": "-0.01", "rounding": "down"}, "tick_size"),
        (align_quantity, {"quantity": "1", "lot_step": "0", "rounding": "down"}, "lot_step"),
        (is_aligned, {"value": "1", "step": "0"}, "step"),
    ],
)
def test_steps_must_be_positive(function, kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} must be greater than 0"):
        function(**kwargs)


def test_rounding_and_places_refusals():
    with pytest.raises(ValueError, match="rounding must be a Rounding or one of down, up"):
        align_price("1", "0.1", "nearest")
    with pytest.raises(TypeError, match="places must be an int"):
        bankers_round("1", True)
    with pytest.raises(ValueError, match="places must be between 0 and 40"):
        bankers_round("1", -1)


def test_decimal_string_is_plain_notation():
    assert str(Decimal("0.00000001")) == "1E-8"  # why decimal_string exists
    assert decimal_string(Decimal("0.00000001")) == "0.00000001"
    assert decimal_string(align_quantity("0.000000014", "0.00000001", "down")) == "0.00000001"
    with pytest.raises(TypeError, match="finite Decimal"):
        decimal_string(1.5)
    with pytest.raises(TypeError, match="finite Decimal"):
        decimal_string(Decimal("NaN"))


def test_accepted_inputs():
    assert to_decimal("-12.50", "x") == Decimal("-12.50")
    assert to_decimal(7, "x") == Decimal(7)
    assert str(to_decimal(Decimal("1E+2"), "x")) == "100"  # never exponent notation


# --- context and metrics -------------------------------------------------------------------


def test_results_do_not_depend_on_the_callers_decimal_context():
    wide = "12345678901234567890.123456789"
    with localcontext(Context(prec=3)):
        assert str(realized_pnl("long", "1", wide, "1000")) == "12345678901234567889123.456789000"
        schedule = FeeSchedule(maker_rate="0.000123", taker_rate="0.1", minimum_fee="0")
        assert str(commission(wide, schedule, "maker")) == "1518518504851851.850485185185047"


def _counts() -> dict[str, float]:
    return {
        kind: REGISTRY.get_sample_value(MONEY_OPERATIONS, {"kind": kind})
        for kind in MONEY_OPERATION_KINDS
    }


@pytest.mark.parametrize(
    ("kind", "call"),
    [
        ("align_price", lambda: align_price("1.23", "0.1", Rounding.DOWN)),
        ("align_quantity", lambda: align_quantity("1.23", "0.1", Rounding.UP)),
        ("round", lambda: bankers_round("1.235", 2)),
        ("commission", lambda: commission("100", SCHEDULE, "taker")),
        ("realized_pnl", lambda: realized_pnl("short", "2", "1", "1")),
        ("unrealized_pnl", lambda: unrealized_pnl("1", "2", "3")),
        ("average_price", lambda: weighted_average_price([("1", "2")])),
        ("apply_fill", lambda: apply_fill(FLAT, "buy", "1", "2")),
    ],
)
def test_each_operation_counts_once_under_its_kind(kind, call):
    before = _counts()
    call()
    after = _counts()
    assert after[kind] == before[kind] + 1
    assert {k: v for k, v in after.items() if k != kind} == {
        k: v for k, v in before.items() if k != kind
    }


def test_every_kind_has_a_prebound_counter():
    assert set(money._COUNTERS) == set(MONEY_OPERATION_KINDS)
