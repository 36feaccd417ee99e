"""The one vocabulary for what clients send: identifiers, symbols, strategies, money, keys.

Every term is ASCII only, with explicit character classes and lengths, and is applied with
`fullmatch`. Never `\\d` (it admits other scripts' digits: "٦٥٠٠٠" is 65000 to `Decimal`)
and never `$` (it matches before a final newline: "s1\\n" would be a second strategy).

`shown` is the one way a client's value goes into a message: escaped to ASCII and cut
short, so a lone surrogate, a NUL or a 10 KB field name cannot break or bloat the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    """A kind of value the API accepts, and how to say it to a person."""

    pattern: re.Pattern[str]
    spelled: str  # for messages: "1-64 characters of A-Z a-z 0-9 _ -"

    def matches(self, value: object) -> bool:
        return isinstance(value, str) and self.pattern.fullmatch(value) is not None


def _term(pattern: str, spelled: str) -> Term:
    return Term(re.compile(pattern), spelled)


ACCOUNT_ID = _term(r"[A-Za-z0-9_-]{1,64}", "1-64 characters of A-Z a-z 0-9 _ -")
STRATEGY = _term(r"[A-Za-z0-9_.:-]{1,64}", "1-64 characters of A-Z a-z 0-9 _ . : -")
SYMBOL = _term(r"[A-Z0-9]{2,20}", '2-20 characters of A-Z 0-9, e.g. "BTCUSDT"')
# Money in the API: numeric(38,18) holds 20 digits before the point and 18 after.
DECIMAL = _term(
    r"[0-9]{1,20}(?:\.[0-9]{1,18})?",
    'a decimal string in plain notation like "12.50": ASCII digits 0-9, at most 20 before '
    "the point and 18 after, no sign, exponent, spaces or newline",
)
# Money in app.money's functions: signed, any length (bounded there by digit counts).
SIGNED_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_KEY_CHARS = r"[A-Za-z0-9._:~+/=-]{8,128}"
# IETF httpapi Idempotency-Key: an sf-string; the bare token most clients send is accepted.
IDEMPOTENCY_KEY = _term(
    rf'"({_KEY_CHARS})"|({_KEY_CHARS})',
    "8-128 characters of A-Z a-z 0-9 . _ : ~ + / = - (optionally in double quotes); "
    "a UUID is a good choice",
)
UUID = _term(
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}",
    "a UUID like 0b0e8a54-5d3c-4b1e-9a57-3f1c2d4e5f60",
)
# An API key as sent: the prefix and 43 base64url characters (256 bits).
API_KEY = _term(
    r"spk_[A-Za-z0-9_-]{43}", "spk_ followed by 43 characters of A-Z a-z 0-9 _ - (an API key)"
)
KEY_NAME = _term(r"[A-Za-z0-9_.:-]{1,64}", "1-64 characters of A-Z a-z 0-9 _ . : -")
# A page cursor of GET /positions: opaque to clients (it is the last position id seen).
CURSOR = _term(r"[1-9][0-9]{0,18}", "a cursor from next_cursor")
PAGE_LIMIT = _term(r"[1-9][0-9]{0,3}", "a whole number from 1 to 1000")
POSITION_STATUS = _term(r"open|closed|all", "open, closed or all")
CONTENT_LENGTH = _term(r"[0-9]{1,19}", "ASCII digits")
# A field name worth repeating back to the client ("pricee"); anything else is only counted.
FIELD_NAME = _term(r"[A-Za-z0-9_.-]{1,64}", "1-64 characters of A-Z a-z 0-9 _ . -")

# Refused anywhere in a query parameter, header or JSON string or key: PostgreSQL text
# cannot hold NUL, and a lone surrogate cannot be encoded as UTF-8 at all.
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")

SHOWN_LIMIT = 40


def forbidden_character(text: str) -> str | None:
    """What is wrong with `text` ("a NUL byte (U+0000)"), or None when nothing is."""
    found = _FORBIDDEN.search(text)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "a NUL byte (U+0000)"
    return f"a lone surrogate (U+{ord(char):04X}); send valid UTF-8"


def shown(value: object, limit: int = SHOWN_LIMIT) -> str:
    """`value` for a message: Python's ascii() form, at most about `limit` characters."""
    if isinstance(value, str) and len(value) > limit:
        # ascii() may make each character up to 10 long (\U0001f600): bound the form too.
        head = ascii(value[:limit])
        head = head if len(head) <= limit else head[:limit] + "..."
        return head + f" (cut; {len(value)} characters)"
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "... (cut)"


def name_for(key: str) -> str:
    """A JSON key or query parameter name as a message may show it."""
    return key if FIELD_NAME.matches(key) else shown(key)
