"""What the API's routes use: the archive, a request at a time, and the broker, joined when first needed."""
from __future__ import annotations

import asyncio
import threading
from importlib import metadata
from typing import Callable, TypeVar

import schemas as s
from infra.archive import Archive, NoHistory
from infra.clickhouse import DataDirInUse
from infra.sql_endpoint import running
from papertape.app.api import reads
from papertape.app.api.events import EventHub
from papertape.app.api.writes import Writer
from papertape.app.sessions import broker_of
from papertape.config import Settings, run_settings

T = TypeVar("T")


class NotReady(Exception):
    """Nothing to read or send to yet; the reason of a 503."""


def version() -> str:
    try:
        return metadata.version("papertape")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class Backend:
    """The archive is read through the one archive client; with no run in progress the embedded archive is
    opened only for the request (one at a time), so a run can take the data directory. The broker is the running
    pipeline's (run.json), else KAFKA_BOOTSTRAP; a new run (a new embedded broker) is joined on the next use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self._lock = threading.Lock()
        self._broker_lock = asyncio.Lock()
        self.joined: tuple[str, s.Namespace] | None = None  # the broker and namespace hub and writer are on
        self.hub: EventHub | None = None
        self.writer: Writer | None = None

    def read(self, fn: Callable[[reads.Query], T]) -> T:
        with self._lock:
            try:
                with Archive(self.data_dir, self.settings.clickhouse_url) as archive:
                    if not reads.has_tables(archive.query):
                        raise NotReady("the archive has no tables yet: no run recorded into it")
                    return fn(archive.query)
            except (NoHistory, DataDirInUse) as exc:  # DataDirInUse: a run starting, its SQL endpoint not yet up
                raise NotReady(str(exc)) from None

    def can_read(self) -> bool:
        try:
            return self.read(lambda _: True)
        except NotReady:
            return False

    def known_symbols(self) -> set[str]:
        """The instruments of the run in the data directory (its settings), else of the API's settings."""
        return set((run_settings(self.data_dir) or self.settings).instrument_map())

    def run_in_progress(self) -> bool:
        return running(self.data_dir) is not None

    def broker_address(self) -> tuple[str, s.Namespace] | None:
        return broker_of(self.data_dir, self.settings)

    async def broker(self) -> tuple[EventHub, Writer]:
        async with self._broker_lock:
            where = self.broker_address()
            if where is None:
                raise NotReady(f"no run in progress in {self.data_dir} and no KAFKA_BOOTSTRAP: nothing to send to")
            if self.hub is not None and self.writer is not None and where == self.joined:
                return self.hub, self.writer
            await self.close()
            hub, writer = EventHub(*where), Writer(*where)
            try:
                await asyncio.wait_for(asyncio.gather(hub.start(), writer.start()), 20)
            except Exception as exc:
                await asyncio.gather(hub.stop(), writer.stop(), return_exceptions=True)
                raise NotReady(f"the broker at {where[0]} does not answer: {exc or type(exc).__name__}") from None
            self.hub, self.writer, self.joined = hub, writer, where
            return hub, writer

    async def close(self) -> None:
        for part in (self.hub, self.writer):
            if part is not None:
                await asyncio.gather(part.stop(), return_exceptions=True)
        self.hub = self.writer = self.joined = None
