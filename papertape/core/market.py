"""The market actor's pure part: a symbol partition's books, turned into ticks and conflated marks."""
from __future__ import annotations

import schemas as s

from .book import Book
from .instruments import Instrument


class MarketPartition:
    """State of one md.events partition. Frames arrive in event-time order from one source; the
    watermark is the highest event time seen (or the source's promise), passed on with the ticks."""

    def __init__(self, partition: int, instruments: dict[str, Instrument]) -> None:
        self.partition = partition
        self.instruments = instruments
        self.books: dict[str, Book] = {}
        self.wm = 0
        self.seq = 0
        self.ended = False
        self.last_offset = -1
        self._ticks: list[s.Tick] = []
        self._touched: dict[str, int] = {}
        self._sent_wm = -1

    def check(self, frame: s.MarketFrame) -> str:
        """Why a frame cannot be accepted, or ''."""
        if frame.symbol not in self.instruments:
            return f"unknown symbol {frame.symbol}"
        if frame.bid is not None and frame.ask is not None and frame.bid > frame.ask:
            return f"crossed quote: bid {frame.bid} > ask {frame.ask}"
        return ""

    def on_frame(self, frame: s.MarketFrame, offset: int) -> None:
        book = self.books.get(frame.symbol)
        if book is None:
            book = self.books[frame.symbol] = Book()
        book.apply(frame)
        self.last_offset = offset
        self.wm = max(self.wm, frame.ts)
        self._ticks.append(s.Tick.model_construct(
            symbol=frame.symbol, ts=frame.ts, bid=book.bid, ask=book.ask, bid_qty=book.bid_qty,
            ask_qty=book.ask_qty, trades=frame.trades, offset=offset))
        self._touched[frame.symbol] = frame.ts

    def on_watermark(self, wm: s.Watermark, offset: int) -> None:
        self.last_offset = offset
        self.wm = max(self.wm, wm.ts)
        self.ended = self.ended or wm.end

    def flush(self, max_ticks: int = 1000) -> tuple[list[s.TickBatch], list[s.Mark]]:
        """Batches to broadcast (none when nothing moved) and one mark per symbol that changed. A batch holds
        at most `max_ticks`; all but the last promise only their own last tick's time."""
        if not self._ticks and not self.ended and self.wm <= self._sent_wm:
            return [], []
        chunks = [self._ticks[i:i + max_ticks] for i in range(0, len(self._ticks), max_ticks)] or [[]]
        batches = []
        for n, ticks in enumerate(chunks, 1):
            last = n == len(chunks)
            self.seq += 1
            wm = self.wm if last else ticks[-1].ts
            offset = self.last_offset if last else ticks[-1].offset
            batches.append(s.TickBatch(id=f"ticks:{self.partition}:{offset}", ts=wm, origin=self.partition,
                                       seq=self.seq, wm=wm, end=self.ended and last, ticks=ticks))
        marks = []
        for sym, ts in self._touched.items():
            b = self.books[sym]
            m = b.mark()
            if m is not None:
                marks.append(s.Mark(id=f"mark:{sym}:{ts}", ts=ts, symbol=sym, bid=b.bid, ask=b.ask, last=b.last,
                                    mark=m))
        self._sent_wm = self.wm
        self._ticks, self._touched = [], {}
        return batches, marks

    def seen(self, topic: str, offset: int) -> bool:
        return offset <= self.last_offset

    def progress(self) -> int:
        return self.last_offset

    def to_dict(self) -> dict:
        return {"wm": self.wm, "seq": self.seq, "ended": self.ended, "last_offset": self.last_offset,
                "books": {sym: b.to_dict() for sym, b in self.books.items()}}

    def load(self, d: dict) -> None:
        self.wm, self.seq, self.ended, self.last_offset = d["wm"], d["seq"], d["ended"], d["last_offset"]
        self._sent_wm = self.wm
        self.books = {sym: Book.from_dict(v) for sym, v in d["books"].items()}

