"""Signals, orders and what becomes of them, accounts."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import Message, Money, PosQty, Price, Qty, Ratio, SessionId, Symbol

Side = Literal["buy", "sell"]


class Signal(Message):
    """A view on a symbol: the target exposure a session should hold."""

    kind: Literal["signal"] = "signal"
    session: SessionId
    symbol: Symbol
    target: Literal["long", "short", "flat"]
    confidence: Ratio = 1.0
    strategy: str = Field(default="external", max_length=120)
    reasoning: str = Field(default="", max_length=2000)


class Order(Message):
    """An order request. `id` is the client order id, unique per session."""

    kind: Literal["order"] = "order"
    session: SessionId
    symbol: Symbol
    side: Side
    type: Literal["market", "limit"] = "market"
    qty: PosQty
    price: Price | None = None
    tif: Literal["GTC", "IOC", "FOK", "PostOnly"] = "GTC"
    reduce_only: bool = False

    @model_validator(mode="after")
    def _price_for_limit(self) -> "Order":
        if self.type == "limit" and self.price is None:
            raise ValueError("a limit order needs a price")
        if self.type == "market" and self.price is not None:
            raise ValueError("a market order takes no price")
        return self


OrderStatus = Literal["new", "partially_filled", "filled", "cancelled", "rejected"]


class OrderEvent(Message):
    kind: Literal["order_event"] = "order_event"
    session: SessionId
    order_id: str = Field(max_length=160)
    symbol: Symbol
    side: Side
    type: Literal["market", "limit"]
    status: OrderStatus
    qty: Qty
    price: Price | None = None
    filled_qty: Qty = 0
    avg_price: Price | None = None
    reason: str = Field(default="", max_length=500)


class Fill(Message):
    kind: Literal["fill"] = "fill"
    session: SessionId
    order_id: str = Field(max_length=160)
    symbol: Symbol
    side: Side
    price: Price
    qty: PosQty
    liquidity: Literal["maker", "taker"]
    fee_rate: Money
    fee: Money  # in the settle coin; positive is paid
    realized_pnl: Money  # price P&L this fill closed, before fees
    settle_coin: str = "USDT"


class Position(Message):
    kind: Literal["position"] = "position"
    session: SessionId
    symbol: Symbol
    qty: Money  # signed: long > 0
    avg_price: Price | None = None
    mark: Price | None = None
    realized_pnl: Money
    unrealized_pnl: Money


class Equity(Message):
    kind: Literal["equity"] = "equity"
    session: SessionId
    cash: Money  # wallet balance: deposits + realized P&L - fees
    equity: Money  # cash + unrealized P&L at the mark
    realized_pnl: Money
    unrealized_pnl: Money
    fees: Money
    open_positions: int = Field(ge=0)


class Decision(Message):
    kind: Literal["decision"] = "decision"
    session: SessionId
    symbol: Symbol
    action: Literal["buy", "sell", "hold", "reject"]
    reasoning: str = Field(default="", max_length=2000)
    confidence: Ratio = 0.0
    features: dict[str, Any] = Field(default_factory=dict)
    order_id: str | None = None
