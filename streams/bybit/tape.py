"""Tapes: what a live source received, raw, with its receive time, plus the instruments it traded.

A tape is a gzip file of lines: first `#papertape-tape <header JSON>` (source, category, instruments, start,
and the feed's lateness and stale limit, so a replay orders and marks frames as the live feed did),
then one `<receive_ns> <raw message>` per message, in receive order. Replaying one runs the same normalizer
the live feed runs, so a recorded day plays back as it was seen.

Other recordings of Bybit v5 public messages replay the same way: the order book history dumps (`*.data`, one
raw message per line, no receive time) and any file of one message per line, with or without a leading receive
time in ns.
"""
from __future__ import annotations

import gzip
import re
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from streams.bybit.v5 import BybitNormalizer, Gap, stale_frame
from streams.frames.event_order import EventOrder
from streams.frames.stale import StaleWatch
from streams.frames.wire import Bad, Format, WireFrame

MAGIC = b"#papertape-tape "
LATENESS_MS = 2_000  # how far out of event-time order a tape's messages may be and still keep their time
STALE_AFTER_MS = 15_000


class TapeWriter:
    """Writes a tape; `full` once it reached `max_bytes` (compressed) or `max_seconds`."""

    def __init__(self, path: Path, header: dict[str, Any], max_bytes: int | None = None,
                 max_seconds: float | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = open(self.path, "wb")
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6)
        self._gz.write(MAGIC + orjson.dumps(header) + b"\n")
        self.max_bytes = max_bytes
        self.deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.messages = 0
        self.raw_bytes = 0
        self._closed_size: int | None = None

    def write(self, recv_ns: int, raw: bytes | str) -> None:
        if isinstance(raw, str):
            raw = raw.encode()
        if b"\n" in raw:  # JSON allows newlines between tokens; a line must hold one message
            raw = orjson.dumps(orjson.loads(raw))
        self._gz.write(b"%d %s\n" % (recv_ns, raw))
        self.messages += 1
        self.raw_bytes += len(raw)

    @property
    def size(self) -> int:
        """Compressed bytes written so far."""
        return self._raw.tell() if self._closed_size is None else self._closed_size

    @property
    def full(self) -> bool:
        return (self.max_bytes is not None and self.size >= self.max_bytes
                or self.deadline is not None and time.monotonic() >= self.deadline)

    def close(self) -> None:
        self._gz.close()
        self._closed_size = self._raw.tell()
        self._raw.close()


def header_of(path: Path) -> dict[str, Any]:
    """A tape's header (raises ValueError when `path` is not a tape)."""
    with gzip.open(path, "rb") as f:
        first = f.readline()
    if not first.startswith(MAGIC):
        raise ValueError(f"{path} is not a papertape tape")
    return orjson.loads(first[len(MAGIC):])


def normalized(messages: Iterable[tuple[int, int, bytes]], bad: Bad, lateness_ms: int = LATENESS_MS,
               stale_after_ms: int = STALE_AFTER_MS) -> Iterator[WireFrame]:
    """Frames of raw Bybit messages `(line number, receive ns, raw)` in receive order, in event-time order;
    a symbol silent for `stale_after_ms` of event time gets a stale frame, an order book gap too. Compares
    books with the exchange's later snapshots: a difference is a bad line."""
    norm = BybitNormalizer(check_books=True)
    order = EventOrder(lateness_ms)
    watch = StaleWatch(stale_after_ms)
    mismatches = 0
    recv = 0
    for number, recv, raw in messages:
        try:
            frames, event = norm.on_message(raw, recv)
        except ValueError as exc:
            bad(number, exc)
            continue
        if isinstance(event, Gap):  # its frame says the symbol is stale
            bad(number, ValueError(f"order book gap on {event.topic}: update {event.got} after "
                                   f"{event.expected - 1}; deltas dropped until the next snapshot"))
        if len(norm.book_check.mismatches) > mismatches:
            mismatches = len(norm.book_check.mismatches)
            bad(number, ValueError(f"book differs from the exchange's snapshot: {norm.book_check.mismatches[-1]}"))
        for frame in frames:
            order.push(frame)
        ready = order.release()
        yield from _with_stale(ready, watch, recv)
    yield from _with_stale(order.drain(), watch, recv)


def _with_stale(frames: list[WireFrame], watch: StaleWatch, recv_ns: int) -> Iterator[WireFrame]:
    for frame in frames:
        for symbol in watch.check(frame.ts):
            yield stale_frame(symbol, frame.ts, recv_ns)
        if frame.live:
            watch.seen(frame.symbol, frame.ts)
        yield frame


def _v5_messages(lines: list[bytes], first: int = 1) -> Iterator[tuple[int, int, bytes]]:
    """(line number, receive ns, raw) of lines of raw v5 messages from line `first` on, each after its receive
    time in ns or alone (a history dump, a Tardis-style recording): then the message's own time stands in."""
    for number, line in enumerate(lines[first - 1:], first):
        if not line.strip():
            continue
        head, _, rest = line.partition(b" ")
        if head.isdigit() and rest:
            yield number, int(head), rest
        else:
            yield number, _ts_of(line) * 1_000_000, line


def _ts_of(line: bytes) -> int:
    at = line.find(b'"ts":')
    if at < 0:
        return 0
    digits = line[at + 5:at + 25].split(b",")[0].split(b"}")[0].strip()
    return int(digits) if digits.isdigit() else 0


def _read_tape(lines: list[bytes], name: str, bad: Bad) -> Iterator[WireFrame]:
    header = orjson.loads(lines[0][len(MAGIC):])
    return normalized(_v5_messages(lines, first=2), bad, header.get("lateness_ms", LATENESS_MS),
                      header.get("stale_after_ms", STALE_AFTER_MS))


TAPE_FORMAT = Format("papertape_tape", lambda first, name: first.startswith(MAGIC), _read_tape)
_V5_LINE = re.compile(rb'(?:\d+ )?\{.*"(?:topic|op)"\s*:')
BYBIT_V5_FORMAT = Format("bybit_v5_lines", lambda first, name: _V5_LINE.match(first) is not None,
                         lambda lines, name, bad: normalized(_v5_messages(lines), bad))
