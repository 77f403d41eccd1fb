"""Exactly-once effects on an at-least-once broker.

An agent's state for a partition is saved in a changelogged Faust table together with the offsets it has
consumed. The snapshot is written only once every output sent before it is on the broker, and the input events
it covers are acked only once it is too, so Kafka's committed offset never passes a stored snapshot and a stored
snapshot never claims an output the broker lacks. After a crash the worker restores the last snapshot, skips the
inputs it already holds, and recomputes the rest: the outputs come out again with the same ids, and every consumer
drops repeats by id.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Callable, Generic, Protocol, TypeVar

import faust
import orjson

from agents.outputs import Outputs
from infra import prometheus
from schemas.topics import Namespace


class PartitionState(Protocol):
    """What Checkpoints keeps of each partition: an agent's state."""

    def to_dict(self) -> dict: ...

    def load(self, d: dict) -> None: ...

    def next_offset(self, topic: str) -> int: ...

    def progress(self) -> int: ...


S = TypeVar("S", bound=PartitionState)
log = logging.getLogger(__name__)
REWIND_EVERY_S = 1.0  # a seek back is repeated until the offset is read
MAX_STORING = 4  # saves on their way to the broker before the agent waits
REVOKE_WAIT_S = 5.0  # at most, for the snapshots on their way when partitions are revoked (rebalances wait 10 s)
SAVE_SHARE = 20  # a partition's next save waits 20x what saving every partition costs: saves take <= 5% of the time


class Checkpoints(Generic[S]):
    """The state objects of an agent's partitions (each with `to_dict()`, `load(dict)`, `next_offset(topic)` and
    `progress()`, a number that grows with every input consumed), restored from the table on first use.

    A state knows how far it read, and takes its inputs in order only: an event past its state's next offset
    means inputs were skipped on the way here, so the partition is sought back to where the state goes on and
    the events read meanwhile are dropped (they come again). Kafka's committed offset is only a hint: Faust
    discards records it already took from the consumer when the flow stops or the generation changes in the
    middle of a fetched batch (Consumer.getmany), acks on its own the events a rebalance made it skip, and
    commits a run of acks past a single unacked offset (Consumer._new_offset). In the kill test a restarted
    worker read md.events past its snapshot, on both brokers.

    A rebalance does not drop a state: reloading an older snapshot would recompute what this worker did since.
    After an assignment the table's snapshot replaces the state only if it is further ahead (another worker had
    the partition meanwhile)."""

    def __init__(self, app: faust.App, name: str, partitions: int, every_s: float, topics: tuple[str, ...],
                 make: Callable[[int], S], outputs: Outputs, names: Namespace = Namespace()) -> None:
        self.app = app
        self.names = names
        self.outputs = outputs  # the agent's own: a save waits for what it sent
        self.make = make
        self.states: dict[int, S] = {}
        self.reassigned: set[int] = set()
        # the app's key and value serializers are "raw": snapshots are orjson bytes
        self.table = app.Table(name, default=None, partitions=partitions, key_type=bytes, value_type=bytes)
        self.every_s = every_s
        self.held: dict[int, list] = defaultdict(list)  # events consumed but not yet covered by a snapshot
        self.saved_at: dict[int, float] = {}
        self.save_cost: dict[int, float] = {}  # seconds the partition's last snapshot took to make and send
        self.storing: list[asyncio.Future] = []  # saves on their way to the broker, oldest first
        self.failed: BaseException | None = None  # a save whose outputs or writes failed: nothing after it was acked
        self.rewinding: dict = {}  # input partition -> the offset it is being sought back to
        self.gone: dict = {}  # input partition -> the first offset the broker has, when its state's next is deleted
        self.revoked: set[int] = set()  # partitions another worker may have now: this one writes no snapshot of them

        def mine(tps) -> set[int]:
            return {tp.partition for tp in tps if names.name_of(tp.topic) in topics}

        # mode types a receiver as (sender, *args, signal=..., **kwargs) -> None; a signal calls it with its
        # own positional arguments (here the partitions), which that signature cannot say
        @app.on_partitions_assigned.connect  # type: ignore[arg-type]
        async def check_later(app, assigned, **kwargs):
            partitions = mine(assigned)
            self.reassigned |= partitions
            self.revoked -= partitions

        @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # as above
        async def let_go(app, revoked, **kwargs):
            """The next owner of a partition recovers its changelog once the rebalance is over: the snapshots on
            their way land first, and none follows (an older snapshot written after the new owner's would be
            the one restored next time, and two writers would mix their chunks)."""
            self.revoked |= mine(revoked)
            if self.storing:
                await asyncio.wait(list(self.storing), timeout=REVOKE_WAIT_S)

    def state(self, partition: int) -> S:
        if partition not in self.states or partition in self.reassigned:
            self.reassigned.discard(partition)
            current = self.states.get(partition)
            saved = self._saved(partition)
            if current is None or (saved is not None and saved.progress() > current.progress()):
                self.states[partition] = saved or self.make(partition)
        return self.states[partition]

    def _saved(self, partition: int) -> S | None:
        raw = join_snapshot(self.table.get, partition)
        if not raw:
            return None
        state = self.make(partition)
        state.load(orjson.loads(raw))
        return state

    def fresh(self, events):
        """(message, its topic's name in schemas.TOPICS, partition state) of each event the state does not hold
        yet, in offset order. Every event taken is kept unacked until its partition's next save."""
        for event in events:
            msg = event.message
            topic = self.names.name_of(msg.topic)
            state = self.state(msg.partition)
            after = state.next_offset(topic)
            expected = max(after, self.gone.get(msg.tp, 0)) if self.gone else after
            if msg.offset > expected:
                self._rewind(msg.tp, expected, msg.offset)
                event.ack()  # read again after the seek; a commit past it only makes the next worker seek too
                continue
            if self.rewinding or self.gone:  # a seek back (or a loss) may have just come to its end
                self.rewinding.pop(msg.tp, None)
                self.gone.pop(msg.tp, None)
            self.held[msg.partition].append(event)
            if msg.offset >= after:  # past it only when the inputs between are gone
                yield msg, topic, state

    def _rewind(self, tp, offset: int, got: int) -> None:
        if self.rewinding.get(tp) == offset:
            return  # a seek back is under way
        log.warning("%s: %s[%d] read at offset %d, but its state goes on from %d: inputs were skipped on the way "
                    "here; reading them again", self.table.name, tp.topic, tp.partition, got, offset)
        self.rewinding[tp] = offset
        task = asyncio.ensure_future(self._seek_back(tp, offset))
        task.add_done_callback(self._sought)

    async def _seek_back(self, tp, offset: int) -> None:
        """Seek `tp` to `offset` every REWIND_EVERY_S until it is read: a seek can be undone (Faust drops the
        records below the offset of a fetch that was under way, and seeks to the committed offset on its own).
        Inputs the broker deleted (retention) are given up, with an error."""
        consumer = self.app.consumer
        try:
            while self.rewinding.get(tp) == offset:
                earliest = (await consumer.earliest_offsets(tp)).get(tp)
                if earliest is not None and earliest > offset:
                    log.error("%s: %s[%d] offsets %d to %d are not on the broker any more: they are lost",
                              self.table.name, tp.topic, tp.partition, offset, earliest - 1)
                    self.gone[tp] = earliest
                    await consumer.seek(tp, earliest)
                    return
                await consumer.seek(tp, offset)
                await asyncio.sleep(REWIND_EVERY_S)
        finally:  # read, given up or failed (revoked): the next gap starts a new seek back
            if self.rewinding.get(tp) == offset:
                del self.rewinding[tp]

    def _sought(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: a seek back failed: %r", self.table.name, task.exception())

    def due(self, partition: int) -> bool:
        """`every_s` after the last save, or later for large states: the agent's saves take at most 1/SAVE_SHARE of
        its time (700 symbols' books, serialized every second, were most of the worker's time). A later save only
        means more input to replay after a crash, never a different result."""
        wait = max(self.every_s, SAVE_SHARE * sum(self.save_cost.values()))
        return time.monotonic() - self.saved_at.get(partition, 0.0) >= wait

    async def save(self, *partitions: int) -> None:
        """Snapshot the partitions; store the snapshots once every message the agent sent since its last save is
        on the broker, and ack the events they cover once the snapshots are.

        Both orders matter. A snapshot stored before the outputs it covers says they were sent: a worker killed
        while they still waited in the producer came back past them, and they were never sent (the producer
        sends one batch per partition per request, so a snapshot's single changelog batch overtook a backlog
        of md.ticks batches; tests/integration/test_crash.py lost ticks that way). Acks sent before the snapshot let
        Kafka commit offsets past a snapshot the broker did not have: the restarted worker skipped those inputs.
        (`producer.flush()` is no barrier for either: Faust's send buffer gives up after 0.1 s without progress.)

        The waiting runs beside the agent, which goes on with its next events (waiting in the agent cost a round
        trip per save; at 7k paced events/s the worker sat idle while it fell behind). Saves are stored in the
        order they were made; a save whose outputs or writes failed stores and acks nothing after it, and the
        next call raises why."""
        if self.failed is not None:
            raise self.failed
        for partition in self.revoked.intersection(partitions):
            self.held.pop(partition, None)  # read again by the partition's next owner
        partitions = tuple(p for p in partitions if p not in self.revoked)
        if not partitions:
            return
        writes = []
        for partition in partitions:
            started = time.perf_counter()
            # default=list writes named tuples (ticks) as the JSON arrays they travel as
            value = orjson.dumps(self.states[partition].to_dict(), default=list)
            for key, part in split_snapshot(value, partition, join_snapshot(self.table.get, partition, header=True)):
                self.table.data[key] = part  # what this worker reads back after a rebalance
                writes.append((partition, key, part))
            self.save_cost[partition] = time.perf_counter() - started
        prometheus.CHECKPOINT_SAVE.labels(self.table.name).observe(sum(self.save_cost[p] for p in partitions))
        events = [event for partition in partitions for event in self.held.pop(partition, [])]
        now = time.monotonic()
        for partition in partitions:
            self.saved_at[partition] = now
        previous = self.storing[-1] if self.storing else None
        task = asyncio.ensure_future(self._store(previous, self.outputs.take_unconfirmed(), writes, events))
        self.storing.append(task)
        task.add_done_callback(self._stored)
        while len(self.storing) > MAX_STORING:  # the broker is slower than the agent: wait rather than pile up
            await asyncio.wait([self.storing[0]])

    async def _store(self, previous: asyncio.Future | None, outputs: list, writes: list, events: list) -> None:
        if previous is not None:
            await previous  # raises if an earlier save failed: this one must not be stored after a gap
        for delivered in outputs:
            await delivered  # raises if a send failed
        for write in [self.table.send_changelog(p, key, part) for p, key, part in writes]:
            await write
        for event in events:
            event.ack()

    def _stored(self, task: asyncio.Future) -> None:
        self.storing.remove(task)
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
