"""One metrics row: a session's (or one of its symbols') metrics over a window, from its history."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

from papertape.core.metrics.execution import OrderMids, execution_cost
from papertape.core.metrics.returns import EquityPoint, period_ends, return_stats
from papertape.core.metrics.trades import ZERO, FillRecord, FundingRecord, Trade, round_trips, trade_stats

ALL_SYMBOLS = ""  # the symbol of a session's whole-account row
SCALE = Decimal("1e-18")  # amounts are kept to 18 decimals (an average or a cost at a half-tick mid has more)


@dataclass(slots=True)
class SessionHistory:
    """What the metrics are computed from: a session's deposit, equity series, fills, funding and mids."""

    session: str
    strategy: str
    start: EquityPoint  # the deposit, when the session started
    points: list[EquityPoint]  # the equity after `start`, time-ordered (at the finest period the metrics use)
    fills: list[FillRecord] = field(default_factory=list)  # time-ordered
    funding: list[FundingRecord] = field(default_factory=list)
    mids: dict[str, OrderMids] = field(default_factory=dict)  # order id -> its mids

    @property
    def end_ts(self) -> int:
        return max([self.start.ts] + [p.ts for p in self.points[-1:]] + [f.ts for f in self.fills[-1:]])

    def trades(self) -> list[Trade]:
        return round_trips(self.fills, self.funding)


@dataclass(frozen=True, slots=True)
class MetricsRow:
    """The `metrics` table's columns (infra/clickhouse/004_metrics.sql), in its order."""

    session: str
    strategy: str
    symbol: str  # ALL_SYMBOLS: the whole account
    period_ms: int  # of the returns: 86_400_000 (UTC days) or the finer step
    from_ts: int  # the window (from_ts, to_ts]
    to_ts: int
    returns: int | None
    start_equity: Decimal | None
    end_equity: Decimal | None
    total_return: float | None
    cagr: float | None
    volatility: float | None
    sharpe: float | None
    sortino: float | None
    calmar: float | None
    max_drawdown: float | None
    drawdown_start: int | None
    drawdown_trough: int | None
    drawdown_recovery: int | None
    drawdown_ms: int | None
    trades: int
    open_trades: int
    win_rate: float | None
    profit_factor: float | None
    expectancy: Decimal | None
    avg_trade_return: float | None
    payoff_ratio: float | None
    sqn: float | None
    best_trade: Decimal | None
    worst_trade: Decimal | None
    avg_holding_ms: float | None
    exposure: float | None
    trades_per_day: float | None
    fees: Decimal
    funding: Decimal  # paid: positive
    cost_vs_decision: Decimal | None  # None: no fill had a quote before it
    cost_vs_arrival: Decimal | None
    cost_vs_decision_bps: float | None
    cost_vs_arrival_bps: float | None


def window_start(h: SessionHistory, from_ts: int | None) -> EquityPoint:
    """The equity the window starts from: the last point at or before `from_ts` (the deposit before any)."""
    if from_ts is None or from_ts <= h.start.ts:
        return h.start
    before = [p for p in h.points if p.ts <= from_ts]
    return EquityPoint(from_ts, before[-1].equity) if before else EquityPoint(from_ts, h.start.equity)


def metrics(h: SessionHistory, period_ms: int, from_ts: int | None = None, to_ts: int | None = None,
            symbol: str = ALL_SYMBOLS, trades: list[Trade] | None = None) -> MetricsRow:
    """The metrics of the window (from_ts, to_ts] (default: the whole history); of one symbol's trades, fills
    and funding when `symbol` is given (the return metrics are the account's only)."""
    begin = window_start(h, from_ts)
    end = h.end_ts if to_ts is None else to_ts
    lo = begin.ts if from_ts is not None else -1

    def inside(ts: int, sym: str) -> bool:
        return lo < ts <= end and (symbol == ALL_SYMBOLS or sym == symbol)

    all_trades = h.trades() if trades is None else trades
    mine = [t for t in all_trades if symbol in (ALL_SYMBOLS, t.symbol)]
    ts = trade_stats(mine, begin.ts, end)
    closed = [t for t in mine if t.close_ts is not None and begin.ts < t.close_ts <= end]
    fills = [f for f in h.fills if inside(f.ts, f.symbol)]
    cost = execution_cost(fills, h.mids)
    rs = None
    if symbol == ALL_SYMBOLS:
        rs = return_stats(period_ends(begin, [p for p in h.points if begin.ts < p.ts <= end], period_ms), period_ms)
    dd = rs.drawdown if rs else None
    def fit(d: Decimal | None) -> Decimal | None:
        return None if d is None else d.quantize(SCALE)

    returns = [float(t.net / entry) for t in closed if (entry := sum((leg.price * leg.qty for leg in t.entries), ZERO))]
    return MetricsRow(
        session=h.session, strategy=h.strategy, symbol=symbol, period_ms=period_ms, from_ts=begin.ts, to_ts=end,
        returns=rs.returns if rs else None, start_equity=rs.start_equity if rs else None,
        end_equity=rs.end_equity if rs else None, total_return=rs.total_return if rs else None,
        cagr=rs.cagr if rs else None, volatility=rs.volatility if rs else None, sharpe=rs.sharpe if rs else None,
        sortino=rs.sortino if rs else None, calmar=rs.calmar if rs else None,
        max_drawdown=dd.depth if dd else None, drawdown_start=dd.start if dd else None,
        drawdown_trough=dd.trough if dd else None, drawdown_recovery=dd.recovery if dd else None,
        drawdown_ms=dd.duration_ms if dd else None,
        trades=ts.trades, open_trades=ts.open_trades, win_rate=ts.win_rate, profit_factor=ts.profit_factor,
        expectancy=fit(ts.expectancy), avg_trade_return=math.fsum(returns) / len(returns) if returns else None,
        payoff_ratio=ts.payoff_ratio, sqn=ts.sqn, best_trade=ts.best_trade, worst_trade=ts.worst_trade,
        avg_holding_ms=ts.avg_holding_ms, exposure=ts.exposure, trades_per_day=ts.trades_per_day,
        fees=sum((f.fee for f in fills), ZERO),
        funding=-sum((f.amount for f in h.funding if inside(f.ts, f.symbol)), ZERO),
        cost_vs_decision=fit(cost.vs_decision), cost_vs_arrival=fit(cost.vs_arrival),
        cost_vs_decision_bps=cost.vs_decision_bps, cost_vs_arrival_bps=cost.vs_arrival_bps,
    )


def session_metrics(h: SessionHistory, periods: tuple[int, ...], from_ts: int | None = None,
                    to_ts: int | None = None) -> list[MetricsRow]:
    """The account's rows (one per period) and, for the finest period, one row per symbol it traded."""
    trades = h.trades()
    rows = [metrics(h, p, from_ts, to_ts, trades=trades) for p in periods]
    for sym in sorted({f.symbol for f in h.fills}):
        rows.append(metrics(h, min(periods), from_ts, to_ts, symbol=sym, trades=trades))
    return rows
