"""Bybit USDT-perpetual margin, liquidation and funding rules. Every expected value is worked out
by hand here from the published formula (see papertape/core/venue/margin.py), never copied from output."""
from __future__ import annotations

from decimal import Decimal as D

import pytest

from papertape.core.venue.margin import (
    DEFAULT_TIERS,
    bankruptcy_price,
    cross_breached,
    funding_payment,
    isolated_breached,
    liquidation_fill,
    maintenance_margin,
    tier_for,
)

TICK = D("0.10")  # BTCUSDT tick size


# --- tiers -------------------------------------------------------------------------------------

def test_default_tiers_are_bybit_btcusdt_first_two():
    t1, t2 = DEFAULT_TIERS
    assert (t1.limit, t1.mmr, t1.mm_deduction, t1.max_leverage) == (D("2000000"), D("0.005"), D("0"), D("100"))
    assert (t2.limit, t2.mmr, t2.mm_deduction, t2.max_leverage) == (D("2600000"), D("0.0056"), D("1200"), D("90"))
    # the deduction is what keeps MM continuous at the edge: limit1 x (mmr2 - mmr1)
    assert t2.mm_deduction == D("2000000") * (D("0.0056") - D("0.005"))


def test_tier_for_inside_and_at_boundaries():
    t1, t2 = DEFAULT_TIERS
    assert tier_for(DEFAULT_TIERS, D("0")) is t1
    assert tier_for(DEFAULT_TIERS, D("1000")) is t1
    assert tier_for(DEFAULT_TIERS, D("2000000")) is t1  # the limit itself is in the tier
    assert tier_for(DEFAULT_TIERS, D("2000000.01")) is t2
    assert tier_for(DEFAULT_TIERS, D("2600000")) is t2
    assert tier_for(DEFAULT_TIERS, D("-2500000")) is t2  # a short's signed value
    assert tier_for(tuple(reversed(DEFAULT_TIERS)), D("1000")) is t1  # order of the table is irrelevant
    with pytest.raises(ValueError):
        tier_for(DEFAULT_TIERS, D("2600000.01"))


# --- maintenance margin -------------------------------------------------------------------------

def test_maintenance_margin_tier1_tier2_and_edge():
    assert maintenance_margin(D("20000")) == D("20000") * D("0.005") - D("0") == D("100")
    assert maintenance_margin(D("2500000")) == D("2500000") * D("0.0056") - D("1200") == D("12800")
    # at the edge both tiers' formulas give the same MM
    edge = D("2000000")
    assert maintenance_margin(edge) == edge * D("0.005") == edge * D("0.0056") - D("1200") == D("10000")
    just_over = D("2000000.10")
    assert maintenance_margin(just_over) == just_over * D("0.0056") - D("1200") == D("10000.00056")


# --- bankruptcy price ---------------------------------------------------------------------------

def test_bankruptcy_price_long_and_short():
    # Bybit "Bankruptcy Price (USDT Contract)": 1 BTC long @ 10,000, 50x -> 10,000 x (1 - 2%) = 9,800
    assert bankruptcy_price("long", D("10000"), D("50")) == D("10000") * (1 - D("0.02")) == D("9800")
    assert bankruptcy_price("short", D("10000"), D("50")) == D("10000") * (1 + D("0.02")) == D("10200")
    assert bankruptcy_price("buy", D("60766.7"), D("10")) == D("60766.7") * D("0.9") == D("54690.03")
    # extra margin pushes it further away: 25 USDT over 0.5 BTC = 50 USDT of price
    assert bankruptcy_price("long", D("30000"), D("20"), D("25"), D("0.5")) == (
        D("30000") * D("0.95") - D("25") / D("0.5"))
    assert bankruptcy_price("short", D("30000"), D("20"), D("25"), D("0.5")) == D("31550")


# --- breach tests: isolated margin flips at Bybit's liquidation price (LP) -----------------------
# "Liquidation Price (USDT Contract)": long LP = entry - (IM - MM)/size - extra/size, short LP = entry + (IM - MM)/size
# + extra/size, IM = entry value / leverage. The engine never computes LP: it liquidates when isolated_breached flips,
# which these tests pin at LP and one tick on the safe side of it.

def test_isolated_breached_long_and_short_at_the_price():
    # long 1 @ 20,000, margin 400: at 19,700 margin + upnl = 400 - 300 = 100 = MM -> liquidated
    assert isolated_breached("long", D("1"), D("20000"), D("19700"), D("400"))
    assert not isolated_breached("long", D("1"), D("20000"), D("19700.1"), D("400"))
    assert isolated_breached("long", D("1"), D("20000"), D("19000"), D("400"))
    # short: at 20,300 margin + upnl = 400 - 300 = 100 = MM
    assert isolated_breached("short", D("1"), D("20000"), D("20300"), D("400"))
    assert not isolated_breached("short", D("-1"), D("20000"), D("20299.9"), D("400"))
    # with the fee to close in both margin and MM the flip does not move
    fee = D("1") * D("19600") * D("0.00055")
    assert isolated_breached("long", D("1"), D("20000"), D("19700"), D("400") + fee, close_fee=fee)
    assert not isolated_breached("long", D("1"), D("20000"), D("19700.1"), D("400") + fee, close_fee=fee)


@pytest.mark.parametrize("side,qty,entry,margin,lp,safe_step", [
    # Bybit's example: short 1 BTC @ 20,000, 50x (IM 400, MM 100), 3,000 extra: 20,000 + 300 + 3,000 = 23,300
    ("short", D("1"), D("20000"), D("400") + D("3000"), D("23300"), -TICK),
    # 50 BTC @ 50,000 = 2,500,000 (tier 2), 10x: IM 250,000, MM 2,500,000 x 0.0056 - 1200 = 12,800;
    # (IM - MM)/50 = 4,744 -> long 45,256, short 54,744 (a short's qty may come signed)
    ("long", D("50"), D("50000"), D("2500000") / D("10"), D("45256"), TICK),
    ("short", D("-50"), D("50000"), D("2500000") / D("10"), D("54744"), -TICK),
    # 1x long: LP = entry - (entry - entry x mmr) = entry x mmr = 20,000 x 0.005 = 100
    ("long", D("1"), D("20000"), D("20000"), D("100"), TICK),
    # 0.5 BTC @ 30,000, 20x, 25 extra: value 15,000, IM 750, MM 75; (IM - MM)/qty = 675/0.5 = 1,350,
    # extra/qty = 50 -> long 28,600, short 31,400
    ("long", D("0.5"), D("30000"), D("15000") / D("20") + D("25"), D("28600"), TICK),
    ("short", D("0.5"), D("30000"), D("15000") / D("20") + D("25"), D("31400"), -TICK),
])
def test_isolated_breached_flips_at_the_liquidation_price(side, qty, entry, margin, lp, safe_step):
    assert not isolated_breached(side, qty, entry, lp + safe_step, margin)  # one tick on the safe side
    assert isolated_breached(side, qty, entry, lp, margin)  # at it


def test_isolated_long_with_margin_beyond_its_value_is_never_breached():
    # 1x long 1 @ 20,000 with 200 extra: LP would be 100 - 200 = -100, so Bybit shows none
    assert not isolated_breached("long", D("1"), D("20000"), TICK, D("20000") + D("200"))


def test_cross_breached():
    assert cross_breached(D("100"), D("100"))  # MM rate exactly 100%
    assert not cross_breached(D("100.00000001"), D("100"))
    assert cross_breached(D("0"), D("10"))
    assert cross_breached(D("-5"), D("10"))
    assert not cross_breached(D("-5"), D("0"))  # no positions: nothing to liquidate


# --- liquidation fill ---------------------------------------------------------------------------

def test_liquidation_fill_isolated_at_bankruptcy():
    # long 1 @ 20,000, 50x: bankruptcy 20,000 x 0.98 = 19,600; fee 19,600 x 0.00055 = 10.78
    assert liquidation_fill("long", D("1"), D("20000"), D("50"), D("19700"), D("0.00055"), "isolated") == (
        D("19600"), D("1") * D("19600") * D("0.00055"))
    # short 2 @ 20,000, 50x: 20,400; fee 2 x 20,400 x 0.00055 = 22.44
    assert liquidation_fill("short", D("2"), D("20000"), D("50"), D("20300"), D("0.00055")) == (D("20400"), D("22.44"))
    # fee rounded half-up to 1e-8: 0.001 x 54,690.03 x 0.00055 = 0.0300795165
    price, fee = liquidation_fill("long", D("0.001"), D("60766.7"), D("10"), D("55000"), D("0.00055"))
    assert (price, fee) == (D("54690.03"), D("0.03007952"))
    # it is Bybit's estimated fee to close, which a live /v5/position/list row holds in both the position IM and
    # MM: BTCUSDT Buy 0.001 @ 60766.7, 10x, taker 0.055% -> positionIM 6.10674952, positionMM 0.33391302
    value = D("0.001") * D("60766.7")
    assert value / D("10") + fee == D("6.10674952")
    assert maintenance_margin(value) + fee == D("0.33391302")
    # extra margin: 0.5 @ 30,000, 20x, 25 extra -> 28,500 - 50 = 28,450; fee 0.5 x 28,450 x 0.00055 = 7.82375
    assert liquidation_fill("long", D("0.5"), D("30000"), D("20"), D("28600"), D("0.00055"), "isolated", D("25")) == (
        D("28450"), D("7.82375"))


def test_liquidation_fill_cross_at_mark():
    # 1 BTC at mark 19,700: 19,700 x 0.00055 = 10.835
    assert liquidation_fill("long", D("1"), D("20000"), D("50"), D("19700"), D("0.00055"), "cross") == (
        D("19700"), D("10.835"))
    assert liquidation_fill("short", D("-0.3"), D("20000"), D("50"), D("20310.5"), D("0.00055"), "cross") == (
        D("20310.5"), D("0.3") * D("20310.5") * D("0.00055"))  # 3.3512325 exactly
    with pytest.raises(ValueError):
        liquidation_fill("long", D("1"), D("20000"), D("50"), D("19700"), D("0.00055"), "portfolio")


# --- funding ------------------------------------------------------------------------------------

def test_funding_payment_long_short_and_signs():
    # value 2 x 30,000 = 60,000; x 0.01% = 6: the long pays, the short receives
    assert funding_payment(D("2"), D("30000"), D("0.0001")) == -(D("2") * D("30000") * D("0.0001")) == D("-6")
    assert funding_payment(D("-2"), D("30000"), D("0.0001")) == D("6")
    # negative rate: shorts pay longs; 0.5 x 40,000 x 0.0375% = 7.5
    assert funding_payment(D("0.5"), D("40000"), D("-0.000375")) == D("7.5")
    assert funding_payment(D("-0.5"), D("40000"), D("-0.000375")) == D("-7.5")


def test_funding_payment_zero_and_rounding():
    zero = funding_payment(D("3"), D("30000"), D("0"))
    assert zero == 0 and not zero.is_signed()
    assert funding_payment(D("0"), D("30000"), D("0.0001")) == 0
    # 0.001 x 60,822.58 x 0.0001 = 0.006082258 -> 0.00608226
    assert funding_payment(D("0.001"), D("60822.58"), D("0.0001")) == D("-0.00608226")
    # a tie: 0.001 x 1.5 x 0.00001 = 0.000000015 -> 2e-8 either way (half-up on the magnitude)
    assert funding_payment(D("0.001"), D("1.5"), D("0.00001")) == D("-0.00000002")
    assert funding_payment(D("-0.001"), D("1.5"), D("0.00001")) == D("0.00000002")

