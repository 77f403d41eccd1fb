"""Replay recorded market data onto `md.events`, in event-time order, with watermarks.

`iter_tape` merges recording files into one stream of `MarketFrame`s; `ReplaySource` sends them keyed by
symbol (paced in event time, or as fast as possible) and broadcasts `Watermark`s to every partition.
"""
from __future__ import annotations

import asyncio
import gzip
import heapq
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Iterator

from schemas import MarketFrame, Watermark, encode

from . import binance_usdm

Send = Callable[[str, bytes | None, bytes, int | None], Awaitable[object]]
PartitionFor = Callable[[bytes, int], int]

# Recording formats: (recognizes a first line, sort key of a line, symbol of a file, line -> frame).
_FORMATS = {
    "binance_usdm": (binance_usdm.looks_like, binance_usdm.sort_key, binance_usdm.recording_symbol,
                     binance_usdm.parse_line),
}


class Tape:
    """Frames of recording files, merged in event-time order. Iterate once.

    Each file is sorted by (event time, receive time): a Binance file interleaves its streams out of event
    order. Bad lines are skipped; `bad_lines` counts them (final once the tape is exhausted) and
    `bad_examples` keeps the first few reasons.
    """

    def __init__(self, paths: Iterable[str | Path]):
        self.paths = [Path(p) for p in paths]
        self.bad_lines = 0
        self.bad_examples: list[str] = []

    def __iter__(self) -> Iterator[MarketFrame]:
        return heapq.merge(*(self._file_frames(p) for p in self.paths), key=lambda f: (f.ts, f.recv_ts))

    def _file_frames(self, path: Path) -> Iterator[MarketFrame]:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        lines = raw.splitlines()
        first = next((line for line in lines if line.strip()), b"")
        fmt = next((f for f in _FORMATS.values() if f[0](first)), None)
        if fmt is None:
            raise ValueError(f"{path}: unknown recording format (first line {first[:80]!r})")
        _, sort_key, recording_symbol, parse_line = fmt
        symbol = recording_symbol(lines)

        # Sort cheap keys, build frames lazily: the 170k frames of the bundled tape held at once take 0.8 GB
        # and the garbage collector's rescans of them make loading 2.5x slower.
        keyed = []
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    keyed.append((sort_key(line), number))
                except ValueError as exc:
                    self._bad(path, number, exc)
        keyed.sort()
        for key, number in keyed:
            try:
                frame = parse_line(lines[number - 1], symbol)
            except ValueError as exc:
                self._bad(path, number, exc)
                continue
            if (frame.ts, frame.recv_ts) != key:
                self._bad(path, number, ValueError(f"sort key {key} disagrees with the frame"))
                continue
            yield frame

    def _bad(self, path: Path, number: int, exc: Exception) -> None:
        self.bad_lines += 1
        if len(self.bad_examples) < 10:
            self.bad_examples.append(f"{path.name}:{number}: {exc}")


def iter_tape(paths: Iterable[str | Path]) -> Tape:
    """The frames of `paths` in event-time order (a `Tape`: iterate it, then read `bad_lines`)."""
    return Tape(paths)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (org.apache.kafka.common.utils.Utils.murmur2), as an unsigned 32-bit int."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = 0x9747B28C ^ length
    tail = length & ~3
    for i in range(0, tail, 4):
        k = (int.from_bytes(data[i:i + 4], "little") * m) & mask
        k = ((k ^ (k >> 24)) * m) & mask
        h = ((h * m) & mask) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h = ((h ^ data[tail]) * m) & mask
    h = ((h ^ (h >> 13)) * m) & mask
    return h ^ (h >> 15)


def kafka_partition(key: bytes, n: int) -> int:
    """The partition Kafka's (and aiokafka's) default partitioner picks for `key` among `n`."""
    return (murmur2(key) & 0x7FFFFFFF) % n


@dataclass(frozen=True)
class ReplayProgress:
    frames: int  # frames sent so far
    event_ts: int  # event time reached, ms
    frames_per_s: float  # since the start, wall clock


@dataclass(frozen=True)
class ReplaySummary:
    frames: int
    trades: int
    first_ts: int | None
    last_ts: int | None
    bad_lines: int
    watermarks: int  # messages, all partitions counted


class ReplaySource:
    """Sends the tape of `paths` to `md.events`: frames keyed by symbol, watermarks to every partition.

    speed 0 sends as fast as possible; speed N paces event time at N x real time. Every `watermark_every_ms`
    of event time, and once at the end (`end=True`, ts = last frame ts + 1), a Watermark goes to each of the
    `partitions` explicitly, so idle partitions advance too. Same files -> same byte sequence of messages.
    """

    def __init__(self, paths: Iterable[str | Path], send: Send, partitions: int,
                 partition_for: PartitionFor = kafka_partition, *, speed: float = 0,
                 watermark_every_ms: int = 1000, progress: Callable[[ReplayProgress], object] | None = None,
                 progress_every_s: float = 1.0, topic: str = "md.events", max_seconds: float | None = None):
        if partitions < 1 or speed < 0 or watermark_every_ms < 1:
            raise ValueError("need partitions >= 1, speed >= 0, watermark_every_ms >= 1")
        self.paths = list(paths)
        self.send = send
        self.partitions = partitions
        self.partition_for = partition_for
        self.speed = speed
        self.watermark_every_ms = watermark_every_ms
        self.progress = progress
        self.progress_every_s = progress_every_s
        self.topic = topic
        self.max_ms = None if max_seconds is None else int(max_seconds * 1000)

    async def run(self) -> ReplaySummary:
        tape = iter_tape(self.paths)
        loop = asyncio.get_running_loop()
        started = last_report = loop.time()
        every = self.watermark_every_ms
        frames = trades = watermarks = 0
        first_ts = last_ts = next_watermark = None
        partition_of: dict[str, tuple[bytes, int]] = {}

        for frame in tape:
            ts = frame.ts
            if first_ts is None:
                first_ts, next_watermark = ts, ts - ts % every + every
            if self.max_ms is not None and ts - first_ts >= self.max_ms:
                break
            if self.speed:
                delay = started + (ts - first_ts) / 1000 / self.speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if ts >= next_watermark:
                # Frames come in event-time order: nothing later has an event time below this frame's.
                watermarks += await self._watermarks(ts, end=False)
                next_watermark = ts - ts % every + every
            if frame.symbol not in partition_of:
                key = frame.symbol.encode()
                partition_of[frame.symbol] = key, self.partition_for(key, self.partitions)
            key, partition = partition_of[frame.symbol]
            await self.send(self.topic, key, encode(frame), partition)
            frames += 1
            trades += len(frame.trades)
            last_ts = ts
            if frames % 1000 == 0:
                await asyncio.sleep(0)  # let the loop breathe when `send` never yields
            if self.progress and (now := loop.time()) - last_report >= self.progress_every_s:
                last_report = now
                self.progress(ReplayProgress(frames, ts, frames / (now - started)))

        end_ts = 0 if last_ts is None else last_ts + 1
        watermarks += await self._watermarks(end_ts, end=True)
        if self.progress:
            self.progress(ReplayProgress(frames, end_ts, frames / max(loop.time() - started, 1e-9)))
        return ReplaySummary(frames, trades, first_ts, last_ts, tape.bad_lines, watermarks)

    async def _watermarks(self, ts: int, end: bool) -> int:
        for partition in range(self.partitions):
            mark = Watermark(id=f"replay:{'end' if end else 'wm'}:{ts}:{partition}", ts=ts, origin="replay",
                             end=end)
            await self.send(self.topic, None, encode(mark), partition)
        return self.partitions
