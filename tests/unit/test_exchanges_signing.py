"""Signing, client order ids, wire decimals and secret handling of the Binance client."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from app.exchanges import settings
from app.exchanges.binance import BinanceClient, client_order_id, sign, wire_decimal
from app.exchanges.credentials import REPO_ROOT, Secret, load_secret

# The HMAC example of Binance's API docs for SIGNED endpoints.
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_QUERY = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
DOC_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


def test_signature_matches_binance_documented_example():
    assert sign(DOC_SECRET, DOC_QUERY) == DOC_SIGNATURE
    assert sign(DOC_SECRET, DOC_QUERY.replace("1499827319559", "1499827319560")) != DOC_SIGNATURE


def test_client_order_id_is_deterministic_and_valid_for_binance():
    cid = client_order_id("order-7f3a")
    assert cid == client_order_id("order-7f3a")
    assert cid != client_order_id("order-7f3b")
    assert re.fullmatch(r"[a-zA-Z0-9-_]{1,36}", cid)
    assert len(cid) == 36 and cid.startswith(settings.CLIENT_ORDER_ID_PREFIX)
    # Long and non-ASCII keys still fit: the id is a hash, not the key.
    assert len(client_order_id("ключ-" + "x" * 500)) == 36
    with pytest.raises(ValueError, match="non-empty"):
        client_order_id("")


def test_wire_decimal_refuses_floats_and_non_positive():
    assert wire_decimal(Decimal("0.00100000"), "quantity") == "0.00100000"
    assert wire_decimal(Decimal("1E+2"), "price") == "100"
    with pytest.raises(TypeError, match="never a float"):
        wire_decimal(0.1, "quantity")
    for bad in (Decimal("0"), Decimal("-1"), Decimal("NaN"), Decimal("Infinity")):
        with pytest.raises(ValueError, match="positive finite"):
            wire_decimal(bad, "price")


def test_repr_never_shows_keys():
    client = BinanceClient(api_key=Secret("my-api-key-123"), api_secret=Secret("my-secret-456"))
    for text in (repr(client), str(client), repr(client._api_key), f"{client._api_secret}"):
        assert "my-api-key-123" not in text and "my-secret-456" not in text
    assert "***" in repr(client)


def test_client_refuses_plain_string_keys():
    with pytest.raises(TypeError, match="Secret"):
        BinanceClient(api_key="plain", api_secret=Secret("s"))


def test_load_secret_from_env_and_file(tmp_path):
    assert load_secret("K", {"K": "v1"}).reveal() == "v1"
    secret_file = tmp_path / "binance.key"
    secret_file.write_text("v2\n")
    assert load_secret("K", {"K_FILE": str(secret_file)}).reveal() == "v2"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "is not set"),
        ({"K": "a", "K_FILE": "/etc/x"}, "only one"),
        ({"K_FILE": str(REPO_ROOT / "pyproject.toml")}, "inside the repository"),
        ({"K_FILE": "/nonexistent/spark.key"}, "cannot be read"),
    ],
)
def test_load_secret_refusals(environ, message):
    with pytest.raises(ValueError, match=message):
        load_secret("K", environ)


def test_from_env_builds_a_keyed_client():
    environ = {
        settings.BINANCE_API_KEY_ENV: "key-from-env-91",
        settings.BINANCE_API_SECRET_ENV: "secret-from-env-92",
    }
    client = BinanceClient.from_env(environ)
    assert client._api_key == Secret("key-from-env-91")
    assert "from-env" not in repr(client)
