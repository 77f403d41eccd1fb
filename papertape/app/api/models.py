"""The API's request and response bodies (its OpenAPI). Money, prices and quantities are exact decimal strings,
event times ms since the epoch."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictFloat

from schemas.base import PriceStr, Symbol
from schemas.vocabulary import (
    AlertType,
    DeliveryOutcome,
    Exposure,
    OrderType,
    Severity,
    Side,
    TimeInForce,
    TriggerBy,
)

Decimal = str  # exact decimal text, e.g. "10000.5"


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):  # JSON true is no time: pydantic's int would take it as 1
        raise ValueError("an event time is a number of ms")
    return value


EventTime = Annotated[int, Field(ge=0, lt=10**14), BeforeValidator(_not_a_bool)]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    run_in_progress: bool
    archive: bool  # an archive can be read (a run in progress, CLICKHOUSE_URL or the data directory's)
    broker: str | None  # the bootstrap servers the API sends to, None when it knows of none


class SessionSummary(BaseModel):
    session: str
    status: str | None
    strategy: str | None
    intel: int | None
    equity: Decimal | None
    cash: Decimal | None
    open_positions: int
    fills: int
    decisions: int
    breakers: list[str]
    as_of: str | None


class Account(BaseModel):
    session: str
    cash: Decimal
    equity: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    funding: Decimal
    open_positions: int
    ts: int


class SessionDetail(BaseModel):
    session: str
    status: str | None
    event: str | None
    strategy: str | None
    intel: int | None
    breakers: dict[str, str]
    config: dict[str, Any] | None
    account: Account | None


class Position(BaseModel):
    symbol: str
    qty: Decimal
    avg_price: Decimal
    mark: Decimal | None
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    ts: int


class Order(BaseModel):
    order_id: str
    symbol: str
    side: str
    type: str
    status: str
    qty: Decimal
    price: Decimal | None
    trigger_price: Decimal | None
    filled_qty: Decimal
    avg_price: Decimal | None
    reason: str
    ts: int


class Fill(BaseModel):
    id: str
    ts: int
    order_id: str
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    liquidity: str
    fee_rate: Decimal
    fee: Decimal
    realized_pnl: Decimal
    settle_coin: str
    exec_type: str


class Decision(BaseModel):
    id: str
    ts: int
    symbol: str
    action: str
    confidence: float
    risk_score: float | None
    opportunity_score: float | None
    intel: int | None
    reasoning: str
    order_id: str | None


class EquityPoint(BaseModel):
    ts: int
    equity: Decimal
    cash: Decimal
    unrealized_pnl: Decimal


class Price(BaseModel):
    symbol: str
    mark: Decimal
    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None
    ts: int  # the mark's event time
    age_ms: int  # behind the newest mark of the run (its event-time clock)


class Delivery(BaseModel):
    channel: str
    outcome: DeliveryOutcome | str
    attempts: int
    detail: str


class Alert(BaseModel):
    id: str
    ts: int
    severity: Severity
    type: AlertType | str
    source: str
    title: str
    text: str
    session: str | None
    acknowledged_ts: int | None
    acknowledged_by: str | None
    deliveries: list[Delivery]


class Ack(BaseModel):
    by: str = Field(default="api", max_length=200)


class Sent(BaseModel):
    """A message the API produced: its id, and where the broker put it."""

    id: str
    topic: str
    partition: int
    offset: int


class ControlAnswer(BaseModel):
    """`applied`: the engine's status message after it; `refused`: the engine's reason (from errors.dlq); `sent`:
    no answer within the wait (the engine applies it when it reads it)."""

    outcome: Literal["applied", "refused", "sent"]
    control: Sent
    status: dict[str, Any] | None = None
    reason: str | None = None


class OrderRequest(BaseModel):
    """An order into a session (schemas.Order without the envelope; decimals as text). `ts`: event time it is
    placed at (default now, right for a live run; 0 while a tape replays: the session's event time)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, min_length=1, max_length=120, pattern=r"^[A-Za-z0-9._:-]+$")
    ts: EventTime | None = None
    symbol: Symbol
    side: Side
    type: OrderType = "market"
    qty: PriceStr  # a positive decimal, as text
    price: PriceStr | None = None
    tif: TimeInForce = "GTC"
    reduce_only: bool = False
    trigger_price: PriceStr | None = None
    trigger_by: TriggerBy = "last"
    stop_loss: PriceStr | None = None
    take_profit: PriceStr | None = None


class SignalRequest(BaseModel):
    """A view on a symbol: the exposure the session should hold, with a confidence from 0 to 1."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, min_length=1, max_length=120, pattern=r"^[A-Za-z0-9._:-]+$")
    ts: EventTime | None = None
    symbol: Symbol
    target: Exposure
    confidence: Annotated[StrictFloat, Field(ge=0, le=1)] = 1.0  # a number: false is no confidence
    reasoning: str = Field(default="", max_length=2000)

