"""Mean reversion: when a bar closes more than `entry_z` standard deviations below the mean of the last `window`
closes, go long (expecting the price to come back); above it, go short when allowed, else flat. Back within
`exit_z` of the mean, go flat. Between the bands it says nothing (the session keeps what it holds). Confidence is
|z| / `full_confidence_z`, at most 1."""
from __future__ import annotations

import math
from typing import Any

from papertape.core.market.bars import Bar
from papertape.core.strategy import Intent, Strategy, Target
from schemas.vocabulary import Exposure


class MeanReversion(Strategy):
    name = "mean_reversion"

    def __init__(self, window: int = 20, entry_z: float = 2.0, exit_z: float = 0.5, bar_ms: int = 60_000,
                 allow_short: bool = False, full_confidence_z: float = 3.0) -> None:
        if window < 3 or not 0 <= exit_z < entry_z or bar_ms <= 0 or full_confidence_z <= 0:
            raise ValueError("mean_reversion needs window >= 3, 0 <= exit_z < entry_z, bar_ms > 0 and "
                             "full_confidence_z > 0")
        self.window, self.entry_z, self.exit_z, self.bar_ms = window, entry_z, exit_z, bar_ms
        self.allow_short, self.full_confidence_z = allow_short, full_confidence_z
        self.closes: dict[str, list[float]] = {}

    def on_bar(self, bar: Bar) -> list[Intent]:
        closes = self.closes.setdefault(bar.symbol, [])
        closes.append(bar.close)
        if len(closes) > self.window:
            del closes[0]
        if len(closes) < self.window:
            return []
        mean = sum(closes) / len(closes)
        std = math.sqrt(sum((c - mean) ** 2 for c in closes) / len(closes))
        if std == 0:
            return []
        z = (bar.close - mean) / std
        features = {"close": bar.close, "mean": mean, "std": std, "z": z, "window": self.window}
        where = f"close {abs(z):.2f} sd {'below' if z < 0 else 'above'} the {self.window}-bar mean {mean:.8g}"
        target: Exposure
        if z <= -self.entry_z:
            target, why = "long", f"{where}: expect a rise back"
        elif z >= self.entry_z:
            target, why = ("short" if self.allow_short else "flat"), f"{where}: expect a fall back"
        elif abs(z) <= self.exit_z:
            target, why = "flat", f"{where}: back at the mean"
        else:
            return []
        return [Target(bar.symbol, target, min(1.0, abs(z) / self.full_confidence_z), why, features)]

    def to_dict(self) -> dict[str, Any]:
        return {"closes": self.closes}

    def load(self, state: dict[str, Any]) -> None:
        self.closes = {s: list(v) for s, v in state["closes"].items()}
