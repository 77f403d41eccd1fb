"""Market data: one message per exchange frame (a batch of trades and/or a book update)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import EventTime, Message, Price, Qty, Symbol


class Trade(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ts: EventTime
    price: Price
    qty: Qty
    side: Literal["buy", "sell"]  # the aggressor's side


class Level(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    price: Price
    qty: Qty  # 0 removes the level


class MarketFrame(Message):
    """One exchange frame for one symbol. `bid`/`ask` are the top of book after the frame, when known."""

    kind: Literal["frame"] = "frame"
    venue: str = Field(max_length=40)
    symbol: Symbol
    recv_ts: int = Field(ge=0, description="receive time, ns since epoch (diagnostics only)")
    trades: list[Trade] = Field(default_factory=list, max_length=5000)
    bid: Price | None = None
    bid_qty: Qty | None = None
    ask: Price | None = None
    ask_qty: Qty | None = None
    bids: list[Level] = Field(default_factory=list, max_length=1000)
    asks: list[Level] = Field(default_factory=list, max_length=1000)
    snapshot: bool = False  # bids/asks replace the book instead of updating it


class Watermark(Message):
    """The origin promises no later message with an event time below `ts`. `end` closes a finite tape."""

    kind: Literal["watermark"] = "watermark"
    origin: str = Field(max_length=64)
    end: bool = False


class Tick(BaseModel):
    """What the market actor passes on per frame: trades and the resulting top of book."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: Symbol
    ts: EventTime
    bid: Price | None = None
    ask: Price | None = None
    bid_qty: Qty | None = None
    ask_qty: Qty | None = None
    trades: list[Trade] = Field(default_factory=list)
    offset: int = -1  # the frame's md.events offset: lets an engine drop ticks it has seen


class TickBatch(Message):
    """A market partition's output for one processed batch, sent to every engine partition.

    `origin` is the md.events partition, `seq` counts that origin's batches, `wm` is its watermark:
    no later batch of this origin holds a tick with an event time below it.
    """

    kind: Literal["ticks"] = "ticks"
    origin: int = Field(ge=0)
    seq: int = Field(ge=0)
    wm: EventTime
    end: bool = False
    ticks: list[Tick] = Field(default_factory=list)


class Mark(Message):
    """Conflated latest prices of a symbol (md.marks, compacted by symbol)."""

    kind: Literal["mark"] = "mark"
    symbol: Symbol
    bid: Price | None = None
    ask: Price | None = None
    last: Price | None = None
    mark: Price
