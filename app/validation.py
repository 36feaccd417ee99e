"""Strict parsing of request bodies: JSON in, typed values out, or a clear 400.

Money arrives as decimal strings. A JSON number where money belongs (float, integer or
exponent form) is refused rather than converted: once a float has touched a price, the
digits the client meant are gone.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any

from app.instruments import Instrument

DECIMAL_STRING = re.compile(r"^\d{1,20}(\.\d{1,18})?$")
ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
STRATEGY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# IETF httpapi Idempotency-Key: an sf-string; we also accept the bare token most clients send.
IDEMPOTENCY_KEY = re.compile(r'^"?([A-Za-z0-9._:~+/=-]{8,128})"?$')


class RequestError(ValueError):
    """A client error: the HTTP status, a stable error code and a message for a person."""

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


class _JsonNumber(str):
    """A JSON number kept as its source text, so validation can name it and refuse it."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise RequestError(400, "malformed_json", f"field {key!r} appears twice")
        obj[key] = value
    return obj


def _refuse_constant(name: str) -> Any:
    raise RequestError(400, "malformed_json", f"{name} is not valid JSON")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        value = json.loads(
            text,
            parse_float=_JsonNumber,
            parse_int=_JsonNumber,
            parse_constant=_refuse_constant,
            object_pairs_hook=_no_duplicates,
        )
    except UnicodeDecodeError:
        raise RequestError(400, "malformed_json", "body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise RequestError(
            400, "malformed_json", f"body is not valid JSON: {exc.msg} at char {exc.pos}"
        ) from None
    if not isinstance(value, dict):
        raise RequestError(400, "malformed_json", "body must be a JSON object")
    return value


def decimal_field(body: dict[str, Any], name: str) -> Decimal:
    """A required positive decimal string in plain notation, e.g. "0.015"."""
    if name not in body:
        raise RequestError(400, "missing_field", f"{name} is required (a decimal string)")
    value = body[name]
    if isinstance(value, _JsonNumber):
        raise RequestError(
            400,
            "money_must_be_string",
            f'{name} must be a decimal string like "{value}", not a JSON number: '
            "numbers lose digits in transit",
            field=name,
        )
    if not isinstance(value, str) or not DECIMAL_STRING.match(value):
        raise RequestError(
            400,
            "invalid_decimal",
            f'{name} must be a decimal string in plain notation like "12.50" '
            f"(no sign, exponent or spaces; at most 18 decimals), got {value!r}",
            field=name,
        )
    result = Decimal(value)
    if result <= 0:
        raise RequestError(400, "not_positive", f"{name} must be greater than zero", field=name)
    return result


def string_field(body: dict[str, Any], name: str, pattern: re.Pattern, *, required: bool = True):
    value = body.get(name)
    if value is None:
        if required:
            raise RequestError(400, "missing_field", f"{name} is required")
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise RequestError(
            400, "invalid_field", f"{name} must match {pattern.pattern}, got {value!r}", field=name
        )
    return value


@dataclass(frozen=True)
class OrderRequest:
    account_id: str
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    strategy: str | None
    liquidity: str

    def fingerprint_fields(self) -> dict[str, str | None]:
        """Canonical form for the idempotency fingerprint: "1.0" and "1.00" are one order."""
        return {
            "account_id": self.account_id,
            "symbol": self.symbol,
            "side": self.side,
            "quantity": _canonical(self.quantity),
            "price": _canonical(self.price),
            "strategy": self.strategy,
            "liquidity": self.liquidity,
        }


ORDER_FIELDS = {"account_id", "symbol", "side", "quantity", "price", "strategy", "liquidity"}


def parse_order(raw: bytes, instruments: dict[str, Instrument]) -> OrderRequest:
    body = parse_json_object(raw)
    unknown = sorted(set(body) - ORDER_FIELDS)
    if unknown:
        raise RequestError(
            400,
            "unknown_fields",
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(ORDER_FIELDS))}",
        )
    account_id = string_field(body, "account_id", ACCOUNT_ID)
    symbol = body.get("symbol")
    if not isinstance(symbol, str):
        raise RequestError(400, "missing_field", 'symbol is required, e.g. "BTCUSDT"')
    if symbol not in instruments:
        raise RequestError(
            400,
            "unknown_symbol",
            f"unknown symbol {symbol!r}; tradable: {', '.join(sorted(instruments))}",
        )
    side = body.get("side")
    if side not in ("buy", "sell"):
        raise RequestError(400, "invalid_field", f'side must be "buy" or "sell", got {side!r}')
    liquidity = body.get("liquidity", "taker")
    if liquidity not in ("maker", "taker"):
        raise RequestError(
            400, "invalid_field", f'liquidity must be "maker" or "taker", got {liquidity!r}'
        )
    quantity = decimal_field(body, "quantity")
    price = decimal_field(body, "price")
    instrument = instruments[symbol]
    _check_step("price", price, instrument.tick_size, "tick size")
    _check_step("quantity", quantity, instrument.lot_step, "lot step")
    if quantity < instrument.min_quantity:
        raise RequestError(
            400,
            "below_minimum",
            f"quantity {quantity} is below the minimum {instrument.min_quantity} for {symbol}",
        )
    strategy = string_field(body, "strategy", STRATEGY, required=False)
    return OrderRequest(account_id, symbol, side, quantity, price, strategy, liquidity)


def _check_step(name: str, value: Decimal, step: Decimal, what: str) -> None:
    if value % step != 0:
        below = (value // step) * step
        raise RequestError(
            400,
            "off_step",
            f"{name} {value} is not a multiple of the {what} {step}; "
            f"nearest valid values: {below} or {below + step}",
            field=name,
        )


def parse_idempotency_key(header: str | None) -> str:
    if header is None or header == "":
        raise RequestError(
            400,
            "idempotency_key_missing",
            "POST /orders needs an Idempotency-Key header (8-128 characters of "
            "A-Z a-z 0-9 . _ : ~ + / = -; a UUID is a good choice)",
        )
    match = IDEMPOTENCY_KEY.match(header.strip())
    if not match:
        raise RequestError(
            400,
            "idempotency_key_malformed",
            "Idempotency-Key must be 8-128 characters of A-Z a-z 0-9 . _ : ~ + / = - "
            "(optionally in double quotes); a UUID is a good choice",
        )
    return match.group(1)


def parse_uuid(value: str, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise RequestError(400, "invalid_id", f"{name} must be a UUID, got {value!r}") from None


# normalize() rounds to the context's precision; the default context has only 28 digits.
_WIDE = Context(prec=200)


def _canonical(value: Decimal) -> str:
    return format(value.normalize(_WIDE), "f")


def format_decimal(value: Decimal) -> str:
    """Money out: plain notation, no trailing zeros, never an exponent."""
    text = format(value.normalize(_WIDE), "f")
    return "0" if text in ("-0", "0") else text
