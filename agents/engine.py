"""ACCOUNT + VENUE actor per session partition: runs the partition's sessions (strategy, risk, sizing,
paper matching, accounting) over the merged market ticks, plus external orders, signals and control."""
from __future__ import annotations

from collections import OrderedDict

import faust

import schemas as s
from agents.checkpoint import Checkpoints
from agents.crash import die
from agents.outputs import Outputs, dead_letter
from agents.take import input_batches
from papertape.core.engine import Engine
from schemas.codec import decode_ticks

INPUTS = ("md.ticks", "orders", "signals", "control", "venue.reports")


def register(app: faust.App, settings, instruments, outputs: Outputs) -> None:
    source = app.topic(*map(settings.names.topic, INPUTS), key_serializer="raw", value_serializer="raw",
                       partitions=settings.session_partitions)

    def new_engine(p: int) -> Engine:
        mine = [c for c in settings.sessions if settings.session_partition(c.id) == p]
        return Engine(p, settings.md_partitions, instruments, mine)

    checkpoints = Checkpoints(app, "engine-state", settings.session_partitions, settings.checkpoint_every_s,
                              INPUTS, new_engine, outputs, settings.names)

    @app.agent(source, name="engine")
    async def engine(stream: faust.StreamT) -> None:
        try:
            async for events in input_batches(stream, 2000, settings.take_within_ms / 1000):
                touched: set[int] = set()
                for msg, topic, eng in checkpoints.fresh(events):
                    touched.add(msg.partition)
                    eng.mark_seen(topic, msg.offset)
                    try:
                        item = decode(topic, msg.value)
                        symbol = getattr(item, "symbol", None)
                        if symbol is not None and symbol not in instruments:
                            raise s.InvalidMessage(f"unknown symbol {symbol}")
                        out = dispatch(eng, item)  # a control that cannot apply raises before changing anything
                    except s.InvalidMessage as exc:
                        await outputs.send(dead_letter("engine", topic, msg.partition, msg.offset, msg.key,
                                                       msg.value, str(exc), eng.now))
                        continue
                    await outputs.send(out, msg.timestamp if topic == "md.ticks" else None)
                await checkpoints.save(*(p for p in sorted(touched)
                                         if checkpoints.due(p) or checkpoints.state(p).finished))
        except Exception as exc:  # a bug, not bad input: see agents/crash.py
            die("engine", exc)


_recent_batches: OrderedDict[bytes, s.TickBatch] = OrderedDict()


def decode(topic: str, value: bytes | None):
    """md.ticks on the fast path (see `decode_ticks`); user-facing topics through full validation.

    The market actor sends each tick batch to every engine partition: the worker decodes it once for all of its
    partitions (ticks are immutable tuples, safe to share)."""
    if topic != "md.ticks" or value is None:
        return s.decode(topic, value)
    batch = _recent_batches.get(value)
    if batch is None:
        batch = _recent_batches[value] = decode_ticks(value)
        if len(_recent_batches) > 256:
            _recent_batches.popitem(last=False)
    return batch


def dispatch(eng: Engine, item) -> list:
    return eng.on_ticks(item) if item.kind == "ticks" else eng.on_external(item)
