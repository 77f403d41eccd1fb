"""Where each kind of message goes, and the one way bad input is reported (dead letter + alert)."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from functools import partial
from typing import Any

import faust
from faust.types import ProducerT, RecordMetadata

import schemas as s
from infra import prometheus

TOPIC_OF_KIND = {
    "fill": "fills", "order_event": "order.events", "position": "positions", "equity": "equity",
    "decision": "decisions", "alert": "alerts", "dead_letter": "errors.dlq", "mark": "md.marks", "funding": "funding",
    "session": "sessions", "venue_request": "venue.requests", "reconciliation": "reconciliation",
    "shadow_fill": "shadow.fills", "interest": "md.interest",
}


def key_of(msg) -> bytes | None:
    key = getattr(msg, "session", None) or getattr(msg, "symbol", None)
    return key.encode() if key and s.TOPICS[TOPIC_OF_KIND[msg.kind]].key != "none" else None


class Outputs:
    """An agent's sends to their topics through the Faust app's producer, with the delivery of each kept until the
    agent's next checkpoint takes them (a snapshot is stored only once what its inputs produced is delivered).

    The sends go to the producer itself, not through Faust's `Topic.send`: that path yields to the event loop on
    every message (`maybe_start_producer` is a `mode` stampede, which starts with `sleep(0)`), so with no linger the
    producer's sender woke between any two sends and made a produce request of each message. Sent without a yield,
    what an agent's batch produces leaves in one request per broker when the agent next waits."""

    def __init__(self, app: faust.App, names: s.Namespace) -> None:
        self.app = app
        self.names = {name: names.topic(name) for name in s.TOPICS}
        self.producer: ProducerT | None = None
        self.unconfirmed: list[Awaitable[RecordMetadata]] = []

    async def send(self, msgs: list, tick_sent_at: float | None = None) -> None:
        """`tick_sent_at`: when the tick batch that produced `msgs` was sent (s), for the tick-to-fill latency."""
        for msg in msgs:
            await self._produce(TOPIC_OF_KIND[msg.kind], key_of(msg), s.encode(msg), None)
        prometheus.count_sent(msgs, tick_sent_at)

    async def send_to(self, topic: str, msg, partitions: list[int]) -> None:
        """One message to several partitions of `topic`, encoded once."""
        value = s.encode(msg)
        for p in partitions:
            await self._produce(topic, None, value, p)

    async def _produce(self, topic: str, key: bytes | None, value: bytes, partition: int | None) -> None:
        producer = self.producer or await self._start()
        name = self.names[topic]
        # Faust's monitor counts what is sent by topic (infra/prometheus.py); it reads no message
        state = self.app.sensors.on_send_initiated(producer, name, None,  # type: ignore[arg-type]
                                                   len(key or b""), len(value))
        delivery = await producer.send(name, key, value, partition, None, None)
        delivery.add_done_callback(partial(self._delivered, producer, state))  # type: ignore[attr-defined]
        self.unconfirmed.append(delivery)

    async def _start(self) -> ProducerT:
        self.producer = await self.app.maybe_start_producer()
        return self.producer

    def _delivered(self, producer: ProducerT, state: Any, delivery: asyncio.Future) -> None:
        if delivery.cancelled():
            return
        error = delivery.exception()
        if error is None:
            self.app.sensors.on_send_completed(producer, state, delivery.result())
        else:
            self.app.sensors.on_send_error(producer, error, state)

    def take_unconfirmed(self) -> list[Awaitable[RecordMetadata]]:
        """The deliveries of what was sent since the last call."""
        taken, self.unconfirmed = self.unconfirmed, []
        return taken


def dead_letter(agent: str, topic: str, partition: int, offset: int, key: bytes | None, payload: bytes | None,
                error: str, ts: int, frame: int | None = None) -> list:
    """A refused message: a dead letter with the reason, and an alert saying so. `frame`: the index of a refused
    frame inside a batch, which shares its message's offset with the batch's other frames (each its own id)."""
    text = (payload or b"")[:4096].decode("utf-8", "replace")
    mid = f"dlq:{topic}:{partition}:{offset}" + ("" if frame is None else f":{frame}")
    k = key.decode("utf-8", "replace")[:200] if key else None
    return [s.DeadLetter(id=mid, ts=ts, topic=topic, partition=partition, offset=offset, key=k, error=error[:4000],
                         payload=text),
            s.Alert(id=f"alert:{mid}", ts=ts, severity="warning", type="error", source=agent,
                    title=f"rejected a message on {topic}", text=f"{topic}[{partition}]@{offset}: {error}"[:4000])]
