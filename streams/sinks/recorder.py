"""Recorder: every recorded topic into ClickHouse, at least once (the tables dedupe by id).

Offsets are committed only after all rows of a batch are inserted; a failing insert is retried with
backoff, never dropped, so an outage or a restart loses nothing.

Built for md.events volume (bench/bench_recorder.py): a MarketBatch is validated only as far as it is recorded
(see md_events_rows), and rows go to ClickHouse as JSON columns that the engine parses, never as Python Decimals.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Annotated, Any, Callable, Iterable, Literal, Mapping

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel, TypeAdapter, ValidationError
from typing_extensions import NotRequired, TypedDict

from infra.broker import GROUP_SESSION
from infra.clickhouse import call
from schemas import InvalidMessage, MarketBatch, MarketFrame, Namespace, decode
from schemas.codec import MAX_MESSAGE_BYTES, reason_of, split_batch

log = logging.getLogger(__name__)

Row = tuple
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
                  "fee", "realized_pnl", "settle_coin", "exec_type"),
    "funding_log": ("id", "ts", "session", "symbol", "rate", "mark", "qty", "amount", "settle_coin"),
    "positions_log": ("id", "ts", "session", "symbol", "qty", "avg_price", "mark", "realized_pnl",
                      "unrealized_pnl"),
    "equity_log": ("id", "ts", "session", "cash", "equity", "realized_pnl", "unrealized_pnl", "fees", "funding",
                   "open_positions"),
    "decisions_log": ("id", "ts", "session", "symbol", "action", "reasoning", "confidence", "risk_score",
                      "opportunity_score", "intel", "features", "order_id"),
    "alerts_log": ("id", "ts", "severity", "source", "title", "text", "session"),
    "control_log": ("id", "ts", "session", "command", "config"),
    "sessions_log": ("id", "ts", "session", "status", "event", "strategy", "intel", "breakers", "config"),
    "dead_letters_log": ("id", "ts", "topic", "partition", "offset", "key", "error", "payload"),
}

_DECIMAL_LIMIT = Decimal(10) ** 20  # Decimal(38, 18) holds 20 integer digits


def _d(x: Decimal | str | None) -> Decimal | None:
    """A value for a Decimal(38, 18) column. Out of range raises ValueError: the message is unrecordable
    (an insert would fail on every retry). Digits past the 18th decimal are cut by ClickHouse."""
    if type(x) is str:
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
    "fills": _one("fills_log", lambda m: (
        m.id, m.ts, m.session, m.order_id, m.symbol, m.side, _d(m.price), _d(m.qty), m.liquidity,
        _d(m.fee_rate), _d(m.fee), _d(m.realized_pnl), m.settle_coin, m.exec_type)),
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
    "alerts": _one("alerts_log", lambda m: (m.id, m.ts, m.severity, m.source, m.title, m.text, m.session)),
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
    return TypedDict(f"Recorded{model.__name__}", fields)


_RecordedFrame = _fields_of(MarketFrame, ("id", "ts", "venue", "symbol", "trades", "bid", "bid_qty", "ask", "ask_qty"))
_FRAME = TypeAdapter(_RecordedFrame)
_BATCH = TypeAdapter(TypedDict("RecordedBatch", {"kind": Literal["batch"], "frames": list[_RecordedFrame]}))


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
    columns = list(zip(*rows))
    for i in _TIME_COLUMNS[table]:
        columns[i] = [None if ms is None else ms / 1000 for ms in columns[i]]
    return orjson.dumps(columns, default=str)


# Positions of the DateTime64 columns (event times in ms) of each table.
_TIME_COLUMNS: dict[str, tuple[int, ...]] = {
    table: tuple(i for i, name in enumerate(columns) if name in ("ts", "expire_ts"))
    for table, columns in COLUMNS.items()
}


def _log_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("recorder stopped by an error", exc_info=task.exception())


class Recorder:
    """Consumes the recorded topics in batches and inserts them into ClickHouse, one insert per table.

    The topics must exist before start(). While a batch is written, the next one is fetched and decoded, up to
    `max_rows` rows. `rows_written` counts rows per table, `invalid` the messages skipped because they do not
    decode (or do not fit their columns), `invalid_frames` the frames skipped out of batches whose other frames
    were recorded.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        client: Any,
        topics: Iterable[str] = RECORDED_TOPICS,
        group_id: str = "papertape-recorder",
        *,
        names: Namespace = Namespace(),
        max_records: int = 20_000,
        max_rows: int = 100_000,
        min_write_interval_s: float = 0.5,
        poll_ms: int = 200,
        backoff: tuple[float, float] = (0.2, 5.0),
        **consumer_options: Any,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client = client
        self.topics = tuple(topics)
        unknown = [t for t in self.topics if t not in _ROWS]
        if unknown:
            raise ValueError(f"not recordable topics: {unknown}")
        self.names = names
        self.group_id = names.group(group_id)
        self.max_records = max_records
        self.max_rows = max_rows
        self.min_write_interval_s = min_write_interval_s
        self._last_write = 0.0
        self.poll_ms = poll_ms
        self.backoff = backoff
        self.consumer_options = consumer_options
        self.rows_written: Counter[str] = Counter()
        self.invalid = 0
        self.invalid_frames = 0
        self.batches = 0
        self.insert_failures = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._busy = False  # fetched records are not yet inserted and committed

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            *map(self.names.topic, self.topics),
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **(GROUP_SESSION | self.consumer_options),
        )
        await self._consumer.start()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="recorder")
        self._task.add_done_callback(_log_crash)

    async def stop(self, timeout: float = 30.0) -> None:
        """Finish (insert and commit) the batch in hand, then leave the group.

        If ClickHouse stays down past `timeout`, the batch is abandoned uncommitted: it is read again later.
        """
        self._stopping = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except asyncio.TimeoutError:
                log.warning("recorder: stop timed out, abandoning an uncommitted batch (it will be re-read)")
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _run(self) -> None:
        """Fetch and decode while the previous batch is written: decoding (Python) and inserting (ClickHouse's
        threads, without the GIL) overlap, and what arrives during a write goes into the next, larger, one."""
        consumer = self._consumer
        assert consumer is not None
        rows: dict[str, list[Row]] = defaultdict(list)
        offsets: dict[TopicPartition, int] = {}
        writing: asyncio.Task | None = None
        try:
            while True:
                if writing is not None and (writing.done() or self._stopping
                                            or sum(map(len, rows.values())) >= self.max_rows):
                    await writing
                    writing = None
                if writing is None and offsets and (self._stopping or self._write_due(rows)):
                    self._last_write = time.monotonic()
                    writing = asyncio.create_task(self._write(rows, offsets))
                    rows, offsets = defaultdict(list), {}
                self._busy = writing is not None or bool(offsets)
                if self._stopping:
                    if not self._busy:
                        return
                    continue  # finish what is in hand, fetch nothing more
                try:
                    # While a write is in flight, poll briefly: its end starts the next one. Rows in hand wait
                    # at most until their write is due.
                    wait_ms = self.poll_ms
                    if writing:
                        wait_ms = 5
                    elif offsets:
                        due_in = self._last_write + self.min_write_interval_s - time.monotonic()
                        wait_ms = max(5, min(self.poll_ms, int(due_in * 1000)))
                    batch = await consumer.getmany(timeout_ms=wait_ms, max_records=self.max_records)
                except Exception as exc:
                    log.warning("recorder: fetch failed, retrying: %s", exc)
                    await asyncio.sleep(self.backoff[0])
                    continue
                self._decode(batch, rows, offsets)
        finally:
            if writing is not None:
                writing.cancel()  # stop() timed out: the batch stays uncommitted and is read again
            self._busy = False

    def _write_due(self, rows: dict[str, list[Row]]) -> bool:
        """Each ClickHouse insert makes a part, at a fixed cost: a trickle of rows waits to make fewer, larger ones."""
        return (time.monotonic() - self._last_write >= self.min_write_interval_s
                or sum(map(len, rows.values())) >= self.max_rows)

    def _decode(self, batch: dict[TopicPartition, list], rows: dict[str, list[Row]],
                offsets: dict[TopicPartition, int]) -> None:
        for tp, records in batch.items():
            for record in records:
                try:
                    got, refused = message_rows(self.names.name_of(tp.topic), record.value)
                except (InvalidMessage, ValueError) as exc:
                    self.invalid += 1
                    if self.invalid <= 10 or self.invalid % 1000 == 0:
                        log.warning("recorder: skipping %s[%d]@%d (invalid #%d): %s",
                                    tp.topic, tp.partition, record.offset, self.invalid, exc)
                    continue
                for table, table_rows in got.items():
                    if table_rows:
                        rows[table] += table_rows
                if refused:
                    self.invalid_frames += len(refused)
                    log.warning("recorder: skipping %d frames of %s[%d]@%d (invalid frames: %d): %s",
                                len(refused), tp.topic, tp.partition, record.offset, self.invalid_frames,
                                "; ".join(refused[:3]))
            offsets[tp] = records[-1].offset + 1

    async def _write(self, rows: dict[str, list[Row]], offsets: dict[TopicPartition, int]) -> None:
        await self._insert(rows)
        try:
            await self._consumer.commit(offsets)
        except Exception as exc:  # the rows are in; re-reading them is harmless (dedupe by id)
            log.warning("recorder: commit failed, the batch may be read again: %s", exc)
        self.batches += 1

    async def _insert(self, rows: dict[str, list[Row]]) -> None:
        """One insert per table; a failed table is retried with exponential backoff until it succeeds."""
        pending = {table: (len(table_rows), encode_rows(table, table_rows)) for table, table_rows in rows.items()}
        delay = self.backoff[0]
        while pending:
            table, (n, data) = next(iter(pending.items()))
            try:
                await call(self.client, self.client.raw_insert, table, COLUMNS[table], data, fmt=INSERT_FORMAT)
            except Exception as exc:
                self.insert_failures += 1
                log.warning("recorder: ClickHouse insert of %d rows into %s failed, retry in %.1fs: %s",
                            n, table, delay, str(exc).splitlines()[0] if str(exc) else repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            del pending[table]
            self.rows_written[table] += n
            delay = self.backoff[0]

    async def lag(self) -> dict[TopicPartition, int | None]:
        """Per assigned partition: high watermark (from the last fetch) minus position; None if not fetched yet."""
        consumer = self._consumer
        if consumer is None:
            return {}
        return {tp: None if (hw := consumer.highwater(tp)) is None else hw - await consumer.position(tp)
                for tp in consumer.assignment()}

    async def caught_up(self, since_ms: int | None = None) -> bool:
        """Every offset below the partitions' high watermarks is inserted into ClickHouse, judging by fetch
        responses processed at or after `since_ms` (ms since epoch), if given.

        Uses the fetch high watermark, not ListOffsets: Tansu's ListOffsets(latest) can be too low.
        """
        consumer = self._consumer
        if consumer is None or self._busy or self._task is None or self._task.done():
            return False
        partitions = consumer.assignment()
        if not partitions or (since_ms is not None and self._last_fetch(partitions) < since_ms):
            return False
        try:
            for tp in partitions:
                hw = consumer.highwater(tp)
                if hw is None or await consumer.position(tp) < hw:
                    return False
        except Exception:  # partitions revoked by a rebalance meanwhile
            return False
        return not self._busy

    def _last_fetch(self, partitions: Iterable[TopicPartition]) -> int:
        """The oldest of the partitions' last fetch response times (ms)."""
        return min(self._consumer.last_poll_timestamp(tp) or 0 for tp in partitions)

    async def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Wait until every message acknowledged before this call is in ClickHouse; TimeoutError if not.

        Judged by fetch responses at least two rounds after the call: aiokafka has one fetch in flight per
        broker, so a response processed after an earlier post-call one was requested after the call and
        its high watermark counts every message acknowledged before it.
        """
        deadline = time.monotonic() + timeout
        called_ms = int(time.time() * 1000)
        first_round_ms: int | None = None
        while True:
            partitions = self._consumer.assignment() if self._consumer else set()
            if first_round_ms is None and partitions and self._last_fetch(partitions) >= called_ms:
                first_round_ms = max(self._consumer.last_poll_timestamp(tp) or 0 for tp in partitions)
            if first_round_ms is not None and await self.caught_up(since_ms=first_round_ms + 1):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"recorder not caught up after {timeout}s: lag {await self.lag()}, "
                                   f"busy={self._busy}, insert_failures={self.insert_failures}")
            await asyncio.sleep(0.02)
