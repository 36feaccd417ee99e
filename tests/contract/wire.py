"""Helpers for writing pact bodies that keep money exact.

Decimal strings are matched with a regex on a string (Binance's money), never as numbers.
Where a provider really sends JSON numbers (BTCTurk's ticker), the example is written
into the pact from a Decimal's own digits: the body is serialised here with each Decimal
replaced by its literal text, so no float is involved on our side either.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from pact import match
from pact.match.matcher import IntegrationJSONEncoder

DECIMAL_STRING = r"^\d+(\.\d+)?$"
SIGNATURE = r"^[0-9a-f]{64}$"
MILLIS = r"^\d{13}$"
CLIENT_ORDER_ID = r"^spk-[0-9a-f]{32}$"


def decimal_string(example: str):
    """A JSON string holding a plain decimal, like Binance's "67123.45000000"."""
    assert isinstance(example, str)
    return match.regex(example, regex=DECIMAL_STRING)


def json_number(example: str):
    """A JSON number (any number matches) whose example is written with these exact digits."""
    return match.number(Decimal(example))


class _ExactEncoder(IntegrationJSONEncoder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decimals: list[Decimal] = []

    def default(self, o: Any) -> Any:
        if isinstance(o, Decimal):
            self.decimals.append(o)
            return f"@@decimal-{len(self.decimals) - 1}@@"
        return super().default(o)


def body_text(body: Any) -> str:
    """Integration JSON for `body` with Decimals written as bare JSON numbers."""
    encoder = _ExactEncoder()
    text = encoder.encode(body)
    for i, value in enumerate(encoder.decimals):
        text = text.replace(json.dumps(f"@@decimal-{i}@@"), format(value, "f"))
    json.loads(text)  # still valid JSON
    return text
