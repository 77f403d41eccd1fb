"""Trend following (the seeds' Strategy_1_Trend_Following): long while a fast EMA of bar closes is above a slow
one, flat (or short, when allowed) while below. It states its target at every bar once warmed up, so a session
that held back (low confidence, an open order, a breaker) acts on a later bar. Confidence grows with the gap
between the EMAs: full at `full_confidence_bps`."""
from __future__ import annotations

from typing import Any

from papertape.core.market.bars import Bar
from papertape.core.strategy import Intent, Strategy, Target
from schemas.vocabulary import Exposure


class TrendFollowing(Strategy):
    name = "trend_following"

    def __init__(self, fast: int = 5, slow: int = 20, bar_ms: int = 60_000, allow_short: bool = False,
                 full_confidence_bps: float = 10.0) -> None:
        if not 0 < fast < slow:
            raise ValueError("trend_following needs 0 < fast < slow")
        if bar_ms <= 0 or full_confidence_bps <= 0:
            raise ValueError("trend_following needs bar_ms > 0 and full_confidence_bps > 0")
        self.fast, self.slow, self.bar_ms = fast, slow, bar_ms
        self.allow_short, self.full_confidence_bps = allow_short, full_confidence_bps
        # symbol -> [ema_fast, ema_slow, bars]: a list (the EMAs None until the first close), as checkpoints hold it
        self.state: dict[str, list[Any]] = {}

    def on_bar(self, bar: Bar) -> list[Intent]:
        st = self.state.setdefault(bar.symbol, [None, None, 0])
        close = bar.close
        st[0] = close if st[0] is None else st[0] + 2 / (self.fast + 1) * (close - st[0])
        st[1] = close if st[1] is None else st[1] + 2 / (self.slow + 1) * (close - st[1])
        st[2] += 1
        if st[2] < self.slow:
            return []
        fast, slow = st[0], st[1]
        side: Exposure = "long" if fast > slow else ("short" if self.allow_short else "flat")
        gap_bps = abs(fast - slow) / slow * 1e4
        return [Target(bar.symbol, side, min(1.0, gap_bps / self.full_confidence_bps),
                       f"EMA{self.fast} {'above' if fast > slow else 'below'} EMA{self.slow} by {gap_bps:.2f} bps",
                       {"close": close, "ema_fast": fast, "ema_slow": slow, "bars": st[2]})]

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state}

    def load(self, state: dict[str, Any]) -> None:
        self.state = {s: list(v) for s, v in state["state"].items()}
