"""Market data: exchange frames (a batch of trades and/or a book update), packed into batches per partition."""
from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from .base import EventTime, Message, PriceStr, QtyStr, SignedStr, Symbol
from .vocabulary import FeedStatus, Side

# A book level: [price, quantity], both decimal strings; quantity "0" removes the level.
Level = tuple[PriceStr, QtyStr]
BookChange = tuple[Annotated[float, Field(gt=0, allow_inf_nan=False)], QtyStr]  # md.ticks: see Tick.depth


class Trade(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ts: EventTime
    price: PriceStr
    qty: QtyStr
    side: Side  # the aggressor's side


class Ticker(BaseModel):
    """A venue's ticker for a symbol after the frame, merged from snapshot and deltas (every field it has sent)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    last: PriceStr | None = None
    mark: PriceStr | None = None  # the venue's mark price (for a token priced by an aggregator: that price)
    index: PriceStr | None = None
    funding_rate: SignedStr | None = None  # positive: longs pay shorts
    next_funding_ts: EventTime | None = None
    open_interest: QtyStr | None = None
    turnover_24h: QtyStr | None = None


class Bar(BaseModel):
    """A venue's candle (kline, OHLCV row): real prices of an interval, updated until `closed`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: EventTime
    interval_ms: int = Field(gt=0, le=31 * 86_400_000)
    open: PriceStr
    high: PriceStr
    low: PriceStr
    close: PriceStr
    volume: QtyStr
    turnover: QtyStr | None = None
    closed: bool = True


class MarketFrame(Message):
    """One exchange frame for one symbol. `bid`/`ask` are the top of book after the frame, when known."""

    kind: Literal["frame"] = "frame"
    venue: str = Field(max_length=40)
    symbol: Symbol
    recv_ts: int = Field(ge=0, description="receive time, ns since epoch (diagnostics only)")
    trades: list[Trade] = Field(default_factory=list, max_length=5000)
    bid: PriceStr | None = None
    bid_qty: QtyStr | None = None
    ask: PriceStr | None = None
    ask_qty: QtyStr | None = None
    bids: list[Level] = Field(default_factory=list, max_length=1000)
    asks: list[Level] = Field(default_factory=list, max_length=1000)
    snapshot: bool = False  # bids/asks replace the book instead of updating it
    ticker: Ticker | None = None
    bar: Bar | None = None
    status: FeedStatus = "live"


class MarketBatch(Message):
    """The frames a source has for one md.events partition since its last batch, in event-time order, and its
    watermark: no later message of this source on the partition has an event time below `wm`. Every frame's
    symbol hashes to the partition, so each symbol still has one writer. `end` closes a finite tape.

    One Kafka message per batch, not per frame: a Faust agent spends about 150 us per message, so per-frame
    messages cap the pipeline near 5k frames/s; batched, the cost is per byte (bench/bench_pipeline.py)."""

    kind: Literal["batch"] = "batch"
    origin: str = Field(max_length=64)
    wm: EventTime
    end: bool = False
    frames: list[MarketFrame] = Field(default_factory=list, max_length=20_000)


class Watermark(Message):
    """The origin promises no later message with an event time below `ts`. `end` closes a finite tape."""

    kind: Literal["watermark"] = "watermark"
    origin: str = Field(max_length=64)
    end: bool = False


class TickTrade(NamedTuple):
    ts: EventTime
    price: PriceStr
    qty: QtyStr
    side: Side


class Tick(NamedTuple):
    """What the market actor passes on per frame: trades and the resulting top of book. A JSON array on the
    wire: engines decode thousands per second for every partition, and tuples cost a fifth of models."""

    symbol: Symbol
    ts: EventTime
    bid: PriceStr | None
    ask: PriceStr | None
    bid_qty: QtyStr | None
    ask_qty: QtyStr | None
    trades: list[TickTrade]
    pos: int  # the frame's position in its md.events partition: lets an engine drop ticks it has seen
    mark: PriceStr | None = None  # the venue's mark price, when it sends one
    status: FeedStatus = "live"
    last: PriceStr | None = None  # a last price from a ticker or bar, when the frame has no trades
    # the frame's level changes (bids, asks, snapshot) as [price key, size]: the price as a float, exact for an
    # exchange price (papertape/core/market/book.py); a removal's size is "0", and the book's trims are removals too
    depth: tuple[list[BookChange], list[BookChange], bool] | None = None
    funding: tuple[SignedStr, EventTime] | None = None  # the venue's funding rate and the time it settles


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


class Interest(Message):
    """An engine partition asks the market actor of `symbol` for its ticks from now on: first its whole book as it
    stands (a snapshot tick), then every frame's. Written by the engine for a session that starts or widens its
    symbols at run time; an engine partition gets the ticks of its sessions' symbols only."""

    kind: Literal["interest"] = "interest"
    symbol: Symbol
    engine_partition: int = Field(ge=0, le=4096)


class Mark(Message):
    """Conflated latest prices of a symbol (md.marks, compacted by symbol)."""

    kind: Literal["mark"] = "mark"
    symbol: Symbol
    bid: PriceStr | None = None
    ask: PriceStr | None = None
    last: PriceStr | None = None
    mark: PriceStr
