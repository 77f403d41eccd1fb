"""The equity series at period ends, its returns, and the metrics computed from them.

Conventions (README "Metrics"): a period ends at a multiple of its length since the epoch (a day ends at 00:00
UTC); the value at a period's end is the last equity at or before it, the first value is the equity at the
window's start, and the last period ends at the last equity point (it may be partial). Returns are simple,
`V[i] / V[i-1] - 1`; annualized with 365 days a year; risk-free rate 0; sample standard deviation (n - 1);
a year is `periods_per_year` periods, so CAGR's years are the number of returns over it.
"""
from __future__ import annotations

import math
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
class DrawdownPeriod:
    start: int  # the peak
    trough: int
    end: int  # back at the peak, or the series' end
    depth: float  # -0.12: 12 % below the peak
    recovered: bool


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


@dataclass(frozen=True, slots=True)
class Samples:
    """The equity at period ends: the start, then the end of each period that had an equity point (the last one
    at its own time). `empty` periods had none: each keeps the previous value, a return of 0, and is only counted
    (a session started in 1970 by a stray tick must not make 28 million samples)."""

    points: list[EquityPoint]
    empty: int = 0

    @property
    def count(self) -> int:
        """How many returns: every period, the empty ones too."""
        return len(self.points) - 1 + self.empty

    def returns(self) -> list[float]:
        """The returns of the periods that had a point (the empty periods' zeros left out)."""
        return simple_returns(self.points)


def period_ends(start: EquityPoint, points: list[EquityPoint], period_ms: int) -> Samples:
    """The equity at period ends from `start` up to the last of `points` (time-ordered, all after `start`)."""
    out, keys, empty = [start], [start.ts // period_ms], 0  # the first period is the one after the start's key
    for p in points:
        k = -(-p.ts // period_ms)  # a point at a period's end belongs to that period
        if k == keys[-1] and len(out) > 1:
            out[-1] = p
            continue
        empty += k - keys[-1] - 1
        out.append(p)
        keys.append(k)
    ends = [EquityPoint(k * period_ms, s.equity) for s, k in zip(out[1:-1], keys[1:-1])]
    return Samples([start, *ends, out[-1]] if len(out) > 1 else [start], empty)


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


def return_stats(samples: Samples, period_ms: int) -> ReturnStats:
    """The return metrics of equity sampled at period ends (period_ends); the empty periods' zero returns count."""
    r, zeros = samples.returns(), samples.empty
    n = len(r) + zeros
    per_year = YEAR_MS / period_ms
    first, last = samples.points[0].equity, samples.points[-1].equity
    total = float(last / first - 1) if first else math.nan
    cagr = (1 + total) ** (per_year / n) - 1 if n and total > -1 else None
    mean = math.fsum(r) / n if n else None
    sd = None
    if n >= 2 and mean is not None:
        sd = math.sqrt((math.fsum((x - mean) ** 2 for x in r) + zeros * mean * mean) / (n - 1))
    vol = sd * math.sqrt(per_year) if sd is not None else None
    sharpe = mean / sd * math.sqrt(per_year) if sd and mean is not None else None
    downside = math.sqrt(math.fsum(x * x for x in r if x < 0) / n) if n else 0.0
    sortino = mean / downside * math.sqrt(per_year) if downside and mean is not None else None
    dd = drawdown(samples.points)
    calmar = cagr / -dd.depth if cagr is not None and dd.depth < 0 else None
    return ReturnStats(period_ms, n, first, last, total, cagr, vol, sharpe, sortino, calmar, dd)


def underwater(points: list[EquityPoint]) -> list[float]:
    """Each point's equity / running peak - 1 (0 at a peak)."""
    out, peak = [], points[0].equity
    for p in points:
        peak = max(peak, p.equity)
        out.append(float(p.equity / peak - 1) if peak > 0 else 0.0)
    return out


def drawdown_periods(points: list[EquityPoint]) -> list[DrawdownPeriod]:
    """Every fall below a running peak: from the last point at the peak to the first one back at it (or the
    series' end)."""
    out: list[DrawdownPeriod] = []
    peak, trough = points[0], None
    for p in points[1:]:
        if trough is not None and p.equity >= peak.equity:
            out.append(DrawdownPeriod(peak.ts, trough.ts, p.ts, float(trough.equity / peak.equity - 1), True))
            peak, trough = p, None
        elif trough is None and p.equity >= peak.equity:
            peak = p
        elif p.equity < peak.equity and (trough is None or p.equity < trough.equity) and peak.equity > 0:
            trough = p
    if trough is not None:
        out.append(DrawdownPeriod(peak.ts, trough.ts, points[-1].ts, float(trough.equity / peak.equity - 1), False))
    return out
