"""What a session reads of the engine's books: the marks of its positions, its equity, whether a symbol's prices
may be traded on."""
from __future__ import annotations

from decimal import Decimal

from papertape.core.account import Account
from papertape.core.instruments import Instrument
from papertape.core.market.book import Book


class MarketView:
    """The session's account at the engine's books. `books` is the engine's own mapping, which it updates in place
    as ticks arrive: every read (the venue's callbacks' included) meets the market as it stands then."""

    def __init__(self, account: Account, books: dict[str, Book], instruments: dict[str, Instrument]) -> None:
        self.account = account
        self.books = books
        self.instruments = instruments

    def book(self, symbol: str) -> Book | None:
        return self.books.get(symbol)

    def mark(self, symbol: str) -> Decimal | None:
        book = self.books.get(symbol)
        return book.mark() if book else None

    def marks(self) -> dict[str, Decimal]:
        """The marks of the account's positions (the symbols priced)."""
        marks = {}
        for sym in self.account.positions:
            book = self.books.get(sym)
            m = book.mark() if book else None
            if m is not None:
                marks[sym] = m
        return marks

    def equity(self) -> Decimal:
        return self.account.equity(self.marks())

    def not_live(self, symbol: str) -> str:
        """Why the symbol's prices must not be traded on (its feed is stale or unpriced), or ''."""
        book = self.books.get(symbol)
        return "" if book is None or book.status == "live" else stale_reason(symbol, book.status)

    def holds_perp(self, symbol: str) -> bool:
        """Whether a mark move of `symbol` can liquidate: the session holds a perpetual position in it."""
        pos = self.account.positions.get(symbol)
        return pos is not None and bool(pos.qty) and self.instruments[symbol].category == "linear"


def stale_reason(symbol: str, status: str) -> str:
    return f"{symbol} data is {status}: no trading on old prices"
