"""DEX execution model: constant-product pool centred on the oracle price, gas per chain.

Expected amounts are worked by hand in the comments; each rounded value is pinned by a bracket that checks the
unrounded amount lies within one settle unit (1e-8) on the right side, in exact Fraction arithmetic.
"""
from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from papertape.core.venue.dex import DexSettings, Swap, amount_out, gas_cost, swap

D = Decimal
F = Fraction
FEE = D("0.003")


def test_small_buy_is_oracle_plus_fee():
    # oracle 2000, depth 1e6 -> x = 500 tokens, y = 1e6 USD. Buy 0.001 token:
    # in = 1e6 * 0.001 / ((500 - 0.001) * 0.997) = 1000 / 498.499003 = 2.0060220662..., rounded up.
    s = swap("buy", D("0.001"), D(2000), D(1_000_000), FEE)
    assert s.quote_amount == D("2.00602207")
    assert F("498.499003") * F("2.00602206") < 1000 <= F("498.499003") * F("2.00602207")
    assert s.avg_price == D("2006.02207")
    # oracle / 0.997 = 2006.018...: the fee is ~30.09 bps, price impact adds ~0.02 bps, rounding the rest.
    assert D("30.10") < s.impact_bps < D("30.12")


def test_small_sell_is_oracle_minus_fee():
    # Sell 0.001 token: net in = 0.001 * 0.997 = 0.000997;
    # out = 1e6 * 0.000997 / (500 + 0.000997) = 997 / 500.000997 = 1.9939960239..., rounded down.
    s = swap("sell", D("0.001"), D(2000), D(1_000_000), FEE)
    assert s.quote_amount == D("1.99399602")
    assert F("500.000997") * F("1.99399602") <= 997 < F("500.000997") * F("1.99399603")
    assert s.avg_price == D("1993.99602")
    assert s.impact_bps == (D(2000) - D("1993.99602")) / D(2000) * 10000  # 30.0199 bps
    assert s.impact_bps == D("30.0199")


def test_large_buy_impact():
    # Buy 50 of the 500 tokens (10% of the reserve): in = 1e6 * 50 / (450 * 0.997) = 5e7 / 448.65
    # = 111445.4474534715...; without the fee it would be 111111.11 (avg 2222.22, +1111 bps).
    s = swap("buy", D(50), D(2000), D(1_000_000), FEE)
    assert s.quote_amount == D("111445.44745348")
    assert F("448.65") * F("111445.44745347") < F(50_000_000) <= F("448.65") * F("111445.44745348")
    assert s.avg_price == D("2228.9089490696")  # 111445.44745348 / 50
    assert D("1144.5") < s.impact_bps < D("1144.6")  # (2228.909 - 2000) / 2000


def test_exact_cases_without_fee():
    # x = y = 1000 (oracle 1). Buy 500: in = 1000 * 500 / 500 = 1000, avg 2, +10000 bps.
    b = swap("buy", D(500), D(1), D(1000), D(0))
    assert b == Swap(D(2), D(1000), D(10000))
    # Sell 1000: out = 1000 * 1000 / 2000 = 500, avg 0.5, 5000 bps below.
    s = swap("sell", D(1000), D(1), D(1000), D(0))
    assert s == Swap(D("0.5"), D(500), D(5000))
    # With the 0.3% fee the buy costs 1000 / 0.997 = 1003.0090270812..., rounded up.
    b = swap("buy", D(500), D(1), D(1000), FEE)
    assert b.quote_amount == D("1003.00902709")
    assert F("0.997") * F("1003.00902708") < 1000 <= F("0.997") * F("1003.00902709")


def test_buy_sell_asymmetry():
    # Same 500 tokens on x = y = 1000, no fee: buying costs 1000 (avg 2, +10000 bps),
    # selling yields 1000 * 500 / 1500 = 333.333... -> 333.33333333 (avg 0.6666..., -3333.33 bps).
    b = swap("buy", D(500), D(1), D(1000), D(0))
    s = swap("sell", D(500), D(1), D(1000), D(0))
    assert s.quote_amount == D("333.33333333")
    assert s.avg_price == D("0.66666666666")
    assert b.impact_bps == 10000 and D("3333.33") < s.impact_bps < D("3333.34")
    assert b.impact_bps > s.impact_bps


def test_buy_of_reserve_or_more_is_refused():
    # oracle 2000, depth 1e6 -> the pool holds 500 tokens.
    for qty in (D(500), D(501), D(10**6)):
        with pytest.raises(ValueError):
            swap("buy", qty, D(2000), D(1_000_000), FEE)
    # Selling any amount is possible (the price just tends to 0): 1e6 tokens in -> out < y.
    assert swap("sell", D(10**6), D(2000), D(1_000_000), FEE).quote_amount < D(1_000_000)


@pytest.mark.parametrize("args", [
    ("hold", D(1), D(1), D(1000), FEE),
    ("buy", D(0), D(1), D(1000), FEE),
    ("buy", D(1), D(0), D(1000), FEE),
    ("sell", D(1), D(1), D(-5), FEE),
    ("sell", D(1), D(1), D(1000), D(1)),
    ("sell", D(1), D(1), D(1000), D("-0.1")),
])
def test_bad_arguments(args):
    with pytest.raises(ValueError):
        swap(*args)


def test_gas_per_chain_and_overrides():
    cfg = DexSettings()
    assert cfg.chain == "ethereum" and cfg.pool_depth_usd == 1_000_000 and cfg.pool_fee == D("0.003")
    assert gas_cost(cfg, "PEPE") == D("1.50")
    assert set(cfg.gas_usd) == {"ethereum", "base", "arbitrum"}
    assert cfg.gas_usd["ethereum"] > cfg.gas_usd["arbitrum"] > cfg.gas_usd["base"] > 0

    cfg = DexSettings(token_chains={"BRETT": "base", "GMX": "arbitrum"})
    assert cfg.chain_of("BRETT") == "base" and cfg.chain_of("PEPE") == "ethereum"
    assert gas_cost(cfg, "BRETT") == D("0.01")
    assert gas_cost(cfg, "GMX") == D("0.05")

    cfg = DexSettings(chain="base", gas_usd={"base": D("0.002"), "solana": D("0.0005")},
                      token_chains={"WIF": "solana"})
    assert gas_cost(cfg, "ANY") == D("0.002")
    assert gas_cost(cfg, "WIF") == D("0.0005")
    with pytest.raises(KeyError):
        gas_cost(DexSettings(token_chains={"X": "polygon"}), "X")
    # Each settings object has its own gas dict (not a shared mutable default).
    assert DexSettings().gas_usd is not DexSettings().gas_usd


def test_depth_override():
    cfg = DexSettings(pool_depth={"PEPE": D(20_000_000)})
    assert cfg.depth("PEPE") == D(20_000_000)
    assert cfg.depth("OTHER") == D(1_000_000)
    # A deeper pool means less impact for the same trade.
    shallow = swap("buy", D(10), D(2000), cfg.depth("OTHER"), cfg.pool_fee)
    deep = swap("buy", D(10), D(2000), cfg.depth("PEPE"), cfg.pool_fee)
    assert deep.avg_price < shallow.avg_price


def _k_after(side, qty, oracle, depth, fee):
    x, y = F(depth) / F(oracle), F(depth)
    q = F(swap(side, qty, oracle, depth, fee).quote_amount)
    after = (x - F(qty)) * (y + q) if side == "buy" else (x + F(qty)) * (y - q)
    return x * y, after


@pytest.mark.parametrize("side,qty,oracle,depth,fee", [
    ("buy", D("0.001"), D(2000), D(1_000_000), FEE),
    ("sell", D("0.001"), D(2000), D(1_000_000), FEE),
    ("buy", D(499), D(2000), D(1_000_000), FEE),
    ("sell", D(12345), D(2000), D(1_000_000), FEE),
    ("buy", D("333.33333333"), D(3), D(1000), D(0)),  # no fee: only the rounding keeps k
    ("sell", D("333.33333333"), D(3), D(1000), D(0)),
    ("buy", D("123456.789"), D("0.00001234"), D(50_000), FEE),
])
def test_constant_product_never_decreases(side, qty, oracle, depth, fee):
    k, after = _k_after(side, qty, oracle, depth, fee)
    assert after >= k
    if fee:
        assert after > k  # the LP fee stays in the pool


prices = st.decimals(min_value=D("0.000001"), max_value=D(100_000), places=8)
depths = st.decimals(min_value=D(1000), max_value=D(1_000_000_000), places=2)
fractions_ = st.decimals(min_value=D("0.00000001"), max_value=D("0.99"), places=8)
fees = st.sampled_from([D(0), D("0.0005"), D("0.003"), D("0.01")])


@hsettings(max_examples=300, deadline=None)
@given(oracle=prices, depth=depths, frac=fractions_, fee=fees)
def test_property_spread_and_no_free_round_trip(oracle, depth, frac, fee):
    x = depth / oracle
    qty = (x * frac).quantize(D("0.00000001"), rounding=ROUND_DOWN)
    assume(0 < qty < x)
    b = swap("buy", qty, oracle, depth, fee)
    s = swap("sell", qty, oracle, depth, fee)
    assert b.avg_price > oracle > s.avg_price
    assert b.impact_bps > 0 and s.impact_bps > 0
    # Round trip on fresh pools: selling back never returns more than the buy cost.
    assert s.quote_amount <= b.quote_amount
    # Round trip on the same pool (sell into the reserves the buy left): still no profit; a loss with a fee
    # (without one the pool gives back exactly what it took, hypothesis found: fee 0, 99% of the pool)
    back = amount_out(x - qty, depth + b.quote_amount, qty, fee)
    assert back <= b.quote_amount
    if fee:
        assert back < b.quote_amount
    # k never decreases.
    for side in ("buy", "sell"):
        k, after = _k_after(side, qty, oracle, depth, fee)
        assert after >= k
