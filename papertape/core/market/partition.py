"""The market actor's pure part: a symbol partition's books, turned into ticks and conflated marks.

Marks are conflated in event time: a symbol's mark is its prices at the end of each second (MARK_EVERY_MS) in which
it had a frame, whatever the batches, so the same tape gives the same marks.

Frames arrive in batches (one md.events message each); a frame's position is `offset * FRAMES_PER_OFFSET +
index in its batch`, so ticks of one origin are ordered and deduplicated by one number. An engine partition gets
the ticks of the symbols its sessions trade (`interest`), and the whole book of a symbol it asks for at run time as a
snapshot tick, positioned after the frames of the md.events offset read last (SNAPSHOT_POSITION)."""
from __future__ import annotations

from operator import attrgetter
from typing import Any

import schemas as s
from papertape.core.alert_rules import PriceRule, PriceWatch
from papertape.core.instruments import Instrument
from papertape.core.market.book import Book
from schemas.market import Tick, TickTrade
from schemas.topics import kafka_partition

FRAMES_PER_OFFSET = 1 << 20  # more than a batch can hold
SNAPSHOT_POSITION = 1 << 19  # a batch's frames sit below it: positions from it up are the market's snapshot ticks
MARK_EVERY_MS = 1000  # at most one mark per symbol per second of event time (Bybit's mark price moves once a second)

Route = tuple[list[int], list[s.TickBatch]]  # engine partitions, and the tick batches for them


def is_snapshot(pos: int) -> bool:
    """Whether a tick's position is a snapshot's (a symbol's whole book, sent to an engine partition that asked)."""
    return bool(pos & SNAPSHOT_POSITION)


class MarketPartition:
    """State of one md.events partition. Frames arrive in event-time order from one source; the
    watermark is the highest event time seen (or the source's promise), passed on with the ticks."""

    def __init__(self, partition: int, instruments: dict[str, Instrument], partitions: int,
                 rules: list[PriceRule] | None = None, interest: list[set[str]] | None = None) -> None:
        """`interest`: per engine partition, the symbols its sessions trade; None: every engine partition (one)
        gets every tick."""
        self.partition = partition
        self.partitions = partitions
        self._mine: dict[str, bool] = {}
        self.instruments = instruments
        self.books: dict[str, Book] = {}
        self.wm = 0
        self.seq = 0
        self.ended = False
        self.last_offset = -1
        self.interest_offset = -1  # md.interest
        self.interest = interest if interest is not None else [set(instruments)]
        self._snapshots: dict[int, list[s.Tick]] = {}  # engine partition -> snapshot ticks it asked for
        self._snapshot_at = (-1, 0)  # (md.events offset, snapshot ticks positioned after it)
        self._ticks: list[s.Tick] = []
        self._touched: set[str] = set()  # symbols with a frame since the last flush
        self._unmarked: dict[str, tuple[int, int]] = {}  # symbol -> (second, last frame's ts) of its mark to come
        self._marks: list[s.Mark] = []  # of seconds that ended
        self._marked_upto = 0  # the second the watermark was in at the last look for ended seconds
        self._sent_wm = -1
        self.stale: set[str] = set()  # symbols whose last frame said stale: one alert each time one goes stale
        self._alerts: list[s.Alert] = []
        # the users' price rules, over every frame's mark of their symbols (md.marks is conflated)
        self.price_watch = PriceWatch(rules) if rules else None

    def check(self, frame: s.MarketFrame) -> str:
        """Why a frame cannot be accepted, or ''."""
        if frame.symbol not in self.instruments:
            return f"unknown symbol {frame.symbol}"
        if not self._owns(frame.symbol):
            return (f"{frame.symbol} belongs to md.events partition "
                    f"{kafka_partition(frame.symbol.encode(), self.partitions)}, not {self.partition}")
        if frame.bid is not None and frame.ask is not None and float(frame.bid) > float(frame.ask):
            return f"crossed quote: bid {frame.bid} > ask {frame.ask}"
        return ""

    def _owns(self, symbol: str) -> bool:
        """Whether the symbol hashes here (Kafka's default partitioner), so this actor is its only writer."""
        mine = self._mine.get(symbol)
        if mine is None:
            mine = self._mine[symbol] = kafka_partition(symbol.encode(), self.partitions) == self.partition
        return mine

    def on_message(self, item: s.MarketBatch | s.MarketFrame | s.Watermark,
                   offset: int) -> list[tuple[int, s.MarketFrame, str]]:
        """Apply a batch, frame or watermark at md.events `offset`; returns (index, frame, reason) of each frame
        refused (the rest of a batch is applied)."""
        refused: list[tuple[int, s.MarketFrame, str]] = []
        if item.kind == "watermark":
            self._promise(item.ts, item.end)
        elif item.kind == "frame":
            refused = self._frames([item], offset)
        else:
            refused = self._frames(item.frames, offset)
            self._promise(item.wm, item.end)
        self.last_offset = offset
        return refused

    def _frames(self, frames: list[s.MarketFrame], offset: int) -> list[tuple[int, s.MarketFrame, str]]:
        refused: list[tuple[int, s.MarketFrame, str]] = []
        pos = offset * FRAMES_PER_OFFSET
        books, ticks, touched, watch = self.books, self._ticks, self._touched, self.price_watch
        unmarked = self._unmarked
        for i, frame in enumerate(frames):
            reason = self.check(frame)
            if reason:
                refused.append((i, frame, reason))
                continue
            book = books.get(frame.symbol)
            if book is None:
                book = books[frame.symbol] = Book()
            second = frame.ts // MARK_EVERY_MS
            pending = unmarked.get(frame.symbol)
            if pending is not None and pending[0] != second:  # the book as it stood at the end of that second
                self._mark(frame.symbol, book, pending[1])
            unmarked[frame.symbol] = (second, frame.ts)
            changes = book.apply(frame)
            if frame.ts > self.wm:
                self.wm = frame.ts
            trades = [TickTrade(t.ts, t.price, t.qty, t.side) for t in frame.trades]
            last = book.last if not trades and (frame.ticker is not None or frame.bar is not None) else None
            depth = None if changes is None else (*changes, frame.snapshot)
            tk = frame.ticker
            funding = None
            if tk is not None and tk.funding_rate is not None and tk.next_funding_ts is not None:
                funding = (tk.funding_rate, tk.next_funding_ts)
            ticks.append(Tick(frame.symbol, frame.ts, book.bid, book.ask, book.bid_qty, book.ask_qty, trades, pos + i,
                              book.mark_price, frame.status, last, depth, funding))
            touched.add(frame.symbol)
            if watch is not None and frame.symbol in watch.by_symbol and (m := book.mark()) is not None:
                self._alerts += watch.on_mark(frame.symbol, frame.ts, m)
            if frame.status == "stale":
                if frame.symbol not in self.stale:
                    self._went_stale(frame)
            elif self.stale:
                self.stale.discard(frame.symbol)
        return refused

    def _went_stale(self, frame: s.MarketFrame) -> None:
        # One title for every symbol: the relay aggregates a storm of stale feeds into one message
        self.stale.add(frame.symbol)
        self._alerts.append(s.Alert(id=f"stale:{frame.symbol}:{frame.ts}", ts=frame.ts, severity="warning",
                                    type="system", source="market", title="stale feed",
                                    text=f"{frame.symbol}: no fresh data; orders on it are held"))

    def _promise(self, ts: int, end: bool) -> None:
        self.wm = max(self.wm, ts)
        self.ended = self.ended or end

    def on_interest(self, ask: s.Interest, offset: int) -> str:
        """An engine partition asks for a symbol's ticks (md.interest at `offset`): its book goes to that partition
        as a snapshot tick in the next flush, then every frame's tick. Asked again, it sends the book again (an engine
        that lost the first). Returns why it cannot, or ''."""
        self.interest_offset = offset
        if ask.engine_partition >= len(self.interest):
            return f"engine partition {ask.engine_partition} does not exist (there are {len(self.interest)})"
        if ask.symbol not in self.instruments or not self._owns(ask.symbol):
            return f"{ask.symbol} is not a symbol of md.events partition {self.partition}"
        self.interest[ask.engine_partition].add(ask.symbol)
        self._snapshots.setdefault(ask.engine_partition, []).append(self._snapshot(ask.symbol))
        return ""

    def _snapshot(self, symbol: str) -> s.Tick:
        """The symbol's whole book, as a tick placed after every frame read so far and before the next offset's."""
        offset, n = self._snapshot_at
        n = n + 1 if offset == self.last_offset else 0
        self._snapshot_at = (self.last_offset, n)
        book = self.books.get(symbol) or Book()
        funding = None if book.funding_rate is None or book.next_funding_ts is None else (
            book.funding_rate, book.next_funding_ts)
        return Tick(symbol, self.wm, book.bid, book.ask, book.bid_qty, book.ask_qty, [],
                    self.last_offset * FRAMES_PER_OFFSET + SNAPSHOT_POSITION + n, book.mark_price, book.status,
                    book.last, (list(book.bids.items()), list(book.asks.items()), book.synced), funding)

    def flush(self, max_ticks: int = 1000) -> tuple[list[Route], list[s.Mark | s.Alert]]:
        """The tick batches for each engine partition (nothing when nothing moved: each gets the ticks of its symbols,
        or an empty batch that moves the watermark on), and one mark per symbol that changed with the alerts of
        symbols that went stale. A batch holds at most `max_ticks`; all but the last promise only their own last
        tick's time. Engine partitions that get the same ticks share their batches."""
        if not self._ticks and not self.ended and self.wm <= self._sent_wm and not self._snapshots:
            return [], []
        groups: dict[tuple[frozenset[str], int], list[int]] = {}
        symbols = frozenset(self._touched)
        for e, wanted in enumerate(self.interest):
            mine = symbols if symbols <= wanted else symbols & wanted
            groups.setdefault((mine, e if e in self._snapshots else -1), []).append(e)
        self.seq += 1
        routes = [(engines, self._batches(self._ticks_of(mine, symbols), self._snapshots.get(e, []), max_ticks))
                  for (mine, e), engines in groups.items()]
        self._ended_seconds()
        marks_and_alerts: list[s.Mark | s.Alert] = [*self._alerts, *self._marks]
        self._alerts.clear()
        self._marks.clear()
        self._sent_wm = self.wm
        self._ticks, self._touched, self._snapshots = [], set(), {}
        return routes, marks_and_alerts

    def _mark(self, symbol: str, book: Book, ts: int) -> None:
        m = book.mark()
        if m is not None:
            self._marks.append(s.Mark(id=f"mark:{symbol}:{ts}", ts=ts, symbol=symbol, bid=book.bid, ask=book.ask,
                                      last=book.last, mark=format(m, "f")))

    def _ended_seconds(self) -> None:
        """The marks of the seconds the watermark has passed (no frame of theirs can come), and all at the end."""
        now = self.wm // MARK_EVERY_MS
        if now == self._marked_upto and not self.ended:
            return
        self._marked_upto = now
        for sym, (second, ts) in list(self._unmarked.items()):
            if second < now or self.ended:
                self._mark(sym, self.books[sym], ts)
                del self._unmarked[sym]

    def _ticks_of(self, mine: frozenset[str], symbols: frozenset[str]) -> list[s.Tick]:
        if mine == symbols:
            return self._ticks
        return [t for t in self._ticks if t.symbol in mine] if mine else []

    def _batches(self, ticks: list[s.Tick], snapshots: list[s.Tick], max_ticks: int) -> list[s.TickBatch]:
        if snapshots:  # in position order, the symbol's ticks from before its snapshot left out
            first: dict[str, int] = {}
            for snap in snapshots:
                first.setdefault(snap.symbol, snap.pos)
            ticks = sorted([t for t in ticks if t.pos > first.get(t.symbol, t.pos - 1)] + snapshots,
                           key=attrgetter("pos"))
        chunks = [ticks[i:i + max_ticks] for i in range(0, len(ticks), max_ticks)] or [[]]
        batches = []
        for n, chunk in enumerate(chunks, 1):
            last = n == len(chunks)
            wm = self.wm if last else chunk[-1].ts
            pos = (self.last_offset + 1) * FRAMES_PER_OFFSET - 1 if last else chunk[-1].pos
            batches.append(s.TickBatch.model_construct(
                id=f"ticks:{self.partition}:{pos}", ts=wm, origin=self.partition, seq=self.seq, wm=wm,
                end=self.ended and last, ticks=chunk))
        return batches

    def next_offset(self, topic: str) -> int:
        return (self.interest_offset if topic == "md.interest" else self.last_offset) + 1

    def progress(self) -> int:
        return self.last_offset + self.interest_offset

    def to_dict(self) -> dict[str, Any]:
        return {"wm": self.wm, "seq": self.seq, "ended": self.ended, "last_offset": self.last_offset,
                "interest_offset": self.interest_offset, "interest": [sorted(x) for x in self.interest],
                "books": {sym: b.to_dict() for sym, b in self.books.items()}, "stale": sorted(self.stale),
                "unmarked": {sym: list(v) for sym, v in self._unmarked.items()}, "marked_upto": self._marked_upto,
                "price_rules": None if self.price_watch is None else self.price_watch.to_json()}

    def load(self, d: dict[str, Any]) -> None:
        self.wm, self.seq, self.ended, self.last_offset = d["wm"], d["seq"], d["ended"], d["last_offset"]
        self._sent_wm = self.wm
        self.interest_offset = d.get("interest_offset", -1)  # absent from checkpoints taken before md.interest
        if "interest" in d:
            self.interest = [set(x) for x in d["interest"]]
        self.stale = set(d.get("stale", ()))  # absent from checkpoints taken before stale alerts
        self._unmarked = {sym: (v[0], v[1]) for sym, v in d.get("unmarked", {}).items()}  # absent before issue 20
        self._marked_upto = d.get("marked_upto", self.wm // MARK_EVERY_MS)
        if self.price_watch is not None:
            self.price_watch.load(d.get("price_rules") or {})
        self.books = {sym: Book.from_dict(v) for sym, v in d["books"].items()}

