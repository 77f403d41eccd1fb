"""The API's live view of the pipeline: one Kafka consumer of the topics a dashboard follows (no consumer group:
every API process sees everything, from the moment it started), fanned out to each open stream, and to the
requests waiting for the engine's answer to a control."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from aiokafka import AIOKafkaConsumer

import schemas as s

log = logging.getLogger(__name__)

# topic -> the event name a stream gives its messages
STREAMED: dict[str, str] = {"fills": "fill", "order.events": "order", "positions": "position", "equity": "equity",
                            "decisions": "decision", "alerts": "alert", "sessions": "session",
                            "errors.dlq": "dead_letter"}
QUEUE_SIZE = 2000  # a stream this far behind is closed (its client reconnects and reads the archive)


Filter = Callable[[str, s.Message], bool]  # (topic, message) -> does the subscriber want it


@dataclass(eq=False)
class Subscriber:
    wants: Filter
    queue: asyncio.Queue[tuple[str, s.Message] | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))


def of_session(session: str | None, holds: bool = True) -> Filter:
    """One session's messages (None: every session's), with or without the decisions to hold."""
    def wants(_: str, m: s.Message) -> bool:
        return ((session is None or getattr(m, "session", None) == session)
                and (holds or getattr(m, "action", None) != "hold"))
    return wants


class EventHub:
    def __init__(self, bootstrap: str, names: s.Namespace) -> None:
        self.names = names
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                         auto_offset_reset="latest")
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        # subscribed without a group, the consumer takes every partition and follows the topics' metadata (an
        # assignment by hand from the metadata cached at start missed the partitions it did not know yet)
        topics = {self.names.topic(t) for t in STREAMED}
        self.consumer.subscribe(list(topics))
        deadline = asyncio.get_running_loop().time() + 20
        while {tp.topic for tp in self.consumer.assignment()} != topics:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the broker has not all of the topics {', '.join(sorted(topics))}")
            await asyncio.sleep(0.05)
        for tp in self.consumer.assignment():  # resolve the end offsets now: nothing sent after start() is skipped
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, records in batches.items():
                topic = self.names.name_of(tp.topic)
                for record in records:
                    try:
                        message = s.decode(topic, record.value)
                    except s.InvalidMessage:
                        continue  # refused messages reach errors.dlq through the agents, not here
                    self._publish(topic, message)

    def _publish(self, topic: str, message: s.Message) -> None:
        for sub in list(self.subscribers):
            if sub.wants(topic, message):
                try:
                    sub.queue.put_nowait((STREAMED[topic], message))
                except asyncio.QueueFull:  # too far behind: ended (its client reconnects and reads the archive)
                    self.unsubscribe(sub)
                    _end(sub)

    def subscribe(self, wants: Filter) -> Subscriber:
        """From now on, the messages `wants` accepts go to the subscriber's queue (None: it fell behind)."""
        sub = Subscriber(wants)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for sub in list(self.subscribers):
            _end(sub)
        await self.consumer.stop()


def _end(sub: Subscriber) -> None:
    """Its stream ends after what it has not yet read is dropped (the None must fit)."""
    while not sub.queue.empty():
        sub.queue.get_nowait()
    sub.queue.put_nowait(None)


def event_data(message: s.Message) -> dict[str, Any]:
    return message.model_dump(mode="json")
