"""An engine partition: the sessions it owns, run in event-time order over the whole market.

Ticks arrive from every market partition (origin) in batches, in whatever order Kafka delivers them. The
merger releases a tick only when every origin has promised (watermark) that nothing earlier will come, and
in (ts, origin, position) order, so the sessions see the same sequence whatever the delivery timing was.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

import schemas as s
from papertape.core.instruments import Instrument
from papertape.core.market.book import Book
from papertape.core.market.partition import FRAMES_PER_OFFSET, SNAPSHOT_POSITION
from papertape.core.session import External, Session
from papertape.core.session.config import SessionConfig
from papertape.core.strategy import Target
from schemas.vocabulary import Severity

END = 1 << 62
ASK_AGAIN_MS = 1000  # a symbol's ticks came but not its snapshot (a market actor restarted): asked again after this


def symbols_traded(sessions: Iterable[SessionConfig], instruments: dict[str, Instrument]) -> set[str]:
    """The symbols any of `sessions` trades: the ticks their engine partition gets."""
    return {sym for cfg in sessions for sym, inst in instruments.items() if cfg.trades(sym, inst.category)}


def tick_of(t: list[Any]) -> s.Tick:
    """A tick from its JSON array (md.ticks, snapshots), with the tuples its type declares where JSON has arrays (the
    compiled core checks them). Level keys saved as strings (before depth changes were keyed by float) become floats."""
    symbol, ts, bid, ask, bid_qty, ask_qty, trades, pos, mark, status, last, depth, funding = t
    if depth is not None:
        bids, asks, snapshot = depth
        depth = ([(float(p), q) for p, q in bids], [(float(p), q) for p, q in asks], snapshot)
    return s.Tick(symbol, ts, bid, ask, bid_qty, ask_qty, [s.TickTrade(*x) for x in trades], pos, mark, status, last,
                  depth, None if funding is None else (funding[0], funding[1]))


def batch_of(raw: dict[str, Any]) -> s.TickBatch:
    """A TickBatch from md.ticks JSON, unvalidated: the topic is written by the market actor alone, and its
    decoding is the engine's hot path. Raises KeyError/TypeError/ValueError on a malformed message."""
    return s.TickBatch.model_construct(
        id=raw["id"], ts=raw["ts"], origin=int(raw["origin"]), seq=raw["seq"], wm=int(raw["wm"]),
        end=bool(raw.get("end", False)), ticks=[tick_of(t) for t in raw["ticks"]])


class TickMerger:
    """Ticks of every origin, released in (ts, origin, position) order once every origin's watermark passed
    them. An origin's ticks arrive in its own order, so each waits in its origin's queue and a release merges
    only the queues' released heads."""

    def __init__(self, origins: int) -> None:
        self.wm = [-1] * origins
        self.last_pos = [-FRAMES_PER_OFFSET] * origins  # below a snapshot taken before the origin's first frame
        self.queues: list[list[tuple[int, int, s.Tick]]] = [[] for _ in range(origins)]  # (ts, pos, tick)
        self.end_ts = 0  # the last event time of a finite tape, as its origins' last batches promise

    def add(self, batch: s.TickBatch) -> None:
        o, last = batch.origin, self.last_pos[batch.origin]
        fresh = [(t.ts, t.pos, t) for t in batch.ticks if t.pos > last]  # a restarted market actor re-sends
        if fresh:
            self.last_pos[o] = fresh[-1][1]
            self.queues[o] += fresh
        if batch.end:
            self.end_ts = max(self.end_ts, batch.wm)
        self.wm[o] = END if batch.end else max(self.wm[o], batch.wm)

    def release(self) -> list[s.Tick]:
        limit = (min(self.wm),)
        heads: list[tuple[int, list[tuple[int, int, s.Tick]]]] = []
        for o, q in enumerate(self.queues):
            if q and q[0] < limit:
                n = bisect_left(q, limit)  # the ticks before every origin's watermark
                heads.append((o, q[:n]))
                del q[:n]
        if not heads:
            return []
        if len(heads) == 1:
            return [e[2] for e in heads[0][1]]
        return [e[3] for e in sorted((ts, o, pos, t) for o, head in heads for ts, pos, t in head)]

    @property
    def ended(self) -> bool:
        return not any(self.queues) and all(w == END for w in self.wm)

    def to_dict(self) -> dict[str, Any]:
        """Ticks stay named tuples: the checkpoint writes them as arrays (orjson with default=list)."""
        return {"wm": self.wm, "last_pos": self.last_pos, "queues": [[e[2] for e in q] for q in self.queues],
                "end_ts": self.end_ts}

    def load(self, d: dict[str, Any]) -> None:
        self.wm, self.last_pos, self.end_ts = list(d["wm"]), list(d["last_pos"]), d.get("end_ts", 0)
        self.queues = [[(t.ts, t.pos, t) for t in map(tick_of, q)] for q in d["queues"]]


class Engine:
    def __init__(self, partition: int, origins: int, instruments: dict[str, Instrument],
                 sessions: list[SessionConfig]) -> None:
        self.partition = partition
        self.instruments = instruments
        self.merger = TickMerger(origins)
        self.books: dict[str, Book] = {}  # the sessions read these: updated in place, never replaced
        self.sessions = {cfg.id: Session(cfg, instruments, self.books) for cfg in sessions}
        self._all: list[Session] = []
        self._trading: dict[str, list[Session]] = {}  # symbol -> the sessions that trade it, filled lazily
        self._due_at = -1  # no session needs before_tick below this event time
        self._refresh()
        self.now = 0
        self.finished = False
        self.offsets: dict[str, int] = {}  # last applied offset per input topic of this partition
        self.deep = symbols_traded(sessions, instruments)  # the symbols whose every tick this partition gets
        self._asked: dict[str, int] = {}  # symbol -> when its ticks were asked for (md.interest), until its snapshot
        self._unanswered: dict[str, str] = {}  # session -> the start it announces at its first event time

    def next_offset(self, topic: str) -> int:
        return self.offsets.get(topic, -1) + 1

    def mark_seen(self, topic: str, offset: int) -> None:
        self.offsets[topic] = offset

    def progress(self) -> int:
        return sum(self.offsets.values())

    # --- inputs --------------------------------------------------------------------------------------------
    def on_ticks(self, batch: s.TickBatch) -> list[s.Message]:
        self.merger.add(batch)
        out: list[s.Message] = []
        for tick in self.merger.release():
            if tick.pos & SNAPSHOT_POSITION:
                out += self._snapshot(tick)
                continue
            if self._asked and tick.symbol in self._asked:  # nothing of a symbol asked for before its whole book
                out += self._ask_again(tick)
                continue
            if self._all:
                out += self._tick(tick)
            else:  # no sessions here yet: only the books move (a session may start at run time)
                self.now = tick.ts
                self._book(tick.symbol).apply_tick(tick)
        if self.merger.ended and not self.finished:
            out += self._finish()
        return out

    def _snapshot(self, tick: s.Tick) -> list[s.Message]:
        """A symbol's whole book from its market actor, asked for by this partition: its every tick follows. No
        session sees it as a tick (nothing traded): the sessions that trade the symbol read its book from here on. A
        session started on a partition that had no tick yet announces itself here, at the snapshot's event time."""
        self.now = max(self.now, tick.ts)
        book = self._book(tick.symbol)
        book.reset()
        book.apply_tick(tick)
        self.deep.add(tick.symbol)
        self._asked.pop(tick.symbol, None)
        out: list[s.Message] = []
        for sess in self._all:
            if not sess.announced and sess.trades(tick.symbol):
                out += sess.before_tick(self.now)
        if out:
            self._update_due()
        return self._answer(out) if self._unanswered else out

    def _answer(self, out: list[s.Message]) -> list[s.Message]:
        """A start read before the partition's first event time is answered by the session's first status."""
        return [m.model_copy(update={"control": self._unanswered.pop(m.session)})
                if isinstance(m, s.SessionStatus) and m.session in self._unanswered else m for m in out]

    def _ask_again(self, tick: s.Tick) -> list[s.Message]:
        """A symbol's ticks came, its snapshot did not: a restarted market actor sent it before this partition's
        last tick, which dropped it as seen. Asked again, the market actor sends its book again."""
        if tick.ts - self._asked[tick.symbol] < ASK_AGAIN_MS:
            return []
        self.now = tick.ts
        del self._asked[tick.symbol]
        return self._ask({tick.symbol})

    def _ask(self, symbols: set[str]) -> list[s.Message]:
        out: list[s.Message] = []
        for sym in sorted(symbols - self._asked.keys()):
            self._asked[sym] = self.now
            out.append(s.Interest(id=f"interest:{self.partition}:{sym}:{self.now}", ts=self.now, symbol=sym,
                                  engine_partition=self.partition))
        return out

    def _missing(self, cfg: SessionConfig) -> set[str]:
        """The symbols `cfg` trades whose ticks this partition does not get (none to ask for once the tape has
        finished)."""
        return set() if self.finished else symbols_traded([cfg], self.instruments) - self.deep

    def on_external(self, item: External | s.Signal | s.VenueReport | s.Control) -> list[s.Message]:
        """An order, cancel, amend, signal, exchange report or control, to its session."""
        if item.kind == "signal":
            return self.on_signal(item)
        if item.kind == "venue_report":
            return self.on_report(item)
        if item.kind == "control":
            return self.on_control(item)
        return self.on_order(item)

    def _tick(self, tick: s.Tick) -> list[s.Message]:
        self.now = tick.ts
        out: list[s.Message] = []
        if tick.ts >= self._due_at:
            for sess in self._all:
                out += sess.before_tick(tick.ts)
            self._update_due()
        self._book(tick.symbol).apply_tick(tick)
        if tick.funding is not None and tick.funding[1] < self._due_at:
            self._due_at = tick.funding[1]  # a funding time may now be due for a session holding the symbol
        trading = self._trading.get(tick.symbol)
        if trading is None:
            trading = self._trading[tick.symbol] = [x for x in self._all if x.trades(tick.symbol)]
        for sess in trading:
            out += sess.on_tick(tick)
        if out:
            self._update_due()
        return self._answer(out) if self._unanswered else out

    def _book(self, symbol: str) -> Book:
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = Book()
        return book

    def _refresh(self) -> None:
        """After the set of sessions or their symbols changed."""
        self._all = list(self.sessions.values())
        self._trading = {}
        self._due_at = -1

    def _update_due(self) -> None:
        """Sessions change what is due only when they act, and every action has an output."""
        self._due_at = min((x.due_at() for x in self._all), default=END)

    def on_order(self, order: External) -> list[s.Message]:
        sess = self.sessions.get(order.session)
        if sess is None:
            raise s.InvalidMessage(f"{order.kind} for session {order.session!r}, not on this engine")
        self._due_at = -1
        book = self.books.get(getattr(order, "symbol", ""))
        # after the tape the market stands still: nothing would ever meet an order (a live session never finishes)
        closed = "the tape has finished: no market left to trade on" if self.finished else ""
        return sess.submit_external(order, self.now, book.status if book else "live", closed)

    def on_signal(self, sig: s.Signal) -> list[s.Message]:
        sess = self.sessions.get(sig.session)
        if sess is None:
            raise s.InvalidMessage(f"signal for session {sig.session!r}, not on this engine")
        intent = Target(sig.symbol, sig.target, sig.confidence, sig.reasoning or sig.strategy, {"signal": sig.id})
        self._due_at = -1
        return sess.decide(intent, max(sig.ts, self.now))

    def on_report(self, report: s.VenueReport) -> list[s.Message]:
        """What a session's exchange reported; raises s.InvalidMessage for a session not here or not on one."""
        sess = self.sessions.get(report.session)
        if sess is None:
            raise s.InvalidMessage(f"venue report for session {report.session!r}, not on this engine")
        self._due_at = -1
        return sess.on_report(report, self.now)

    def on_control(self, ctrl: s.Control) -> list[s.Message]:
        """Start, pause, resume, stop or reconfigure a session at the engine's event time; its status messages
        name the control (the sender's answer). Raises s.InvalidMessage, changing nothing, when the command cannot
        apply. A start or a reconfigure on symbols this partition does not get asks for them (md.interest): their
        books come as snapshots, then their ticks."""
        return [m.model_copy(update={"control": ctrl.id}) if isinstance(m, s.SessionStatus) else m
                for m in self._apply_control(ctrl)]

    def _apply_control(self, ctrl: s.Control) -> list[s.Message]:
        sess = self.sessions.get(ctrl.session)
        now = self.now
        if ctrl.command == "start" and sess is None:
            return self._start(ctrl)
        if sess is None:
            raise s.InvalidMessage(f"{ctrl.command}: no session {ctrl.session!r} on this engine")
        self._due_at = -1
        if ctrl.command == "start":
            if sess.status == "stopped":
                raise s.InvalidMessage(f"start: session {ctrl.session!r} was stopped; start one with a new id")
            return sess.resume(now) if sess.status == "paused" else [sess.status_message(now, "already running")]
        if ctrl.command == "pause":
            return sess.pause(now)
        if ctrl.command == "reconcile":
            return sess.reconcile(now, ctrl.id)
        if ctrl.command == "resume":
            return sess.resume(now)
        if ctrl.command == "stop":
            out = sess.stop(now)
            if self.finished:  # after the tape the market stands still: the closes meet the last books
                at = now + sess.cfg.latency_ms
                out += sess.before_tick(at) + [sess.equity_message(at)]
            return out
        try:
            out = sess.reconfigure(ctrl.config, now)
        except ValueError as exc:  # pydantic's ValidationError is one
            raise s.InvalidMessage(f"config of session {ctrl.session!r}: {exc}") from None
        self._refresh()
        return out + self._ask(self._missing(sess.cfg))

    def _start(self, ctrl: s.Control) -> list[s.Message]:
        if ctrl.config.get("id", ctrl.session) != ctrl.session:
            raise s.InvalidMessage(f"start: the config's id {ctrl.config['id']!r} is not the session {ctrl.session!r}")
        try:
            sess = Session(SessionConfig.model_validate({**ctrl.config, "id": ctrl.session}), self.instruments,
                           self.books)
        except ValueError as exc:
            raise s.InvalidMessage(f"start of session {ctrl.session!r}: {exc}") from None
        self.sessions[ctrl.session] = sess
        self._refresh()
        if not self.now:
            self._unanswered[ctrl.session] = ctrl.id
        return (sess.before_tick(self.now) if self.now else []) + self._ask(self._missing(sess.cfg))

    def _finish(self) -> list[s.Message]:
        """At the tape's end, the same time for every partition, whichever symbols' ticks it got."""
        self.finished = True
        self.now = max(self.now, self.merger.end_ts)
        out: list[s.Message] = [sess.equity_message(self.now) for sess in self.sessions.values()]
        out.append(self._alert("info", "tape finished",
                               f"engine partition {self.partition}: {len(self.sessions)} sessions", self.now))
        return out

    def _alert(self, severity: Severity, title: str, text: str, ts: int) -> s.Alert:
        return s.Alert(id=f"engine:{self.partition}:{title}:{ts}", ts=ts, severity=severity, source="engine",
                       title=title, text=text)

    # --- checkpoint ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"merger": self.merger.to_dict(), "now": self.now, "finished": self.finished,
                "offsets": self.offsets, "sessions": {k: v.to_dict() for k, v in self.sessions.items()},
                "deep": sorted(self.deep), "asked": self._asked, "unanswered": self._unanswered,
                "books": {sym: b.to_dict() for sym, b in self.books.items()}}

    def load(self, d: dict[str, Any]) -> None:
        self.merger.load(d["merger"])
        self.now, self.finished, self.offsets = d["now"], d["finished"], dict(d["offsets"])
        self.books.clear()
        self.books.update((sym, Book.from_dict(v)) for sym, v in d["books"].items())
        for sid, st in d["sessions"].items():  # with their configs: sessions started or changed at run time
            self.sessions[sid] = Session.restore(st, self.instruments, self.books)
        # saved before md.interest: the partition got every tick
        self.deep = set(d["deep"]) if "deep" in d else self.deep | set(self.books)
        self._asked = dict(d.get("asked", {}))
        self._unanswered = dict(d.get("unanswered", {}))
        self._refresh()

