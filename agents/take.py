"""Batches of an agent's input events: Faust's `Stream.noack_take`, with a wait that starts at the first event.

Faust's take waits its whole window after every batch, whether or not events are waiting: at a low rate each agent
hop then adds the window (half of it on average) to tick-to-fill. Here a batch goes once its first event has waited
`linger` seconds (or `max_` events are in), and `linger` follows the work: as long as the last batch took to
process, between `least` and `most`. A lone event waits `least`; under load the batches grow as Faust's window made
them, because the events that come in while one batch is processed fill the next. Batching changes when an agent
does its work, never what it computes (the engine merges its inputs in event time)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from mode.utils.futures import notify

LEAST_S = 0.002  # a lone event's wait: long enough for the rest of its fetch to join it


async def input_batches(stream: Any, max_: int, most: float, least: float = LEAST_S) -> AsyncIterator[list[Any]]:
    """Lists of Faust events (each with its message), unacked: the agent acks them (agents/checkpoint.py). Stops
    when the agent's task is cancelled, as Faust stops agents."""
    loop = asyncio.get_running_loop()
    buffer: list[Any] = []
    ready: asyncio.Future = loop.create_future()  # the batch may go
    consumed = asyncio.Event()
    consuming: asyncio.Future | None = None
    linger = least

    def release(batch: asyncio.Future) -> None:
        if not batch.done():
            batch.set_result(None)

    # as in Faust's take: a processor of the stream fills the buffer while the stream is drained in the background
    async def add(value: Any) -> Any:
        nonlocal consuming
        try:
            if consuming is not None:  # the agent is processing the last batch
                try:
                    await consuming
                finally:
                    consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("take: the stream has no current event")
            buffer.append(event)
            if len(buffer) == 1:
                loop.call_later(linger, release, ready)
            if len(buffer) >= max_:
                release(ready)
                consumed.clear()
                await consumed.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    acks = stream.enable_acks
    stream.enable_acks = False
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))
    try:
        while True:
            await ready
            consuming = loop.create_future()
            began = time.monotonic()
            try:
                yield list(buffer)
            finally:
                buffer.clear()
                ready = loop.create_future()
                notify(consuming)
                consumed.set()
            linger = min(most, max(least, time.monotonic() - began))
    finally:
        stream.enable_acks = acks
        stream._processors.remove(add)
