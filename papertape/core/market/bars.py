"""Bars in event time, built from ticks, and the volatility of their closes.

A bar closes at the first priced tick of a later interval (there are no empty bars: an interval without a
priced tick is skipped). A tick is priced by its trades, else by its two quotes; tickers alone (mark, last,
funding) do not move bars.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from schemas.market import Tick


@dataclass(frozen=True, slots=True)
class Bar:
    symbol: str
    start: int  # the interval's start, event time ms
    ts: int  # when the bar closed: the first priced tick of a later interval
    open: float
    high: float
    low: float
    close: float
    volume: float  # traded quantity
    trades: int


class BarBuilder:
    """Bars of `bar_ms` for every symbol it is fed."""

    def __init__(self, bar_ms: int) -> None:
        self.bar_ms = bar_ms
        # symbol -> [start, open, high, low, close, volume, trades]: a list (ints and floats), as checkpoints hold it
        self.open: dict[str, list[Any]] = {}

    def on_tick(self, tick: Tick) -> Bar | None:
        """The bar this tick closed, if any. (The engine's hot path: a tick inside the current bar with one price,
        a quote, costs a few comparisons.)"""
        trades = tick.trades
        if trades:
            prices = [float(t.price) for t in trades]
            low, high, last = min(prices), max(prices), prices[-1]
        elif tick.bid is not None and tick.ask is not None:
            low = high = last = (float(tick.bid) + float(tick.ask)) / 2
        elif tick.last is not None:  # a market of bars (OHLCV files) or of last prices alone (DEX tokens)
            low = high = last = float(tick.last)
        else:
            return None
        start = tick.ts - tick.ts % self.bar_ms
        cur = self.open.get(tick.symbol)
        done = None
        if cur is None or start > cur[0]:
            if cur is not None:
                done = Bar(tick.symbol, cur[0], tick.ts, *cur[1:])
            first = float(trades[0].price) if trades else last
            cur = self.open[tick.symbol] = [start, first, high, low, last, 0.0, 0]
        else:
            if high > cur[2]:
                cur[2] = high
            if low < cur[3]:
                cur[3] = low
            cur[4] = last
        if trades:
            cur[5] += sum(float(t.qty) for t in trades)
            cur[6] += len(trades)
        return done

    def to_dict(self) -> dict[str, Any]:
        return {"bar_ms": self.bar_ms, "open": self.open}

    def load(self, d: dict[str, Any]) -> None:
        self.open = {k: list(v) for k, v in d["open"].items()}


class Volatility:
    """Per symbol: an exponentially weighted standard deviation of log returns per bar (span `span` bars).
    A return over a gap of k bars counts as k bars' worth (divided by sqrt(k))."""

    def __init__(self, bar_ms: int, span: int = 20, min_returns: int = 3) -> None:
        self.bar_ms, self.alpha, self.min_returns = bar_ms, 2 / (span + 1), min_returns
        # symbol -> [last start, last close, variance, returns]: a list (ints and floats), as checkpoints hold it
        self.state: dict[str, list[Any]] = {}

    def on_bar(self, bar: Bar) -> None:
        st = self.state.get(bar.symbol)
        if st is None:
            self.state[bar.symbol] = [bar.start, bar.close, 0.0, 0]
            return
        bars = max(1, (bar.start - st[0]) // self.bar_ms)
        r2 = math.log(bar.close / st[1]) ** 2 / bars
        st[2] = r2 if st[3] == 0 else st[2] + self.alpha * (r2 - st[2])
        st[0], st[1], st[3] = bar.start, bar.close, st[3] + 1

    def per_bar(self, symbol: str) -> float | None:
        """The volatility of one bar's log return; None until `min_returns` returns were seen."""
        st = self.state.get(symbol)
        return math.sqrt(st[2]) if st is not None and st[3] >= self.min_returns else None

    def returns_seen(self, symbol: str) -> int:
        st = self.state.get(symbol)
        return 0 if st is None else st[3]

    def to_dict(self) -> dict[str, Any]:
        return self.state

    def load(self, d: dict[str, Any]) -> None:
        self.state = {k: list(v) for k, v in d.items()}
