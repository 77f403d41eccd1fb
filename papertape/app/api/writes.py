"""What the API writes: control commands, orders, signals and acknowledgements to their topics, and nothing
else (never a session's state). One producer for the API's life; each send waits for the broker's ack."""
from __future__ import annotations

from aiokafka import AIOKafkaProducer

import schemas as s
from papertape.app.api.models import Sent

# the topic each writable message goes to, and what keys it
TOPIC_OF: dict[type[s.Message], tuple[str, str]] = {
    s.Control: ("control", "session"), s.Order: ("orders", "session"), s.Signal: ("signals", "session"),
    s.AlertAck: ("alerts.status", "alert_id")}


def acknowledgement(alert_id: str, by: str, ts: int) -> s.AlertAck:
    """An alert acknowledged (by the API, the dashboard or `papertape alerts ack`): one id per alert, so the
    archive keeps one acknowledgement of it."""
    return s.AlertAck(id=f"ack:{alert_id}"[:160], ts=ts, alert_id=alert_id, by=by)


class Writer:
    def __init__(self, bootstrap: str, names: s.Namespace) -> None:
        self.names = names
        # one message per request: a retried send may repeat it, which every consumer of these topics tolerates
        # (controls apply twice harmlessly, orders and acks are deduplicated by id)
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False,
                                         request_timeout_ms=15_000)

    async def start(self) -> None:
        await self.producer.start()

    async def send(self, message: s.Message) -> Sent:
        """`message` on its topic, keyed as the topic is; where the broker put it."""
        topic, key_field = TOPIC_OF[type(message)]
        key = str(getattr(message, key_field)).encode()
        meta = await self.producer.send_and_wait(self.names.topic(topic), s.encode(message), key=key)
        return Sent(id=message.id, topic=topic, partition=meta.partition, offset=meta.offset)

    async def stop(self) -> None:
        await self.producer.stop()
