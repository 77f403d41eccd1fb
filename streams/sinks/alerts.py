"""Alert relay: one consumer of the alerts topic fans every alert out to every configured channel from one
place, with a severity filter per channel and de-duplication by id (alerts may be delivered twice)."""
from __future__ import annotations

import asyncio
import logging
import sys
from collections import OrderedDict
from typing import Any, Protocol, TextIO

import httpx
from aiokafka import AIOKafkaConsumer

import schemas as s
from infra.broker import GROUP_SESSION

log = logging.getLogger(__name__)
LEVELS = {"info": 0, "warning": 1, "error": 2, "critical": 3}


class Channel(Protocol):
    min_severity: str

    async def send(self, alert: s.Alert) -> None: ...


class ConsoleChannel:
    def __init__(self, min_severity: str = "info", stream: TextIO | None = None) -> None:
        self.min_severity = min_severity
        self.stream = stream or sys.stderr

    async def send(self, alert: s.Alert) -> None:
        who = f" [{alert.session}]" if alert.session else ""
        print(f"ALERT {alert.severity.upper()} {alert.source}{who}: {alert.title} {alert.text}".rstrip(),
              file=self.stream, flush=True)


class WebhookChannel:
    """POSTs the alert as JSON; retries a few times, then gives up on that alert with a log line."""

    def __init__(self, url: str, min_severity: str = "warning", client: httpx.AsyncClient | None = None) -> None:
        self.url, self.min_severity = url, min_severity
        self.client = client or httpx.AsyncClient(timeout=5.0)

    async def send(self, alert: s.Alert) -> None:
        for attempt in range(3):
            try:
                r = await self.client.post(self.url, content=s.encode(alert),
                                           headers={"content-type": "application/json"})
                r.raise_for_status()
                return
            except httpx.HTTPError as exc:
                if attempt == 2:
                    log.warning("webhook gave up on alert %s: %s", alert.id, type(exc).__name__)
                await asyncio.sleep(0.2 * 2**attempt)


class AlertFanout:
    def __init__(self, channels: list[Channel], remember: int = 10_000) -> None:
        self.channels = channels
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.remember = remember
        self.delivered = 0

    async def publish(self, alert: s.Alert) -> bool:
        if alert.id in self.seen:
            return False
        self.seen[alert.id] = None
        if len(self.seen) > self.remember:
            self.seen.popitem(last=False)
        level = LEVELS[alert.severity]
        for ch in self.channels:
            if level >= LEVELS[ch.min_severity]:
                try:
                    await ch.send(alert)
                except Exception:  # a broken channel must not silence the others
                    log.exception("alert channel %s failed", type(ch).__name__)
        self.delivered += 1
        return True


class AlertRelay:
    """Consumes `alerts` (its own consumer group) and hands each alert to the fan-out."""

    def __init__(self, bootstrap: str, fanout: AlertFanout, group_id: str = "papertape-alert-relay",
                 names: s.Namespace = s.Namespace(), **consumer_options: Any) -> None:
        self.fanout = fanout
        self.consumer = AIOKafkaConsumer(names.topic("alerts"), bootstrap_servers=bootstrap,
                                         group_id=names.group(group_id),
                                         auto_offset_reset="earliest", enable_auto_commit=True,
                                         **(GROUP_SESSION | consumer_options))
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for record in self.consumer:
            try:
                alert = s.decode("alerts", record.value)
            except s.InvalidMessage as exc:
                log.warning("unreadable alert at offset %s: %s", record.offset, exc)
                continue
            await self.fanout.publish(alert)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()
