"""MARKET actor: owns the books of the symbols on its md.events partitions; passes ticks to every engine
partition and conflated marks to md.marks. Frames it cannot accept go to the dead-letter topic."""
from __future__ import annotations

import faust
import orjson
from pydantic import ValidationError

import schemas as s
from agents.checkpoint import Checkpoints
from agents.crash import die
from agents.outputs import Outputs, dead_letter
from infra import prometheus
from papertape.core.market.partition import MarketPartition
from schemas.codec import reason_of, split_batch


def register(app: faust.App, settings, instruments, outputs: Outputs) -> None:
    source = app.topic(settings.names.topic("md.events"), key_serializer="raw", value_serializer="raw",
                       partitions=settings.md_partitions)
    checkpoints = Checkpoints(app, "market-state", settings.md_partitions, settings.checkpoint_every_s,
                              ("md.events",), lambda p: MarketPartition(p, instruments, settings.md_partitions,
                                                        settings.alerts.rules),
                              outputs, settings.names)
    prometheus.STALE_SYMBOLS.set_function(lambda: sum(len(mp.stale) for p, mp in list(checkpoints.states.items())
                                                      if p not in checkpoints.revoked))

    @app.agent(source, name="market")
    async def market(stream: faust.StreamT) -> None:
        try:
            # Faust hands an agent a Stream, which has noack_take; StreamT, its declared type, lacks it
            async for events in stream.noack_take(5000, within=0.02):  # type: ignore[attr-defined]
                touched: set[int] = set()
                for msg, _, mp in checkpoints.fresh(events):
                    touched.add(msg.partition)
                    item, refused = take(mp, msg.value, msg.offset)
                    if item is not None:
                        prometheus.took_market(item)
                    for index, payload, reason in refused:
                        where = "" if index is None else f"frame {index}: "
                        await outputs.send(dead_letter("market", "md.events", msg.partition, msg.offset, msg.key,
                                                       payload, where + reason, mp.wm, index))
                due = []
                for p in sorted(touched):
                    mp = checkpoints.state(p)
                    batches, marks = mp.flush()
                    for batch in batches:  # a broadcast: every engine partition sees the whole market
                        await outputs.send_to("md.ticks", batch, range(settings.session_partitions))
                    await outputs.send(marks)
                    if checkpoints.due(p) or mp.ended:
                        due.append(p)
                await checkpoints.save(*due)
        except Exception as exc:  # a bug, not bad input: see agents/crash.py
            die("market", exc)


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
