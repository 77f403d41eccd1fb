"""Exactly-once effects on an at-least-once broker.

An agent's state for a partition is saved in a changelogged Faust table together with the offsets it has
consumed; only after that write (and every output sent before it) reached the broker are the input events
acked, so Kafka's committed offset never passes the saved state. After a crash the worker restores the last
snapshot, skips the inputs it already holds, and recomputes the rest: the outputs come out again with the
same ids, and every consumer drops repeats by id.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Callable, Generic, TypeVar

import faust
import orjson


S = TypeVar("S")
log = logging.getLogger(__name__)
SAVE_SHARE = 20  # a partition's next save waits 20x what saving every partition costs: saves take <= 5% of the time


class Checkpoints(Generic[S]):
    """The state objects of an agent's partitions (each with `to_dict()`, `load(dict)`, `seen(topic, offset)` and
    `progress()`, a number that grows with every input consumed), restored from the table on first use.

    A rebalance does not drop a state: Faust keeps its fetch position for a partition that stays on this worker,
    so reloading an older snapshot would lose the inputs consumed since. After an assignment the table's
    snapshot replaces the state only if it is further ahead (another worker had the partition meanwhile)."""

    def __init__(self, app: faust.App, name: str, partitions: int, every_s: float, topics: tuple[str, ...],
                 make: Callable[[int], S]) -> None:
        self.app = app
        self.make = make
        self.states: dict[int, S] = {}
        self.reassigned: set[int] = set()
        # the app's key and value serializers are "raw": snapshots are orjson bytes
        self.table = app.Table(name, default=None, partitions=partitions, key_type=bytes, value_type=bytes)
        self.every_s = every_s
        self.held: dict[int, list] = defaultdict(list)  # events consumed but not yet covered by a snapshot
        self.saved_at: dict[int, float] = {}
        self.save_cost: dict[int, float] = {}  # seconds the partition's last snapshot took to make and send
        self.resumed: set[tuple[int, str]] = set()  # (partition, topic) whose first fresh input was checked
        self.confirming: set[asyncio.Task] = set()  # saves whose writes are on their way to the broker
        self.failed: BaseException | None = None  # a save whose write failed: nothing it covers was acked

        @app.on_partitions_assigned.connect
        async def check_later(app, assigned, **kwargs):
            self.reassigned.update(tp.partition for tp in assigned if tp.topic in topics)

    def state(self, partition: int) -> S:
        if partition not in self.states or partition in self.reassigned:
            self.reassigned.discard(partition)
            current = self.states.get(partition)
            saved = self._saved(partition)
            if current is None or (saved is not None and saved.progress() > current.progress()):
                self.states[partition] = saved or self.make(partition)
                self.resumed = {k for k in self.resumed if k[0] != partition}
        return self.states[partition]

    def _saved(self, partition: int) -> S | None:
        raw = join_snapshot(self.table.get, partition)
        if not raw:
            return None
        state = self.make(partition)
        state.load(orjson.loads(raw))
        return state

    def fresh(self, events):
        """(message, partition state) of each event the state does not hold yet. Every event is kept unacked
        until its partition's next save."""
        for event in events:
            msg = event.message
            state = self.state(msg.partition)
            self.held[msg.partition].append(event)
            if not state.seen(msg.topic, msg.offset):
                key = (msg.partition, msg.topic)
                if key not in self.resumed:
                    self.resumed.add(key)
                    if msg.offset > 0 and not state.seen(msg.topic, msg.offset - 1):
                        log.error("%s partition %d resumes %s at offset %d, past its snapshot: inputs were skipped",
                                  self.table.name, msg.partition, msg.topic, msg.offset)
                yield msg, state

    def due(self, partition: int) -> bool:
        """`every_s` after the last save, or later for large states: the agent's saves take at most 1/SAVE_SHARE of
        its time (700 symbols' books, serialized every second, were most of the worker's time). A later save only
        means more input to replay after a crash, never a different result."""
        wait = max(self.every_s, SAVE_SHARE * sum(self.save_cost.values()))
        return time.monotonic() - self.saved_at.get(partition, 0.0) >= wait

    async def save(self, *partitions: int) -> None:
        """Write the partitions' snapshots; ack the events they cover only once the broker holds all of it.

        `producer.flush()` alone is no such barrier: table writes go through Faust's send buffer, whose flush
        gives up after 0.1 s without progress (ProducerBuffer.flush_atmost), and a snapshot's header waits
        behind its chunk in the same changelog partition, so flush routinely returned with the header unsent.
        The acks then let Kafka commit offsets past a snapshot the broker did not have: a worker killed in that
        window came back with the previous snapshot, resumed at the committed offsets and silently skipped
        every input in between. So each write's own future is awaited before the acks.

        That wait runs beside the agent, which goes on with its next events: waiting in the agent cost a round
        trip to the broker per save, and at 7k paced events/s the worker sat idle while it fell behind. Only the
        acks wait; a write that fails is raised by the next save."""
        if self.failed is not None:
            raise self.failed
        if not partitions:
            return
        writes = []
        for partition in partitions:
            started = time.perf_counter()
            # default=list writes named tuples (ticks) as the JSON arrays they travel as
            value = orjson.dumps(self.states[partition].to_dict(), default=list)
            for key, part in split_snapshot(value, partition, join_snapshot(self.table.get, partition, header=True)):
                self.table.data[key] = part
                writes.append(self.table.send_changelog(partition, key, part))
            self.save_cost[partition] = time.perf_counter() - started
        events = [event for partition in partitions for event in self.held.pop(partition, [])]
        now = time.monotonic()
        for partition in partitions:
            self.saved_at[partition] = now
        task = asyncio.ensure_future(self._ack_when_delivered(writes, events))
        self.confirming.add(task)
        task.add_done_callback(self._confirmed)

    async def _ack_when_delivered(self, writes: list, events: list) -> None:
        await self.app.producer.flush()  # the outputs sent before this save, and the writes
        for write in writes:
            await write  # delivered (raises if the write failed: nothing is acked then)
        for event in events:
            event.ack()

    def _confirmed(self, task: asyncio.Task) -> None:
        self.confirming.discard(task)
        if not task.cancelled() and task.exception() is not None and self.failed is None:
            self.failed = task.exception()


CHUNK_BYTES = 512 << 10  # a snapshot of any size goes out as changelog messages well under the request limit


def split_snapshot(value: bytes, partition: int, previous: dict | None,
                   chunk_bytes: int = CHUNK_BYTES) -> list[tuple[bytes, bytes]]:
    """(key, value) writes that store `value` for `partition`: its chunks under the generation the previous
    snapshot did not use, then the header naming them. A crash between the writes leaves the previous header
    and its chunks whole."""
    gen = 1 - previous["gen"] if previous else 0
    chunks = [value[i:i + chunk_bytes] for i in range(0, len(value), chunk_bytes)] or [b""]
    writes = [(f"{partition}#{gen}#{i}".encode(), c) for i, c in enumerate(chunks)]
    header = orjson.dumps({"gen": gen, "chunks": len(chunks), "bytes": len(value)})
    return writes + [(str(partition).encode(), header)]


def join_snapshot(get, partition: int, header: bool = False):
    """The snapshot bytes of `partition` read through `get(key)` (or its header with header=True); None if none."""
    raw = get(str(partition).encode())
    if not raw:
        return None
    head = orjson.loads(raw)
    if header:
        return head
    value = b"".join(get(f"{partition}#{head['gen']}#{i}".encode()) or b"" for i in range(head["chunks"]))
    if len(value) != head["bytes"]:
        raise RuntimeError(f"checkpoint of partition {partition} is incomplete: {len(value)} of {head['bytes']} "
                           "bytes")
    return value
