"""What a client address is counted as, and which limit refuses a request (pure logic)."""

from __future__ import annotations

import pytest

from app import ratelimit


@pytest.mark.parametrize(
    ("addr", "client"),
    [("203.0.113.9", "203.0.113.9"), ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
     ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
     ("::ffff:198.51.100.7", "198.51.100.7"), (None, None)],
)  # fmt: skip
def test_client_of(addr, client):
    assert ratelimit.client_of(addr) == client


def test_the_key_limit_is_named_first_then_the_address():
    assert ratelimit.over(3, 3, 10, 10) is None
    assert ratelimit.over(4, 3, 11, 10) == "api_key"
    assert ratelimit.over(3, 3, 11, 10) == "client_addr"


def test_a_refusal_says_which_limit_and_when_to_come_back():
    exc = ratelimit.refused("client_addr")
    assert (exc.status, exc.code, exc.headers) == (429, "rate_limited", {"retry-after": "1"})
    assert "address" in exc.message
