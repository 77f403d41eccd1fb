"""A symbol's market state: order book levels, top of book, last trade.

Prices and quantities stay the exchange's decimal strings; the book converts only what is computed with. Levels
are keyed by the price as a float: a decimal of at most 15 significant digits (every exchange price) parses to
a float that orders and compares exactly as the decimal does, and is 3x cheaper to make than a Decimal."""
from __future__ import annotations

from decimal import Decimal


def _dec(x: str | None) -> Decimal | None:
    return None if x is None else Decimal(x)


def price_text(key: float) -> str:
    """The decimal string of a level key (repr is the shortest string that parses back to the same float)."""
    return format(Decimal(repr(key)), "f")


MAX_LEVELS = 500  # per side: a diff feed (Binance) never removes far levels, and snapshots would grow forever


class Book:
    """Level-2 book plus the top of book. Frames that carry a top (bid/ask) set it directly;
    frames that carry only levels update the book, whose best levels become the top."""

    __slots__ = ("bids", "asks", "bid", "ask", "bid_qty", "ask_qty", "last", "ts", "synced", "top_feed",
                 "mark_price", "status", "funding_rate", "next_funding_ts")

    def __init__(self) -> None:
        self.bids: dict[float, str] = {}
        self.asks: dict[float, str] = {}
        self.bid: str | None = None
        self.ask: str | None = None
        self.bid_qty: str | None = None
        self.ask_qty: str | None = None
        self.last: str | None = None
        self.ts = 0
        self.synced = False  # a level snapshot has been applied
        self.top_feed = False  # the venue sends its top of book: levels never override it
        self.mark_price: str | None = None  # the venue's own mark price, when it sends one
        self.status = "live"  # the feed's status: only "live" prices may be traded on
        self.funding_rate: str | None = None  # the venue's funding rate, settled at next_funding_ts
        self.next_funding_ts: int | None = None

    def apply(self, frame) -> None:
        """A market frame: its levels, then its trades and top of book, which win over the levels."""
        if frame.bids or frame.asks:
            self._apply_levels(frame.bids, frame.asks, frame.snapshot)
            self._top_from_levels()
        if frame.bid is not None or frame.ask is not None:
            self.top_feed = True
        ticker = frame.ticker
        if ticker is not None:
            if ticker.mark is not None:
                self.mark_price = ticker.mark
            if ticker.last is not None and not frame.trades:
                self.last = ticker.last
        if frame.bar is not None and not frame.trades:
            self.last = frame.bar.close
        self._top(frame)

    def apply_tick(self, tick) -> None:
        """A tick carries the market actor's top of book, mark and the frame's level changes: no feed rules."""
        if tick.depth is not None:
            self._apply_levels(*tick.depth)
        if tick.funding is not None:
            self.funding_rate, self.next_funding_ts = tick.funding
        if tick.mark is not None:
            self.mark_price = tick.mark
        if tick.last is not None:
            self.last = tick.last
        self._top(tick)

    def _top(self, x) -> None:
        self.ts = x.ts
        self.status = x.status
        if x.trades:
            self.last = x.trades[-1].price
        if x.bid is not None:
            self.bid, self.bid_qty = x.bid, x.bid_qty
        if x.ask is not None:
            self.ask, self.ask_qty = x.ask, x.ask_qty

    def _apply_levels(self, bids, asks, snapshot: bool) -> None:
        if snapshot:
            self.bids.clear()
            self.asks.clear()
            self.synced = True
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, qty in levels:
                if qty == "0" or float(qty) == 0:
                    side.pop(float(price), None)
                else:
                    side[float(price)] = qty
        for side, best_first in ((self.bids, True), (self.asks, False)):
            if len(side) > MAX_LEVELS * 5 // 4:  # trim the far end, now and then
                keep = sorted(side, reverse=best_first)[:MAX_LEVELS]
                kept = {p: side[p] for p in keep}
                side.clear()
                side.update(kept)

    def _top_from_levels(self) -> None:
        if self.synced and not self.top_feed and self.bids and self.asks:
            bid, ask = max(self.bids), min(self.asks)
            self.bid, self.ask = price_text(bid), price_text(ask)
            self.bid_qty, self.ask_qty = self.bids[bid], self.asks[ask]

    def to_dict(self) -> dict:
        return {"top": [self.bid, self.bid_qty, self.ask, self.ask_qty, self.last, self.mark_price, self.status],
                "funding": [self.funding_rate, self.next_funding_ts],
                "ts": self.ts, "synced": self.synced, "top_feed": self.top_feed,
                "bids": [[repr(p), q] for p, q in self.bids.items()],  # repr: parses back to the same key
                "asks": [[repr(p), q] for p, q in self.asks.items()]}

    @classmethod
    def from_dict(cls, d: dict) -> "Book":
        b = cls()
        b.bid, b.bid_qty, b.ask, b.ask_qty, b.last, b.mark_price, b.status = d["top"]
        b.ts, b.synced, b.top_feed = d["ts"], d["synced"], d["top_feed"]
        b.funding_rate, b.next_funding_ts = d.get("funding", (None, None))
        b.bids = {float(p): q for p, q in d["bids"]}
        b.asks = {float(p): q for p, q in d["asks"]}
        return b

    def best_bid(self) -> Decimal | None:
        return _dec(self.bid)

    def best_ask(self) -> Decimal | None:
        return _dec(self.ask)

    def mark_f(self) -> float | None:
        """mark() as a float, for cheap screens before an exact check."""
        if self.mark_price is not None:
            return float(self.mark_price)
        if self.bid is not None and self.ask is not None:
            return (float(self.bid) + float(self.ask)) / 2
        return None if self.last is None else float(self.last)

    def mark(self) -> Decimal | None:
        """The venue's mark price when it sends one; else the mid of the top of book, or the last trade when
        there is no two-sided quote."""
        if self.mark_price is not None:
            return Decimal(self.mark_price)
        if self.bid is not None and self.ask is not None:
            return (Decimal(self.bid) + Decimal(self.ask)) / 2
        return _dec(self.last)
