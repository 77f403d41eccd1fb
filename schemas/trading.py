"""Signals, orders and what becomes of them, accounts."""
from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, model_validator

from .base import EventTime, Message, Money, PosQty, Price, Qty, Ratio, SessionId, Symbol
from .vocabulary import (
    LIMIT_TYPES,
    TRIGGER_TYPES,
    DecisionAction,
    ExecType,
    Exposure,
    LiquidityRole,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    TriggerBy,
    VenueKind,
)


class Signal(Message):
    """A view on a symbol: the target exposure a session should hold."""

    kind: Literal["signal"] = "signal"
    session: SessionId
    symbol: Symbol
    target: Exposure
    confidence: Ratio = 1.0
    strategy: str = Field(default="external", max_length=120)
    reasoning: str = Field(default="", max_length=2000)


class Order(Message):
    """An order request. `id` is the client order id, unique per session.

    Conditional orders wait at the venue until the `trigger_by` price reaches `trigger_price`: a stop triggers when
    the price moves against the side that will trade (a sell stop when it falls to the trigger, a buy stop when it
    rises), a take-profit when it moves the other way. A trailing stop follows the best price since it was placed
    (or since `activation_price` was reached) at `trail_amount` or `trail_percent` behind, and becomes a market
    order when the price comes back to it. Orders sharing an `oco` group cancel each other when one is triggered or
    filled. `stop_loss`/`take_profit` on an entry make a bracket: once the entry is done, a reduce-only stop-market
    and take-profit-market for the filled quantity, linked as an OCO pair."""

    kind: Literal["order"] = "order"
    session: SessionId
    symbol: Symbol
    side: Side
    type: OrderType = "market"
    qty: PosQty
    price: Price | None = None  # the limit price of limit, stop_limit and take_profit_limit
    tif: TimeInForce = "GTC"
    reduce_only: bool = False
    trigger_price: Price | None = None
    trigger_by: TriggerBy = "last"
    trail_amount: Price | None = None
    trail_percent: Annotated[Decimal, Field(gt=0, lt=100, allow_inf_nan=False)] | None = None
    activation_price: Price | None = None
    expire_ts: EventTime | None = None  # good till this event time, then expired
    oco: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
    stop_loss: Price | None = None
    take_profit: Price | None = None

    @model_validator(mode="after")
    def _fields_for_type(self) -> "Order":
        problem = order_shape_problem(self)
        if problem:
            raise ValueError(problem)
        return self


class OrderShape(Protocol):
    """The fields that must fit an order's type: an Order's, a strategy's PlaceOrder's (papertape.core.strategy)."""

    @property
    def type(self) -> OrderType: ...
    @property
    def price(self) -> Decimal | None: ...
    @property
    def tif(self) -> TimeInForce: ...
    @property
    def reduce_only(self) -> bool: ...
    @property
    def trigger_price(self) -> Decimal | None: ...
    @property
    def trail_amount(self) -> Decimal | None: ...
    @property
    def trail_percent(self) -> Decimal | None: ...
    @property
    def activation_price(self) -> Decimal | None: ...
    @property
    def stop_loss(self) -> Decimal | None: ...
    @property
    def take_profit(self) -> Decimal | None: ...


def order_shape_problem(o: OrderShape) -> str:
    """Why an order's fields do not fit its type, or '' (shared by the topic's contract and strategies' orders)."""
    if o.type in LIMIT_TYPES and o.price is None:
        return f"a {o.type} order needs a price"
    if o.type not in LIMIT_TYPES and o.price is not None:
        return f"a {o.type} order takes no price"
    if o.type in TRIGGER_TYPES and o.trigger_price is None:
        return f"a {o.type} order needs a trigger_price"
    if o.type not in TRIGGER_TYPES and o.trigger_price is not None:
        return f"a {o.type} order takes no trigger_price"
    if o.type == "trailing_stop" and (o.trail_amount is None) == (o.trail_percent is None):
        return "a trailing_stop order needs one of trail_amount or trail_percent"
    if o.type != "trailing_stop" and (o.trail_amount, o.trail_percent, o.activation_price) != (None, None, None):
        return "only a trailing_stop order takes trail_amount, trail_percent or activation_price"
    if (o.stop_loss is not None or o.take_profit is not None) and (o.type not in ("market", "limit") or o.reduce_only):
        return "stop_loss and take_profit go on a market or limit entry that is not reduce-only"
    if o.tif == "PostOnly" and o.type not in LIMIT_TYPES:
        return "post-only needs a limit price"
    return ""


class CancelOrder(Message):
    """Cancel an open order of the session (its client order id); it reaches the venue after the session's latency."""

    kind: Literal["cancel"] = "cancel"
    session: SessionId
    order_id: str = Field(min_length=1, max_length=120)


class AmendOrder(Message):
    """Change an open order's quantity, limit price or trigger price. A new price or a larger quantity loses the
    order's place in the queue; a smaller quantity keeps it (as on Bybit)."""

    kind: Literal["amend"] = "amend"
    session: SessionId
    order_id: str = Field(min_length=1, max_length=120)
    qty: PosQty | None = None
    price: Price | None = None
    trigger_price: Price | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> "AmendOrder":
        if self.qty is None and self.price is None and self.trigger_price is None:
            raise ValueError("an amend needs a new qty, price or trigger_price")
        return self


class OrderEvent(Message):
    kind: Literal["order_event"] = "order_event"
    session: SessionId
    order_id: str = Field(max_length=160)
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


class Fill(Message):
    kind: Literal["fill"] = "fill"
    session: SessionId
    order_id: str = Field(max_length=160)
    symbol: Symbol
    side: Side
    price: Price
    qty: PosQty
    liquidity: LiquidityRole
    fee_rate: Money
    fee: Money  # in the settle coin; positive is paid (on a DEX: the gas)
    realized_pnl: Money  # price P&L this fill closed, before fees
    settle_coin: str = "USDT"
    exec_type: ExecType = "trade"
    venue: VenueKind = "paper"  # where it was executed: the paper venue, the DEX model or an exchange


class Funding(Message):
    """A funding settlement of a perpetual position at the symbol's funding time `ts`."""

    kind: Literal["funding"] = "funding"
    session: SessionId
    symbol: Symbol
    rate: Money  # positive: longs pay shorts
    mark: Price
    qty: Money  # the signed position at the funding time
    amount: Money  # added to the wallet: negative when paid
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
    cash: Money  # wallet balance: deposits + realized P&L - fees + funding
    equity: Money  # cash + unrealized P&L at the mark
    realized_pnl: Money
    unrealized_pnl: Money
    fees: Money
    funding: Money = Decimal(0)  # net funding received (negative: paid)
    open_positions: int = Field(ge=0)


class Decision(Message):
    """A session's decision, trade or no-trade. `blocked`: a circuit breaker stopped a new entry; `hold`: no trade
    (below the confidence threshold, above the risk tolerance, already positioned, stale data...); `reject`: the
    order could not be made (lot, tick, shape). `risk_score` is the chance the position's stop-loss is hit within
    the maximum hold time (from the symbol's recent volatility); `opportunity_score` is the confidence left after
    costs (README "Decisions")."""

    kind: Literal["decision"] = "decision"
    session: SessionId
    symbol: Symbol
    action: DecisionAction
    reasoning: str = Field(default="", max_length=2000)
    confidence: Ratio = 0.0
    risk_score: Ratio | None = None
    opportunity_score: Ratio | None = None
    intel: Annotated[int, Field(ge=1, le=10)] | None = None
    features: dict[str, Any] = Field(default_factory=dict)
    order_id: str | None = None
