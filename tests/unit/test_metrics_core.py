"""The pure metrics core (papertape/core/metrics, issue 16): hand-worked cases with the arithmetic in the comments,
and an independent check of the return metrics against quantstats on the same returns and conventions.

Every expected number here is worked out by hand (or with plain arithmetic on literal numbers in the test),
never taken from the program's output."""
from __future__ import annotations

import math
import random
from decimal import Decimal

import pandas as pd
import pytest
import quantstats as qs

from papertape.core.metrics.execution import OrderMids, execution_cost
from papertape.core.metrics.returns import (
    DAY_MS,
    NO_DRAWDOWN,
    Drawdown,
    DrawdownPeriod,
    EquityPoint,
    Samples,
    drawdown,
    drawdown_periods,
    period_ends,
    return_stats,
    simple_returns,
    underwater,
)
from papertape.core.metrics.summary import SessionHistory, metrics, session_metrics, window_start
from papertape.core.metrics.trades import FillRecord, FundingRecord, Trade, round_trips, trade_stats

D = DAY_MS
H = 3_600_000
T0 = 19_944 * D  # 2024-08-09 00:00 UTC: a day's (and an hour's) end
BTC, ETH = "BTCUSDT", "ETHUSDT"


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def dec(x: float | int | str) -> Decimal:
    return Decimal(str(x))


def pt(ts: int, equity: float | int | str) -> EquityPoint:
    return EquityPoint(ts, dec(equity))


def daily(*equities: float | int | str) -> list[EquityPoint]:
    """Equity at T0, T0 + 1 day, T0 + 2 days..."""
    return [pt(T0 + i * D, e) for i, e in enumerate(equities)]


def fill(ts: int, side: str, qty: float | int, price: float | int, fee: float | int, pnl: float | int = 0,
         symbol: str = BTC, order_id: str | None = None) -> FillRecord:
    return FillRecord(ts, order_id or f"{symbol}@{ts}", symbol, side, dec(price), dec(qty), dec(fee), dec(pnl))


def funding(ts: int, amount: float | int, symbol: str = BTC) -> FundingRecord:
    return FundingRecord(ts, symbol, dec(amount))


def legs(trade_legs) -> list[tuple[int, Decimal, Decimal, Decimal]]:
    """(time, price, qty, fee) of each leg."""
    return [(leg.ts, leg.price, leg.qty, leg.fee) for leg in trade_legs]


# --- period_ends ------------------------------------------------------------------------------------------------

def test_period_ends_partial_periods_exact_end_gap_and_several_points_in_a_period():
    start = pt(T0 + D // 2, 100)  # the session starts at 12:00: the first day is partial
    points = [
        pt(T0 + D * 3 // 4, 101),  # 18:00 day 0, then replaced by the point exactly at the day's end
        pt(T0 + D, 102),  # exactly at 00:00 of day 1: it is day 0's end value
        pt(T0 + D + D // 4, 103),  # two points in day 1: the later one is its end value
        pt(T0 + D + D // 2, 104),
        pt(T0 + 4 * D + D // 2, 99),  # days 2 and 3 have no point: they end at 104 (0 returns)
        pt(T0 + 5 * D + D // 4, 98),  # the last point, 06:00 day 5: a partial period keeping its own time
    ]
    assert period_ends(start, points, D) == Samples([
        pt(T0 + D // 2, 100),
        pt(T0 + D, 102),
        pt(T0 + 2 * D, 104),
        pt(T0 + 5 * D, 99),
        pt(T0 + 5 * D + D // 4, 98),
    ], empty=2)  # days 2 and 3, counted: 6 returns


def test_period_ends_gap_right_after_the_start():
    # start at 12:00 day 0; the only point is at 12:00 day 3: days 0, 1, 2 end at the start's value
    start = pt(T0 + D // 2, 100)
    assert period_ends(start, [pt(T0 + 3 * D + D // 2, 90)], D) == Samples([start, pt(T0 + 3 * D + D // 2, 90)], 3)


def test_period_ends_start_on_a_period_end_and_last_point_on_one():
    # start exactly at 00:00: the first period is a whole day; the last point exactly at a day's end keeps it
    start = pt(T0, 100)
    assert period_ends(start, [pt(T0 + D // 2, 105), pt(T0 + D, 106), pt(T0 + 2 * D, 107)], D) == Samples([
        start, pt(T0 + D, 106), pt(T0 + 2 * D, 107)])


def test_period_ends_hourly_and_degenerate_cases():
    start = pt(T0 + 30 * 60_000, 100)  # 00:30
    # 00:40 and 00:59 in the first hour (the last wins), 01:00 exactly ends it; 02:15 is the partial last hour
    points = [pt(T0 + 40 * 60_000, 101), pt(T0 + 59 * 60_000, 102), pt(T0 + H, 103), pt(T0 + 2 * H + 15 * 60_000, 104)]
    assert period_ends(start, points, H) == Samples([start, pt(T0 + H, 103), points[-1]], empty=1)
    assert period_ends(start, [], H) == Samples([start])  # no point: the start alone, no return
    only = pt(T0 + 45 * 60_000, 99)  # one point in the start's own period: the start, then that point
    assert period_ends(start, [only], H) == Samples([start, only])


def test_a_stray_start_decades_early_makes_no_sample_per_empty_period():
    start = pt(1, 100)  # a session started by a tick at 1970-01-01 00:00:00.001
    s = period_ends(start, [pt(T0 + 30_000, 101)], 60_000)
    assert s.points == [start, pt(T0 + 30_000, 101)] and s.count == s.empty + 1 == T0 // 60_000 + 1


# --- simple_returns ---------------------------------------------------------------------------------------------

def test_simple_returns():
    # 110/100 - 1 = 0.1; 99/110 - 1 = -0.1; 99/99 - 1 = 0; 108.9/99 - 1 = 0.1
    assert simple_returns(daily(100, 110, 99, 99, "108.9")) == [approx(0.1), approx(-0.1), 0.0, approx(0.1)]
    assert simple_returns(daily(100)) == []
    after_zero = simple_returns(daily(100, 0, 50))  # -1, then undefined (a return from 0)
    assert after_zero[0] == -1.0 and math.isnan(after_zero[1])


# --- drawdown ---------------------------------------------------------------------------------------------------

def test_drawdown_recovered():
    # 100, 120 (peak, day 1), 90 (trough, day 2: 90/120 - 1 = -0.25), 110, 125 (>= 120: recovered day 4), 100
    # (100/125 - 1 = -0.2: not deeper). Duration day 1 -> day 4 = 3 days.
    assert drawdown(daily(100, 120, 90, 110, 125, 100)) == Drawdown(
        depth=approx(-0.25), start=T0 + D, trough=T0 + 2 * D, recovery=T0 + 4 * D, duration_ms=3 * D)


def test_drawdown_never_recovered_runs_to_the_end():
    # peak 100 at day 0, trough 80 at day 1 (-0.2), 90 at day 2 (last): not recovered, duration day 0 -> day 2
    assert drawdown(daily(100, 80, 90)) == Drawdown(approx(-0.2), T0, T0 + D, None, 2 * D)


def test_drawdown_at_the_first_sample_counts_from_the_start_value():
    # the start (100) is the peak: 95 at day 1 is -0.05; 101 at day 3 recovers it. Duration 3 days.
    assert drawdown(daily(100, 95, 97, 101)) == Drawdown(approx(-0.05), T0, T0 + D, T0 + 3 * D, 3 * D)


def test_drawdown_the_first_of_two_equally_deep_ones():
    # 100 -> 90 (-0.1, day 1), back to 100 at day 2 (recovered: >= the peak), 90 again at day 3 (-0.1, not deeper)
    assert drawdown(daily(100, 90, 100, 90)) == Drawdown(approx(-0.1), T0, T0 + D, T0 + 2 * D, 2 * D)


def test_no_drawdown():
    assert drawdown(daily(100, 100, 105, 110)) == NO_DRAWDOWN  # flat is not a fall
    assert drawdown(daily(100)) == NO_DRAWDOWN
    assert drawdown([]) == NO_DRAWDOWN


# --- return_stats -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("period_ms, periods_a_year", [(D, 365), (H, 24 * 365)])
def test_return_stats_by_hand(period_ms, periods_a_year):
    # equity 100 -> 110 -> 99 -> 108.9 -> 114.345: returns 0.10, -0.10, 0.10, 0.05 (n = 4)
    samples = [pt(T0 + i * period_ms, e) for i, e in enumerate([100, 110, 99, "108.9", "114.345"])]
    s = return_stats(Samples(samples), period_ms)
    # total: 114.345 / 100 - 1
    total = 0.14345
    # mean 0.15 / 4 = 0.0375; deviations 0.0625, -0.1375, 0.0625, 0.0125;
    # squares 0.00390625 + 0.01890625 + 0.00390625 + 0.00015625 = 0.026875; sample variance 0.026875 / 3
    sd = math.sqrt(0.026875 / 3)
    # downside: sqrt((-0.1)^2 / 4) = sqrt(0.0025) = 0.05
    # drawdown: peak 110 (sample 1), trough 99 (sample 2): 99/110 - 1 = -0.1; recovered at 114.345 (sample 4)
    cagr = 1.14345 ** (periods_a_year / 4) - 1
    assert (s.returns, s.start_equity, s.end_equity) == (4, 100, dec("114.345"))
    assert s.total_return == approx(total)
    assert s.cagr == approx(cagr)
    assert s.volatility == approx(sd * math.sqrt(periods_a_year))
    assert s.sharpe == approx(0.0375 / sd * math.sqrt(periods_a_year))
    assert s.sortino == approx(0.0375 / 0.05 * math.sqrt(periods_a_year))
    assert s.calmar == approx(cagr / 0.1)
    assert s.drawdown == Drawdown(approx(-0.1), T0 + period_ms, T0 + 2 * period_ms, T0 + 4 * period_ms,
                                  3 * period_ms)


def test_return_stats_too_few_returns_or_no_loss():
    one = return_stats(Samples(daily(100, 110)), D)  # one return of 0.1: no standard deviation, no loss, no drawdown
    assert (one.returns, one.total_return, one.volatility, one.sharpe, one.sortino, one.calmar) == (
        1, approx(0.1), None, None, None, None)
    assert one.cagr == approx(1.1 ** 365 - 1)
    none = return_stats(Samples(daily(100)), D)  # no return at all
    assert (none.returns, none.total_return, none.cagr, none.volatility, none.sharpe, none.drawdown) == (
        0, 0.0, None, None, None, NO_DRAWDOWN)
    gains = return_stats(Samples(daily(100, 101, 103)), D)  # two gains: a Sharpe; no downside: no Sortino, Calmar
    assert gains.sharpe is not None and gains.sortino is None and gains.calmar is None
    wiped = return_stats(Samples(daily(100, 50, 0)), D)  # total -1: no CAGR
    assert wiped.total_return == -1.0 and wiped.cagr is None and wiped.calmar is None


# --- round_trips ------------------------------------------------------------------------------------------------

def test_long_open_add_partial_close_close():
    trades = round_trips([
        fill(1, "buy", 1, 100, "0.1"),
        fill(2, "buy", 1, 110, "0.11"),  # position 2 at an average 105
        fill(3, "sell", "0.5", 120, "0.06", pnl="7.5"),  # 0.5 x (120 - 105)
        fill(4, "sell", "1.5", 110, "0.165", pnl="7.5"),  # 1.5 x (110 - 105): flat
    ], [])
    [t] = trades
    assert (t.symbol, t.side, t.open_ts, t.close_ts, t.qty) == (BTC, "long", 1, 4, 2)
    assert legs(t.entries) == [(1, 100, 1, dec("0.1")), (2, 110, 1, dec("0.11"))]
    assert legs(t.exits) == [(3, 120, dec("0.5"), dec("0.06")), (4, 110, dec("1.5"), dec("0.165"))]
    # gross 7.5 + 7.5 = 15; fees 0.1 + 0.11 + 0.06 + 0.165 = 0.435; net 15 - 0.435 = 14.565
    assert (t.gross, t.fees, t.funding, t.net) == (15, dec("0.435"), 0, dec("14.565"))


def test_reversal_splits_the_fee_by_quantity_and_same_ms_funding_goes_to_the_closing_trade():
    trades = round_trips([
        fill(1, "buy", 1, 100, "0.1"),
        fill(2, "sell", 3, 110, "0.33", pnl=10),  # closes the long 1 (pnl 10) and opens a short 2
        fill(4, "buy", 2, 105, "0.21", pnl=10),  # 2 x (110 - 105): flat
    ], [funding(2, "-0.2"),  # at the reversal's ms: settled before it, so the long's
        funding(3, "0.05")])  # while short
    long, short = trades
    # the reversal's fee 0.33: 1/3 (0.11) closes the long, 2/3 (0.22) opens the short
    assert (long.side, long.open_ts, long.close_ts) == ("long", 1, 2)
    assert legs(long.exits) == [(2, 110, 1, dec("0.11"))]
    # long: gross 10, fees 0.1 + 0.11 = 0.21, funding -0.2: net 9.59
    assert (long.gross, long.fees, long.funding, long.net) == (10, dec("0.21"), dec("-0.2"), dec("9.59"))
    assert (short.side, short.open_ts, short.close_ts, short.qty) == ("short", 2, 4, 2)
    assert legs(short.entries) == [(2, 110, 2, dec("0.22"))]
    # short: gross 10, fees 0.22 + 0.21 = 0.43, funding 0.05: net 9.62
    assert (short.gross, short.fees, short.funding, short.net) == (10, dec("0.43"), dec("0.05"), dec("9.62"))


def test_short_trade():
    [t] = round_trips([fill(1, "sell", 2, 50, "0.1"), fill(2, "buy", 2, 45, "0.09", pnl=10)], [])
    # 2 x (50 - 45) = 10; fees 0.19; net 9.81
    assert (t.side, t.open_ts, t.close_ts, t.qty, t.gross, t.fees, t.net) == (
        "short", 1, 2, 2, 10, dec("0.19"), dec("9.81"))


def test_two_symbols_interleaved():
    trades = round_trips([
        fill(1, "buy", 1, 100, "0.1", symbol=BTC),
        fill(2, "sell", 10, 5, "0.05", symbol=ETH),
        fill(3, "sell", 1, 101, "0.101", pnl=1, symbol=BTC),
        fill(4, "buy", 10, 4, "0.04", pnl=10, symbol=ETH),
    ], [])
    btc, eth = trades  # in the order they opened
    assert (btc.symbol, btc.side, btc.open_ts, btc.close_ts, btc.net) == (BTC, "long", 1, 3, dec("0.799"))
    assert (eth.symbol, eth.side, eth.open_ts, eth.close_ts, eth.net) == (ETH, "short", 2, 4, dec("9.91"))
    assert [leg.ts for leg in btc.entries + btc.exits] == [1, 3]
    assert [leg.ts for leg in eth.entries + eth.exits] == [2, 4]


def test_funding_while_open_and_an_open_trade_at_the_end():
    trades = round_trips([
        fill(1, "buy", 1, 100, "0.1"),
        fill(4, "sell", 1, 105, "0.105", pnl=5),
        fill(5, "buy", 1, 104, "0.104"),  # a new trade, still open at the end
    ], [
        funding(2, "-0.5"),  # paid while long
        funding(2, -9, symbol=ETH),  # another symbol's: no ETH trade, so nobody's
        funding(3, "0.2"),  # received
        funding(4, "-0.3"),  # at the closing fill's ms: settled before it, so the first trade's
        funding(6, "-0.1"),  # the second trade's
    ])
    first, second = trades
    # first: funding -0.5 + 0.2 - 0.3 = -0.6; net 5 - (0.1 + 0.105) - 0.6 = 4.195
    assert (first.close_ts, first.funding, first.net) == (4, dec("-0.6"), dec("4.195"))
    # second: open; net 0 - 0.104 - 0.1 = -0.204
    assert (second.open_ts, second.close_ts, second.funding, second.net) == (5, None, dec("-0.1"), dec("-0.204"))


# --- trade_stats ------------------------------------------------------------------------------------------------

def trade(symbol: str, open_day: float, close_day: float | None, gross: float | int, fees: float | int = 0,
          funding_: float | int = 0) -> Trade:
    return Trade(symbol, "long", round(open_day * D), None if close_day is None else round(close_day * D),
                 gross=dec(gross), fees=dec(fees), funding=dec(funding_))


def test_trade_stats_by_hand():
    trades = [
        trade(BTC, -3, -1, 1000),  # closed before the window: left out
        trade(BTC, 0, 2, 31, fees=1),  # net 30
        trade(ETH, 1, 3, 1, fees=3, funding_=-8),  # net 1 - 3 - 8 = -10: a loss despite its positive gross
        trade(BTC, 4, 5, 20),  # net 20
        trade(ETH, 6, 8, -19, fees=1),  # net -20
        trade(BTC, 9, None, 0),  # open at the window's end
        trade(ETH, 11, 12, 500),  # after the window: left out
    ]
    s = trade_stats(trades, 0, 10 * D)
    # closed in [0, 10 days]: nets 30, -10, 20, -20
    assert (s.trades, s.open_trades) == (4, 1)
    assert s.win_rate == 0.5  # 2 of 4
    assert s.profit_factor == approx(50 / 30)  # (30 + 20) / (10 + 20)
    assert s.expectancy == 5  # 20 / 4
    assert s.payoff_ratio == approx((50 / 2) / (30 / 2))
    # SQN: mean 5, deviations 25, -15, 15, -25, squares 625 + 225 + 225 + 625 = 1700, sample sd sqrt(1700 / 3)
    assert s.sqn == approx(math.sqrt(4) * 5 / math.sqrt(1700 / 3))
    assert (s.best_trade, s.worst_trade) == (30, -20)
    assert s.avg_holding_ms == approx((2 + 2 + 1 + 2) * D / 4)
    # in the market: [0, 3] (BTC 0-2 and ETH 1-3 overlap, counted once) + [4, 5] + [6, 8] + [9, 10] (open) = 7 days
    assert s.exposure == approx(7 / 10)
    assert s.trades_per_day == approx(4 / 10)


def test_trade_stats_without_trades_or_losses():
    empty = trade_stats([], 0, D)
    assert (empty.trades, empty.win_rate, empty.expectancy, empty.sqn, empty.exposure, empty.trades_per_day) == (
        0, None, None, None, 0.0, 0.0)
    winners = trade_stats([trade(BTC, 0, 0.5, 10), trade(BTC, 0.5, 1, 10)], 0, D)
    # no loss: no profit factor, no payoff ratio; equal nets: sd 0, no SQN; in the market all day
    assert (winners.win_rate, winners.profit_factor, winners.payoff_ratio, winners.sqn, winners.exposure) == (
        1.0, None, None, None, 1.0)


# --- execution_cost ---------------------------------------------------------------------------------------------

def test_execution_cost():
    fills = [
        fill(1, "buy", 2, 101, 0, order_id="buy"),  # bought 1 above the decision's mid 100: costs 2 x 1 = 2
        fill(2, "sell", 1, 99, 0, order_id="sell"),  # sold 1 below the decision's mid 100: costs 1 x 1 = 1
        fill(3, "buy", 1, 50, 0, order_id="no-mids"),  # no mids at all: left out
        fill(4, "buy", 1, 50, 0, order_id="no-decision"),  # one mid missing: left out
    ]
    mids = {
        "buy": OrderMids(decision=dec(100), arrival=dec("100.5")),  # vs arrival: 2 x 0.5 = 1
        "sell": OrderMids(decision=dec(100), arrival=dec("99.5")),  # vs arrival: 1 x 0.5 = 0.5
        "no-decision": OrderMids(decision=None, arrival=dec(50)),
    }
    c = execution_cost(fills, mids)
    assert (c.vs_decision, c.vs_arrival, c.priced_fills, c.unpriced_fills) == (3, dec("1.5"), 2, 2)
    # bps of the notional at the mids: 3 / (2 x 100 + 1 x 100) = 100 bps; 1.5 / (2 x 100.5 + 99.5) = 1.5 / 300.5
    assert c.vs_decision_bps == approx(100.0)
    assert c.vs_arrival_bps == approx(1.5 / 300.5 * 10_000)
    unpriced = execution_cost(fills[2:], mids)  # no fill with both mids: no cost at all (not a cost of 0)
    assert (unpriced.vs_decision, unpriced.vs_arrival, unpriced.vs_decision_bps, unpriced.vs_arrival_bps) == (
        None, None, None, None)
    assert (unpriced.priced_fills, unpriced.unpriced_fills) == (0, 2)


def test_a_better_price_than_the_mid_is_a_negative_cost():
    c = execution_cost([fill(1, "sell", 1, 101, 0, order_id="o")], {"o": OrderMids(dec(100), dec(102))})
    # sold 1 above the decision's mid (a gain: -1), 1 below the arrival's (+1)
    assert (c.vs_decision, c.vs_arrival) == (-1, 1)


# --- summary ----------------------------------------------------------------------------------------------------

def session() -> SessionHistory:
    """Deposit 1000 at T0; equity hourly; a BTC long from 00:30 to 03:30; an ETH short opened at 04:30."""
    return SessionHistory(
        session="s1", strategy="demo", start=pt(T0, 1000),
        points=[pt(T0 + H, 1010), pt(T0 + 2 * H, 990), pt(T0 + 3 * H, 1000), pt(T0 + 4 * H, 980),
                pt(T0 + 5 * H, 1030)],
        fills=[fill(T0 + H // 2, "buy", 1, 100, "0.1", order_id="o1"),
               fill(T0 + 7 * H // 2, "sell", 1, 110, "0.11", pnl=10, order_id="o2"),
               fill(T0 + 9 * H // 2, "sell", 2, 50, "0.1", symbol=ETH, order_id="o3")],
        funding=[funding(T0 + H, "-0.05"), funding(T0 + 3 * H, "-0.04"), funding(T0 + 5 * H, "0.02", symbol=ETH)],
        mids={"o1": OrderMids(dec(99), dec(99)), "o2": OrderMids(dec(111), dec("110.5"))},
    )


@pytest.mark.parametrize("from_hours, start_equity", [(2, 990), (2.5, 990), (1.5, 1010), (-1, 1000)])
def test_window_start_is_the_last_equity_at_or_before_it(from_hours, start_equity):
    # points: 01:00 1010, 02:00 990; before T0: the deposit itself
    begin = window_start(session(), T0 + round(from_hours * H))
    assert begin.equity == start_equity
    assert begin.ts == max(T0, T0 + round(from_hours * H))


def test_metrics_of_a_window_starting_mid_run():
    row = metrics(session(), H, from_ts=T0 + 5 * H // 2, to_ts=T0 + 5 * H)
    # (02:30, 05:00]: starts at 990 (02:00's); samples 990, 1000 (03:00), 980 (04:00), 1030 (05:00)
    assert (row.from_ts, row.to_ts, row.returns, row.start_equity, row.end_equity) == (
        T0 + 5 * H // 2, T0 + 5 * H, 3, 990, 1030)
    assert row.total_return == approx(1030 / 990 - 1)
    # the window's drawdown: 1000 (03:00) -> 980 (04:00): -0.02, back over 1000 at 05:00 (not the run's 1010 -> 980)
    assert (row.max_drawdown, row.drawdown_start, row.drawdown_trough, row.drawdown_recovery, row.drawdown_ms) == (
        approx(-0.02), T0 + 3 * H, T0 + 4 * H, T0 + 5 * H, 2 * H)
    # the BTC trade closed at 03:30: gross 10, fees 0.1 + 0.11, funding -0.05 - 0.04 (all of it, even before the
    # window): net 9.70, 9.7 % of its entry's 100. The ETH short is open at the end.
    assert (row.trades, row.open_trades, row.win_rate, row.expectancy) == (1, 1, 1.0, dec("9.70"))
    assert row.avg_trade_return == approx(0.097)
    # in the market: BTC 02:30-03:30 and ETH 04:30-05:00: 1.5 h of the window's 2.5 h
    assert row.exposure == approx(1.5 / 2.5)
    assert row.trades_per_day == approx(1 / (2.5 / 24))
    # the window's fills' fees (0.11 + 0.1, not 00:30's 0.1) and funding (paid: 0.04, received 0.02)
    assert (row.fees, row.funding) == (dec("0.21"), dec("0.02"))
    # o2 sold 1 at 110: 1 below the decision's mid 111, 0.5 below the arrival's 110.5; o3 has no mids; o1 is outside
    assert (row.cost_vs_decision, row.cost_vs_arrival) == (1, dec("0.5"))
    assert row.cost_vs_decision_bps == approx(1 / 111 * 10_000)


def test_metrics_of_the_whole_session():
    row = metrics(session(), H)
    # from the deposit 1000 at T0 to 05:00: 1000, 1010, 990, 1000, 980, 1030
    assert (row.from_ts, row.to_ts, row.returns, row.start_equity, row.end_equity) == (T0, T0 + 5 * H, 5, 1000, 1030)
    # deepest: 1010 (01:00) -> 980 (04:00); recovered at 05:00
    assert (row.max_drawdown, row.drawdown_start, row.drawdown_trough, row.drawdown_recovery) == (
        approx(980 / 1010 - 1), T0 + H, T0 + 4 * H, T0 + 5 * H)
    # all fees 0.1 + 0.11 + 0.1; funding paid 0.05 + 0.04 - 0.02
    assert (row.fees, row.funding) == (dec("0.31"), dec("0.07"))


def test_session_metrics_rows_per_period_and_per_symbol():
    rows = session_metrics(session(), (H, D), from_ts=T0 + 5 * H // 2, to_ts=T0 + 5 * H)
    assert [(r.symbol, r.period_ms) for r in rows] == [("", H), ("", D), (BTC, H), (ETH, H)]
    hourly, day, btc, eth = rows
    # by day: 990 at 02:30, then the partial day's last point 1030 at 05:00: one return
    assert (day.returns, day.total_return) == (1, approx(1030 / 990 - 1))
    assert hourly.returns == 3
    for r in (btc, eth):  # a symbol's row has no return metrics
        assert (r.returns, r.start_equity, r.end_equity, r.total_return, r.cagr, r.volatility, r.sharpe, r.sortino,
                r.calmar, r.max_drawdown, r.drawdown_start, r.drawdown_ms) == (None,) * 12
    assert (btc.trades, btc.open_trades, btc.fees, btc.funding, btc.expectancy) == (1, 0, dec("0.11"), dec("0.04"),
                                                                                   dec("9.70"))
    assert btc.exposure == approx(1 / 2.5)
    assert (eth.trades, eth.open_trades, eth.fees, eth.funding, eth.expectancy) == (0, 1, dec("0.1"), dec("-0.02"),
                                                                                   None)
    assert eth.exposure == approx(0.5 / 2.5)


def test_a_trade_closed_at_a_windows_start_belongs_to_the_window_before():
    h = SessionHistory(session="s", strategy="x", start=pt(T0, 1000), points=[pt(T0 + 4 * H, 1010)],
                       fills=[fill(T0 + H, "buy", 1, 100, 0), fill(T0 + 2 * H, "sell", 1, 110, 0, pnl=10)])
    before, after = metrics(h, H, T0, T0 + 2 * H), metrics(h, H, T0 + 2 * H, T0 + 4 * H)
    # the closing fill (02:00) is in (00:00, 02:00], as its fee is; (02:00, 04:00] has none of it
    assert (before.trades, after.trades) == (1, 0)


# --- quantstats, the independent check --------------------------------------------------------------------------
# Same returns, same conventions (quantstats 0.0.86, quantstats/stats.py):
# - sharpe, volatility: mean / std(ddof=1) x sqrt(periods), std(ddof=1) x sqrt(periods): ours with periods = the
#   periods a year (365, or 24 x 365 for hours), rf = 0;
# - sortino: sqrt(sum(min(r, 0)^2) / count): our downside deviation;
# - comp: prod(1 + r) - 1: our total return;
# - cagr: (1 + comp) ^ (1 / years) - 1 with years = count / periods (this version: not the index's span), so
#   ours; the returns are indexed at the period ends anyway (one period apart, starting one after the start);
# - max_drawdown (and calmar's): rebuilds prices from 1.0 and adds a phantom 1.0 one period before the first
#   return, so the starting value counts as ours does. A 0 return is prepended all the same (it changes nothing
#   when the start counts; it makes it count in versions that drop it); test_quantstats_counts_the_start checks it.

def quantstats_returns(closes: list[Decimal], freq: str) -> pd.Series:
    """The returns of the period closes (closes[0]: the start) as quantstats takes them, computed here by pandas."""
    values = pd.Series([float(c) for c in closes]).pct_change().iloc[1:].to_numpy()
    return pd.Series(values, index=pd.date_range("2024-01-02", periods=len(values), freq=freq))


def with_start(r: pd.Series) -> pd.Series:
    """`r` after a 0 return one period before it: the starting equity as a price."""
    return pd.concat([pd.Series([0.0], index=[r.index[0] - r.index.freq]), r])


def random_walk(seed: int, n: int, sd: float, empty_every: int) -> list[Decimal]:
    """The start and n period closes, in cents; every `empty_every`-th period has no point (its close is the
    previous one)."""
    rng = random.Random(seed)
    closes = [Decimal(10_000)]
    for i in range(1, n + 1):
        change = Decimal(0) if i % empty_every == 0 else dec(rng.gauss(sd / 20, sd))
        closes.append((closes[-1] * (1 + change)).quantize(Decimal("0.01")))
    return closes


def several_drawdowns() -> list[Decimal]:
    """Daily closes: a 6-day fall from the start (-16.7 %, the deepest), a rise past it, a -12 % fall and its
    recovery, a -3 % one and its recovery, then a -8 % fall not recovered at the end."""
    closes = [Decimal(1000)]
    for factor, days in [("0.97", 6), ("1.025", 12), ("0.975", 5), ("1.02", 9), ("0.99", 3), ("1.01", 4),
                         ("0.98", 4)]:
        for _ in range(days):
            closes.append((closes[-1] * dec(factor)).quantize(Decimal("0.01")))
    return closes


def equity_points(closes: list[Decimal], period_ms: int, seed: int) -> tuple[EquityPoint, list[EquityPoint]]:
    """The start (half a period in: a partial first period) and points whose period-end values are `closes`:
    a few points inside each period, its close at the period's end or a minute before, none in a period whose
    close did not change; the last close is a partial period's, half a period in."""
    rng = random.Random(seed)
    begin = T0 + period_ms // 2
    start, points = EquityPoint(begin, closes[0]), []
    for i in range(1, len(closes)):
        if closes[i] == closes[i - 1]:
            continue  # an empty period: its value is carried
        end = T0 + i * period_ms if i < len(closes) - 1 else T0 + (i - 1) * period_ms + period_ms // 2
        opens = max(begin, T0 + (i - 1) * period_ms) + 1
        for _ in range(rng.randint(0, 3)):  # noise before the close, never at or after it
            points.append(EquityPoint(rng.randrange(opens, opens + (end - opens) // 2), dec(rng.uniform(1, 2e4))))
        points.append(EquityPoint(end - rng.choice([0, 60_000]), closes[i]))
    return start, sorted(points, key=lambda p: p.ts)


def filled(s: Samples, period_ms: int) -> list[EquityPoint]:
    """The samples with every empty period's carried value in place: what quantstats is given."""
    out, key = [s.points[0]], s.points[0].ts // period_ms
    for p in s.points[1:]:
        k = -(-p.ts // period_ms)
        out += [EquityPoint(g * period_ms, out[-1].equity) for g in range(key + 1, k)]
        out.append(p)
        key = k
    assert len(out) - 1 == s.count
    return out


def check_against_quantstats(closes: list[Decimal], period_ms: int, freq: str, periods: int) -> None:
    start, points = equity_points(closes, period_ms, seed=len(closes))
    sampled = period_ends(start, points, period_ms)
    samples = filled(sampled, period_ms)
    assert [s.equity for s in samples] == closes  # our sampling found the closes
    ours = return_stats(sampled, period_ms)
    r = quantstats_returns(closes, freq)
    assert ours.returns == len(r)
    assert ours.total_return == approx(qs.stats.comp(r))
    assert ours.cagr == approx(qs.stats.cagr(r, periods=periods))
    assert ours.volatility == approx(qs.stats.volatility(r, periods=periods))
    assert ours.sharpe == approx(qs.stats.sharpe(r, rf=0, periods=periods, annualize=True))
    assert ours.sortino == approx(qs.stats.sortino(r, periods=periods))
    assert ours.drawdown.depth == approx(qs.stats.max_drawdown(with_start(r)))
    assert ours.calmar == approx(qs.stats.calmar(r, periods=periods))
    # the trough: quantstats' deepest point of its drawdown series (return i is sample i + 1)
    trough = int(qs.stats.to_drawdown_series(r).to_numpy().argmin()) + 1
    assert ours.drawdown.trough == samples[trough].ts


def test_quantstats_counts_the_start():
    # the guard of the convention above: -10 % then +5 % from 1.0 is a 10 % drawdown (0.9 / 1.0 - 1)
    r = pd.Series([-0.1, 0.05], index=pd.date_range("2024-01-02", periods=2, freq="D"))
    assert qs.stats.max_drawdown(r) == approx(-0.1)
    assert qs.stats.max_drawdown(with_start(r)) == approx(-0.1)
    assert qs.stats.cagr(r, periods=365) == approx((0.9 * 1.05) ** (365 / 2) - 1)  # years = 2 returns / 365


def test_daily_random_walk_against_quantstats():
    check_against_quantstats(random_walk(seed=16, n=400, sd=0.02, empty_every=37), D, "D", 365)


def test_daily_drawdowns_against_quantstats():
    closes = several_drawdowns()
    assert closes[1] < closes[0]  # the deepest fall starts at the start value
    check_against_quantstats(closes, D, "D", 365)


def test_hourly_random_walk_against_quantstats():
    check_against_quantstats(random_walk(seed=7, n=500, sd=0.003, empty_every=23), H, "h", 24 * 365)


def test_underwater_and_every_drawdown_period():
    # 100, 90 (-10 %), 95, 100 (back: recovered), 120 (peak), 110, 108 (-10 %): two periods, the second open
    eq = [EquityPoint(t, Decimal(v)) for t, v in enumerate([100, 90, 95, 100, 120, 110, 108])]
    assert underwater(eq) == pytest.approx([0, -0.1, -0.05, 0, 0, -1 / 12, -0.1])
    assert drawdown_periods(eq) == [DrawdownPeriod(0, 1, 3, pytest.approx(-0.1), True),
                                    DrawdownPeriod(4, 6, 6, pytest.approx(-0.1), False)]
    assert drawdown_periods(eq[:1]) == [] and drawdown_periods([eq[0], eq[3]]) == []
