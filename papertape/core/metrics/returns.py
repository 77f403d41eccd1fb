"""The equity series at period ends, its returns, and the metrics computed from them.

Conventions (README "Metrics"): a period ends at a multiple of its length since the epoch (a day ends at 00:00
UTC); the value at a period's end is the last equity at or before it, the first value is the equity at the
window's start, and the last period ends at the last equity point (it may be partial). Returns are simple,
`V[i] / V[i-1] - 1`; annualized with 365 days a year; risk-free rate 0; sample standard deviation (n - 1);
a year is `periods_per_year` periods, so CAGR's years are the number of returns over it.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from decimal import Decimal

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS


@dataclass(frozen=True, slots=True)
class EquityPoint:
    ts: int  # event time, ms
    equity: Decimal


@dataclass(frozen=True, slots=True)
class Drawdown:
    depth: float  # the deepest fall from a running peak, as a fraction (-0.12: 12 % below the peak); 0: none
    start: int | None  # when the peak before the trough was reached
    trough: int | None
    recovery: int | None  # when the equity first got back to the peak; None: not yet
    duration_ms: int | None  # start to recovery, or to the window's end when not recovered


NO_DRAWDOWN = Drawdown(0.0, None, None, None, None)


@dataclass(frozen=True, slots=True)
class ReturnStats:
    period_ms: int
    returns: int  # how many
    start_equity: Decimal
    end_equity: Decimal
    total_return: float
    cagr: float | None
    volatility: float | None
    sharpe: float | None
    sortino: float | None
    calmar: float | None
    drawdown: Drawdown


def period_ends(start: EquityPoint, points: list[EquityPoint], period_ms: int) -> list[EquityPoint]:
    """`start`, then the equity at the end of every period up to the last point (time-ordered, all after
    `start`), which keeps its own time. A period without a point keeps the previous value: its return is 0."""
    out, keys = [start], [start.ts // period_ms]  # the first period is the one after the key of `start`
    for p in points:
        k = -(-p.ts // period_ms)  # a point at a period's end belongs to that period
        if k == keys[-1] and len(out) > 1:
            out[-1] = p
            continue
        for gap in range(keys[-1] + 1, k):
            out.append(EquityPoint(gap * period_ms, out[-1].equity))
            keys.append(gap)
        out.append(p)
        keys.append(k)
    ends = [EquityPoint(k * period_ms, s.equity) for s, k in zip(out[1:-1], keys[1:-1])]
    return [start, *ends, out[-1]] if len(out) > 1 else [start]


def simple_returns(samples: list[EquityPoint]) -> list[float]:
    return [float(b.equity / a.equity - 1) if a.equity else math.nan for a, b in zip(samples, samples[1:])]


def drawdown(samples: list[EquityPoint]) -> Drawdown:
    """The maximum drawdown of the sampled equity (its first value included)."""
    if not samples:
        return NO_DRAWDOWN
    peak, peak_ts = samples[0].equity, samples[0].ts
    depth, start, trough = Decimal(0), None, None
    for s in samples:
        if s.equity > peak:
            peak, peak_ts = s.equity, s.ts
        elif peak > 0 and (dd := s.equity / peak - 1) < depth:
            depth, start, trough = dd, peak_ts, s.ts
    if trough is None or start is None:
        return NO_DRAWDOWN
    top = next(s.equity for s in samples if s.ts == start)
    recovery = next((s.ts for s in samples if s.ts > trough and s.equity >= top), None)
    end = recovery if recovery is not None else samples[-1].ts
    return Drawdown(float(depth), start, trough, recovery, end - start)


def return_stats(samples: list[EquityPoint], period_ms: int) -> ReturnStats:
    """The return metrics of equity sampled at period ends (period_ends)."""
    r = simple_returns(samples)
    n = len(r)
    per_year = YEAR_MS / period_ms
    first, last = samples[0].equity, samples[-1].equity
    total = float(last / first - 1) if first else math.nan
    cagr = (1 + total) ** (per_year / n) - 1 if n and total > -1 else None
    sd = statistics.stdev(r) if n >= 2 else None
    mean = math.fsum(r) / n if n else None
    vol = sd * math.sqrt(per_year) if sd is not None else None
    sharpe = mean / sd * math.sqrt(per_year) if sd and mean is not None else None
    downside = math.sqrt(math.fsum(x * x for x in r if x < 0) / n) if n else 0.0
    sortino = mean / downside * math.sqrt(per_year) if downside and mean is not None else None
    dd = drawdown(samples)
    calmar = cagr / -dd.depth if cagr is not None and dd.depth < 0 else None
    return ReturnStats(period_ms, n, first, last, total, cagr, vol, sharpe, sortino, calmar, dd)
