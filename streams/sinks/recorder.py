"""Recorder: every recorded topic into ClickHouse, at least once (the tables dedupe by id).

Offsets are committed only after all rows of a batch are inserted; a failing insert is retried with
backoff, never dropped, so an outage or a restart loses nothing. What a message's rows are is
`streams.sinks.rows`; this module is the consumer loop around it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from typing import Any, Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from infra import prometheus
from infra.broker import GROUP_SESSION
from infra.clickhouse import call
from schemas import InvalidMessage, Namespace
from streams.sinks.rows import COLUMNS, INSERT_FORMAT, RECORDED_TOPICS, Row, encode_rows, message_rows

log = logging.getLogger(__name__)
# The archive can wait a little: a fetch returns once it has 256 KiB or after 200 ms, not for every few records.
# At 700 symbols, fetches of a few records each cost the supervisor a tenth of its CPU in socket writes.
ARCHIVE_FETCH = {"fetch_min_bytes": 256 << 10, "fetch_max_wait_ms": 200}


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
        on_written: Callable[[dict[str, list[Row]]], None] | None = None,
        on_insert_failing: Callable[[bool, str], None] | None = None,
        **consumer_options: Any,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client = client
        self.topics = tuple(topics)
        unknown = [t for t in self.topics if t not in RECORDED_TOPICS]
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
        self.on_written = on_written  # told of every batch once it is in ClickHouse (the metrics writer)
        self.on_insert_failing = on_insert_failing  # (True, why) at each failed insert, then (False, ...)
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
            **(GROUP_SESSION | ARCHIVE_FETCH | self.consumer_options),
        )
        await self._consumer.start()
        prometheus.RECORDER_LAG.track(self.names.name_of)
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
                    writing = asyncio.create_task(self._write(consumer, rows, offsets))
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
                prometheus.RECORDER_LAG.fetched(consumer, batch)
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

    async def _write(self, consumer: AIOKafkaConsumer, rows: dict[str, list[Row]],
                     offsets: dict[TopicPartition, int]) -> None:
        await self._insert(rows)
        prometheus.RECORDER_LAG.committed(offsets)
        if self.on_written is not None:
            self.on_written(rows)
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # the rows are in; re-reading them is harmless (dedupe by id)
            log.warning("recorder: commit failed, the batch may be read again: %s", exc)
        self.batches += 1

    async def _insert(self, rows: dict[str, list[Row]]) -> None:
        """One insert per table; a failed table is retried with exponential backoff until it succeeds."""
        pending = {table: (len(table_rows), encode_rows(table, table_rows)) for table, table_rows in rows.items()}
        delay = self.backoff[0]
        failing = False
        while pending:
            table, (n, data) = next(iter(pending.items()))
            try:
                await call(self.client, self.client.raw_insert, table, COLUMNS[table], data, fmt=INSERT_FORMAT)
            except Exception as exc:
                self.insert_failures += 1
                why = str(exc).splitlines()[0] if str(exc) else repr(exc)
                log.warning("recorder: ClickHouse insert of %d rows into %s failed, retry in %.1fs: %s",
                            n, table, delay, why)
                failing = True
                if self.on_insert_failing is not None:
                    self.on_insert_failing(True, f"insert of {n} rows into {table} failed, retrying: {why}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            del pending[table]
            if failing and self.on_insert_failing is not None:
                failing = False
                self.on_insert_failing(False, f"insert of {n} rows into {table} succeeded")
            self.rows_written[table] += n
            prometheus.RECORDER_ROWS.labels(table).inc(n)
            delay = self.backoff[0]

    # --- caught up ----------------------------------------------------------------------------------------------
    # A broker workaround that stays here, as it applies to every broker alike: caught up is judged by the high
    # watermarks of the consumer's own fetch responses, never by ListOffsets. ListOffsets(latest) answers too low on
    # Tansu (see infra/tansu.py); a fetch's high watermark is right on Kafka and Tansu both and costs no request, so
    # the recorder need not know which broker it runs on.

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

        Uses the fetch high watermark, not ListOffsets (see above).
        """
        consumer = self._consumer
        if consumer is None or self._busy or self._task is None or self._task.done():
            return False
        partitions = consumer.assignment()
        if not partitions or (since_ms is not None and _last_fetch(consumer, partitions) < since_ms):
            return False
        try:
            for tp in partitions:
                hw = consumer.highwater(tp)
                if hw is None or await consumer.position(tp) < hw:
                    return False
        except Exception:  # partitions revoked by a rebalance meanwhile
            return False
        return not self._busy

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
            consumer = self._consumer
            partitions = consumer.assignment() if consumer else set()
            if consumer and first_round_ms is None and partitions and _last_fetch(consumer, partitions) >= called_ms:
                first_round_ms = max(consumer.last_poll_timestamp(tp) or 0 for tp in partitions)
            if first_round_ms is not None and await self.caught_up(since_ms=first_round_ms + 1):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"recorder not caught up after {timeout}s: lag {await self.lag()}, "
                                   f"busy={self._busy}, insert_failures={self.insert_failures}")
            await asyncio.sleep(0.02)


def _last_fetch(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> int:
    """The oldest of the partitions' last fetch response times (ms)."""
    return min(consumer.last_poll_timestamp(tp) or 0 for tp in partitions)
