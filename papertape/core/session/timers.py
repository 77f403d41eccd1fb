"""What falls due in event time, before the tick at that time: funding settlements, the risk day's start, the end
of a position's max hold, equity snapshots."""
from __future__ import annotations

from decimal import Decimal
from typing import Literal

import schemas as s
from papertape.core.account import Account
from papertape.core.session.margin_rules import MarginRules
from papertape.core.session.market_view import MarketView
from papertape.core.session.messages import Messages
from papertape.core.session.risk import RiskGuard
from papertape.core.session.state import Run

TimerKind = Literal["funding", "day", "hold", "equity"]


class Timers:
    def __init__(self, run: Run, account: Account, guard: RiskGuard, margin: MarginRules, view: MarketView,
                 messages: Messages) -> None:
        self.run = run
        self.account = account
        self.guard = guard
        self.margin = margin
        self.view = view
        self.messages = messages
        self.next_equity_ts: int | None = None
        self.funded: dict[str, int] = {}  # symbol -> the last funding time settled
        self.hold_until: dict[str, int] = {}  # symbol -> when max hold closes its position

    def due_at(self) -> int:
        """The earliest time a timer falls due (-1 until the first equity snapshot is scheduled)."""
        due = [-1 if self.next_equity_ts is None else self.next_equity_ts]
        if self.run.cfg.funding:
            due += [t for t in (self._funding_due(sym) for sym in self.account.positions) if t is not None]
        due += self.hold_until.values()
        day = self.guard.next_day_at()
        if day is not None:
            due.append(day)
        return min(due)

    def next_due(self, now: int) -> tuple[int, TimerKind] | None:
        """The earliest timer at or before `now`: a funding time, the day's end, a position's max hold, an equity
        snapshot (in that order at the same time)."""
        timers: list[tuple[int, int, TimerKind]] = []
        if self.next_equity_ts is not None and self.next_equity_ts <= now:
            timers.append((self.next_equity_ts, 3, "equity"))
        if self.run.cfg.funding:
            funding = self._next_funding(now)
            if funding is not None:
                timers.append((funding, 0, "funding"))
        day = self.guard.next_day_at()
        if day is not None and day <= now:
            timers.append((day, 1, "day"))
        hold = min(self.hold_until.values(), default=None)
        if hold is not None and hold <= now:
            timers.append((hold, 2, "hold"))
        if not timers:
            return None
        ts, _, kind = min(timers)
        return ts, kind

    # --- funding ---------------------------------------------------------------------------------------------
    def _funding_due(self, symbol: str) -> int | None:
        book = self.view.book(symbol)
        if book is None or book.next_funding_ts is None or not self.view.holds_perp(symbol):
            return None
        if book.next_funding_ts <= self.funded.get(symbol, -1):
            return None
        return book.next_funding_ts

    def _next_funding(self, now: int) -> int | None:
        due = [t for t in map(self._funding_due, self.account.positions) if t is not None and t <= now]
        return min(due) if due else None

    def settle_funding(self, at: int) -> list[s.Message]:
        """Funding of every position whose symbol settles at `at`."""
        out: list[s.Message] = []
        for sym in sorted(self.account.positions):
            if self._funding_due(sym) != at:
                continue
            self.funded[sym] = at
            book, pos = self.view.books[sym], self.account.positions[sym]
            mark = book.mark()
            if book.funding_rate is None or mark is None:
                continue
            rate = Decimal(book.funding_rate)
            amount = self.margin.funding(pos.qty, mark, rate)
            self.account.apply_funding(amount)
            out.append(self.messages.funding(sym, at, rate, mark, pos.qty, amount))
        return out

    # --- the risk day, max hold, equity snapshots ----------------------------------------------------------------
    def new_day(self, at: int) -> list[s.Message]:
        tripped = dict(self.guard.tripped)
        self.guard.new_day(at, self.view.equity())
        if not tripped:
            return []
        return self.messages.breakers_reset(at, tripped)

    def max_hold_due(self, at: int) -> list[str]:
        """The symbols whose max hold ends at `at`, for the session to close."""
        due = sorted(k for k, v in self.hold_until.items() if v == at)
        for sym in due:
            self.hold_until[sym] = at + 60_000  # tried again in a minute if it is still open then
        return due

    def drop_max_holds(self) -> None:
        self.hold_until.clear()

    def equity_snapshot(self, at: int, now: int) -> list[s.Message]:
        """One snapshot for a gap without ticks, at its first due time; the next is due after `now`."""
        eq = self.messages.equity(at)
        out = [eq, *self.messages.tripped(self.guard.watch(eq.equity), at)]
        self.next_equity_ts = self._next_equity_after(now)
        return out

    def schedule_equity(self, now: int) -> None:
        """The first equity snapshot, after `now`."""
        if self.next_equity_ts is None:
            self.next_equity_ts = self._next_equity_after(now)

    def _next_equity_after(self, now: int) -> int:
        every = self.run.cfg.equity_every_ms
        return now - now % every + every

    # --- positions opened and closed (the ledger, at each fill) ----------------------------------------------------
    def position_opening(self, symbol: str, ts: int) -> None:
        """A position opened after a funding time owes nothing for it."""
        book = self.view.book(symbol)
        if book is not None and book.next_funding_ts is not None and book.next_funding_ts <= ts:
            self.funded[symbol] = max(self.funded.get(symbol, -1), book.next_funding_ts)

    def position_moved(self, symbol: str, before: Decimal, after: Decimal, ts: int) -> None:
        """Max hold runs from a position's opening (or reversal) to its close."""
        hold = self.run.cfg.auto_close.max_hold_ms
        if not after:
            self.hold_until.pop(symbol, None)
        elif hold is not None and self.run.status != "stopped" and (not before or (before > 0) != (after > 0)):
            self.hold_until[symbol] = ts + hold  # opened (or reversed) now
