"""Which symbols went quiet: no frame for `after_ms` of the feed's event time.

A live feed of Bybit sends every symbol something at least every few seconds (orderbook.1 repeats its
snapshot after 3 s without change), so silence means a dead subscription or connection, and strategies and
risk must not trade on the last prices. Event time, not the wall clock: a replayed tape marks the same
symbols stale at the same moments.
"""
from __future__ import annotations

from collections.abc import Iterable


class StaleWatch:
    def __init__(self, after_ms: int = 15_000) -> None:
        if after_ms <= 0:
            raise ValueError("after_ms must be positive")
        self.after_ms = after_ms
        self.last: dict[str, int] = {}  # symbol -> event time of its last frame
        self.stale: set[str] = set()

    def seen(self, symbol: str, ts: int) -> None:
        if ts >= self.last.get(symbol, -1):
            self.last[symbol] = ts
        self.stale.discard(symbol)

    def expect(self, symbols: Iterable[str], now: int) -> None:
        """Symbols subscribed at `now`: silence from then on counts too."""
        for symbol in symbols:
            self.last.setdefault(symbol, now)

    def check(self, now: int) -> list[str]:
        """Symbols that became stale by event time `now` (each reported once until it is seen again)."""
        limit = now - self.after_ms
        newly = sorted(s for s, ts in self.last.items() if ts <= limit and s not in self.stale)
        self.stale.update(newly)
        return newly
