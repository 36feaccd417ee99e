"""Client input as `Decimal`: the one gate every money or quantity value passes.

`to_decimal` refuses floats (binary rounding never reaches a price or a balance), bools,
NaN, infinities, exponent notation and values beyond the bounds (`MAX_INTEGER_DIGITS` before
the point, `MAX_DECIMAL_PLACES` after it), naming the argument; `decimal_string` writes a
result back in plain notation. app.money's arithmetic and the exchange clients' parsers use
them; app.money keeps the arithmetic itself.
"""

from __future__ import annotations

import reprlib
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)

from app.vocabulary import SIGNED_DECIMAL as _PLAIN_DECIMAL

MAX_INTEGER_DIGITS = 40
MAX_DECIMAL_PLACES = 40
# Bounded inputs have at most 80 digits, so products of two have at most 160: 200 is exact.
PRECISION = 200
EXACT = Context(
    prec=PRECISION,
    rounding=ROUND_HALF_EVEN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)
_ONE = Decimal(1)

# ASCII digits only, applied with fullmatch (app.vocabulary says why).
_LIKE = 'a decimal string like "123.45"'


def to_decimal(value, name: str) -> Decimal:
    """Return `value` as a finite `Decimal`, or refuse it with an error naming `name`.

    Accepted: `Decimal`, `int` (not `bool`), and `str` in plain notation (`-?digits[.digits]`).
    Refused with `TypeError`: float, bool, None and any other type. Refused with `ValueError`:
    NaN and infinities, strings in exponent notation or with spaces, "+", or a bare ".",
    and values beyond the bounds (`MAX_INTEGER_DIGITS`, `MAX_DECIMAL_PLACES`).
    """
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{name} must be a finite number, got Decimal {value}")
        result = value
    elif isinstance(value, str):
        if _PLAIN_DECIMAL.fullmatch(value) is None:
            raise ValueError(
                f"{name} must be {_LIKE} (digits, an optional leading '-' and one '.'; "
                f"no exponent, spaces or '+'), got {reprlib.repr(value)}"
            )
        result = Decimal(value)
    elif isinstance(value, bool):
        raise TypeError(f"{name} must be {_LIKE} or an int, got bool {value}")
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        raise TypeError(
            f"{name} must be {_LIKE}, got float {value!r}: a float cannot hold most decimal "
            "amounts exactly, so send the amount as a string"
        )
    else:
        raise TypeError(
            f"{name} must be {_LIKE}, a Decimal or an int, "
            f"got {type(value).__name__} {reprlib.repr(value)}"
        )
    exponent = result.as_tuple().exponent
    if exponent < -MAX_DECIMAL_PLACES:
        raise ValueError(
            f"{name} has {-exponent} decimal places; at most {MAX_DECIMAL_PLACES} are accepted"
        )
    if result.adjusted() >= MAX_INTEGER_DIGITS:
        raise ValueError(
            f"{name} has {result.adjusted() + 1} digits before the decimal point; "
            f"at most {MAX_INTEGER_DIGITS} are accepted"
        )
    if exponent > 0:  # Decimal("1E+2") -> 100: no result ever carries a positive exponent
        result = result.quantize(_ONE, context=EXACT)
    return result


def decimal_string(value: Decimal) -> str:
    """`value` in plain notation ("0.00000001", never "1E-8"): the form JSON and SQL carry."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise TypeError(f"decimal_string needs a finite Decimal, got {reprlib.repr(value)}")
    return format(value, "f")


def positive(value, name: str) -> Decimal:
    result = to_decimal(value, name)
    if result <= 0:
        raise ValueError(f"{name} must be greater than 0, got {result}")
    return result


def choice(value, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {reprlib.repr(value)}")
    return value
