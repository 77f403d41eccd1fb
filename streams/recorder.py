"""Recorder: every recorded topic into ClickHouse, at least once (the tables dedupe by id).

Offsets are committed only after all rows of a batch are inserted; a failing insert is retried with
backoff, never dropped, so an outage or a restart loses nothing.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any, Callable, Iterable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.clickhouse import call
from schemas import InvalidMessage, MarketFrame, decode

log = logging.getLogger(__name__)

Row = tuple
# Columns of each ClickHouse table (see infra/clickhouse/001_init.sql), in the order rows_for builds them.
COLUMNS: dict[str, tuple[str, ...]] = {
    "md_trades_log": ("id", "frame_id", "ts", "venue", "symbol", "price", "qty", "side"),
    "md_quotes_log": ("id", "ts", "venue", "symbol", "bid", "bid_qty", "ask", "ask_qty"),
    "md_marks_log": ("id", "ts", "symbol", "bid", "ask", "last", "mark"),
    "signals_log": ("id", "ts", "session", "symbol", "target", "confidence", "strategy", "reasoning"),
    "orders_log": ("id", "ts", "session", "symbol", "side", "type", "qty", "price", "tif", "reduce_only"),
    "order_events_log": ("id", "ts", "session", "order_id", "symbol", "side", "type", "status", "qty", "price",
                         "filled_qty", "avg_price", "reason"),
    "fills_log": ("id", "ts", "session", "order_id", "symbol", "side", "price", "qty", "liquidity", "fee_rate",
                  "fee", "realized_pnl", "settle_coin"),
    "positions_log": ("id", "ts", "session", "symbol", "qty", "avg_price", "mark", "realized_pnl",
                      "unrealized_pnl"),
    "equity_log": ("id", "ts", "session", "cash", "equity", "realized_pnl", "unrealized_pnl", "fees",
                   "open_positions"),
    "decisions_log": ("id", "ts", "session", "symbol", "action", "reasoning", "confidence", "features",
                      "order_id"),
    "alerts_log": ("id", "ts", "severity", "source", "title", "text", "session"),
    "control_log": ("id", "ts", "session", "command", "config"),
    "dead_letters_log": ("id", "ts", "topic", "partition", "offset", "key", "error", "payload"),
}

_DECIMAL_LIMIT = Decimal(10) ** 20  # Decimal(38, 18) holds 20 integer digits


def _d(x: Decimal | None) -> Decimal | None:
    """A value for a Decimal(38, 18) column. Out of range raises ValueError: the message is unrecordable
    (an insert would fail on every retry). Digits past the 18th decimal are cut by ClickHouse."""
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


def _md_events(m: Any) -> list[tuple[str, Row]]:
    if not isinstance(m, MarketFrame):
        return []  # watermarks are not recorded
    rows: list[tuple[str, Row]] = [
        ("md_trades_log", (f"{m.id}:{i}", m.id, t.ts, m.venue, m.symbol, _d(t.price), _d(t.qty), t.side))
        for i, t in enumerate(m.trades)
    ]
    if m.bid is not None or m.ask is not None:
        rows.append(("md_quotes_log", (m.id, m.ts, m.venue, m.symbol, _d(m.bid), _d(m.bid_qty), _d(m.ask),
                                       _d(m.ask_qty))))
    return rows


def _one(table: str, build: Callable[[Any], Row]) -> Callable[[Any], list[tuple[str, Row]]]:
    return lambda m: [(table, build(m))]


_ROWS: dict[str, Callable[[Any], list[tuple[str, Row]]]] = {
    "md.events": _md_events,
    "md.marks": _one("md_marks_log", lambda m: (m.id, m.ts, m.symbol, _d(m.bid), _d(m.ask), _d(m.last),
                                                _d(m.mark))),
    "signals": _one("signals_log", lambda m: (m.id, m.ts, m.session, m.symbol, m.target, m.confidence,
                                              m.strategy, m.reasoning)),
    "orders": _one("orders_log", lambda m: (m.id, m.ts, m.session, m.symbol, m.side, m.type, _d(m.qty),
                                            _d(m.price), m.tif, m.reduce_only)),
    "order.events": _one("order_events_log", lambda m: (
        m.id, m.ts, m.session, m.order_id, m.symbol, m.side, m.type, m.status, _d(m.qty), _d(m.price),
        _d(m.filled_qty), _d(m.avg_price), m.reason)),
    "fills": _one("fills_log", lambda m: (
        m.id, m.ts, m.session, m.order_id, m.symbol, m.side, _d(m.price), _d(m.qty), m.liquidity,
        _d(m.fee_rate), _d(m.fee), _d(m.realized_pnl), m.settle_coin)),
    "positions": _one("positions_log", lambda m: (
        m.id, m.ts, m.session, m.symbol, _d(m.qty), _d(m.avg_price), _d(m.mark), _d(m.realized_pnl),
        _d(m.unrealized_pnl))),
    "equity": _one("equity_log", lambda m: (
        m.id, m.ts, m.session, _d(m.cash), _d(m.equity), _d(m.realized_pnl), _d(m.unrealized_pnl), _d(m.fees),
        _int(m.open_positions, 32, signed=False))),
    "decisions": _one("decisions_log", lambda m: (
        m.id, m.ts, m.session, m.symbol, m.action, m.reasoning, m.confidence, _json(m.features), m.order_id)),
    "alerts": _one("alerts_log", lambda m: (m.id, m.ts, m.severity, m.source, m.title, m.text, m.session)),
    "control": _one("control_log", lambda m: (m.id, m.ts, m.session, m.command, _json(m.config))),
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


# Tansu: a parked fetch is not woken by new data (so wait little), and a join takes ~session timeout / 2.
CONSUMER_DEFAULTS = {"fetch_max_wait_ms": 100, "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def _leave_group_also_in_generation_0(consumer: AIOKafkaConsumer) -> None:
    """Tansu numbers the first generation 0 and aiokafka sends LeaveGroup on stop only for generation > 0,
    so a restarted recorder would wait a session timeout for the old member to expire. Best effort."""
    coordinator = getattr(consumer, "_coordinator", None)
    original = getattr(coordinator, "_maybe_leave_group", None)
    if original is None:
        return

    async def leave() -> None:
        if coordinator.generation == 0:
            coordinator.generation = 1
        await original()

    coordinator._maybe_leave_group = leave


def _log_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("recorder stopped by an error", exc_info=task.exception())


class Recorder:
    """Consumes the recorded topics in batches and inserts them into ClickHouse, one insert per table.

    The topics must exist before start(). `rows_written` counts rows per table, `invalid` the messages
    skipped because they do not decode (or do not fit their columns).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        client: Any,
        topics: Iterable[str] = RECORDED_TOPICS,
        group_id: str = "papertape-recorder",
        *,
        max_records: int = 20_000,
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
        self.group_id = group_id
        self.max_records = max_records
        self.poll_ms = poll_ms
        self.backoff = backoff
        self.consumer_options = consumer_options
        self.rows_written: Counter[str] = Counter()
        self.invalid = 0
        self.batches = 0
        self.insert_failures = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._busy = False  # a fetched batch is not yet inserted and committed

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **(CONSUMER_DEFAULTS | self.consumer_options),
        )
        await self._consumer.start()
        _leave_group_also_in_generation_0(self._consumer)
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
        consumer = self._consumer
        assert consumer is not None
        while not self._stopping:
            try:
                batch = await consumer.getmany(timeout_ms=self.poll_ms, max_records=self.max_records)
            except Exception as exc:
                log.warning("recorder: fetch failed, retrying: %s", exc)
                await asyncio.sleep(self.backoff[0])
                continue
            if not batch:
                continue
            self._busy = True
            try:
                await self._record(batch)
            finally:
                self._busy = False

    async def _record(self, batch: dict[TopicPartition, list]) -> None:
        rows: dict[str, list[Row]] = defaultdict(list)
        offsets = {}
        for tp, records in batch.items():
            for record in records:
                try:
                    for table, row in rows_for(tp.topic, decode(tp.topic, record.value)):
                        rows[table].append(row)
                except (InvalidMessage, ValueError) as exc:
                    self.invalid += 1
                    if self.invalid <= 10 or self.invalid % 1000 == 0:
                        log.warning("recorder: skipping %s[%d]@%d (invalid #%d): %s",
                                    tp.topic, tp.partition, record.offset, self.invalid, exc)
            offsets[tp] = records[-1].offset + 1
        await self._insert(rows)
        try:
            await self._consumer.commit(offsets)
        except Exception as exc:  # the rows are in; re-reading them is harmless (dedupe by id)
            log.warning("recorder: commit failed, the batch may be read again: %s", exc)
        self.batches += 1

    async def _insert(self, rows: dict[str, list[Row]]) -> None:
        """One insert per table; a failed table is retried with exponential backoff until it succeeds."""
        pending = dict(rows)
        delay = self.backoff[0]
        while pending:
            table, table_rows = next(iter(pending.items()))
            try:
                await call(self.client, self.client.insert, table, table_rows, column_names=list(COLUMNS[table]))
            except Exception as exc:
                self.insert_failures += 1
                log.warning("recorder: ClickHouse insert of %d rows into %s failed, retry in %.1fs: %s",
                            len(table_rows), table, delay, str(exc).splitlines()[0] if str(exc) else repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            del pending[table]
            self.rows_written[table] += len(table_rows)
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
