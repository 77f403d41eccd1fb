"""A symbol's market state: order book levels, top of book, last trade."""
from __future__ import annotations

from decimal import Decimal


class Book:
    """Level-2 book plus the top of book. Frames that carry a top (bid/ask) set it directly;
    frames that carry only levels update the book, whose best levels become the top."""

    __slots__ = ("bids", "asks", "bid", "ask", "bid_qty", "ask_qty", "last", "ts", "synced", "top_feed")

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.bid = self.ask = self.bid_qty = self.ask_qty = self.last = None
        self.ts = 0
        self.synced = False  # a level snapshot has been applied
        self.top_feed = False  # the venue sends its top of book: levels never override it

    def apply(self, frame) -> None:
        self.ts = frame.ts
        if frame.trades:
            self.last = frame.trades[-1].price
        if getattr(frame, "bids", None) or getattr(frame, "asks", None):
            self._apply_levels(frame)
        if frame.bid is not None or frame.ask is not None:
            self.top_feed = True
        if frame.bid is not None:
            self.bid, self.bid_qty = frame.bid, frame.bid_qty
        if frame.ask is not None:
            self.ask, self.ask_qty = frame.ask, frame.ask_qty

    def _apply_levels(self, frame) -> None:
        if frame.snapshot:
            self.bids.clear()
            self.asks.clear()
            self.synced = True
        for side, levels in ((self.bids, frame.bids), (self.asks, frame.asks)):
            for level in levels:
                if level.qty == 0:
                    side.pop(level.price, None)
                else:
                    side[level.price] = level.qty
        if self.synced and not self.top_feed and self.bids and self.asks:
            self.bid = max(self.bids)
            self.ask = min(self.asks)
            self.bid_qty, self.ask_qty = self.bids[self.bid], self.asks[self.ask]

    def to_dict(self) -> dict:
        return {"top": [_s(self.bid), _s(self.bid_qty), _s(self.ask), _s(self.ask_qty), _s(self.last)],
                "ts": self.ts, "synced": self.synced, "top_feed": self.top_feed,
                "bids": [[str(p), str(q)] for p, q in self.bids.items()],
                "asks": [[str(p), str(q)] for p, q in self.asks.items()]}

    @classmethod
    def from_dict(cls, d: dict) -> "Book":
        b = cls()
        b.bid, b.bid_qty, b.ask, b.ask_qty, b.last = (None if x is None else Decimal(x) for x in d["top"])
        b.ts, b.synced, b.top_feed = d["ts"], d["synced"], d["top_feed"]
        b.bids = {Decimal(p): Decimal(q) for p, q in d["bids"]}
        b.asks = {Decimal(p): Decimal(q) for p, q in d["asks"]}
        return b

    def mark(self) -> Decimal | None:
        """Mid of the top of book, or the last trade when there is no two-sided quote."""
        if self.bid is not None and self.ask is not None:
            return (self.bid + self.ask) / 2
        return self.last


def _s(x: Decimal | None) -> str | None:
    return None if x is None else str(x)
