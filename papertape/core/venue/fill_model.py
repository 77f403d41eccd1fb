"""How much the market would have given an order, and at what prices. Pure functions over a Book.

Takers walk the displayed book (L2 levels when the feed sends them, else the top of book repeated one spread
further each step, else the last price with an assumed spread). Makers wait in the queue: a resting order fills
when a trade prints through its price, or at its price once the volume ahead of it has traded, or when the
opposite quote crosses it. What a session took from a displayed level is remembered until the market changes that
level, so two orders of a session never take the same liquidity."""
from __future__ import annotations

from collections.abc import Iterator
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Literal

from papertape.core.market.book import Book, price_text
from papertape.core.venue.fill_settings import FillSettings
from schemas.vocabulary import Side

ZERO = Decimal(0)
BPS = Decimal("0.0001")
BookSide = Literal["bid", "ask"]  # the side of the book a displayed level is on


class Liquidity:
    """Per session: what was taken from each displayed level, keyed by (symbol, book side, price), with the level's
    displayed quantity at the time. A level the market has changed since is whole again."""

    def __init__(self) -> None:
        self.taken: dict[tuple[str, BookSide, float], tuple[str, Decimal]] = {}

    def available(self, symbol: str, side: BookSide, key: float, shown: str | None) -> Decimal | None:
        """What is left of a level showing `shown` (None: unknown size, no limit)."""
        if shown is None:
            return None
        rec = self.taken.get((symbol, side, key))
        if rec is None or rec[0] != shown:
            return Decimal(shown)
        return Decimal(shown) - rec[1]

    def take(self, symbol: str, side: BookSide, key: float, shown: str | None, qty: Decimal) -> None:
        if shown is None:
            return
        rec = self.taken.get((symbol, side, key))
        before = rec[1] if rec is not None and rec[0] == shown else ZERO
        self.taken[(symbol, side, key)] = (shown, before + qty)
        if len(self.taken) > 4096:  # forget levels of other symbols now and then; worst case a level is whole again
            for k in [k for k in self.taken if k[0] != symbol]:
                del self.taken[k]

    def to_dict(self) -> list[list[str]]:
        return [[sym, side, repr(key), shown, str(q)] for (sym, side, key), (shown, q) in self.taken.items()]

    def load(self, rows: list[list[Any]]) -> None:
        """Rows of to_dict, as a checkpoint's JSON holds them."""
        self.taken = {(sym, side, float(key)): (shown, Decimal(q)) for sym, side, key, shown, q in rows}


def touch(book: Book, side: Side) -> tuple[Decimal | None, str | None]:
    """The price and displayed size a taker of `side` meets first."""
    if side == "buy":
        return (None if book.ask is None else Decimal(book.ask)), book.ask_qty
    return (None if book.bid is None else Decimal(book.bid)), book.bid_qty


def _levels(book: Book, side: Side, tick_size: Decimal,
            cfg: FillSettings) -> Iterator[tuple[float | None, Decimal, str | None]]:
    """(key, price, shown size) a taker of `side` would meet, best first; shown None: size unknown."""
    price, shown = touch(book, side)
    if price is None:
        if book.last is None:
            return
        last = Decimal(book.last)
        half = last * cfg.assumed_spread_bps * BPS / 2
        # on the instrument's grid, against the taker: no exchange fills between ticks
        ticks = ((last + half if side == "buy" else last - half) / tick_size).to_integral_value(
            ROUND_CEILING if side == "buy" else ROUND_FLOOR)
        yield None, ticks * tick_size, None
        return
    depth = book.asks if side == "buy" else book.bids
    if book.synced and depth:
        keys = sorted(depth) if side == "buy" else sorted(depth, reverse=True)
        first = float(price)
        if first not in depth:
            yield first, price, shown
        for k in keys:
            if (k >= first) if side == "buy" else (k <= first):
                yield k, Decimal(price_text(k)), depth[k]
        return
    other, _ = touch(book, "sell" if side == "buy" else "buy")
    step = max(abs(price - other) if other is not None else tick_size, tick_size)
    for i in range(1000):  # the top of book, repeated one spread further away each step
        p = price + step * i if side == "buy" else price - step * i
        if p <= 0:
            return
        yield float(p), p, shown


def take(book: Book, symbol: str, side: Side, qty: Decimal, limit: Decimal | None, tick_size: Decimal,
         cfg: FillSettings, liquidity: Liquidity) -> list[tuple[Decimal, Decimal]]:
    """[(price, qty)] a taker order of `side` gets now, best price first, within `limit` (None: a market order, held
    by the slippage cap), and records what it took. May total less than `qty`: the rest found no liquidity."""
    out: list[tuple[Decimal, Decimal]] = []
    ref, _ = touch(book, side)
    if ref is None and book.last is not None:
        ref = Decimal(book.last)
    if ref is None:
        return out
    cap = limit
    if limit is None and cfg.max_slippage_bps:
        cap = ref * (1 + cfg.max_slippage_bps * BPS) if side == "buy" else ref * (1 - cfg.max_slippage_bps * BPS)
    book_side: BookSide = "ask" if side == "buy" else "bid"
    left = qty
    for key, price, shown in _levels(book, side, tick_size, cfg):
        if cap is not None and (price > cap if side == "buy" else price < cap):
            break
        if not cfg.book_walk:
            return [(price, qty)]
        avail = liquidity.available(symbol, book_side, key, shown) if key is not None else None
        q = left if avail is None else min(left, avail)
        if q > 0:
            out.append((price, q))
            if key is not None:
                liquidity.take(symbol, book_side, key, shown, q)
            left -= q
        if not left:
            break
    return out


def queue_ahead(book: Book, side: Side, price: Decimal) -> Decimal | None:
    """The displayed size ahead of a maker order at `price`: the level's size on its own side, 0 when it betters
    the touch, None when unknown (behind the touch without depth data: only trades through it count)."""
    best = book.bid if side == "buy" else book.ask
    if best is None:
        return ZERO
    p, b = float(price), float(best)  # exact for exchange prices (core/market/book.py)
    if p > b if side == "buy" else p < b:
        return ZERO
    shown = book.bid_qty if side == "buy" else book.ask_qty
    if p == b and shown is not None:
        return Decimal(shown)
    own = book.bids if side == "buy" else book.asks
    if book.synced and own:
        level = own.get(p)
        return Decimal(level) if level is not None else ZERO
    return None
