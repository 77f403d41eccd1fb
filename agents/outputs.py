"""Where each kind of message goes, and the one way bad input is reported (dead letter + alert)."""
from __future__ import annotations

import faust

import schemas as s

from . import codec  # noqa: F401  (registers the "papertape" codec)

TOPIC_OF_KIND = {
    "fill": "fills", "order_event": "order.events", "position": "positions", "equity": "equity",
    "decision": "decisions", "alert": "alerts", "dead_letter": "errors.dlq", "mark": "md.marks", "funding": "funding",
    "session": "sessions",
}


def key_of(msg) -> bytes | None:
    key = getattr(msg, "session", None) or getattr(msg, "symbol", None)
    return key.encode() if key and s.TOPICS[TOPIC_OF_KIND[msg.kind]].key != "none" else None


class Outputs:
    """Sends messages to their topics through the Faust producer (buffered; flushed at checkpoints)."""

    def __init__(self, app: faust.App) -> None:
        self.topics = {name: app.topic(name, key_serializer="raw", value_serializer="papertape")
                       for name in s.TOPICS}
        self.raw_topics = {name: app.topic(name, key_serializer="raw", value_serializer="raw") for name in s.TOPICS}

    async def send(self, msgs) -> None:
        for msg in msgs:
            await self.topics[TOPIC_OF_KIND[msg.kind]].send(key=key_of(msg), value=msg)

    async def send_to(self, topic: str, msg, partitions: range) -> None:
        """One message to several partitions of `topic`, encoded once."""
        value = s.encode(msg)
        for p in partitions:
            await self.raw_topics[topic].send(value=value, partition=p)


def dead_letter(agent: str, topic: str, partition: int, offset: int, key: bytes | None, payload: bytes | None,
                error: str, ts: int) -> list:
    """A refused message: a dead letter with the reason, and an alert saying so."""
    text = (payload or b"")[:4096].decode("utf-8", "replace")
    mid = f"dlq:{topic}:{partition}:{offset}"
    k = key.decode("utf-8", "replace")[:200] if key else None
    return [s.DeadLetter(id=mid, ts=ts, topic=topic, partition=partition, offset=offset, key=k, error=error[:4000],
                         payload=text),
            s.Alert(id=f"alert:{mid}", ts=ts, severity="warning", source=agent,
                    title=f"rejected a message on {topic}", text=f"{topic}[{partition}]@{offset}: {error}"[:4000])]
