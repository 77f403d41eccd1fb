"""What the recorder writes: the ClickHouse rows of a message of each recorded topic, and their insert payload.

Pure: no broker, no ClickHouse. Built for md.events volume (bench/bench_recorder.py): a MarketBatch is validated
only as far as it is recorded (see md_events_rows), and rows go to ClickHouse as JSON columns that the engine
parses, never as Python Decimals.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from types import GenericAlias
from typing import Annotated, Any, Callable, Iterable, Literal, Mapping

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict

from schemas import InvalidMessage, MarketBatch, MarketFrame, decode
from schemas.codec import MAX_MESSAGE_BYTES, reason_of, split_batch

Row = tuple[Any, ...]
# Columns of each ClickHouse table (see infra/clickhouse/*.sql), in the order rows_for builds them.
COLUMNS: dict[str, tuple[str, ...]] = {
    "md_trades_log": ("id", "frame_id", "ts", "venue", "symbol", "price", "qty", "side"),
    "md_quotes_log": ("id", "ts", "venue", "symbol", "bid", "bid_qty", "ask", "ask_qty"),
    "md_marks_log": ("id", "ts", "symbol", "bid", "ask", "last", "mark"),
    "signals_log": ("id", "ts", "session", "symbol", "target", "confidence", "strategy", "reasoning"),
    "orders_log": ("id", "ts", "session", "symbol", "side", "type", "qty", "price", "tif", "reduce_only",
                   "trigger_price", "trigger_by", "trail_amount", "trail_percent", "activation_price", "expire_ts",
                   "oco", "stop_loss", "take_profit"),
    "order_changes_log": ("id", "ts", "session", "kind", "order_id", "qty", "price", "trigger_price"),
    "order_events_log": ("id", "ts", "session", "order_id", "symbol", "side", "type", "status", "qty", "price",
                         "trigger_price", "filled_qty", "avg_price", "reason"),
    "fills_log": ("id", "ts", "session", "order_id", "symbol", "side", "price", "qty", "liquidity", "fee_rate",
                  "fee", "realized_pnl", "settle_coin", "exec_type", "venue"),
    "shadow_fills_log": ("id", "ts", "session", "order_id", "symbol", "side", "price", "qty", "liquidity",
                         "fee_rate", "fee", "realized_pnl", "settle_coin", "exec_type", "venue"),
    "venue_requests_log": ("id", "ts", "session", "venue", "action", "order_id", "body"),
    "venue_reports_log": ("id", "ts", "session", "venue", "request", "snapshot", "orders", "executions", "refused",
                          "body"),
    "reconciliation_log": ("id", "ts", "session", "check", "difference", "symbol", "order_id", "papertape",
                           "exchange", "adopted"),
    "funding_log": ("id", "ts", "session", "symbol", "rate", "mark", "qty", "amount", "settle_coin"),
    "positions_log": ("id", "ts", "session", "symbol", "qty", "avg_price", "mark", "realized_pnl",
                      "unrealized_pnl"),
    "equity_log": ("id", "ts", "session", "cash", "equity", "realized_pnl", "unrealized_pnl", "fees", "funding",
                   "open_positions"),
    "decisions_log": ("id", "ts", "session", "symbol", "action", "reasoning", "confidence", "risk_score",
                      "opportunity_score", "intel", "features", "order_id"),
    "alerts_log": ("id", "ts", "severity", "source", "title", "text", "session", "type"),
    "alert_acks_log": ("id", "ts", "alert_id", "by"),
    "alert_deliveries_log": ("id", "ts", "alert_id", "channel", "outcome", "attempts", "detail"),
    "control_log": ("id", "ts", "session", "command", "config"),
    "sessions_log": ("id", "ts", "session", "status", "event", "strategy", "intel", "breakers", "config"),
    "dead_letters_log": ("id", "ts", "topic", "partition", "offset", "key", "error", "payload"),
}

_DECIMAL_LIMIT = Decimal(10) ** 20  # Decimal(38, 18) holds 20 integer digits


def _d(x: Decimal | str | None) -> Decimal | None:
    """A value for a Decimal(38, 18) column. Out of range raises ValueError: the message is unrecordable
    (an insert would fail on every retry). Digits past the 18th decimal are cut by ClickHouse."""
    if isinstance(x, str):
        x = Decimal(x)
    if x is not None and not -_DECIMAL_LIMIT < x < _DECIMAL_LIMIT:
        raise ValueError(f"decimal out of range for Decimal(38, 18): {x}")
    return x


def _int(x: int, bits: int, signed: bool = True) -> int:
    low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    if not low <= x < high:
        raise ValueError(f"integer out of range for {'' if signed else 'U'}Int{bits}: {x}")
    return x


def _json(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS, default=str).decode()


def _frames(m: Any) -> list[MarketFrame]:
    """The frames of an md.events message (a watermark has none)."""
    if isinstance(m, MarketBatch):
        return m.frames
    return [m] if isinstance(m, MarketFrame) else []


def _md_events(m: Any) -> list[tuple[str, Row]]:
    trades: list[Row] = []
    quotes: list[Row] = []
    for frame in _frames(m):
        _frame_rows(frame.__dict__, trades, quotes)
    return [("md_trades_log", row) for row in trades] + [("md_quotes_log", row) for row in quotes]


def _frame_rows(f: Mapping[str, Any], trades: list[Row], quotes: list[Row]) -> None:
    """Appends the rows of a frame's fields (a MarketFrame's or a _RecordedFrame's); prices stay decimal strings."""
    fid, venue, symbol = f["id"], f["venue"], f["symbol"]
    for i, t in enumerate(f.get("trades", ())):
        trades.append((f"{fid}:{i}", fid, t.ts, venue, symbol, t.price, t.qty, t.side))
    bid, ask = f.get("bid"), f.get("ask")
    if bid is not None or ask is not None:
        quotes.append((fid, f["ts"], venue, symbol, bid, f.get("bid_qty"), ask, f.get("ask_qty")))


def _one(table: str, build: Callable[[Any], Row]) -> Callable[[Any], list[tuple[str, Row]]]:
    return lambda m: [(table, build(m))]


def _alert_status(m: Any) -> list[tuple[str, Row]]:
    if m.kind == "alert_ack":
        return [("alert_acks_log", (m.id, m.ts, m.alert_id, m.by))]
    return [("alert_deliveries_log", (m.id, m.ts, m.alert_id, m.channel, m.outcome,
                                      _int(m.attempts, 32, signed=False), m.detail))]


def _orders(m: Any) -> list[tuple[str, Row]]:
    """The orders topic: an Order into orders_log, a cancel or an amend into order_changes_log."""
    if m.kind == "order":
        return [("orders_log", (
            m.id, m.ts, m.session, m.symbol, m.side, m.type, _d(m.qty), _d(m.price), m.tif, m.reduce_only,
            _d(m.trigger_price), m.trigger_by, _d(m.trail_amount), _d(m.trail_percent), _d(m.activation_price),
            m.expire_ts, m.oco, _d(m.stop_loss), _d(m.take_profit)))]
    # a cancel has no qty, price or trigger_price: NULL
    return [("order_changes_log", (m.id, m.ts, m.session, m.kind, m.order_id, _d(getattr(m, "qty", None)),
                                   _d(getattr(m, "price", None)), _d(getattr(m, "trigger_price", None))))]


def _fill_row(m: Any) -> Row:
    return (m.id, m.ts, m.session, m.order_id, m.symbol, m.side, _d(m.price), _d(m.qty), m.liquidity, _d(m.fee_rate),
            _d(m.fee), _d(m.realized_pnl), m.settle_coin, m.exec_type, m.venue)


_ROWS: dict[str, Callable[[Any], list[tuple[str, Row]]]] = {
    "md.events": _md_events,
    "md.marks": _one("md_marks_log", lambda m: (m.id, m.ts, m.symbol, _d(m.bid), _d(m.ask), _d(m.last),
                                                _d(m.mark))),
    "signals": _one("signals_log", lambda m: (m.id, m.ts, m.session, m.symbol, m.target, m.confidence,
                                              m.strategy, m.reasoning)),
    "orders": _orders,
    "order.events": _one("order_events_log", lambda m: (
        m.id, m.ts, m.session, m.order_id, m.symbol, m.side, m.type, m.status, _d(m.qty), _d(m.price),
        _d(m.trigger_price), _d(m.filled_qty), _d(m.avg_price), m.reason)),
    "fills": _one("fills_log", lambda m: _fill_row(m)),
    "shadow.fills": _one("shadow_fills_log", lambda m: _fill_row(m)),
    "venue.requests": _one("venue_requests_log", lambda m: (
        m.id, m.ts, m.session, m.venue, m.action, m.order_id, m.model_dump_json())),
    "venue.reports": _one("venue_reports_log", lambda m: (
        m.id, m.ts, m.session, m.venue, m.request, m.snapshot, len(m.orders), len(m.executions), m.refused,
        m.model_dump_json())),
    "reconciliation": _one("reconciliation_log", lambda m: (
        m.id, m.ts, m.session, m.check, m.difference, m.symbol, m.order_id, m.papertape, m.exchange, m.adopted)),
    "funding": _one("funding_log", lambda m: (
        m.id, m.ts, m.session, m.symbol, _d(m.rate), _d(m.mark), _d(m.qty), _d(m.amount), m.settle_coin)),
    "positions": _one("positions_log", lambda m: (
        m.id, m.ts, m.session, m.symbol, _d(m.qty), _d(m.avg_price), _d(m.mark), _d(m.realized_pnl),
        _d(m.unrealized_pnl))),
    "equity": _one("equity_log", lambda m: (
        m.id, m.ts, m.session, _d(m.cash), _d(m.equity), _d(m.realized_pnl), _d(m.unrealized_pnl), _d(m.fees),
        _d(m.funding), _int(m.open_positions, 32, signed=False))),
    "decisions": _one("decisions_log", lambda m: (
        m.id, m.ts, m.session, m.symbol, m.action, m.reasoning, m.confidence, m.risk_score, m.opportunity_score,
        m.intel, _json(m.features), m.order_id)),
    "alerts": _one("alerts_log", lambda m: (m.id, m.ts, m.severity, m.source, m.title, m.text, m.session, m.type)),
    "alerts.status": _alert_status,
    "control": _one("control_log", lambda m: (m.id, m.ts, m.session, m.command, _json(m.config))),
    "sessions": _one("sessions_log", lambda m: (m.id, m.ts, m.session, m.status, m.event, m.strategy, m.intel,
                                                _json(m.breakers), _json(m.config))),
    "errors.dlq": _one("dead_letters_log", lambda m: (
        m.id, m.ts, m.topic, _int(m.partition, 32), _int(m.offset, 64), m.key, m.error, m.payload)),
}

# Every topic but md.ticks, which is derived from md.events.
RECORDED_TOPICS: tuple[str, ...] = tuple(_ROWS)


def rows_for(topic: str, model: Any) -> list[tuple[str, Row]]:
    """(table, row) pairs that record `model` read from `topic`; [] for what is not recorded.

    Raises ValueError when a value does not fit its column (the message cannot be recorded).
    """
    build = _ROWS.get(topic)
    return build(model) if build else []


# --- md.events, the hot path ---------------------------------------------------------------------------------

def _fields_of(model: type[BaseModel], names: Iterable[str]) -> Any:
    """A TypedDict of `model`'s fields `names`, each validated as `model` validates it. Other keys are ignored
    without being turned into Python objects."""
    fields = {}
    for name in names:
        info = model.model_fields[name]
        kind = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[name] = kind if info.is_required() else NotRequired[kind]
    return _typed_dict(f"Recorded{model.__name__}", fields)


def _typed_dict(name: str, fields: dict[str, Any]) -> Any:
    """A TypedDict of fields computed at import time, for pydantic to validate against. mypy knows only TypedDicts
    written out (it refuses a call with computed fields): to it, this one is Any."""
    make: Any = TypedDict
    return make(name, fields)


_RecordedFrame = _fields_of(MarketFrame, ("id", "ts", "venue", "symbol", "trades", "bid", "bid_qty", "ask", "ask_qty"))
_FRAME = TypeAdapter(_RecordedFrame)
# GenericAlias(list, t) is list[t]: mypy refuses the subscript for a type it cannot see.
_BATCH = TypeAdapter(_typed_dict("RecordedBatch", {"kind": Literal["batch"],
                                                   "frames": GenericAlias(list, _RecordedFrame)}))


def md_events_rows(value: bytes | None) -> tuple[dict[str, list[Row]], list[str]]:
    """Rows per table of an md.events message, and why frames of a batch were refused (the others are kept).

    A MarketBatch is validated as far as it is recorded: its frames' recorded fields, as the schema says. Their
    depth levels and other fields, and the envelope, are the market actor's business and are skipped: this costs
    half of decoding the MarketBatch (bench/bench_recorder.py). Raises InvalidMessage when nothing is recordable.
    """
    frames = None
    if value is not None and len(value) <= MAX_MESSAGE_BYTES:
        try:
            frames = _BATCH.validate_json(value)["frames"]
        except ValidationError:
            pass  # not a batch, or a bad one: the exact path below says why
    refused: list[str] = []
    if frames is None:
        try:
            frames = [frame.__dict__ for frame in _frames(decode("md.events", value))]
        except InvalidMessage:
            parts = split_batch(value)
            if parts is None:
                raise
            frames, refused = _valid_frames(parts[1])
    trades: list[Row] = []
    quotes: list[Row] = []
    for f in frames:
        _frame_rows(f, trades, quotes)
    return {"md_trades_log": trades, "md_quotes_log": quotes}, refused


def _valid_frames(raw_frames: list) -> tuple[list, list[str]]:
    valid, refused = [], []
    for i, frame in enumerate(raw_frames):
        try:
            valid.append(_FRAME.validate_python(frame))
        except ValidationError as exc:
            refused.append(f"frame {i}: {reason_of(exc)}")
    return valid, refused


def message_rows(topic: str, value: bytes | None) -> tuple[dict[str, list[Row]], list[str]]:
    """Rows per table recording a message of `topic`, and the refused parts of a partly recordable one.

    Raises InvalidMessage or ValueError when the message is not recordable at all.
    """
    if topic == "md.events":
        return md_events_rows(value)
    rows: dict[str, list[Row]] = defaultdict(list)
    for table, row in rows_for(topic, decode(topic, value)):
        rows[table].append(row)
    return rows, []


INSERT_FORMAT = "JSONCompactColumns"


def encode_rows(table: str, rows: list[Row]) -> bytes:
    """`rows` of `table` as one JSON array per column, for raw_insert: ClickHouse parses the decimal strings (and
    Decimals, sent as their str()) itself; clickhouse-connect's insert converts each Decimal in Python, 10x the
    Python time of this one orjson call.

    Times (`ts`, `expire_ts`) go as seconds: ClickHouse reads a JSON number as seconds, and ms / 1000 is exact for
    every EventTime (below 1e14 ms: at most 15 significant digits, which a double keeps).
    """
    columns: list[Sequence[Any]] = list(zip(*rows))
    for i in _TIME_COLUMNS[table]:
        columns[i] = [None if ms is None else ms / 1000 for ms in columns[i]]
    return orjson.dumps(columns, default=str)


# Positions of the DateTime64 columns (event times in ms) of each table.
_TIME_COLUMNS: dict[str, tuple[int, ...]] = {
    table: tuple(i for i, name in enumerate(columns) if name in ("ts", "expire_ts"))
    for table, columns in COLUMNS.items()
}
