"""Strict parsing of request bodies: JSON in, typed values out, or a clear 400.

Money arrives as decimal strings. A JSON number where money belongs (float, integer or
exponent form) is refused rather than converted: once a float has touched a price, the
digits the client meant are gone. What each field may hold is spelled once, in
app.vocabulary; the JSON itself is parsed (depth-bounded, NUL and surrogates refused) by
app.edge.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any

from app import vocabulary as vocab
from app.edge import JsonNumber, RequestError, parse_json
from app.instruments import Instrument
from app.vocabulary import Term, shown


def parse_json_object(raw: bytes) -> dict[str, Any]:
    value = parse_json(raw)
    if not isinstance(value, dict):
        raise RequestError(400, "malformed_json", "body must be a JSON object")
    return value


def decimal_field(body: dict[str, Any], name: str) -> Decimal:
    """A required positive decimal string in plain notation, e.g. "0.015"."""
    if name not in body:
        raise RequestError(400, "missing_field", f"{name} is required (a decimal string)")
    value = body[name]
    if isinstance(value, JsonNumber):
        like = value.text if vocab.DECIMAL.matches(value.text) else "12.50"
        raise RequestError(
            400,
            "money_must_be_string",
            f'{name} must be a decimal string like "{like}", not a JSON number: '
            "numbers lose digits in transit",
            field=name,
        )
    if not vocab.DECIMAL.matches(value):
        raise RequestError(
            400,
            "invalid_decimal",
            f"{name} must be {vocab.DECIMAL.spelled}; got {shown(value)}",
            field=name,
        )
    result = Decimal(value)
    if result <= 0:
        raise RequestError(400, "not_positive", f"{name} must be greater than zero", field=name)
    return result


def string_field(body: dict[str, Any], name: str, term: Term, *, required: bool = True):
    value = body.get(name)
    if value is None:
        if required:
            raise RequestError(400, "missing_field", f"{name} is required ({term.spelled})")
        return None
    if not term.matches(value):
        raise RequestError(
            400, "invalid_field", f"{name} must be {term.spelled}; got {shown(value)}", field=name
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
    _refuse_unknown_fields(body)
    account_id = string_field(body, "account_id", vocab.ACCOUNT_ID)
    symbol = string_field(body, "symbol", vocab.SYMBOL)
    if symbol not in instruments:
        raise RequestError(
            400,
            "unknown_symbol",
            f"unknown symbol {shown(symbol)}; tradable: {', '.join(sorted(instruments))}",
            field="symbol",
        )
    side = body.get("side")
    if side not in ("buy", "sell"):
        raise RequestError(
            400, "invalid_field", f'side must be "buy" or "sell", got {shown(side)}', field="side"
        )
    liquidity = body.get("liquidity", "taker")
    if liquidity not in ("maker", "taker"):
        raise RequestError(
            400,
            "invalid_field",
            f'liquidity must be "maker" or "taker", got {shown(liquidity)}',
            field="liquidity",
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
            field="quantity",
        )
    strategy = string_field(body, "strategy", vocab.STRATEGY, required=False)
    return OrderRequest(account_id, symbol, side, quantity, price, strategy, liquidity)


def _refuse_unknown_fields(body: dict[str, Any]) -> None:
    unknown = sorted(set(body) - ORDER_FIELDS)
    if not unknown:
        return
    # Names are repeated back only when they look like field names ("pricee"); anything
    # else a client sent as a name is counted, never echoed.
    named = [name for name in unknown if vocab.FIELD_NAME.matches(name)][:10]
    others = len(unknown) - len(named)
    listed = ", ".join(named)
    if others:
        listed += f"{' and ' if named else ''}{others} other name(s) that are not field names"
    raise RequestError(
        400,
        "unknown_fields",
        f"unknown field(s): {listed}; allowed: {', '.join(sorted(ORDER_FIELDS))}",
    )


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


def parse_idempotency_key(headers: list[str]) -> str:
    """The key from the request's Idempotency-Key header lines (exactly one is allowed)."""
    if len(headers) > 1:
        raise RequestError(
            400,
            "idempotency_key_repeated",
            f"send one Idempotency-Key header; this request has {len(headers)}",
        )
    if not headers or headers[0] == "":
        raise RequestError(
            400,
            "idempotency_key_missing",
            f"POST /orders needs an Idempotency-Key header ({vocab.IDEMPOTENCY_KEY.spelled})",
        )
    # Only optional whitespace (SP, HTAB) around a field value; str.strip() takes more.
    match = vocab.IDEMPOTENCY_KEY.pattern.fullmatch(headers[0].strip(" \t"))
    if match is None:
        raise RequestError(
            400,
            "idempotency_key_malformed",
            f"Idempotency-Key must be {vocab.IDEMPOTENCY_KEY.spelled}",
        )
    return match.group(1) or match.group(2)


def parse_uuid(value: str, name: str) -> uuid.UUID:
    # uuid.UUID() alone also takes braces, "urn:uuid:", no dashes, "_" and non-ASCII digits.
    if not vocab.UUID.matches(value):
        raise RequestError(
            400, "invalid_id", f"{name} must be {vocab.UUID.spelled}, got {shown(value)}"
        )
    return uuid.UUID(value)


# normalize() rounds to the context's precision; the default context has only 28 digits.
_WIDE = Context(prec=200)


def _canonical(value: Decimal) -> str:
    return format(value.normalize(_WIDE), "f")


def format_decimal(value: Decimal) -> str:
    """Money out: plain notation, no trailing zeros, never an exponent."""
    text = format(value.normalize(_WIDE), "f")
    return "0" if text in ("-0", "0") else text
