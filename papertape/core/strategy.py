"""Strategies: pure classes that see a session's ticks and return intents (a target exposure or an order)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Target:
    """Hold `target` exposure in `symbol`."""

    symbol: str
    target: str  # long | short | flat
    confidence: float
    reasoning: str
    features: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlaceOrder:
    """Place exactly this order (the fields of schemas.Order). `client_id` names it for a later cancel or amend."""

    symbol: str
    side: str
    qty: Decimal
    type: str = "market"
    price: Decimal | None = None
    tif: str = "GTC"
    reduce_only: bool = False
    reasoning: str = ""
    trigger_price: Decimal | None = None
    trigger_by: str = "last"
    trail_amount: Decimal | None = None
    trail_percent: Decimal | None = None
    activation_price: Decimal | None = None
    expire_ts: int | None = None
    oco: str | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    client_id: str | None = None


@dataclass(frozen=True)
class CancelIntent:
    client_id: str
    reasoning: str = ""


@dataclass(frozen=True)
class AmendIntent:
    client_id: str
    qty: Decimal | None = None
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    reasoning: str = ""


Intent = Target | PlaceOrder | CancelIntent | AmendIntent


class Strategy:
    name = "base"

    def on_tick(self, tick) -> list[Intent]:
        return []

    def to_dict(self) -> dict:
        return {}

    def load(self, state: dict) -> None:
        pass


def tick_price(tick) -> float | None:
    if tick.trades:
        return float(tick.trades[-1].price)
    if tick.bid is not None and tick.ask is not None:
        return (float(tick.bid) + float(tick.ask)) / 2
    if tick.last is not None:  # a ticker's or bar's last price
        return float(tick.last)
    return None


def _price(tick_or_price) -> float:
    return tick_or_price if isinstance(tick_or_price, float) else tick_price(tick_or_price)


class EmaCross(Strategy):
    """Trend following: EMAs of bar closes in event time; long while the fast EMA is above the slow one,
    flat (or short, when allowed) while below. It states its target at every bar close once warmed up, so a
    session that held back (low confidence, an open order) acts on a later bar. Confidence grows with the gap
    between the EMAs."""

    name = "ema_cross"

    def __init__(self, fast: int = 5, slow: int = 20, bar_ms: int = 60_000, allow_short: bool = False,
                 full_confidence_bps: float = 10.0) -> None:
        if not 0 < fast < slow:
            raise ValueError("ema_cross needs 0 < fast < slow")
        self.fast, self.slow, self.bar_ms = fast, slow, bar_ms
        self.allow_short, self.full_confidence_bps = allow_short, full_confidence_bps
        self.state: dict[str, list] = {}  # symbol -> [bar_start, last_price, ema_fast, ema_slow, bars, side]
        self.last: dict[str, Any] = {}  # symbol -> its last priced tick (or price): priced only at a bar close

    def on_tick(self, tick) -> list[Intent]:
        if not tick.trades and (tick.bid is None or tick.ask is None):
            return []  # no price
        symbol = tick.symbol
        bar_start = tick.ts - tick.ts % self.bar_ms
        st = self.state.get(symbol)
        if st is None:
            self.state[symbol] = [bar_start, None, None, None, 0, "flat"]
            self.last[symbol] = tick
            return []
        intents: list[Intent] = []
        if bar_start > st[0]:
            st[1] = _price(self.last[symbol])
            intent = self._close_bar(symbol, st)
            if intent:
                intents.append(intent)
            st[0] = bar_start
        self.last[symbol] = tick
        return intents

    def _close_bar(self, symbol: str, st: list) -> Intent | None:
        close = st[1]
        a_fast, a_slow = 2 / (self.fast + 1), 2 / (self.slow + 1)
        st[2] = close if st[2] is None else st[2] + a_fast * (close - st[2])
        st[3] = close if st[3] is None else st[3] + a_slow * (close - st[3])
        st[4] += 1
        if st[4] < self.slow:
            return None
        fast, slow = st[2], st[3]
        side = "long" if fast > slow else ("short" if self.allow_short else "flat")
        st[5] = side
        gap_bps = abs(fast - slow) / slow * 1e4
        return Target(symbol, side, min(1.0, gap_bps / self.full_confidence_bps),
                      f"EMA{self.fast} {'above' if fast > slow else 'below'} EMA{self.slow} by {gap_bps:.2f} bps",
                      {"close": close, "ema_fast": fast, "ema_slow": slow, "bars": st[4]})

    def to_dict(self) -> dict:
        return {"state": {sym: [st[0], _price(self.last[sym]), *st[2:]] for sym, st in self.state.items()}}

    def load(self, state: dict) -> None:
        self.state = {s: list(v) for s, v in state["state"].items()}
        self.last = {s: v[1] for s, v in self.state.items()}


_DECIMAL_FIELDS = ("qty", "price", "trigger_price", "trail_amount", "trail_percent", "activation_price", "stop_loss",
                   "take_profit")


def _decimals(d: dict) -> dict:
    return {k: (Decimal(str(v)) if k in _DECIMAL_FIELDS and v is not None else v) for k, v in d.items()}


class Scripted(Strategy):
    """Places, cancels and amends at given event times: for tests, and to replay a known order sequence. Each item
    has `at` and either the fields of an order (`id` names it), or `cancel: id`, or `amend: id` with the new
    qty, price or trigger_price."""

    name = "scripted"

    def __init__(self, orders: list[dict]) -> None:
        self.orders = sorted(orders, key=lambda o: o["at"])
        self.next = 0

    def on_tick(self, tick) -> list[Intent]:
        out: list[Intent] = []
        while self.next < len(self.orders) and self.orders[self.next]["at"] <= tick.ts:
            item = _decimals({k: v for k, v in self.orders[self.next].items() if k != "at"})
            self.next += 1
            reasoning = item.pop("reasoning", "scripted")
            if "cancel" in item:
                out.append(CancelIntent(item["cancel"], reasoning))
            elif "amend" in item:
                out.append(AmendIntent(item.pop("amend"), reasoning=reasoning, **item))
            else:
                out.append(PlaceOrder(reasoning=reasoning, client_id=item.pop("id", None), **item))
        return out

    def to_dict(self) -> dict:
        return {"next": self.next}

    def load(self, state: dict) -> None:
        self.next = state["next"]


BUILTIN = {"ema_cross": EmaCross, "scripted": Scripted}


def make_strategy(name: str, params: dict) -> Strategy:
    """A built-in by name, or a user's class by dotted path (`package.module:Class` or `package.module.Class`)."""
    cls = BUILTIN.get(name)
    if cls is None:
        module, _, attr = name.replace(":", ".").rpartition(".")
        if not module:
            raise ValueError(f"unknown strategy {name!r}; built-ins: {', '.join(BUILTIN)}")
        cls = getattr(importlib.import_module(module), attr)
    return cls(**params)
