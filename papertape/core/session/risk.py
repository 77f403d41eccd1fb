"""Circuit breakers and per-order limits of a session, in event time.

A tripped breaker blocks new entries (orders that add exposure); orders that reduce a position always pass.
Every breaker resets at the session's day boundary (`day_starts_at`, UTC) and trips again at the next check if
its condition still holds. Defaults from the seeds: 50 trades a day, 5 failed orders in a row, $100 minimum.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

DAY_MS = 86_400_000


class Rules(BaseModel):
    """Settings whose rules are each off when None; `false` says None in TOML, which has no null."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _false_is_off(cls, data: Any) -> Any:  # the raw input: a settings dict, or anything pydantic will refuse
        return {k: None if v is False else v for k, v in data.items()} if isinstance(data, dict) else data


class RiskSettings(Rules):
    max_daily_trades: int | None = Field(default=50, ge=1)  # orders sent per day; the last one trips the breaker
    daily_loss_limit: Decimal | None = Field(default=Decimal("0.05"), gt=0, le=1)  # of the equity at day start
    portfolio_loss_limit: Decimal | None = Field(default=Decimal("0.20"), gt=0, le=1)  # of the starting balance
    max_consecutive_failures: int | None = Field(default=5, ge=1)  # rejected orders in a row (a fill resets)
    min_balance: Decimal | None = Field(default=Decimal(100), ge=0)  # equity in the settle coin
    max_open_positions: int | None = Field(default=10, ge=1)  # symbols with a position or an open entry order
    max_order_notional: Decimal | None = Field(default=None, gt=0)  # settle coin, per new entry order
    day_starts_at: str = Field(default="00:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")  # UTC

    @classmethod
    def off(cls) -> "RiskSettings":
        """No limit at all (tests of other rules; a user's own risk engine)."""
        return cls(max_daily_trades=None, daily_loss_limit=None, portfolio_loss_limit=None,
                   max_consecutive_failures=None, min_balance=None, max_open_positions=None)

    @property
    def day_offset_ms(self) -> int:
        h, m = self.day_starts_at.split(":")
        return (int(h) * 60 + int(m)) * 60_000

    def day_of(self, ts: int) -> int:
        return (ts - self.day_offset_ms) // DAY_MS

    def day_start(self, day: int) -> int:
        return day * DAY_MS + self.day_offset_ms


class RiskGuard:
    """A session's breakers: what tripped and why, and the day's counters."""

    def __init__(self, settings: RiskSettings, balance: Decimal) -> None:
        self.settings = settings
        self.balance = balance
        self.day: int | None = None
        self.day_equity: Decimal | None = None  # equity when the day began
        self.trades = 0  # orders sent today
        self.failures = 0  # rejected orders in a row
        self.tripped: dict[str, str] = {}

    def next_day_at(self) -> int | None:
        return None if self.day is None else self.settings.day_start(self.day + 1)

    def new_day(self, ts: int, equity: Decimal) -> bool:
        """Start the day of `ts` if it is a new one; True when breakers were reset."""
        day = self.settings.day_of(ts)
        if day == self.day:
            return False
        had = bool(self.tripped)
        self.day, self.day_equity, self.trades, self.failures, self.tripped = day, equity, 0, 0, {}
        return had

    def trip(self, name: str, reason: str) -> bool:
        """Trip a breaker; True if it was not tripped yet."""
        if name in self.tripped:
            return False
        self.tripped[name] = reason
        return True

    def order_sent(self) -> list[str]:
        self.trades += 1
        limit = self.settings.max_daily_trades
        if limit is not None and self.trades >= limit:
            return self._trips(("daily_trades", f"{self.trades} orders today, the most a day is {limit}"))
        return []

    def order_failed(self, reason: str) -> list[str]:
        self.failures += 1
        limit = self.settings.max_consecutive_failures
        if limit is not None and self.failures >= limit:
            return self._trips(("consecutive_failures", f"{self.failures} orders failed in a row (last: {reason})"))
        return []

    def order_filled(self) -> None:
        self.failures = 0

    def watch(self, equity: Decimal) -> list[str]:
        """Trip the money breakers that `equity` now breaks; the names newly tripped."""
        st, found = self.settings, []
        if st.daily_loss_limit is not None and self.day_equity is not None and self.day_equity > 0:
            loss = (self.day_equity - equity) / self.day_equity
            if loss >= st.daily_loss_limit:
                found.append(("daily_loss", f"equity {_money(equity)} is {loss:.2%} below the day's start "
                                            f"{_money(self.day_equity)} (limit {st.daily_loss_limit:.2%})"))
        if st.portfolio_loss_limit is not None:
            loss = (self.balance - equity) / self.balance
            if loss >= st.portfolio_loss_limit:
                found.append(("portfolio_loss", f"equity {_money(equity)} is {loss:.2%} below the starting balance "
                                                f"{_money(self.balance)} (limit {st.portfolio_loss_limit:.2%})"))
        if st.min_balance is not None and equity < st.min_balance:
            found.append(("min_balance", f"equity {_money(equity)} is below the minimum {_money(st.min_balance)}"))
        return self._trips(*found)

    def _trips(self, *found: tuple[str, str]) -> list[str]:
        return [name for name, reason in found if self.trip(name, reason)]

    def entry_block(self, notional: Decimal, new_symbol: bool, open_symbols: int) -> str:
        """Why a new entry may not be sent, or ''."""
        if self.tripped:
            name, reason = next(iter(self.tripped.items()))
            return f"circuit breaker {name} tripped: {reason}"
        st = self.settings
        if st.max_order_notional is not None and notional > st.max_order_notional:
            return f"order value {_money(notional)} is above the maximum {_money(st.max_order_notional)} per order"
        if new_symbol and st.max_open_positions is not None and open_symbols >= st.max_open_positions:
            return f"{open_symbols} positions open, the most is {st.max_open_positions}"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day, "day_equity": None if self.day_equity is None else str(self.day_equity),
                "trades": self.trades, "failures": self.failures, "tripped": self.tripped}

    def load(self, d: dict[str, Any]) -> None:
        self.day, self.trades, self.failures = d["day"], d["trades"], d["failures"]
        self.day_equity = None if d["day_equity"] is None else Decimal(d["day_equity"])
        self.tripped = dict(d["tripped"])


def _money(x: Decimal) -> str:
    return f"{x:.2f}"
