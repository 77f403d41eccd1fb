"""Exactly-once effects on an at-least-once broker.

An agent's state for a partition is saved in a changelogged Faust table together with the offsets it has
consumed; only after that write (and every output sent before it) reached the broker are the input events
acked, so Kafka's committed offset never passes the saved state. After a crash the worker restores the last
snapshot, skips the inputs it already holds, and recomputes the rest: the outputs come out again with the
same ids, and every consumer drops repeats by id.
"""
from __future__ import annotations

import time
from collections import defaultdict

import faust
import orjson


class Checkpoints:
    def __init__(self, app: faust.App, name: str, partitions: int, every_s: float) -> None:
        self.app = app
        # the app's key and value serializers are "raw": snapshots are orjson bytes
        self.table = app.Table(name, default=None, partitions=partitions, key_type=bytes, value_type=bytes)
        self.every_s = every_s
        self.held: dict[int, list] = defaultdict(list)  # events consumed but not yet covered by a snapshot
        self.saved_at: dict[int, float] = {}

    def load(self, partition: int) -> dict | None:
        raw = self.table.get(str(partition).encode())
        return orjson.loads(raw) if raw else None

    def hold(self, partition: int, event) -> None:
        self.held[partition].append(event)

    def due(self, partition: int) -> bool:
        return time.monotonic() - self.saved_at.get(partition, 0.0) >= self.every_s

    async def save(self, partition: int, state: dict) -> None:
        key, value = str(partition).encode(), orjson.dumps(state)
        self.table.data[key] = value
        self.table.send_changelog(partition, key, value)
        await self.app.producer.flush()
        for event in self.held.pop(partition, []):
            event.ack()
        self.saved_at[partition] = time.monotonic()
