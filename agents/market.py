"""MARKET actor: owns the books of the symbols on its md.events partitions; passes to each engine partition the ticks
of its sessions' symbols (and the books of those it asks for on md.interest), and conflated marks to md.marks. Frames
it cannot accept go to the dead-letter topic."""
from __future__ import annotations

import faust
import orjson
from pydantic import ValidationError

import schemas as s
from agents.checkpoint import Checkpoints
from agents.crash import die
from agents.outputs import Outputs, dead_letter
from agents.take import input_batches
from infra import prometheus
from papertape.core.engine import symbols_traded
from papertape.core.market.partition import MarketPartition
from schemas.codec import reason_of, split_batch

INPUTS = ("md.events", "md.interest")


def register(app: faust.App, settings, instruments, outputs: Outputs) -> None:
    source = app.topic(*map(settings.names.topic, INPUTS), key_serializer="raw", value_serializer="raw",
                       partitions=settings.md_partitions)

    # per engine partition, the symbols its configured sessions trade; each md partition adds what is asked at run time
    traded = [symbols_traded([c for c in settings.sessions if settings.session_partition(c.id) == e], instruments)
              for e in range(settings.session_partitions)]

    def new_partition(p: int) -> MarketPartition:
        return MarketPartition(p, instruments, settings.md_partitions, settings.alerts.rules,
                               [set(symbols) for symbols in traded])

    checkpoints = Checkpoints(app, "market-state", settings.md_partitions, settings.checkpoint_every_s, INPUTS,
                              new_partition, outputs, settings.names)
    prometheus.STALE_SYMBOLS.set_function(lambda: sum(len(mp.stale) for p, mp in list(checkpoints.states.items())
                                                      if p not in checkpoints.revoked))

    @app.agent(source, name="market")
    async def market(stream: faust.StreamT) -> None:
        try:
            async for events in input_batches(stream, 5000, settings.take_within_ms / 1000):
                touched: set[int] = set()
                for msg, topic, mp in checkpoints.fresh(events):
                    touched.add(msg.partition)
                    refused = interest(mp, msg) if topic == "md.interest" else market_data(mp, msg)
                    for index, payload, reason in refused:
                        where = "" if index is None else f"frame {index}: "
                        await outputs.send(dead_letter("market", topic, msg.partition, msg.offset, msg.key,
                                                       payload, where + reason, mp.wm, index))
                due = []
                for p in sorted(touched):
                    mp = checkpoints.state(p)
                    routes, marks = mp.flush()
                    for engines, batches in routes:  # each engine partition gets its sessions' symbols
                        for batch in batches:
                            await outputs.send_to("md.ticks", batch, engines)
                    await outputs.send(marks)
                    if checkpoints.due(p) or mp.ended:
                        due.append(p)
                await checkpoints.save(*due)
        except Exception as exc:  # a bug, not bad input: see agents/crash.py
            die("market", exc)


def market_data(mp: MarketPartition, msg) -> list:
    item, refused = take(mp, msg.value, msg.offset)
    if item is not None:
        prometheus.took_market(item)
    return refused


def interest(mp: MarketPartition, msg) -> list:
    """An engine partition's md.interest: refused (index None, payload, reason) when it cannot be served."""
    try:
        reason = mp.on_interest(s.decode("md.interest", msg.value), msg.offset)
    except s.InvalidMessage as exc:
        mp.interest_offset, reason = msg.offset, str(exc)
    return [(None, msg.value, reason)] if reason else []


def take(mp: MarketPartition, value: bytes | None, offset: int):
    """An md.events message into the partition: (the message, or None when refused whole; the refusals, the
    schema's and the partition's, each frame named by its place in the batch)."""
    item, refused, places = decode_leniently(value)
    if item is None:
        mp.last_offset = offset
        return None, refused
    # the partition numbers its refusals among the frames the schema kept
    return item, refused + [(places[i] if places else i, orjson.dumps(f.model_dump(mode="json")), reason)
                            for i, f, reason in mp.on_message(item, offset)]


def decode_leniently(value: bytes | None):
    """(message, refusals, places). A batch the schema refuses is taken apart: its valid frames are kept and each
    bad one is refused alone (index, raw frame, reason), `places` giving each kept frame's index in the batch;
    anything else that fails is refused whole (index None). `places` is empty when nothing was taken out."""
    try:
        return s.decode("md.events", value), [], []
    except s.InvalidMessage as exc:
        whole = [(None, value, str(exc))]
    parts = split_batch(value)
    if parts is None:
        return None, whole, []
    envelope, frames = parts
    try:
        batch = s.MarketBatch.model_validate(envelope)
    except ValidationError:
        return None, whole, []
    kept, places, refused = [], [], []
    for i, f in enumerate(frames):
        try:
            kept.append(s.MarketFrame.model_validate(f))
            places.append(i)
        except ValidationError as exc:
            refused.append((i, orjson.dumps(f), reason_of(exc)))
    return batch.model_copy(update={"frames": kept}), refused, places
