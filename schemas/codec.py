"""Bytes <-> models. JSON through pydantic's Rust core; a bad message raises InvalidMessage with the reason."""
from __future__ import annotations

from typing import Any

import msgspec
import orjson
from pydantic import BaseModel, ValidationError

from .base import SCHEMA_VERSION
from .market import Tick, TickBatch
from .topics import TOPICS

MAX_MESSAGE_BYTES = 1 << 20


class InvalidMessage(ValueError):
    """The bytes are not a valid message for the topic. The text says why."""


def encode(model: BaseModel) -> bytes:
    if getattr(model, "kind", None) == "ticks":
        return _tick_batch_json(model)
    return model.model_dump_json().encode()


def _tick_batch_json(batch: BaseModel) -> bytes:
    """A TickBatch as model_dump_json writes it, 3x faster: orjson writes the ticks (named tuples, as arrays)
    without pydantic checking every level of every tick against its declared type."""
    return orjson.dumps({name: getattr(batch, name) for name in type(batch).model_fields}, default=list)


def decode(topic: str, data: bytes | None) -> Any:
    if data is None:
        raise InvalidMessage("empty message (no value)")
    if len(data) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"oversized message: {len(data)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        return TOPICS[topic].adapter.validate_json(data)
    except ValidationError as exc:
        raise InvalidMessage(reason_of(exc)) from None
    except KeyError:
        raise InvalidMessage(f"unknown topic {topic!r}") from None


class _TickBatchJson(msgspec.Struct, forbid_unknown_fields=True):
    """md.ticks as the market actor writes it: a TickBatch's fields, its ticks decoded straight into Tick tuples.
    Every field is declared and no other is taken: msgspec would skip an unknown one without checking its UTF-8."""

    id: str
    ts: int
    origin: int
    seq: int
    wm: int
    ticks: list[Tick]
    end: bool = False
    v: int = SCHEMA_VERSION
    kind: str = "ticks"


_TICK_BATCH = msgspec.json.Decoder(_TickBatchJson)


def decode_ticks(value: bytes) -> TickBatch:
    """An md.ticks message, on the engines' hot path: msgspec builds the Tick and TickTrade named tuples in C, in
    less than half the time of orjson and a Python loop over the ticks (tests/unit/test_fast_decoding.py holds it to
    that reference). The tuples' annotations check each element's JSON type, not the schema's constraints: md.ticks
    is written by the market actor alone, from validated frames. Level changes and funding come as tuples where
    orjson gave lists (the same JSON; the core only unpacks them)."""
    try:
        raw = _TICK_BATCH.decode(value)
    except msgspec.DecodeError as exc:  # its ValidationError too
        raise InvalidMessage(f"malformed tick batch: {exc}") from None
    return TickBatch.model_construct(id=raw.id, ts=raw.ts, origin=raw.origin, seq=raw.seq, wm=raw.wm, end=raw.end,
                                     ticks=raw.ticks)


def reason_of(exc: ValidationError) -> str:
    """The first few validation errors, one line."""
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        msg = err["msg"]
        if err["type"] == "string_pattern_mismatch" and "[0-9]" in str(err.get("ctx", {}).get("pattern")):
            msg = f"{err['input']!r} is not a plain decimal string (no sign, exponent, NaN or infinity)"
        parts.append(f"{where}: {msg}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def split_batch(value: bytes | None) -> tuple[dict[str, Any], list[Any]] | None:
    """(envelope, raw frames) of a JSON object of kind "batch" with a list of frames, unvalidated; None for
    anything else. Lets a consumer keep the good frames of a batch the schema refuses."""
    try:
        raw = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict) or raw.get("kind") != "batch" or not isinstance(raw.get("frames"), list):
        return None
    frames = raw.pop("frames")
    return raw, frames
