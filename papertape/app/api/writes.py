"""What the API writes: control commands, orders, signals and acknowledgements to their topics, and nothing
else (never a session's state). One producer for the API's life; each send waits for the broker's ack."""
from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

import schemas as s

# the topic each writable message goes to, and what keys it
TOPIC_OF: dict[type[s.Message], tuple[str, str]] = {
    s.Control: ("control", "session"), s.Order: ("orders", "session"), s.Signal: ("signals", "session"),
    s.AlertAck: ("alerts.status", "alert_id")}


class Writer:
    def __init__(self, bootstrap: str, names: s.Namespace) -> None:
        self.names = names
        # one message per request: a retried send may repeat it, which every consumer of these topics tolerates
        # (controls apply twice harmlessly, orders and acks are deduplicated by id)
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False,
                                         request_timeout_ms=15_000)

    async def start(self) -> None:
        await self.producer.start()

    async def send(self, message: s.Message) -> RecordMetadata:
        topic, key_field = TOPIC_OF[type(message)]
        key = str(getattr(message, key_field)).encode()
        return await self.producer.send_and_wait(self.names.topic(topic), s.encode(message), key=key)

    async def stop(self) -> None:
        await self.producer.stop()
