"""An engine partition: the sessions it owns, run in event-time order over the whole market.

Ticks arrive from every market partition (origin) in batches, in whatever order Kafka delivers them. The
merger releases a tick only when every origin has promised (watermark) that nothing earlier will come, and
in (ts, origin, position) order, so the sessions see the same sequence whatever the delivery timing was.
"""
from __future__ import annotations

from bisect import bisect_left

import schemas as s

from .book import Book
from .instruments import Instrument
from .session import Session, SessionConfig
from .strategy import Target

END = 1 << 62


def tick_of(t: list) -> s.Tick:
    """A tick from its JSON array (md.ticks, snapshots)."""
    symbol, ts, bid, ask, bid_qty, ask_qty, trades, pos = t
    return s.Tick(symbol, ts, bid, ask, bid_qty, ask_qty, [s.TickTrade(*x) for x in trades], pos)


def tick_json(t: s.Tick) -> list:
    """The JSON array of a tick (orjson does not take named tuples)."""
    return [t.symbol, t.ts, t.bid, t.ask, t.bid_qty, t.ask_qty, [tuple(x) for x in t.trades], t.pos]


def batch_of(raw: dict) -> s.TickBatch:
    """A TickBatch from md.ticks JSON, unvalidated: the topic is written by the market actor alone, and its
    decoding is the engine's hot path. Raises KeyError/TypeError/ValueError on a malformed message."""
    return s.TickBatch.model_construct(
        id=raw["id"], ts=raw["ts"], origin=int(raw["origin"]), seq=raw["seq"], wm=int(raw["wm"]),
        end=bool(raw.get("end", False)), ticks=[tick_of(t) for t in raw["ticks"]])


class TickMerger:
    """Ticks of every origin, released in (ts, origin, position) order once every origin's watermark passed
    them. Each batch is a sorted run: one sort per release merges the runs (timsort finds them)."""

    def __init__(self, origins: int) -> None:
        self.wm = [-1] * origins
        self.last_pos = [-1] * origins
        self.pending: list[tuple[int, int, int, s.Tick]] = []
        self._sorted = True

    def add(self, batch: s.TickBatch) -> None:
        o, last = batch.origin, self.last_pos[batch.origin]
        fresh = [(t.ts, o, t.pos, t) for t in batch.ticks if t.pos > last]  # a restarted market actor re-sends
        if fresh:
            self.last_pos[o] = fresh[-1][2]
            self.pending += fresh
            self._sorted = False
        self.wm[o] = END if batch.end else max(self.wm[o], batch.wm)

    def release(self) -> list[s.Tick]:
        pending = self.pending
        if not pending:
            return []
        if not self._sorted:
            pending.sort()
            self._sorted = True
        n = bisect_left(pending, (min(self.wm),))  # the ticks before every origin's watermark
        out = [e[3] for e in pending[:n]]
        del pending[:n]
        return out

    @property
    def ended(self) -> bool:
        return not self.pending and all(w == END for w in self.wm)

    def to_dict(self) -> dict:
        return {"wm": self.wm, "last_pos": self.last_pos, "pending": [[o, tick_json(t)] for _, o, _, t in self.pending]}

    def load(self, d: dict) -> None:
        self.wm, self.last_pos = list(d["wm"]), list(d["last_pos"])
        self.pending = sorted((t.ts, o, t.pos, t) for o, t in ((o, tick_of(t)) for o, t in d["pending"]))
        self._sorted = True


class Engine:
    def __init__(self, partition: int, origins: int, instruments: dict[str, Instrument],
                 sessions: list[SessionConfig]) -> None:
        self.partition = partition
        self.instruments = instruments
        self.merger = TickMerger(origins)
        self.books: dict[str, Book] = {}
        self.sessions = {cfg.id: Session(cfg, instruments) for cfg in sessions}
        self._all = list(self.sessions.values())
        self._trading: dict[str, list[Session]] = {}  # symbol -> the sessions that trade it
        self._due_at = -1  # no session needs before_tick below this event time
        self.now = 0
        self.finished = False
        self.offsets: dict[str, int] = {}  # last applied offset per input topic of this partition

    def seen(self, topic: str, offset: int) -> bool:
        return offset <= self.offsets.get(topic, -1)

    def mark_seen(self, topic: str, offset: int) -> None:
        self.offsets[topic] = offset

    def progress(self) -> int:
        return sum(self.offsets.values())

    # --- inputs --------------------------------------------------------------------------------------------
    def on_ticks(self, batch: s.TickBatch) -> list:
        self.merger.add(batch)
        out: list = []
        for tick in self.merger.release():
            out += self._tick(tick)
        if self.merger.ended and not self.finished:
            out += self._finish()
        return out

    def _tick(self, tick: s.Tick) -> list:
        self.now = tick.ts
        books = self.books
        out: list = []
        if tick.ts >= self._due_at:
            for sess in self._all:
                out += sess.before_tick(tick.ts, books)
            self._update_due()
        book = books.get(tick.symbol)
        if book is None:
            book = books[tick.symbol] = Book()
        book.apply(tick)
        trading = self._trading.get(tick.symbol)
        if trading is None:
            trading = self._trading[tick.symbol] = [x for x in self._all if x.cfg.trades(tick.symbol)]
        for sess in trading:
            out += sess.on_tick(tick, books)
        if out:
            self._update_due()
        return out

    def _update_due(self) -> None:
        """Sessions change what is due only when they act, and every action has an output."""
        self._due_at = min((x.due_at() for x in self._all), default=END)

    def on_order(self, order: s.Order) -> list:
        sess = self.sessions.get(order.session)
        if sess is None:
            return [self._alert("warning", "order for an unknown session", f"{order.id} -> {order.session}", order.ts)]
        self._due_at = -1
        return sess.submit_external(order, self.now)

    def on_signal(self, sig: s.Signal) -> list:
        sess = self.sessions.get(sig.session)
        if sess is None:
            return [self._alert("warning", "signal for an unknown session", f"{sig.id} -> {sig.session}", sig.ts)]
        intent = Target(sig.symbol, sig.target, sig.confidence, sig.reasoning or sig.strategy, {"signal": sig.id})
        self._due_at = -1
        return sess._decide(intent, max(sig.ts, self.now), self.books)

    def _finish(self) -> list:
        self.finished = True
        out: list = [sess.equity_message(self.now, self.books) for sess in self.sessions.values()]
        out.append(self._alert("info", "tape finished",
                               f"engine partition {self.partition}: {len(self.sessions)} sessions", self.now))
        return out

    def _alert(self, severity: str, title: str, text: str, ts: int) -> s.Alert:
        return s.Alert(id=f"engine:{self.partition}:{title}:{ts}", ts=ts, severity=severity, source="engine",
                       title=title, text=text)

    # --- checkpoint ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"merger": self.merger.to_dict(), "now": self.now, "finished": self.finished,
                "offsets": self.offsets, "sessions": {k: v.to_dict() for k, v in self.sessions.items()},
                "books": {sym: b.to_dict() for sym, b in self.books.items()}}

    def load(self, d: dict) -> None:
        self.merger.load(d["merger"])
        self.now, self.finished, self.offsets = d["now"], d["finished"], dict(d["offsets"])
        for sid, st in d["sessions"].items():
            if sid in self.sessions:
                self.sessions[sid].load(st)
        self.books = {sym: Book.from_dict(v) for sym, v in d["books"].items()}
        self._due_at = -1

