"""The alerts the supervisor process makes itself (type system: a worker restarted, a broker node restarted,
ClickHouse inserts failing, the recorder behind), onto the `alerts` topic for the relay.

The users' price rules are not here: they run in the market actor over every frame's mark
(papertape/core/alert_rules.py, papertape/core/market/partition.py). md.marks is conflated (one mark per symbol
per second of event time), so a consumer of it would miss crossings inside a second; in the actor, rules see every
mark in event time, their state is checkpointed with the books, and a restart resumes them exactly (the same alerts,
the same ids)."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer

import schemas as s
from schemas.vocabulary import Severity

log = logging.getLogger(__name__)


class AlertSender:
    """One producer onto the alerts topic. `send` waits for the broker's acknowledgement; `post` sends a system
    alert in the background and, when the broker cannot be reached, logs the alert (there is nowhere else to say
    it)."""

    def __init__(self, bootstrap: str, names: s.Namespace = s.Namespace(), **producer_options: Any) -> None:
        self.topic = names.topic("alerts")
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=15_000, **producer_options)
        self._posting: set[asyncio.Task] = set()

    async def start(self) -> None:
        await self.producer.start()

    async def send(self, alert: s.Alert) -> None:
        await (await self.producer.send(self.topic, s.encode(alert)))

    def post(self, key: str, severity: Severity, title: str, text: str) -> None:
        """A system alert now (wall clock: the supervisor has no event time), id `system:key:ts`."""
        ts = int(time.time() * 1000)
        alert = s.Alert(id=f"system:{key}:{ts}", ts=ts, severity=severity, type="system", source="supervisor",
                        title=title, text=text)
        task = asyncio.create_task(self._post(alert))
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    async def _post(self, alert: s.Alert) -> None:
        try:
            await self.send(alert)
        except Exception as exc:
            log.error("ALERT NOT SENT (the broker is unreachable: %s): [%s] %s: %s", exc, alert.severity,
                      alert.title, alert.text)

    async def stop(self) -> None:
        if self._posting:
            await asyncio.gather(*self._posting, return_exceptions=True)
        await self.producer.stop()


class Episode:
    """A condition that comes and goes (inserts failing, the recorder behind): one alert when it begins, one when it
    ends, however often it is reported in between."""

    def __init__(self, sender: AlertSender, key: str, severity: Severity, title: str, over: str) -> None:
        self.sender, self.key, self.severity, self.title, self.over = sender, key, severity, title, over
        self.on = False

    def report(self, on: bool, text: str) -> None:
        if on == self.on:
            return
        self.on = on
        if on:
            self.sender.post(self.key, self.severity, self.title, text)
        else:
            self.sender.post(f"{self.key}-over", "info", self.over, text)
