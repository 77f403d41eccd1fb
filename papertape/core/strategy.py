"""Strategies: pure classes that see a session's bars (or ticks) and return intents: a signal (Target: the
exposure to hold, with a confidence and a reasoning) or an exact order, cancel or amend.

A strategy receives `on_bar` for each bar of `bar_ms` (an attribute or parameter; the session builds the bars
in event time) and `on_tick` for every tick of its symbols if it overrides it. Its state must survive a restart:
`to_dict` returns it as JSON-able values and `load` takes it back. Decisions must use event time only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from papertape.core.market.bars import Bar
from schemas.market import Tick
from schemas.vocabulary import Exposure, OrderType, Side, TimeInForce, TriggerBy


@dataclass(frozen=True)
class Target:
    """Hold `target` exposure in `symbol`."""

    symbol: str
    target: Exposure
    confidence: float
    reasoning: str
    features: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlaceOrder:
    """Place exactly this order (the fields of schemas.Order). `client_id` names it for a later cancel or amend."""

    symbol: str
    side: Side
    qty: Decimal
    type: OrderType = "market"
    price: Decimal | None = None
    tif: TimeInForce = "GTC"
    reduce_only: bool = False
    reasoning: str = ""
    trigger_price: Decimal | None = None
    trigger_by: TriggerBy = "last"
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
    bar_ms: int = 60_000  # the bars it receives; the session's volatility uses the same bars

    def on_bar(self, bar: Bar) -> list[Intent]:
        return []

    def on_tick(self, tick: Tick) -> list[Intent]:
        return []

    def to_dict(self) -> dict[str, Any]:
        return {}

    def load(self, state: dict[str, Any]) -> None:
        pass

    @classmethod
    def wants_ticks(cls) -> bool:
        return cls.on_tick is not Strategy.on_tick
