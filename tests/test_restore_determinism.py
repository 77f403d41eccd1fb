"""A worker killed right after a checkpoint save resumes where its acks said, with a state that holds every input
acked: the restored run ends with exactly the decisions of an uninterrupted one (tests/test_worker_kill.py
once saw one EmaCross decision with another confidence: a bar's ticks had been skipped).

Faust is replaced by the few pieces agents/checkpoint.py touches. The producer's flush behaves as Faust's
does when a send takes over 0.1 s (ProducerBuffer.flush_atmost gives up): the snapshot's last write, its
header, queued behind its chunk in the same changelog partition, is still unsent when flush returns."""
import asyncio
import random
from types import SimpleNamespace

import orjson

import schemas as s
from agents.checkpoint import Checkpoints, join_snapshot
from papertape.core.engine import Engine
from papertape.core.instruments import DEFAULT_INSTRUMENTS
from papertape.core.session_config import SessionConfig

# min_confidence 1 with an unreachable full confidence: every bar close after the warm-up is a "hold"
# decision carrying the EMA gap, so any difference in the prices the strategy saw shows
CFG = SessionConfig(id="e", strategy="ema_cross", min_confidence=1.0,
                    params={"fast": 2, "slow": 4, "bar_ms": 100, "full_confidence_bps": 1e6})
TAKE = 4  # md.ticks messages per agent take: one save per take


def new_engine(p: int) -> Engine:
    return Engine(p, 1, DEFAULT_INSTRUMENTS, [CFG])


def tape(n: int = 120) -> list[s.TickBatch]:
    rng = random.Random(5)
    price, batches, pos = 60000.0, [], 0
    for i in range(n):
        ticks = []
        for _ in range(3):
            price += rng.choice([-5, -2, -1, 1, 2, 5]) * 0.1
            ts = 1000 + 20 * pos
            p = f"{price:.1f}"
            ticks.append(s.Tick("BTCUSDT", ts, p, f"{price + 0.1:.1f}", "1", "1", [s.TickTrade(ts, p, "1", "buy")], pos))
            pos += 1
        batches.append(s.TickBatch(id=str(i), ts=ticks[-1].ts, origin=0, seq=i, wm=ticks[-1].ts + 1, ticks=ticks))
    batches.append(s.TickBatch(id="end", ts=0, origin=0, seq=n, wm=0, end=True))
    return batches


class Broker:
    """The changelog as a restarted worker would recover it: only delivered writes count."""

    def __init__(self, durable: dict | None = None) -> None:
        self.durable = dict(durable or {})
        self.pending: list[tuple[asyncio.Future, bytes, bytes]] = []

    def deliver(self, keep_last: int = 0) -> None:
        n = len(self.pending) - keep_last
        for fut, key, value in self.pending[:n]:
            self.durable[key] = value
            if not fut.done():
                fut.set_result(None)
        del self.pending[:n]


class Table:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.data = dict(broker.durable)  # what table recovery reads back
        self.name = ""

    def get(self, key):
        return self.data.get(key)

    def send_changelog(self, partition, key, value):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.broker.pending.append((fut, key, value))
        loop.call_soon(self.broker.deliver)  # the broker has it once the worker lets the loop run
        return fut


class Producer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def flush(self) -> None:
        self.broker.deliver(keep_last=1)  # Faust's flush returns with the header still in its send buffer


class App:
    def __init__(self, broker: Broker) -> None:
        self.producer = Producer(broker)
        self.table = Table(broker)
        self.on_partitions_assigned = SimpleNamespace(connect=lambda fn: fn)

    def Table(self, name, **kwargs):
        self.table.name = name
        return self.table


class Event:
    def __init__(self, offset: int, batch: s.TickBatch, on_ack) -> None:
        self.message = SimpleNamespace(topic="md.ticks", partition=0, offset=offset, value=batch)
        self.on_ack = on_ack

    def ack(self) -> None:
        self.on_ack(self.message.offset)


async def worker(broker: Broker, batches: list, start: int, kill_after_save: int | None = None, on_ack=None):
    """agents/engine.py's loop over md.ticks from `start` (the committed offset). Returns (outputs by id, the
    offsets acked, the changelog the broker holds at the kill or None)."""
    app = App(broker)
    checkpoints = Checkpoints(app, "engine-state", 1, 0.0, ("md.ticks",), new_engine)
    out, acked, saves = {}, [], 0

    def ack(offset):
        acked.append(offset)
        if on_ack:
            on_ack(offset)

    for first in range(start, len(batches), TAKE):
        await asyncio.sleep(0)  # Faust's stream awaits the next take: saves' acks run meanwhile
        events = [Event(o, batches[o], ack) for o in range(first, min(first + TAKE, len(batches)))]
        touched = set()
        for msg, eng in checkpoints.fresh(events):
            touched.add(msg.partition)
            eng.mark_seen(msg.topic, msg.offset)
            for m in eng.on_ticks(msg.value):
                out[m.id] = m.model_dump_json()
        for p in sorted(touched):
            await checkpoints.save(p)
            saves += 1
            if saves == kill_after_save:
                return out, list(acked), dict(broker.durable)  # SIGKILL: what the broker has not got is lost
    return out, acked, None


def test_events_are_acked_only_once_the_snapshot_holding_them_is_on_the_broker():
    batches = tape()
    broker = Broker()
    late = []

    def check(offset):
        raw = join_snapshot(broker.durable.get, 0)
        eng = new_engine(0)
        if raw:
            eng.load(orjson.loads(raw))
        if not eng.seen("md.ticks", offset):
            late.append(offset)

    asyncio.run(worker(broker, batches, 0, on_ack=check))
    assert not late, f"acked before any durable snapshot held them: offsets {late[:10]}..."


def test_a_worker_killed_after_any_save_resumes_to_the_decisions_of_an_uninterrupted_run():
    batches = tape()
    base, _, _ = asyncio.run(worker(Broker(), batches, 0))
    assert sum(1 for k in base if k.endswith(":d")) > 20, "the scenario must decide at many bar closes"
    saves = -(-len(batches) // TAKE)
    wrong = []
    for kill in range(1, saves):
        broker = Broker()
        head, acked, durable = asyncio.run(worker(broker, batches, 0, kill_after_save=kill))
        assert durable is not None
        # Kafka's committed offset: Faust commits what was acked
        tail, _, _ = asyncio.run(worker(Broker(durable), batches, max(acked, default=-1) + 1))
        if {**head, **tail} != base:  # consumers keep the last message of each id
            wrong.append(kill)
    assert not wrong, f"killed after save {wrong[:5]}...: the restored run decided otherwise"
