from decimal import Decimal as D

import pytest

from app.config import RiskLimits
from app.risk import check_order

LIMITS = RiskLimits(max_notional=D("1000"), max_position=D("2"), price_band=D("0.05"))


def check(side="buy", qty="1", price="100", position="0", ref="100", halted=None):
    return check_order(
        side=side, quantity=D(qty), price=D(price), current_position=D(position),
        reference_price=D(ref), limits=LIMITS, halted_by=halted,
    )  # fmt: skip


def test_order_within_limits_passes():
    assert check() is None


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"halted": "global: maintenance"}, "kill_switch"),
        ({"qty": "1.5", "price": "700", "ref": "700"}, "max_notional"),
        ({"qty": "1.5", "position": "1"}, "max_position"),
        ({"side": "sell", "qty": "1.5", "position": "-1"}, "max_position"),
        ({"price": "105.01"}, "price_band"),
        ({"price": "94.99"}, "price_band"),
    ],
)
def test_each_rule_blocks_and_names_itself(kwargs, rule):
    block = check(**kwargs)
    assert block is not None and block.rule == rule and block.message


def test_band_edges_are_inclusive():
    assert check(price="105") is None and check(price="95") is None


def test_kill_switch_wins_over_other_rules():
    assert check(qty="100", price="1000", halted="global: x").rule == "kill_switch"


def test_reducing_an_oversized_position_is_allowed():
    assert check(side="sell", qty="1", position="5") is None
    assert check(side="buy", qty="1", position="5").rule == "max_position"
