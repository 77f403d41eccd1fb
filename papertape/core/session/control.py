"""Control of a session: start, pause, resume, stop and reconfigure it, at the engine's event time. A failing
strategy pauses it too."""
from __future__ import annotations

from typing import Any

import schemas as s
from papertape.core.account import Account
from papertape.core.session.config import RECONFIGURABLE, SessionConfig, merged
from papertape.core.session.margin_rules import MarginRules
from papertape.core.session.market_view import MarketView
from papertape.core.session.messages import Messages
from papertape.core.session.placement import Placement
from papertape.core.session.risk import RiskGuard
from papertape.core.session.state import Run
from papertape.core.session.strategy_runner import StrategyRunner
from papertape.core.session.timers import Timers
from papertape.core.strategies import make_strategy
from papertape.core.strategy import CancelIntent
from papertape.core.venue.remote import Venue


class Control:
    def __init__(self, run: Run, account: Account, view: MarketView, venue: Venue, guard: RiskGuard,
                 margin: MarginRules, runner: StrategyRunner, timers: Timers, placement: Placement,
                 messages: Messages) -> None:
        self.run = run
        self.account = account
        self.view = view
        self.venue = venue
        self.guard = guard
        self.margin = margin
        self.runner = runner
        self.timers = timers
        self.placement = placement
        self.messages = messages
        self.announced = False  # its first status message is out

    def start(self, now: int) -> list[s.Message]:
        """The session's first status message, once: its risk day begins at `now`."""
        if self.announced:
            return []
        self.announced = True
        self.guard.new_day(now, self.view.equity())
        return [self.messages.status(now, "started")]

    def pause(self, ts: int) -> list[s.Message]:
        if self.run.status != "running":
            return [self.messages.status(ts, f"pause ignored: the session is {self.run.status}")]
        self.run.status = "paused"
        return [self.messages.status(ts, "paused: no new entries")]

    def resume(self, ts: int) -> list[s.Message]:
        if self.run.status != "paused":
            return [self.messages.status(ts, f"resume ignored: the session is {self.run.status}")]
        self.run.status = "running"
        return [self.messages.status(ts, "resumed")]

    def strategy_failed(self, exc: Exception, ts: int) -> list[s.Message]:
        self.run.status = "paused"
        return self.messages.strategy_failed(exc, ts)

    def stop(self, ts: int) -> list[s.Message]:
        """Cancel every open order, close every position at market, and take no new entries again."""
        if self.run.status == "stopped":
            return [self.messages.status(ts, "stop ignored: the session is already stopped")]
        self.run.status = "stopped"
        out: list[s.Message] = []
        for order in self.venue.open_orders():
            out += self.placement.change(CancelIntent(order.id, "session stopped"), ts, venue_id=order.id)
        for sym in sorted(self.account.positions):
            out += self.placement.close_position(sym, ts, "session stopped: closing the position at market")
        self.timers.drop_max_holds()
        return out + [self.messages.status(ts, "stopped")]

    def reconfigure(self, changes: dict[str, Any], ts: int) -> list[s.Message]:
        """Apply a control `config`. Raises ValueError (nothing changed) when a key may not change or the new
        config is invalid."""
        fixed = sorted(set(changes) - RECONFIGURABLE)
        if fixed:
            raise ValueError(f"a running session cannot change {', '.join(fixed)}: start a new session for that "
                             f"(changeable: {', '.join(sorted(RECONFIGURABLE))})")
        old = self.run.cfg
        cfg = SessionConfig.model_validate(merged(old.model_dump(), changes))
        strategy = None
        if cfg.strategy != old.strategy or cfg.params != old.params:
            strategy = make_strategy(cfg.strategy, cfg.params)  # raises before anything changed
        self.run.cfg = cfg
        self.margin.cfg = cfg
        self.guard.settings = cfg.risk
        if strategy is not None:
            self.runner.use(strategy)
        if cfg.auto_close.max_hold_ms is None:
            self.timers.drop_max_holds()
        return [self.messages.status(ts, f"reconfigured: {', '.join(sorted(changes))}")]
