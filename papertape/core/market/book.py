"""A symbol's market state: order book levels, top of book, last trade.

Prices and quantities stay the exchange's decimal strings; the book converts only what is computed with. Levels
are keyed by the price as a float: a decimal of at most 15 significant digits (every exchange price) parses to
a float that orders and compares exactly as the decimal does, and is 3x cheaper to make than a Decimal."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from schemas.market import Level, MarketFrame, Tick
from schemas.vocabulary import FeedStatus

# A level change as the engines' books take it: [price key, size], a removal's size "0" (schemas.market.BookChange).
LevelChange = tuple[float, str]


def _dec(x: str | None) -> Decimal | None:
    return None if x is None else Decimal(x)


def price_text(key: float) -> str:
    """The decimal string of a level key (repr is the shortest string that parses back to the same float)."""
    return format(Decimal(repr(key)), "f")


MAX_LEVELS = 500  # per side: a diff feed (Binance) never removes far levels, and snapshots would grow forever
MAX_QUEUED = 2 * MAX_LEVELS  # level changes a lazy book holds before it applies them unasked


def _settle(side: dict[float, str], changes: dict[float, str]) -> None:
    """Applies [price key -> size] changes, the last per key already won; a removal's size is "0"."""
    side.update(changes)
    for key in [k for k, qty in changes.items() if qty == "0"]:
        del side[key]
    changes.clear()


class Book:
    """Level-2 book plus the top of book. Frames that carry a top (bid/ask) set it directly;
    frames that carry only levels update the book, whose best levels become the top.

    The market actor applies a frame's levels at once (it trims and derives the top). An engine's copy only
    queues a tick's level changes, the last per price winning, and applies them when `bids` or `asks` is read:
    most books are never walked between two ticks, and a queue costs one dict update per tick instead of a
    Python step per level. Both hold the same levels: the market actor sends its changes keyed as the book
    keys them, its trims included (`apply` returns them)."""

    __slots__ = ("_bids", "_asks", "_new_bids", "_new_asks", "bid", "ask", "bid_qty", "ask_qty", "last", "ts",
                 "synced", "top_feed", "mark_price", "status", "funding_rate", "next_funding_ts")

    def __init__(self) -> None:
        self._bids: dict[float, str] = {}
        self._asks: dict[float, str] = {}
        self._new_bids: dict[float, str] = {}  # queued changes (engine copies only)
        self._new_asks: dict[float, str] = {}
        self.bid: str | None = None
        self.ask: str | None = None
        self.bid_qty: str | None = None
        self.ask_qty: str | None = None
        self.last: str | None = None
        self.ts = 0
        self.synced = False  # a level snapshot has been applied
        self.top_feed = False  # the venue sends its top of book: levels never override it
        self.mark_price: str | None = None  # the venue's own mark price, when it sends one
        self.status: FeedStatus = "live"  # the feed's status: only "live" prices may be traded on
        self.funding_rate: str | None = None  # the venue's funding rate, settled at next_funding_ts
        self.next_funding_ts: int | None = None

    def reset(self) -> None:
        """Forget everything (a snapshot tick of the whole book follows), in place: sessions hold the engine's books."""
        Book.__init__(self)

    @property
    def bids(self) -> dict[float, str]:
        """Bid levels: price key -> size, in no order."""
        if self._new_bids:
            _settle(self._bids, self._new_bids)
        return self._bids

    @property
    def asks(self) -> dict[float, str]:
        if self._new_asks:
            _settle(self._asks, self._new_asks)
        return self._asks

    def apply(self, frame: MarketFrame) -> tuple[list[LevelChange], list[LevelChange]] | None:
        """A market frame: its levels, then its trades and top of book, which win over the levels. Returns the
        level changes for the engines (see _apply_levels), or None when the frame has no levels."""
        changes = None
        if frame.bids or frame.asks:
            changes = self._apply_levels(frame.bids, frame.asks, frame.snapshot)
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
        return changes

    def apply_tick(self, tick: Tick) -> None:
        """A tick carries the market actor's top of book, mark and the frame's level changes: no feed rules."""
        if tick.depth is not None:
            self._queue_levels(*tick.depth)
        if tick.funding is not None:
            self.funding_rate, self.next_funding_ts = tick.funding
        if tick.mark is not None:
            self.mark_price = tick.mark
        if tick.last is not None:
            self.last = tick.last
        self._top(tick)

    def _top(self, x: MarketFrame | Tick) -> None:
        self.ts = x.ts
        self.status = x.status
        if x.trades:
            self.last = x.trades[-1].price
        if x.bid is not None:
            self.bid, self.bid_qty = x.bid, x.bid_qty
        if x.ask is not None:
            self.ask, self.ask_qty = x.ask, x.ask_qty

    def _apply_levels(self, bids: list[Level], asks: list[Level],
                      snapshot: bool) -> tuple[list[LevelChange], list[LevelChange]]:
        """Returns each side's changes as the engines' copies take them: [price key, size], a removal's size "0",
        the levels trimmed off the far end included."""
        if snapshot:
            self._clear()
        changes: tuple[list[LevelChange], list[LevelChange]] = ([], [])
        for side, levels, best_first, out in ((self._bids, bids, True, changes[0]),
                                              (self._asks, asks, False, changes[1])):
            out += [(float(p), q if float(q) else "0") for p, q in levels]
            _settle(side, dict(out))
            if len(side) > MAX_LEVELS * 5 // 4:  # trim the far end, now and then
                for key in sorted(side, reverse=best_first)[MAX_LEVELS:]:
                    del side[key]
                    out.append((key, "0"))
        return changes

    def _queue_levels(self, bids: list[LevelChange], asks: list[LevelChange], snapshot: bool) -> None:
        """[price key, size] changes from the market actor (see _apply_levels): the last per key wins."""
        if snapshot:
            self._clear()
        self._new_bids.update(bids)
        self._new_asks.update(asks)
        if len(self._new_bids) + len(self._new_asks) > MAX_QUEUED:  # a book nobody reads: keep memory bounded
            _settle(self._bids, self._new_bids)
            _settle(self._asks, self._new_asks)

    def _clear(self) -> None:
        for side in (self._bids, self._asks, self._new_bids, self._new_asks):
            side.clear()
        self.synced = True

    def _top_from_levels(self) -> None:
        bids, asks = self._bids, self._asks  # the market actor's book: nothing queued
        if self.synced and not self.top_feed and bids and asks:
            bid, ask = max(bids), min(asks)
            self.bid, self.ask = price_text(bid), price_text(ask)
            self.bid_qty, self.ask_qty = bids[bid], asks[ask]

    def to_dict(self) -> dict[str, Any]:
        bids, asks = self.bids, self.asks
        return {"top": [self.bid, self.bid_qty, self.ask, self.ask_qty, self.last, self.mark_price, self.status],
                "funding": [self.funding_rate, self.next_funding_ts],
                "ts": self.ts, "synced": self.synced, "top_feed": self.top_feed,
                # price keys as JSON numbers (a float's shortest form reads back as the same float), sizes apart:
                # no Python step per level, which made checkpoints most of the worker's time at 700 symbols
                "levels": [list(bids), list(bids.values()), list(asks), list(asks.values())]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Book":
        b = cls()
        b.bid, b.bid_qty, b.ask, b.ask_qty, b.last, b.mark_price, b.status = d["top"]
        b.ts, b.synced, b.top_feed = d["ts"], d["synced"], d["top_feed"]
        b.funding_rate, b.next_funding_ts = d.get("funding", (None, None))
        if "levels" in d:
            bid_keys, bid_sizes, ask_keys, ask_sizes = d["levels"]
            b._bids, b._asks = dict(zip(bid_keys, bid_sizes)), dict(zip(ask_keys, ask_sizes))
        else:  # saved before 2026-11: [[repr(price key), size]] per level
            b._bids = {float(p): q for p, q in d["bids"]}
            b._asks = {float(p): q for p, q in d["asks"]}
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
