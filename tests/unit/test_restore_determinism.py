"""A worker killed at any moment around a checkpoint save resumes where its acks said, with a state that holds
every input acked and claims no output the broker lacks: the restored run ends with exactly the outputs of an
uninterrupted one. tests/integration/test_crash.py once saw one EmaCross decision with another confidence (a bar's
ticks had been skipped: acks went out before their snapshot), and later decisions from bars that closed late
(ticks were never sent: the snapshot went out before the md.ticks batches it covered).

Faust is replaced by the few pieces agents/checkpoint.py touches. The broker delivers what it is sent out of
order, as the real producer does (it sends one batch per partition per request, so a snapshot's changelog write
overtakes a backlog of outputs): here every output takes a few more loop turns than a changelog write."""
import asyncio
import random
from types import SimpleNamespace

import orjson
from aiokafka import TopicPartition

import schemas as s
from agents import checkpoint
from agents.checkpoint import Checkpoints, join_snapshot
from builders import tick
from papertape.core.engine import Engine
from papertape.core.instruments import DEFAULT_INSTRUMENTS
from papertape.core.session.config import SessionConfig

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
            ticks.append(tick("BTCUSDT", ts, p, f"{price + 0.1:.1f}", "1", "1", trades=[(p, "1", "buy")], pos=pos))
            pos += 1
        batches.append(s.TickBatch(id=str(i), ts=ticks[-1].ts, origin=0, seq=i, wm=ticks[-1].ts + 1, ticks=ticks))
    batches.append(s.TickBatch(id="end", ts=0, origin=0, seq=n, wm=0, end=True))
    return batches


class Broker:
    """What a restarted worker and the consumers would find: only delivered writes and outputs count."""

    def __init__(self, durable: dict | None = None) -> None:
        self.durable = dict(durable or {})  # the changelog
        self.outputs: dict[str, str] = {}  # what consumers saw, by id (they keep the last of each)
        self.writes: list[tuple[asyncio.Future, bytes, bytes]] = []
        self.sends: list[tuple[asyncio.Future, str, str]] = []
        self.killed = False  # the worker was: nothing more reaches the broker

    def deliver_writes(self) -> None:
        if self.killed:
            return
        for fut, key, value in self.writes:
            self.durable[key] = value
            fut.set_result(None)
        self.writes.clear()

    def deliver_output(self) -> None:
        if self.killed:
            return
        fut, mid, body = self.sends.pop(0)
        self.outputs[mid] = body
        fut.set_result(None)

    def schedule(self, output: bool) -> None:
        """The broker has a write once the worker lets the loop run; an output takes a few turns more."""
        loop = asyncio.get_running_loop()
        if output:
            loop.call_soon(loop.call_soon, loop.call_soon, self.deliver_output)
        else:
            loop.call_soon(self.deliver_writes)


class Table:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.data = dict(broker.durable)  # what table recovery reads back
        self.name = ""

    def get(self, key):
        return self.data.get(key)

    def send_changelog(self, partition, key, value):
        fut = asyncio.get_running_loop().create_future()
        self.broker.writes.append((fut, key, value))
        self.broker.schedule(output=False)
        return fut


class Outputs:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.unconfirmed: list[asyncio.Future] = []

    async def send(self, msgs) -> None:
        for m in msgs:
            fut = asyncio.get_running_loop().create_future()
            self.broker.sends.append((fut, m.id, m.model_dump_json()))
            self.broker.schedule(output=True)
            self.unconfirmed.append(fut)

    def take_unconfirmed(self) -> list:
        taken, self.unconfirmed = self.unconfirmed, []
        return taken


class App:
    def __init__(self, broker: Broker) -> None:
        self.table = Table(broker)
        self.on_partitions_assigned = SimpleNamespace(connect=lambda fn: fn)
        self.on_partitions_revoked = SimpleNamespace(connect=lambda fn: fn)

    def Table(self, name, **kwargs):
        self.table.name = name
        return self.table


TP = TopicPartition("md.ticks", 0)  # the one input partition


class Consumer:
    def __init__(self) -> None:
        self.seeks: list[tuple] = []
        self.earliest = 0  # the first offset the broker still has

    async def seek(self, tp, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def earliest_offsets(self, *tps) -> dict:
        return {tp: self.earliest for tp in tps}


class Event:
    def __init__(self, offset: int, batch: s.TickBatch, on_ack) -> None:
        self.message = SimpleNamespace(topic="md.ticks", partition=0, offset=offset, value=batch, tp=TP)
        self.on_ack = on_ack

    def ack(self) -> None:
        self.on_ack(self.message.offset)


async def worker(broker: Broker, batches: list, start: int, kill_at: tuple[int, int] | None = None, on_ack=None):
    """agents/engine.py's loop over md.ticks from `start` (the committed offset), sending through the broker.
    `kill_at=(save, turns)` kills the worker `turns` loop turns after its save number `save`. Returns the offsets
    acked."""
    app = App(broker)
    outputs = Outputs(broker)
    checkpoints = Checkpoints(app, "engine-state", 1, 0.0, ("md.ticks",), new_engine, outputs)
    acked, saves = [], 0

    def ack(offset):
        acked.append(offset)
        if on_ack:
            on_ack(offset)

    for first in range(start, len(batches), TAKE):
        await asyncio.sleep(0)  # Faust's stream awaits the next take: saves' acks run meanwhile
        events = [Event(o, batches[o], ack) for o in range(first, min(first + TAKE, len(batches)))]
        touched = set()
        for msg, _, eng in checkpoints.fresh(events):
            touched.add(msg.partition)
            eng.mark_seen(msg.topic, msg.offset)
            await outputs.send(eng.on_ticks(msg.value))
        for p in sorted(touched):
            await checkpoints.save(p)
            saves += 1
            if kill_at is not None and saves == kill_at[0]:
                for _ in range(kill_at[1]):
                    await asyncio.sleep(0)
                broker.killed = True  # SIGKILL: what the broker has not got is lost
                return acked
    while broker.writes or broker.sends or checkpoints.storing:
        await asyncio.sleep(0)
    return acked


def test_events_are_acked_only_once_the_snapshot_holding_them_is_on_the_broker():
    batches = tape()
    broker = Broker()
    late = []

    def check(offset):
        raw = join_snapshot(broker.durable.get, 0)
        eng = new_engine(0)
        if raw:
            eng.load(orjson.loads(raw))
        if eng.next_offset("md.ticks") <= offset:
            late.append(offset)

    asyncio.run(worker(broker, batches, 0, on_ack=check))
    assert not late, f"acked before any durable snapshot held them: offsets {late[:10]}..."


def test_a_worker_killed_at_any_moment_resumes_to_the_outputs_of_an_uninterrupted_run():
    batches = tape()
    base = Broker()
    asyncio.run(worker(base, batches, 0))
    assert sum(1 for k in base.outputs if k.endswith(":d")) > 20, "the scenario must decide at many bar closes"
    saves = -(-len(batches) // TAKE)
    wrong = []
    for kill in range(1, saves):
        for turns in (0, 1, 2, 5, 20):
            broker = Broker()
            acked = asyncio.run(worker(broker, batches, 0, kill_at=(kill, turns)))
            restarted = Broker(broker.durable)
            restarted.outputs = dict(broker.outputs)
            # Kafka's committed offset: Faust commits what was acked
            asyncio.run(worker(restarted, batches, max(acked, default=-1) + 1))
            if restarted.outputs != base.outputs:
                wrong.append((kill, turns))
    assert not wrong, f"killed at (save, loop turns) {wrong[:5]}...: the restored run's outputs differ"


def test_inputs_skipped_on_the_way_are_read_again_and_taken_in_order(monkeypatch):
    """Faust can drop fetched records (a partition resumed while a fetch was under way) or commit past a skipped
    one: the agent sees an offset past where its state goes on. It seeks back, again every REWIND_EVERY_S until
    the missing input comes (a fetch under way can undo a seek), drops what it reads meanwhile, and takes its
    inputs in order only; inputs the broker deleted are given up, from its earliest offset on."""
    batches = tape()
    monkeypatch.setattr(checkpoint, "REWIND_EVERY_S", 0.05)

    async def go():
        broker = Broker()
        app = App(broker)
        app.consumer = Consumer()
        checkpoints = Checkpoints(app, "engine-state", 1, 0.0, ("md.ticks",), new_engine, Outputs(broker))
        taken = []

        def take(*offsets):
            for msg, topic, eng in checkpoints.fresh([Event(o, batches[o], lambda _: None) for o in offsets]):
                eng.mark_seen(topic, msg.offset)
                eng.on_ticks(msg.value)
                taken.append(msg.offset)

        take(0, 1, 2, 5, 6)  # 3 and 4 were lost on the way
        await asyncio.sleep(0.01)
        assert taken == [0, 1, 2] and app.consumer.seeks == [(TP, 3)]
        take(7)  # read before the seek took effect: dropped, and no second seek for it
        await asyncio.sleep(0.01)
        assert taken == [0, 1, 2] and app.consumer.seeks == [(TP, 3)]
        await asyncio.sleep(0.1)  # nothing came (the seek was undone): sought again
        assert app.consumer.seeks[:3] == [(TP, 3)] * 3
        take(1, 2, 3, 4, 5)  # from the broker again (and a repeat of what the state holds)
        assert taken == [0, 1, 2, 3, 4, 5]
        assert [e.message.offset for e in checkpoints.held[0]] == [0, 1, 2, 1, 2, 3, 4, 5]  # acked at the next save
        await asyncio.sleep(0.1)
        seeks = len(app.consumer.seeks)
        await asyncio.sleep(0.1)
        assert len(app.consumer.seeks) == seeks and not checkpoints.rewinding  # read: no more seeks

        app.consumer.earliest = 8  # 6 and 7 were deleted by retention
        take(9)
        await asyncio.sleep(0.01)
        assert app.consumer.seeks[-1] == (TP, 8) and taken[-1] == 5
        take(8, 9)
        assert taken == [0, 1, 2, 3, 4, 5, 8, 9] and not checkpoints.gone

    asyncio.run(go())
