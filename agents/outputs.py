"""Where each kind of message goes, and the one way bad input is reported (dead letter + alert)."""
from __future__ import annotations

from collections.abc import Awaitable

import faust
from faust.types import RecordMetadata

import schemas as s
from agents import codec  # noqa: F401  (registers the "papertape" codec)
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
    """An agent's sends to their topics through the Faust producer, with the delivery of each kept until the
    agent's next checkpoint takes them (a snapshot is stored only once what its inputs produced is delivered)."""

    def __init__(self, app: faust.App, names: s.Namespace) -> None:
        self.topics = {name: app.topic(names.topic(name), key_serializer="raw", value_serializer="papertape")
                       for name in s.TOPICS}
        self.raw_topics = {name: app.topic(names.topic(name), key_serializer="raw", value_serializer="raw")
                           for name in s.TOPICS}
        self.unconfirmed: list[Awaitable[RecordMetadata]] = []  # Faust's FutureMessage

    async def send(self, msgs: list, tick_sent_at: float | None = None) -> None:
        """`tick_sent_at`: when the tick batch that produced `msgs` was sent (s), for the tick-to-fill latency."""
        for msg in msgs:
            self.unconfirmed.append(await self.topics[TOPIC_OF_KIND[msg.kind]].send(key=key_of(msg), value=msg))
        prometheus.count_sent(msgs, tick_sent_at)

    async def send_to(self, topic: str, msg, partitions: list[int]) -> None:
        """One message to several partitions of `topic`, encoded once."""
        value = s.encode(msg)
        for p in partitions:
            self.unconfirmed.append(await self.raw_topics[topic].send(value=value, partition=p))

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
