"""MARKET actor: owns the books of the symbols on its md.events partitions; passes ticks to every engine
partition and conflated marks to md.marks. Frames it cannot accept go to the dead-letter topic."""
from __future__ import annotations

import faust

import schemas as s
from papertape.core.market import MarketPartition

from .checkpoint import Checkpoints
from .outputs import Outputs, dead_letter


def register(app: faust.App, settings, instruments, outputs: Outputs) -> None:
    source = app.topic("md.events", key_serializer="raw", value_serializer="raw",
                       partitions=settings.md_partitions)
    checkpoints = Checkpoints(app, "market-state", settings.md_partitions, settings.checkpoint_every_s,
                              ("md.events",), lambda p: MarketPartition(p, instruments))

    @app.agent(source, name="market")
    async def market(stream):
        async for events in stream.noack_take(5000, within=0.02):
            touched: set[int] = set()
            for msg, mp in checkpoints.fresh(events):
                touched.add(msg.partition)
                try:
                    item = s.decode("md.events", msg.value)
                    reason = mp.check(item) if item.kind == "frame" else ""
                except s.InvalidMessage as exc:
                    reason, item = str(exc), None
                if reason:
                    mp.last_offset = msg.offset
                    await outputs.send(dead_letter("market", msg.topic, msg.partition, msg.offset, msg.key,
                                                   msg.value, reason, mp.wm))
                elif item.kind == "frame":
                    mp.on_frame(item, msg.offset)
                else:
                    mp.on_watermark(item, msg.offset)
            for p in sorted(touched):
                mp = checkpoints.state(p)
                batches, marks = mp.flush()
                for batch in batches:
                    for q in range(settings.session_partitions):
                        await outputs.send_to("md.ticks", batch, q)
                await outputs.send(marks)
                if checkpoints.due(p) or mp.ended:
                    await checkpoints.save(p)
