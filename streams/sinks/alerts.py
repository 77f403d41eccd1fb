"""The alert path's consumers: the watch (the process's console, the supervisor's end-of-tape watch) and the relay,
which delivers `alerts` (and `fills`, as trading alerts, to the channels that want them) to every channel.

The relay is at least once and deduplicated across restarts: after each channel's outcome for an alert it
produces an AlertDelivery to `alerts.status` and waits for the broker's ack; it commits an offset only once every
alert up to it has an outcome on every channel that wanted it; a relay that starts reads `alerts.status` from the
beginning, so an alert a channel had is not sent to it again. One window remains: killed after a channel took a
message and before its AlertDelivery reached the broker, a relay sends that message again when it restarts.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

import schemas as s
from infra.broker import GROUP_SESSION
from infra.prometheus import ALERTS_DELIVERED
from papertape.config import AlertsSettings, Settings
from schemas.vocabulary import DeliveryOutcome, Severity
from streams.sinks.alert_batching import LEVELS, AlertBatcher, Digest
from streams.sinks.alert_channels import DeliveryChannel, delivery_channels

log = logging.getLogger(__name__)
RELAY_GROUP = "papertape-alert-relay"
WATCH_GROUP = "papertape-alert-watch"
MAX_HELD = 10_000  # alerts read and not yet finished: fetching pauses beyond this (a channel is down)


def _log_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("alert relay stopped by an error", exc_info=task.exception())


def _message_id(prefix: str, rest: str) -> str:
    """A deterministic message id of at most 160 characters."""
    mid = f"{prefix}:{rest}"
    return mid if len(mid) <= 160 else f"{prefix}:sha1:{hashlib.sha1(rest.encode()).hexdigest()}"


def fill_alert(fill: s.Fill) -> s.Alert:
    """A fill as an info alert of type trading. Partial fills of one order share a title: one message per burst,
    and repeats within `repeat_s` counted rather than sent."""
    what = "liquidated" if fill.exec_type == "liquidation" else "filled"
    return s.Alert(id=_message_id("fill", fill.id), ts=fill.ts, severity="info", type="trading", source="venue",
                   session=fill.session, title=f"{what} {fill.side} {fill.symbol} ({fill.order_id})"[:200],
                   text=f"{fill.session}: {fill.side} {fill.qty} {fill.symbol} @ {fill.price} ({fill.liquidity}), "
                        f"fee {fill.fee} {fill.settle_coin}, realized P&L {fill.realized_pnl}")


class Watcher(Protocol):
    min_severity: Severity

    async def send(self, alert: s.Alert) -> None: ...


class AlertWatch:
    """Every alert, as it is read, to the process's watchers (console, end of tape); commits automatically: what
    it shows is not a delivery. Its own consumer group, so it sees every alert whoever delivers them."""

    def __init__(self, bootstrap: str, watchers: Sequence[Watcher], names: s.Namespace = s.Namespace(),
                 **consumer_options: Any) -> None:
        self.watchers = watchers
        self.consumer = AIOKafkaConsumer(names.topic("alerts"), bootstrap_servers=bootstrap,
                                         group_id=names.group(WATCH_GROUP), auto_offset_reset="earliest",
                                         enable_auto_commit=True, **(GROUP_SESSION | consumer_options))
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name="alert-watch")

    async def _run(self) -> None:
        async for record in self.consumer:
            try:
                alert = s.decode("alerts", record.value)
            except s.InvalidMessage as exc:
                log.warning("unreadable alert at offset %s: %s", record.offset, exc)
                continue
            for w in self.watchers:
                if LEVELS[alert.severity] >= LEVELS[w.min_severity]:
                    await w.send(alert)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()


@dataclass
class _Held:
    """An alert read at an offset, until every channel that wanted it has its outcome."""

    offset: int
    waiting: set[str] = field(default_factory=set)


@dataclass
class _Lane:
    """One channel's side of the relay: its batcher and, in order, what its sender has to do."""

    channel: DeliveryChannel
    batcher: AlertBatcher
    queue: asyncio.Queue[Digest | s.Alert] = field(default_factory=asyncio.Queue)  # an Alert: a suppressed repeat
    task: asyncio.Task | None = None


async def delivered(bootstrap: str, names: s.Namespace, **consumer_options: Any) -> set[tuple[str, str]]:
    """Every (alert id, channel) with an outcome on `alerts.status`, read from its beginning to its end now."""
    tp = TopicPartition(names.topic("alerts.status"), 0)  # a topic of one partition
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                **consumer_options)
    await consumer.start()
    done: set[tuple[str, str]] = set()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                for r in records:
                    try:
                        m = s.decode("alerts.status", r.value)
                    except s.InvalidMessage:
                        continue
                    if m.kind == "alert_delivery":
                        done.add((m.alert_id, m.channel))
    finally:
        await consumer.stop()
    return done


class AlertRelay:
    """Delivers alerts (and fills, to the channels whose types take trading alerts) to every channel: filtered,
    aggregated and rate-limited per channel (streams/sinks/alert_batching.py), each message retried with backoff
    until the channel takes or refuses it (or for `retry_for_s`, when set), each outcome recorded on `alerts.status`
    before the offset is committed. Channels send concurrently: one that is down delays no other."""

    def __init__(self, bootstrap: str, channels: Sequence[DeliveryChannel],
                 settings: AlertsSettings = AlertsSettings(), names: s.Namespace = s.Namespace(),
                 group_id: str = RELAY_GROUP, backoff: tuple[float, float] = (0.2, 5.0),
                 clock: Callable[[], float] = time.monotonic, poll_ms: int = 100, **consumer_options: Any) -> None:
        self.bootstrap, self.names, self.group_id = bootstrap, names, names.group(group_id)
        self.settings, self.backoff, self.clock, self.poll_ms = settings, backoff, clock, poll_ms
        self.lanes = [_Lane(c, AlertBatcher(settings.aggregate_s, settings.repeat_s)) for c in channels]
        self.consumer_options = consumer_options
        self.done: set[tuple[str, str]] = set()  # (alert id, channel) with an outcome
        self.inflight: dict[tuple[str, str], list[_Held]] = {}  # handed to a lane, no outcome yet
        self.held: dict[TopicPartition, deque[_Held]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    @property
    def topics(self) -> list[str]:
        wants_fills = any(not lane.channel.filter.types or "trading" in lane.channel.filter.types
                          for lane in self.lanes if LEVELS[lane.channel.filter.min_severity] == 0)
        return ["alerts", "fills"] if wants_fills else ["alerts"]

    async def start(self) -> None:
        self.done = await delivered(self.bootstrap, self.names, **self.consumer_options)
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=False)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(*map(self.names.topic, self.topics), bootstrap_servers=self.bootstrap,
                                          group_id=self.group_id, enable_auto_commit=False,
                                          auto_offset_reset="earliest", **(GROUP_SESSION | self.consumer_options))
        await self._consumer.start()
        for lane in self.lanes:
            lane.task = asyncio.create_task(self._send_loop(lane), name=f"alert-channel-{lane.channel.name}")
        self._task = asyncio.create_task(self._run(), name="alert-relay")
        self._task.add_done_callback(_log_crash)

    async def stop(self, timeout: float = 10.0) -> None:
        """Send what is held now, wait up to `timeout` for the channels, commit what has its outcomes, leave.
        What is not finished by then is read again by the next relay."""
        self._stopping = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        for lane in self.lanes:
            for digest in lane.batcher.due(self.clock(), everything=True):
                lane.queue.put_nowait(digest)
        queues = [asyncio.create_task(lane.queue.join()) for lane in self.lanes]
        if queues:
            await asyncio.wait(queues, timeout=timeout)
        for t in queues + [lane.task for lane in self.lanes if lane.task]:
            t.cancel()
        await asyncio.gather(*queues, *(lane.task for lane in self.lanes if lane.task), return_exceptions=True)
        if self._consumer is not None:
            await self._commit()
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        for lane in self.lanes:
            await lane.channel.close()

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        paused = False
        while not self._stopping:
            held = sum(map(len, self.held.values()))
            if paused != (held > MAX_HELD):
                paused = not paused
                (consumer.pause if paused else consumer.resume)(*consumer.assignment())
            try:
                batch = await consumer.getmany(timeout_ms=self._wait_ms())
            except Exception as exc:
                log.warning("alert relay: fetch failed, retrying: %s", exc)
                await asyncio.sleep(self.backoff[0])
                continue
            now = self.clock()
            for tp, records in batch.items():
                for record in records:
                    self._take(tp, record, now)
            now = self.clock()
            for lane in self.lanes:
                for digest in lane.batcher.due(now):
                    lane.queue.put_nowait(digest)
            await self._commit()

    def _wait_ms(self) -> int:
        due = min((d for lane in self.lanes if (d := lane.batcher.next_due()) is not None), default=None)
        if due is None:
            return self.poll_ms
        return max(0, min(self.poll_ms, int((due - self.clock()) * 1000) + 1))

    def _take(self, tp: TopicPartition, record: Any, now: float) -> None:
        held = _Held(record.offset)
        self.held.setdefault(tp, deque()).append(held)
        topic = self.names.name_of(record.topic)
        try:
            message = s.decode(topic, record.value)
        except s.InvalidMessage as exc:
            log.warning("alert relay: unreadable %s message at offset %s: %s", topic, record.offset, exc)
            return
        alert = fill_alert(message) if topic == "fills" else message
        for lane in self.lanes:
            key = (alert.id, lane.channel.name)
            if key in self.done or not lane.channel.filter.accepts(alert):
                continue
            held.waiting.add(lane.channel.name)
            if key in self.inflight:  # the same alert again (a producer's retry): finished with the first
                self.inflight[key].append(held)
                continue
            self.inflight[key] = [held]
            if not lane.batcher.add(alert, now):
                lane.queue.put_nowait(alert)

    async def _send_loop(self, lane: _Lane) -> None:
        while True:
            item = await lane.queue.get()
            try:
                if isinstance(item, Digest):
                    outcome, attempts, detail = await self._deliver(lane.channel, item)
                    if len(item.alerts) > 1:
                        detail = f"{detail}; one message for {len(item.alerts)} alerts".lstrip("; ")
                    records = [self._outcome(a, lane, outcome, attempts, detail) for a in item.alerts]
                else:
                    records = [self._outcome(item, lane, "suppressed", 0,
                                             f"a repeat within {self.settings.repeat_s:g} s; counted in the next")]
                await self._record(records)
            finally:
                lane.queue.task_done()

    async def _deliver(self, channel: DeliveryChannel, digest: Digest) -> tuple[DeliveryOutcome, int, str]:
        give_up = self.settings.retry_for_s  # None: until the channel takes or refuses it (at least once)
        deadline = None if give_up is None else self.clock() + give_up
        delay, attempts = self.backoff[0], 0
        while True:
            attempts += 1
            try:
                verdict, detail = await channel.send(digest)
            except Exception as exc:  # a channel's bug must not stop the relay; its text may quote the URL
                log.error("alert channel %s raised %s", channel.name, type(exc).__name__)
                verdict, detail = "retry", type(exc).__name__
            if verdict != "retry":
                return verdict, attempts, detail
            left = self.backoff[1] if deadline is None else deadline - self.clock()
            if left <= 0:
                log.warning("alert channel %s: gave up after %d attempts (%s)", channel.name, attempts, detail)
                return "failed", attempts, detail
            if attempts % 10 == 0:
                log.warning("alert channel %s: %d attempts failed so far (%s); retrying", channel.name, attempts,
                            detail)
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, self.backoff[1])

    def _outcome(self, alert: s.Alert, lane: _Lane, outcome: DeliveryOutcome, attempts: int,
                 detail: str) -> s.AlertDelivery:
        channel = lane.channel.name
        return s.AlertDelivery(id=_message_id("delivery", f"{channel}:{alert.id}"), ts=int(time.time() * 1000),
                               alert_id=alert.id, channel=channel, outcome=outcome, attempts=attempts,
                               detail=detail[:1000])

    async def _record(self, records: list[s.AlertDelivery]) -> None:
        """Each outcome to `alerts.status`, acknowledged by the broker, then the alerts are finished there."""
        assert self._producer is not None
        topic = self.names.topic("alerts.status")
        delay = self.backoff[0]
        while True:
            try:
                await asyncio.gather(*(self._producer.send_and_wait(topic, s.encode(r), key=r.alert_id.encode())
                                       for r in records))
                break
            except Exception as exc:
                log.warning("alert relay: recording outcomes failed, retrying: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
        for r in records:
            ALERTS_DELIVERED.labels(r.channel, r.outcome).inc()
            key = (r.alert_id, r.channel)
            self.done.add(key)
            for held in self.inflight.pop(key, []):
                held.waiting.discard(r.channel)

    async def _commit(self) -> None:
        offsets = {}
        for tp, held in self.held.items():
            last = None
            while held and not held[0].waiting:
                last = held.popleft().offset
            if last is not None:
                offsets[tp] = last + 1
        if offsets and self._consumer is not None:
            try:
                await self._consumer.commit(offsets)
            except Exception as exc:  # partitions moved to another relay: it reads them again
                log.warning("alert relay: commit failed: %s", exc)


class AlertEdges:
    """What a pipeline process runs of the alert path: the watch always, the relay when it delivers itself."""

    def __init__(self, watch: AlertWatch, relay: AlertRelay | None) -> None:
        self.watch, self.relay = watch, relay

    async def start(self) -> None:
        await self.watch.start()
        if self.relay is not None:
            await self.relay.start()

    async def stop(self) -> None:
        if self.relay is not None:
            await self.relay.stop()
        await self.watch.stop()


def alert_edges(bootstrap: str, settings: Settings, watchers: Sequence[Watcher], names: s.Namespace = s.Namespace(),
                **consumer_options: Any) -> AlertEdges:
    """The watch over `watchers`, and the relay to the settings' channels unless `papertape relay` delivers
    (`[alerts] relay = "external"`) or there is no channel."""
    channels = delivery_channels(settings.alerts, settings.webhook_url)
    relay = None
    if channels and settings.alerts.relay == "embedded":
        relay = AlertRelay(bootstrap, channels, settings.alerts, names=names, **consumer_options)
    return AlertEdges(AlertWatch(bootstrap, watchers, names=names, **consumer_options), relay)
