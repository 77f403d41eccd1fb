"""An exchange as a session's venue (issue 18): what a session asks of it, and what it reports back.

The engine writes `venue.requests`; the exchange's gateway (streams/bybit/gateway.py) sends them and writes what the
exchange says on `venue.reports`, read by the engine, which books it as it books the paper venue's outcomes. Ids are
papertape's: an exchange order carries papertape's order id (or Bybit's orderLinkId of it, which the session maps
back); an execution keeps the exchange's execution id, so a report read twice is booked once."""
from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import EventTime, Message, Money, Price, Qty, SessionId, Symbol
from .trading import Fill, Order
from .vocabulary import BybitVenue, Difference, LiquidityRole, MarginMode, OrderStatus, OrderType, Side, VenueAction

ExchangeExecType = Literal["trade", "funding", "liquidation", "adl"]


class VenueRequest(Message):
    """new: place `order` (its id is papertape's order id); cancel, amend: papertape's `order_id`, with an amend's new
    values; snapshot: the exchange's open and recent orders, executions, positions and wallet, for reconciliation
    (`id` names the check)."""

    kind: Literal["venue_request"] = "venue_request"
    session: SessionId
    venue: BybitVenue
    action: VenueAction
    order: Order | None = None
    order_id: str = Field(default="", max_length=160)
    symbol: Symbol | None = None
    qty: Qty | None = None
    price: Price | None = None
    trigger_price: Price | None = None
    since: EventTime | None = None  # snapshot: the executions from this time
    leverage: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)] | None = None  # new: the session's, for the symbol
    margin_mode: MarginMode | None = None  # new: the session's


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExchangeExecution(_Part):
    exec_id: str = Field(min_length=1, max_length=80)
    order_id: str = Field(default="", max_length=160)  # the order's link id ("" for a funding settlement)
    venue_order_id: str = Field(default="", max_length=80)
    ts: EventTime
    symbol: Symbol
    side: Side
    price: Price
    qty: Qty
    fee: Money  # paid in the settle coin: positive paid, negative received (a maker rebate; funding received)
    fee_rate: Money
    liquidity: LiquidityRole
    exec_type: ExchangeExecType = "trade"


class ExchangeOrder(_Part):
    order_id: str = Field(min_length=1, max_length=160)  # the link id, or the exchange's id of an order without one
    venue_order_id: str = Field(default="", max_length=80)
    ts: EventTime
    symbol: Symbol
    side: Side
    type: OrderType
    status: OrderStatus
    qty: Qty
    price: Price | None = None
    trigger_price: Price | None = None
    filled_qty: Qty = Decimal(0)
    avg_price: Price | None = None
    reason: str = Field(default="", max_length=500)


class ExchangePosition(_Part):
    symbol: Symbol
    qty: Money  # signed: long > 0
    avg_price: Price | None = None


class VenueReport(Message):
    """What the exchange said: order updates and executions (its private stream, or a refused request's answer),
    or, when `snapshot`, the whole state asked by the snapshot request `request`: open and recent orders, the
    executions of its look-back, every position and the wallet's balance in the settle coin."""

    kind: Literal["venue_report"] = "venue_report"
    session: SessionId
    venue: BybitVenue
    request: str = Field(default="", max_length=160)
    orders: list[ExchangeOrder] = Field(default_factory=list, max_length=10_000)
    executions: list[ExchangeExecution] = Field(default_factory=list, max_length=10_000)
    snapshot: bool = False
    positions: list[ExchangePosition] = Field(default_factory=list, max_length=10_000)
    wallet: Money | None = None
    refused: str = Field(default="", max_length=500)  # a cancel or amend the exchange refused: why


class Reconciliation(Message):
    """One finding of a reconciliation `check` of a session against its exchange; each check also writes one row
    of difference "none" that counts what it compared. `adopted`: what papertape did to take the exchange's truth."""

    kind: Literal["reconciliation"] = "reconciliation"
    session: SessionId
    check: str = Field(max_length=160)
    difference: Difference
    symbol: Symbol | None = None
    order_id: str | None = Field(default=None, max_length=160)
    papertape: str = Field(default="", max_length=500)
    exchange: str = Field(default="", max_length=500)
    adopted: str = Field(default="", max_length=500)


class ShadowFill(Fill):
    """A fill of the paper venue's simulation of an exchange session's order, on the same market data (its
    `order_id` is the exchange order's): set beside the exchange's fills, the paper model's error."""

    kind: Literal["shadow_fill"] = "shadow_fill"  # type: ignore[assignment]
