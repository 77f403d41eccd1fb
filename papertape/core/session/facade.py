"""The session the engine drives: its parts built together in one step, and sequenced in event time."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from mypy_extensions import mypyc_attr

import schemas as s
from papertape.core.account import Account
from papertape.core.instruments import Instrument
from papertape.core.market.book import Book
from papertape.core.session.config import SessionConfig
from papertape.core.session.control import Control
from papertape.core.session.gate import Gate
from papertape.core.session.ledger import Ledger
from papertape.core.session.margin_rules import MarginRules
from papertape.core.session.market_view import MarketView
from papertape.core.session.messages import Messages
from papertape.core.session.placement import External, Placement
from papertape.core.session.risk import RiskGuard
from papertape.core.session.sizing import Sizer
from papertape.core.session.state import Run
from papertape.core.session.strategy_runner import StrategyFailed, StrategyRunner
from papertape.core.session.timers import TimerKind, Timers
from papertape.core.strategies import make_strategy
from papertape.core.strategy import Intent
from papertape.core.venue.paper import Execution, PaperVenue, VenueRules
from papertape.core.venue.reconcile import reconcile
from papertape.core.venue.remote import RemoteVenue, Venue
from schemas.vocabulary import BYBIT_VENUES, FeedStatus, SessionState


@mypyc_attr(allow_interpreted_subclasses=True)  # tests/unit/test_venue_properties.py watches its phases
class Session:
    """One paper-trading session: its account, venue and strategy. The engine drives it: `before_tick` and
    `on_tick` in event time, and its signals (`decide`), orders (`submit_external`) and control commands."""

    def __init__(self, cfg: SessionConfig, instruments: dict[str, Instrument], books: dict[str, Book],
                 account: Account | None = None, shadow_account: Account | None = None) -> None:
        """`books`: the engine's books, which it updates in place; the session reads the market from them.
        `account`: a restored account (`restore`); a new one holds the config's balance. A session on an exchange
        also has the account of its shadow, the paper venue simulating its orders."""
        self.instruments = instruments
        self.books = books
        account = self.account = Account(cfg.balance, cfg.settle_coin) if account is None else account
        run = self._run = Run(cfg)
        fees = cfg.fee_schedule(instruments)
        margin = self.margin = MarginRules(cfg, instruments, fees)
        guard = self.guard = RiskGuard(cfg.risk, cfg.balance)
        runner = self._runner = StrategyRunner(make_strategy(cfg.strategy, cfg.params))
        view = self._view = MarketView(account, books, instruments)
        messages = self._messages = Messages(run, account, guard, view)
        timers = self._timers = Timers(run, account, guard, margin, view, messages)
        # The venue asks the gate to admit an order, and the gate reads the venue's open orders: the lambda reaches
        # the gate built next, before this constructor returns.
        rules = VenueRules(fees, cfg.fill, cfg.dex)
        venue: Venue
        self.shadow_account = None
        if cfg.venue in BYBIT_VENUES:
            shadow = self.shadow_account = shadow_account or Account(cfg.balance, cfg.settle_coin)
            venue = RemoteVenue(cfg.id, PaperVenue(rules, instruments, lambda sym: shadow.position(sym).qty,
                                                   shadow_ledger(shadow), lambda order, price: ""),
                                Ledger(account, timers).book_fill, cfg.reconcile_every_s * 1000)
        else:
            venue = PaperVenue(rules, instruments, lambda sym: account.position(sym).qty,
                               Ledger(account, timers).book_fill, lambda order, price: gate.admit(order, price))
        self.venue = venue
        gate = self._gate = Gate(run, instruments, account, view, venue, guard, margin, messages)
        placement = self._placement = Placement(run, account, view, venue, guard, margin, gate, messages)
        self._sizer = Sizer(run, instruments, account, view, venue, fees, margin, runner, gate, placement, messages)
        self._control = Control(run, account, view, venue, guard, margin, runner, timers, placement, messages)

    @property
    def cfg(self) -> SessionConfig:
        return self._run.cfg

    @property
    def status(self) -> SessionState:
        return self._run.status

    @property
    def announced(self) -> bool:
        """Its first status message ("started") is out."""
        return self._control.announced

    def trades(self, symbol: str) -> bool:
        inst = self.instruments.get(symbol)
        return inst is not None and self.cfg.trades(symbol, inst.category)

    # --- event-time driving ---------------------------------------------------------------------------------------
    def due_at(self) -> int:
        """The event time from which `before_tick` has something to do (a request arriving, an order expiring,
        a funding time, a position's max hold, the day's end, an equity snapshot)."""
        due = self._timers.due_at()
        arrival = self.venue.next_due()
        return due if arrival is None else min(due, arrival)

    def before_tick(self, now: int) -> list[s.Message]:
        """What is due up to `now`, against the books as they stood before the tick at `now`."""
        out = self._control.start(now)
        if isinstance(self.venue, RemoteVenue) and self.venue.next_check is None:  # its first reconciliation
            out += self._placement.outcomes(self.venue.check(now), now)
        while True:  # venue requests and timers in time order: funding sees the positions held at its time
            timer = self._timers.next_due(now)
            until = now if timer is None else timer[0] - 1
            arrival = self.venue.next_due()
            if arrival is not None and arrival <= until:
                out += self._placement.on_time(until)
            if timer is None:
                break
            out += self._timer(*timer, now)
        self._timers.schedule_equity(now)
        return out

    def _timer(self, at: int, kind: TimerKind, now: int) -> list[s.Message]:
        if kind == "funding":
            return self._timers.settle_funding(at)
        if kind == "day":
            return self._timers.new_day(at)
        if kind == "hold":
            return self._max_hold(at)
        return self._timers.equity_snapshot(at, now)

    def _max_hold(self, at: int) -> list[s.Message]:
        hold_ms = self.cfg.auto_close.max_hold_ms
        assert hold_ms is not None  # a config without max hold drops the positions' deadlines
        out: list[s.Message] = []
        for sym in self._timers.max_hold_due(at):
            out += self._placement.close_position(sym, at, f"max hold time {hold_ms / 3_600_000:g} h reached: "
                                                          f"closing at market")
        return out

    def on_tick(self, tick: s.Tick) -> list[s.Message]:
        """After the tick moved its book: the venue's resting orders and triggers, liquidations, then the
        strategy."""
        # per tick and session: the calls are skipped when there is nothing for them (the hot path)
        out = self._placement.on_tick(tick) if self.venue.working() else []
        if self._run.cfg.liquidation and self._view.holds_perp(tick.symbol):
            out += self._placement.liquidations(tick.ts)
        status = self._run.status
        if status == "stopped":
            return out
        try:
            intents = self._runner.intents(tick, status == "running")
        except StrategyFailed as failed:
            return out + self._control.strategy_failed(failed.error, tick.ts)
        for intent in intents:
            out += self._sizer.decide(intent, tick.ts)
        return out

    # --- inputs ------------------------------------------------------------------------------------------------------
    def decide(self, intent: Intent, ts: int) -> list[s.Message]:
        """A strategy's or a signal's intent at `ts`: the orders it makes, or a decision saying why not."""
        return self._sizer.decide(intent, ts)

    def submit_external(self, msg: External, now: int, feed_status: FeedStatus = "live",
                        closed: str = "") -> list[s.Message]:
        """An order, cancel or amend from the orders topic: it reaches the venue `latency_ms` after it is seen.
        An order is refused while its symbol's feed is not live (stale or unpriced); everything, for `closed`."""
        return self._placement.submit_external(msg, now, feed_status, closed)

    def on_report(self, report: s.VenueReport, now: int) -> list[s.Message]:
        """What the session's exchange reported: order updates and executions, or a reconciliation snapshot."""
        venue = self.venue
        if not isinstance(venue, RemoteVenue):
            raise s.InvalidMessage(f"session {self.cfg.id} trades on the {self.cfg.venue} venue, not an exchange")
        if not report.snapshot:
            return self._placement.outcomes(venue.apply(report, now), now)
        if venue.started_at is None:
            return []  # not this session's yet: its first check, at its first event time, is what counts
        outcomes, findings = reconcile(venue, self.account, report, now)
        return self._placement.outcomes(outcomes, now) + self._messages.reconciled(report.request, findings, now)

    def reconcile(self, now: int, check: str) -> list[s.Message]:
        """Ask the exchange for a snapshot now (its answer is reconciled as `check`)."""
        if not isinstance(self.venue, RemoteVenue):
            raise s.InvalidMessage(f"reconcile: session {self.cfg.id} trades on the {self.cfg.venue} venue, "
                                   f"which has nothing to reconcile with")
        return self._placement.outcomes(self.venue.check(now, check), now)

    # --- control -----------------------------------------------------------------------------------------------------
    def pause(self, ts: int) -> list[s.Message]:
        return self._control.pause(ts)

    def resume(self, ts: int) -> list[s.Message]:
        return self._control.resume(ts)

    def stop(self, ts: int) -> list[s.Message]:
        """Cancel every open order, close every position at market, and take no new entries again."""
        return self._control.stop(ts)

    def reconfigure(self, changes: dict[str, Any], ts: int) -> list[s.Message]:
        """Apply a control `config`. Raises ValueError (nothing changed) when a key may not change or the new
        config is invalid."""
        return self._control.reconfigure(changes, ts)

    def status_message(self, ts: int, event: str) -> s.SessionStatus:
        return self._messages.status(ts, event)

    def equity_message(self, ts: int) -> s.Equity:
        return self._messages.equity(ts)

    # --- checkpoint --------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything a restarted worker needs, the config included (it may have changed at run time)."""
        runner, timers = self._runner, self._timers
        return {"cfg": self.cfg.model_dump(mode="json"), "status": self.status, "announced": self._control.announced,
                "account": self.account.to_dict(), "venue": self.venue.to_dict(),
                "shadow_account": self.shadow_account.to_dict() if self.shadow_account else None,
                "strategy": runner.strategy.to_dict(),
                "bars": runner.bars.to_dict(), "vol": runner.vol.to_dict(), "guard": self.guard.to_dict(),
                "seq": self._run.seq, "changes": self._messages.changes, "next_equity_ts": timers.next_equity_ts,
                "fills": self._messages.fills, "funded": timers.funded, "hold_until": timers.hold_until}

    @classmethod
    def restore(cls, d: dict[str, Any], instruments: dict[str, Instrument], books: dict[str, Book]) -> Session:
        """The session saved by `to_dict`, reading the engine's `books`."""
        shadow = d.get("shadow_account")
        sess = cls(SessionConfig.model_validate(d["cfg"]), instruments, books, Account.from_dict(d["account"]),
                   None if shadow is None else Account.from_dict(shadow))
        sess._run.status, sess._control.announced = d["status"], d["announced"]
        sess.venue.load(d["venue"])
        sess._runner.strategy.load(d["strategy"])
        sess._runner.bars.load(d["bars"])
        sess._runner.vol.load(d["vol"])
        sess.guard.load(d["guard"])
        sess._run.seq, sess._messages.changes, sess._timers.next_equity_ts = d["seq"], d["changes"], d["next_equity_ts"]
        sess._messages.fills = d["fills"]
        sess._timers.funded = dict(d["funded"])
        sess._timers.hold_until = dict(d["hold_until"])
        if isinstance(sess.venue, RemoteVenue):  # a restarted worker reconciles at once: what happened meanwhile
            sess.venue.next_check = None
        return sess


def shadow_ledger(account: Account) -> Callable[[Execution], None]:
    """The shadow venue's `book_fill`: its own account, so its reduce-only orders and P&L follow its own fills."""
    def book_fill(ex: Execution) -> None:
        ex.realized = account.apply_fill(ex.order.symbol, ex.order.side, ex.price, ex.qty, ex.fee)
        ex.position = replace(account.position(ex.order.symbol))
    return book_fill
