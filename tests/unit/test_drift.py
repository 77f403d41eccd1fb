"""Drift between two runs (papertape.core.metrics.drift), on small cases worked by hand."""
from decimal import Decimal as D

from papertape.core.metrics.drift import TERMS, Run, compare, match
from papertape.core.metrics.execution import OrderMids
from papertape.core.metrics.trades import FillRecord, FundingRecord, round_trips

S = 1_000


def fill(ts, oid, side, price, qty, fee, realized="0", symbol="BTCUSDT"):
    return FillRecord(ts, oid, symbol, side, D(price), D(qty), D(fee), D(realized))


def run(label, fills, mids, unrealized="0", funding=()):
    trades = round_trips(fills, list(funding))
    deposit = D(10_000)
    end = deposit + sum((t.net for t in trades), D(0)) + D(unrealized)
    return Run(label, trades, {k: OrderMids(D(d), D(a)) for k, (d, a) in mids.items()}, deposit, end, D(unrealized))


def test_a_matched_long_split_into_timing_slippage_and_fees():
    # A buys 1 at 100 (mid at arrival 99.5) and sells at 110 (mid 110.5): gross 10, fees 0.21, net 9.79.
    # B buys 1 at 101 (mid 100.5) and sells at 109 (mid 109.8): gross 8, fees 0.40, net 7.60. Difference 2.19:
    #   entry timing   = -(99.5 - 100.5) = 1.0      entry slippage = -((100 - 99.5) - (101 - 100.5)) = 0
    #   exit timing    = 110.5 - 109.8   = 0.7      exit slippage  = (110 - 110.5) - (109 - 109.8)   = 0.3
    #   fees = -(0.21 - 0.40) = 0.19; 1.0 + 0 + 0.7 + 0.3 + 0.19 = 2.19
    a = run("A", [fill(1 * S, "a1", "buy", "100", "1", "0.10"), fill(9 * S, "a2", "sell", "110", "1", "0.11", "10")],
            {"a1": ("99", "99.5"), "a2": ("110", "110.5")})
    b = run("B", [fill(2 * S, "b1", "buy", "101", "1", "0.20"), fill(9 * S, "b2", "sell", "109", "1", "0.20", "8")],
            {"b1": ("100", "100.5"), "b2": ("109", "109.8")})
    d = compare(a, b)
    assert d.difference == D("2.19") == d.explained
    assert {k: v for k, v in d.totals.items() if v} == {"entry_timing": D("1.0"), "exit_timing": D("0.7"),
                                                        "exit_slippage": D("0.3"), "fees": D("0.19")}
    assert [(p.a is not None, p.b is not None) for p in d.pairs] == [(True, True)]


def test_a_bigger_position_is_size_and_one_run_trades_count_whole():
    # A: long 2 BTC 100 -> 110 (gross 20), and an ETH short only it made (gross 3, fee 0.5: net 2.5).
    # B: long 1 BTC 100 -> 110 (gross 10), and a late BTC long (opened 10 min after A's: not matched) losing 4.
    # Same mids: size = (2 - 1) x (110 - 100) = 10; only_a = 2.5; only_b = -(-4) = 4; total 16.5.
    mids = {"a1": ("100", "100"), "a2": ("110", "110"), "b1": ("100", "100"), "b2": ("110", "110")}
    a = run("A", [fill(1 * S, "a1", "buy", "100", "2", "0"), fill(5 * S, "a2", "sell", "110", "2", "0", "20"),
                  fill(6 * S, "e1", "sell", "2000", "1", "0.25", symbol="ETHUSDT"),
                  fill(8 * S, "e2", "buy", "1997", "1", "0.25", "3", symbol="ETHUSDT")], mids)
    b = run("B", [fill(1 * S, "b1", "buy", "100", "1", "0"), fill(5 * S, "b2", "sell", "110", "1", "0", "10"),
                  fill(601 * S, "b3", "buy", "100", "1", "0"), fill(700 * S, "b4", "sell", "96", "1", "0", "-4")],
            mids)
    d = compare(a, b, tolerance_ms=60 * S)
    assert {k: v for k, v in d.totals.items() if v} == {"size": D(10), "only_a": D("2.5"), "only_b": D(4)}
    assert d.explained == d.difference == D("16.5")
    assert sorted((p.a.symbol if p.a else "-", p.b.open_ts if p.b else None) for p in d.pairs) == [
        ("-", 601 * S), ("BTCUSDT", 1 * S), ("ETHUSDT", None)]


def test_funding_and_what_is_open_at_the_end():
    # Both hold 1 BTC long from 100; A received 0.3 funding, B paid 0.2; A's position is worth 5 more at the end.
    a = run("A", [fill(1 * S, "a1", "buy", "100", "1", "0")], {}, unrealized="7",
            funding=[FundingRecord(2 * S, "BTCUSDT", D("0.3"))])
    b = run("B", [fill(1 * S, "b1", "buy", "100", "1", "0")], {}, unrealized="2",
            funding=[FundingRecord(2 * S, "BTCUSDT", D("-0.2"))])
    d = compare(a, b)
    assert {k: v for k, v in d.totals.items() if v} == {"funding": D("0.5"), "unrealized": D(5)}
    assert d.explained == d.difference == D("5.5") and set(d.totals) == set(TERMS)


def test_matching_takes_the_nearest_opening_of_the_same_symbol_and_side():
    a = round_trips([fill(10 * S, "a", "buy", "1", "1", "0")], [])
    # B: a BTC short opened at 5 s (nearer, wrong side), an ETH long at 12 s (nearer, wrong symbol), and the BTC
    # long at 40 s that A's long at 10 s matches
    b = round_trips([fill(5 * S, "x", "sell", "1", "1", "0"), fill(6 * S, "x2", "buy", "1", "1", "0"),
                     fill(40 * S, "y", "buy", "1", "1", "0"),
                     fill(12 * S, "z", "buy", "1", "1", "0", symbol="ETHUSDT")], [])
    pairs = match(a, b, tolerance_ms=60 * S)
    matched = [p for p in pairs if p.a and p.b]
    assert [(p.b.symbol, p.b.side, p.b.open_ts) for p in matched if p.b] == [("BTCUSDT", "long", 40 * S)]
    assert len(pairs) == 3  # the match, and B's short and ETH long alone
    assert not [p for p in match(a, b, tolerance_ms=20 * S) if p.a and p.b]  # 30 s apart: beyond 20 s
