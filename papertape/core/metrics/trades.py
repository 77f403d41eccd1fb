"""Round trips: a session's fills per symbol from flat to flat (a fill that reverses a position closes one trade
and opens the next, its fee split by quantity), with the funding paid or received while each was open, and the
trade metrics of those closed in a window."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from decimal import Decimal

from papertape.core.metrics.returns import DAY_MS
from schemas.vocabulary import PositionSide, Side

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class FillRecord:
    ts: int
    order_id: str
    symbol: str
    side: Side
    price: Decimal
    qty: Decimal
    fee: Decimal  # paid: positive
    realized_pnl: Decimal  # price P&L the fill closed, before fees


@dataclass(frozen=True, slots=True)
class FundingRecord:
    ts: int
    symbol: str
    amount: Decimal  # received: positive


@dataclass(frozen=True, slots=True)
class Leg:
    """The part of a fill that belongs to one trade."""

    ts: int
    order_id: str
    price: Decimal
    qty: Decimal
    fee: Decimal


@dataclass(slots=True)
class Trade:
    symbol: str
    side: PositionSide
    open_ts: int
    close_ts: int | None = None  # None: still open
    entries: list[Leg] = field(default_factory=list)
    exits: list[Leg] = field(default_factory=list)
    gross: Decimal = ZERO  # the fills' realized P&L (before fees)
    fees: Decimal = ZERO
    funding: Decimal = ZERO  # received: positive

    @property
    def net(self) -> Decimal:
        return self.gross - self.fees + self.funding

    @property
    def qty(self) -> Decimal:
        return quantity(self.entries)


def quantity(legs: list[Leg]) -> Decimal:
    return sum((leg.qty for leg in legs), ZERO)


def average_price(legs: list[Leg]) -> Decimal | None:
    """The legs' quantity-weighted price; None without legs."""
    qty = quantity(legs)
    return sum((leg.price * leg.qty for leg in legs), ZERO) / qty if qty else None


def round_trips(fills: list[FillRecord], funding: list[FundingRecord]) -> list[Trade]:
    """Every trade, in the order they opened. Funding at a time goes to the trade open then (the one that
    closed last, if a fill at the same time closed it), as the engine settles funding before that time's fills."""
    events = sorted([(f.ts, 0, i) for i, f in enumerate(funding)] + [(f.ts, 1, i) for i, f in enumerate(fills)])
    trades: list[Trade] = []
    open_: dict[str, Trade] = {}
    last: dict[str, Trade] = {}
    position: dict[str, Decimal] = {}
    for _, kind, i in events:
        if kind == 0:
            fu = funding[i]
            trade = open_.get(fu.symbol) or last.get(fu.symbol)
            if trade is not None:
                trade.funding += fu.amount
            continue
        f = fills[i]
        pos = position.get(f.symbol, ZERO)
        signed = f.qty if f.side == "buy" else -f.qty
        closing = min(abs(signed), abs(pos)) if pos and (pos > 0) != (signed > 0) else ZERO
        opening = f.qty - closing
        close_fee = f.fee if not opening else f.fee * closing / f.qty
        if closing:
            trade = open_[f.symbol]
            trade.exits.append(Leg(f.ts, f.order_id, f.price, closing, close_fee))
            trade.gross += f.realized_pnl
            trade.fees += close_fee
            if closing == abs(pos):
                trade.close_ts = f.ts
                last[f.symbol] = open_.pop(f.symbol)
        if opening:
            trade = open_.get(f.symbol)
            if trade is None:
                trade = open_[f.symbol] = Trade(f.symbol, "long" if signed > 0 else "short", f.ts)
                trades.append(trade)
            trade.entries.append(Leg(f.ts, f.order_id, f.price, opening, f.fee - close_fee))
            trade.fees += f.fee - close_fee
            if not closing:
                trade.gross += f.realized_pnl  # zero: an opening fill closes nothing
        position[f.symbol] = pos + signed
    return trades


@dataclass(frozen=True, slots=True)
class TradeStats:
    trades: int  # closed in the window
    open_trades: int  # open at the window's end
    win_rate: float | None  # share of closed trades with a net P&L > 0
    profit_factor: float | None  # gross profit / gross loss of the trades' net P&L
    expectancy: Decimal | None  # the average net P&L of a trade (= avg_trade)
    payoff_ratio: float | None  # average winning trade / average losing trade (absolute)
    sqn: float | None  # sqrt(n) * mean / sample standard deviation of the trades' net P&L
    best_trade: Decimal | None
    worst_trade: Decimal | None
    avg_holding_ms: float | None
    exposure: float | None  # share of the window's time with at least one position open
    trades_per_day: float | None


def trade_stats(trades: list[Trade], start: int, end: int) -> TradeStats:
    """The metrics of the trades closed in (start, end] (net of fees and funding)."""
    closed = [t for t in trades if t.close_ts is not None and start < t.close_ts <= end]
    still_open = sum(1 for t in trades if t.open_ts <= end and (t.close_ts is None or t.close_ts > end))
    nets = [t.net for t in closed]
    n = len(nets)
    wins = [x for x in nets if x > 0]
    losses = [x for x in nets if x < 0]
    win_sum, loss_sum = sum(wins, ZERO), -sum(losses, ZERO)
    floats = [float(x) for x in nets]
    sd = statistics.stdev(floats) if n >= 2 else 0.0
    span = end - start
    return TradeStats(
        trades=n,
        open_trades=still_open,
        win_rate=len(wins) / n if n else None,
        profit_factor=float(win_sum / loss_sum) if loss_sum else None,
        expectancy=sum(nets, ZERO) / n if n else None,
        payoff_ratio=float((win_sum / len(wins)) / (loss_sum / len(losses))) if wins and losses else None,
        sqn=math.sqrt(n) * (math.fsum(floats) / n) / sd if sd else None,
        best_trade=max(nets) if nets else None,
        worst_trade=min(nets) if nets else None,
        avg_holding_ms=math.fsum(t.close_ts - t.open_ts for t in closed if t.close_ts is not None) / n if n else None,
        exposure=_time_in_market(trades, start, end) / span if span > 0 else None,
        trades_per_day=n / (span / DAY_MS) if span > 0 else None,
    )


def _time_in_market(trades: list[Trade], start: int, end: int) -> int:
    """How long at least one trade was open within [start, end] (the union of their spans)."""
    spans = sorted((max(t.open_ts, start), min(end if t.close_ts is None else t.close_ts, end)) for t in trades)
    total, reach = 0, start
    for a, b in spans:
        a = max(a, reach)
        if b > a:
            total += b - a
            reach = b
    return total
