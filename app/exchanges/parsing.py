"""Strict parsing of exchange responses into dataclasses with Decimal money fields.

Binance sends every price and quantity as a JSON string in plain decimal notation
("67123.45000000"); a JSON number there is a contract break (a float has already lost
digits by the time we see it), so it is refused with MalformedResponse naming the field.

BTCTurk's public endpoints send ticker prices as JSON numbers (`"last": 47500`,
`"volume": 304.41`) and order-book levels as strings. Its bodies are decoded with
`json.loads(text, parse_float=Decimal)`, so a number with a fraction arrives as a Decimal
built from its exact digits and an integer as an int; no float ever exists. Those fields
accept Decimal, int or a decimal string (see `number_field`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from app.decimals import to_decimal
from app.exchanges.errors import MalformedResponse


def load_json(exchange: str, text: str, content_type: str, *, decimals: bool = False) -> Any:
    """Decode a response body; HTML pages and invalid JSON become MalformedResponse.

    With `decimals`, JSON numbers with a fraction decode to Decimal instead of float.
    """
    head = text.lstrip()[:200].lower()
    if "html" in content_type.lower() or head.startswith(("<!doctype", "<html")):
        raise MalformedResponse(
            exchange, f"got an HTML page instead of JSON (first bytes: {text[:80]!r})"
        )
    try:
        if decimals:
            return json.loads(text, parse_float=Decimal)
        return json.loads(text)
    except ValueError as exc:
        raise MalformedResponse(exchange, f"invalid JSON: {exc} (body: {text[:80]!r})") from exc


def _require(exchange: str, obj: Any, name: str) -> Any:
    if not isinstance(obj, dict):
        raise MalformedResponse(exchange, f"expected a JSON object holding {name!r}")
    if name not in obj or obj[name] is None:
        raise MalformedResponse(exchange, f"missing field {name!r}")
    return obj[name]


def decimal_field(exchange: str, obj: Any, name: str) -> Decimal:
    """A money field that must be a JSON string in plain decimal notation (Binance)."""
    value = _require(exchange, obj, name)
    if not isinstance(value, str):
        kind = "float" if isinstance(value, (float, Decimal)) else type(value).__name__
        raise MalformedResponse(
            exchange, f"field {name!r} must be a decimal string, got JSON {kind} {value!r}"
        )
    return _money(exchange, value, name)


def number_field(exchange: str, obj: Any, name: str) -> Decimal:
    """A money field sent as a JSON number (BTCTurk), decoded with parse_float=Decimal."""
    value = _require(exchange, obj, name)
    if isinstance(value, float):
        # Only possible if the body was decoded without parse_float=Decimal: a bug, loudly.
        raise MalformedResponse(exchange, f"field {name!r} reached the parser as a float")
    return _money(exchange, value, name)


def _money(exchange: str, value: Any, name: str) -> Decimal:
    try:
        return to_decimal(value, name)
    except (TypeError, ValueError) as exc:
        raise MalformedResponse(exchange, f"field {name!r}: {exc}") from exc


def str_field(exchange: str, obj: Any, name: str) -> str:
    value = _require(exchange, obj, name)
    if not isinstance(value, str):
        raise MalformedResponse(exchange, f"field {name!r} must be a string, got {value!r}")
    return value


def int_field(exchange: str, obj: Any, name: str) -> int:
    value = _require(exchange, obj, name)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)  # BTCTurk's order-book timestamp is sent as 1543836448605.0
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedResponse(exchange, f"field {name!r} must be an integer, got {value!r}")
    return value


def bool_field(exchange: str, obj: Any, name: str) -> bool:
    value = _require(exchange, obj, name)
    if not isinstance(value, bool):
        raise MalformedResponse(exchange, f"field {name!r} must be true/false, got {value!r}")
    return value


def list_field(exchange: str, obj: Any, name: str) -> list:
    value = _require(exchange, obj, name)
    if not isinstance(value, list):
        raise MalformedResponse(exchange, f"field {name!r} must be a list, got {value!r}")
    return value


# --- Binance -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TickerPrice:
    symbol: str
    price: Decimal


@dataclass(frozen=True)
class Balance:
    asset: str
    free: Decimal
    locked: Decimal


@dataclass(frozen=True)
class Account:
    can_trade: bool
    update_time: int
    balances: tuple[Balance, ...]


@dataclass(frozen=True)
class Order:
    symbol: str
    order_id: int
    client_order_id: str
    side: str
    type: str
    status: str
    price: Decimal
    orig_qty: Decimal
    executed_qty: Decimal


def parse_ticker_price(exchange: str, body: Any) -> TickerPrice:
    return TickerPrice(
        symbol=str_field(exchange, body, "symbol"),
        price=decimal_field(exchange, body, "price"),
    )


def parse_account(exchange: str, body: Any) -> Account:
    balances = []
    for i, item in enumerate(list_field(exchange, body, "balances")):
        if not isinstance(item, dict):
            raise MalformedResponse(exchange, f"balances[{i}] must be an object, got {item!r}")
        balances.append(
            Balance(
                asset=str_field(exchange, item, "asset"),
                free=decimal_field(exchange, item, "free"),
                locked=decimal_field(exchange, item, "locked"),
            )
        )
    return Account(
        can_trade=bool_field(exchange, body, "canTrade"),
        update_time=int_field(exchange, body, "updateTime"),
        balances=tuple(balances),
    )


def parse_order(exchange: str, body: Any) -> Order:
    return Order(
        symbol=str_field(exchange, body, "symbol"),
        order_id=int_field(exchange, body, "orderId"),
        client_order_id=str_field(exchange, body, "clientOrderId"),
        side=str_field(exchange, body, "side"),
        type=str_field(exchange, body, "type"),
        status=str_field(exchange, body, "status"),
        price=decimal_field(exchange, body, "price"),
        orig_qty=decimal_field(exchange, body, "origQty"),
        executed_qty=decimal_field(exchange, body, "executedQty"),
    )


def parse_server_time(exchange: str, body: Any) -> int:
    return int_field(exchange, body, "serverTime")


# --- BTCTurk -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PairTicker:
    pair: str
    timestamp: int
    last: Decimal
    bid: Decimal
    ask: Decimal
    high: Decimal
    low: Decimal
    volume: Decimal


@dataclass(frozen=True)
class OrderBook:
    timestamp: int
    bids: tuple[tuple[Decimal, Decimal], ...]  # (price, quantity), best first
    asks: tuple[tuple[Decimal, Decimal], ...]


def parse_pair_ticker(exchange: str, item: Any) -> PairTicker:
    return PairTicker(
        pair=str_field(exchange, item, "pair"),
        timestamp=int_field(exchange, item, "timestamp"),
        **{
            name: number_field(exchange, item, name)
            for name in ("last", "bid", "ask", "high", "low", "volume")
        },
    )


def _levels(exchange: str, data: Any, side: str) -> tuple[tuple[Decimal, Decimal], ...]:
    levels = []
    for i, level in enumerate(list_field(exchange, data, side)):
        if not isinstance(level, list) or len(level) != 2:
            raise MalformedResponse(
                exchange, f"{side}[{i}] must be a [price, quantity] pair, got {level!r}"
            )
        price_name, qty_name = f"{side}[{i}].price", f"{side}[{i}].quantity"
        named = {price_name: level[0], qty_name: level[1]}
        levels.append(
            (decimal_field(exchange, named, price_name), decimal_field(exchange, named, qty_name))
        )
    return tuple(levels)


def parse_order_book(exchange: str, data: Any) -> OrderBook:
    return OrderBook(
        timestamp=int_field(exchange, data, "timestamp"),
        bids=_levels(exchange, data, "bids"),
        asks=_levels(exchange, data, "asks"),
    )
