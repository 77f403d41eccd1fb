"""Price alert rules, pure: a user's rule (a symbol crossing a level, or moving X% within a window of event time)
and the state that evaluates it over a symbol's marks.

A rule has exactly one trigger: `above`, `below` or `move_pct`. A band is two rules (one `above`, one `below`), so
every firing names one level or move and the relay can filter and rate-limit each on its own.

Each firing is an alert of type "price" whose id is the rule's id and the mark's event time: replaying the same
marks gives the same alerts, and an alert sent twice (a restart re-reading marks) is a duplicate the relay drops."""
from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

import schemas as s
from schemas.vocabulary import Severity

SOURCE = "price-rules"


class PriceRule(BaseModel):
    """One rule: `above`/`below` fire when the mark crosses the level; `move_pct` fires when the mark moved that
    many percent (either way) from any mark within `window_s` of event time."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    symbol: str = Field(min_length=1, max_length=64)
    above: Decimal | None = Field(default=None, gt=0, allow_inf_nan=False)
    below: Decimal | None = Field(default=None, gt=0, allow_inf_nan=False)
    move_pct: Decimal | None = Field(default=None, gt=0, allow_inf_nan=False)
    window_s: float = Field(default=300.0, gt=0)
    severity: Severity = "warning"

    @model_validator(mode="after")
    def _one_trigger(self) -> Self:
        given = [name for name in ("above", "below", "move_pct") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"rule {self.id}: exactly one of above, below, move_pct (got "
                             f"{', '.join(given) or 'none'}); a band is two rules")
        return self


class _Level:
    """`above`: fires on a mark at or above the level after one below it; `below` the mirror image. Only the last
    mark is kept, so a mark on the same side never fires again: a new crossing needs the mark to go back first."""

    def __init__(self, rule: PriceRule) -> None:
        self.rule = rule
        self.last: Decimal | None = None

    def on_mark(self, ts: int, price: Decimal) -> s.Alert | None:
        prev, self.last = self.last, price
        rule = self.rule
        if prev is None:
            return None
        if rule.above is not None and prev < rule.above <= price:
            return _alert(rule, ts, f"{rule.symbol} crossed above {rule.above}",
                          f"mark {price} (was {prev})")
        if rule.below is not None and prev > rule.below >= price:
            return _alert(rule, ts, f"{rule.symbol} crossed below {rule.below}",
                          f"mark {price} (was {prev})")
        return None

    def to_json(self) -> Any:
        return None if self.last is None else str(self.last)

    def load(self, d: Any) -> None:
        self.last = None if d is None else Decimal(d)


class _Move:
    """`move_pct`: fires on a mark at least `move_pct` percent above the lowest or below the highest mark of the last
    `window_s` of event time (the window ends at the new mark, inclusive of marks exactly `window_s` older). After a
    firing the window restarts from the firing mark, so one move fires once, and a further move of as much again
    fires again.

    The lowest and highest marks come from two monotonic deques (the classic sliding-window minimum and maximum),
    so each mark costs O(1) amortized whatever the window holds."""

    def __init__(self, rule: PriceRule) -> None:
        assert rule.move_pct is not None
        self.rule = rule
        self.pct = rule.move_pct
        self.window_ms = round(rule.window_s * 1000)
        self.lows: deque[tuple[int, Decimal]] = deque()  # (ts, price), prices increasing
        self.highs: deque[tuple[int, Decimal]] = deque()  # prices decreasing

    def on_mark(self, ts: int, price: Decimal) -> s.Alert | None:
        lows, highs = self.lows, self.highs
        start = ts - self.window_ms
        while lows and lows[0][0] < start:
            lows.popleft()
        while highs and highs[0][0] < start:
            highs.popleft()
        fired = None
        if lows and (price - lows[0][1]) * 100 >= self.pct * lows[0][1]:
            fired = _alert(self.rule, ts, f"{self.rule.symbol} up {self.pct}% within {self.rule.window_s:g} s",
                           f"mark {price}, from {lows[0][1]} at ts {lows[0][0]} ({_pct(lows[0][1], price)}%)")
        elif highs and (highs[0][1] - price) * 100 >= self.pct * highs[0][1]:
            fired = _alert(self.rule, ts, f"{self.rule.symbol} down {self.pct}% within {self.rule.window_s:g} s",
                           f"mark {price}, from {highs[0][1]} at ts {highs[0][0]} ({_pct(highs[0][1], price)}%)")
        if fired is not None:
            lows.clear()
            highs.clear()
        while lows and lows[-1][1] >= price:
            lows.pop()
        while highs and highs[-1][1] <= price:
            highs.pop()
        lows.append((ts, price))
        highs.append((ts, price))
        return fired

    def to_json(self) -> Any:
        return [[[ts, str(p)] for ts, p in q] for q in (self.lows, self.highs)]

    def load(self, d: Any) -> None:
        self.lows, self.highs = (deque((ts, Decimal(p)) for ts, p in q) for q in d)


def _pct(start: Decimal, end: Decimal) -> str:
    return format(((end - start) * 100 / start).quantize(Decimal("0.01")), "f")


def _alert(rule: PriceRule, ts: int, title: str, text: str) -> s.Alert:
    return s.Alert(id=f"price:{rule.id}:{ts}", ts=ts, severity=rule.severity, type="price", source=SOURCE,
                   title=title, text=f"rule {rule.id}: {text}")


class PriceWatch:
    """Every rule over the marks of the symbols it sees, each symbol's marks in event-time order; its state is
    JSON (the market actor's checkpoint holds it)."""

    def __init__(self, rules: list[PriceRule]) -> None:
        self.by_symbol: dict[str, list[_Level | _Move]] = {}
        for rule in rules:
            state = _Move(rule) if rule.move_pct is not None else _Level(rule)
            self.by_symbol.setdefault(rule.symbol, []).append(state)

    def on_mark(self, symbol: str, ts: int, price: Decimal) -> list[s.Alert]:
        states = self.by_symbol.get(symbol)
        if not states:
            return []
        return [a for st in states if (a := st.on_mark(ts, price)) is not None]

    def to_json(self) -> dict[str, Any]:
        return {st.rule.id: {"rule": st.rule.model_dump(mode="json"), "state": st.to_json()}
                for states in self.by_symbol.values() for st in states}

    def load(self, d: dict[str, Any]) -> None:
        """The state of `to_json`; a rule it does not name as it is now (added or changed since) starts afresh."""
        for states in self.by_symbol.values():
            for st in states:
                saved = d.get(st.rule.id)
                if isinstance(saved, dict) and saved.get("rule") == st.rule.model_dump(mode="json"):
                    st.load(saved["state"])
