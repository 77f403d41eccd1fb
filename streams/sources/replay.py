"""Replay recorded market data onto `md.events`, in event-time order, with watermarks.

`Tape` merges recording files into one stream of frames in event-time order; `ReplaySource` sends them in batches per
partition (paced in event time, or as fast as possible), each batch carrying the partition's watermark.
"""
from __future__ import annotations

import asyncio
import gzip
import heapq
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Iterator

import orjson

import streams.bybit.history as bybit_history
import streams.bybit.tape as tape
import streams.formats.binance_usdm as binance_usdm
import streams.formats.csv_ohlcv as csv_ohlcv
import streams.formats.csv_trades as csv_trades
import streams.formats.lean as lean
import streams.sources.coingecko_tape as coingecko_tape
from schemas import SCHEMA_VERSION, MarketFrame
from schemas.topics import kafka_partition
from streams.frames.wire import Format, WireFrame

Send = Callable[[str, bytes | None, bytes, int | None], Awaitable[object]]
PartitionFor = Callable[[bytes, int], int]

# Recording formats, tried in this order on a file's first non-empty line and name.
# A CoinGecko tape before the (Bybit) tape whose first line it shares; header-named formats before the generic
# CSVs that would also read them; Lean files are known by their name.
FORMATS: list[Format] = [coingecko_tape.COINGECKO_TAPE, tape.TAPE_FORMAT, tape.BYBIT_V5_FORMAT, binance_usdm.FORMAT,
                         bybit_history.TRADING, bybit_history.SPOT, lean.LEAN, lean.LEAN_FUNDING, csv_ohlcv.OHLCV_CSV,
                         csv_trades.TRADES_CSV]


class Tape:
    """Frames of recording files, merged in event-time order. Iterate once.

    A file may be plain, gzip or zip (its members in name order). Bad lines are skipped; `bad_lines` counts them
    (final once the tape is exhausted) and `bad_examples` keeps the first few reasons.
    """

    def __init__(self, paths: Iterable[str | Path]):
        self.paths = [Path(p) for p in paths]
        self.bad_lines = 0
        self.bad_examples: list[str] = []

    def __iter__(self) -> Iterator[MarketFrame]:
        return (MarketFrame.model_validate_json(f.json) for f in self.wire_frames())

    def wire_frames(self) -> Iterator[WireFrame]:
        """The frames as `WireFrame`s, as a source sends them (instead of iterating the tape)."""
        return heapq.merge(*(self._file_frames(p) for p in self.paths), key=lambda f: (f.ts, f.recv_ts))

    def _file_frames(self, path: Path) -> Iterator[WireFrame]:
        lines = read_lines(path)
        first = next((line for line in lines if line.strip()), b"")
        fmt = next((f for f in FORMATS if f.looks_like(first, path.name)), None)
        if fmt is None:
            raise ValueError(f"{path}: unknown recording format (first line {first[:80]!r})")
        yield from fmt.read(lines, path.name, lambda number, exc: self._bad(path, number, exc))

    def _bad(self, path: Path, number: int, exc: Exception) -> None:
        self.bad_lines += 1
        if len(self.bad_examples) < 10:
            self.bad_examples.append(f"{path.name}:{number}: {exc}")


def read_lines(path: Path) -> list[bytes]:
    """The lines of a plain, gzip or zip file (a zip's members in name order, one after the other)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    elif raw[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            raw = b"\n".join(z.read(name) for name in sorted(z.namelist()) if not name.endswith("/"))
    return raw.splitlines()


BATCH_BYTES = 256 << 10  # well under the 1 MiB a message may have


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
    batches: int  # messages sent, all partitions counted
    bad_examples: tuple[str, ...] = ()  # the first reasons lines were refused, "file:line: why"


class BatchSender:
    """Packs frames into one `MarketBatch` per md.events partition (by symbol hash), each carrying the
    partition's watermark: frames must come in event-time order, and `flush(.., wm)` promises no frame below
    `wm` follows. A batch closes at `batch_frames` frames or BATCH_BYTES."""

    def __init__(self, send: Send, partitions: int, partition_for: PartitionFor = kafka_partition, *,
                 batch_frames: int = 500, topic: str = "md.events", origin: str = "replay") -> None:
        if partitions < 1 or batch_frames < 1:
            raise ValueError("need partitions >= 1 and batch_frames >= 1")
        self.send = send
        self.partitions = partitions
        self.partition_for = partition_for
        self.batch_frames = batch_frames
        self.topic = topic
        self.origin = origin
        self._partition_of: dict[str, int] = {}
        self._pending: list[list[bytes]] = [[] for _ in range(partitions)]
        self._size = [0] * partitions
        self._seq = [0] * partitions
        self._sent_wm = [-1] * partitions
        self.batches = 0

    async def add(self, frame: WireFrame) -> None:
        partition = self._partition_of.get(frame.symbol)
        if partition is None:
            partition = self._partition_of[frame.symbol] = self.partition_for(frame.symbol.encode(), self.partitions)
        pending = self._pending[partition]
        pending.append(frame.json)
        self._size[partition] += len(frame.json)
        if len(pending) >= self.batch_frames or self._size[partition] >= BATCH_BYTES:
            await self.flush(partition, frame.ts, end=False)

    async def flush_all(self, wm: int, end: bool = False) -> None:
        for partition in range(self.partitions):
            await self.flush(partition, wm, end)

    async def flush(self, partition: int, wm: int, end: bool = False) -> None:
        """One MarketBatch of the partition's pending frames, promising nothing below `wm` follows."""
        if not self._pending[partition] and not end and wm <= self._sent_wm[partition]:
            return  # nothing new to say
        self._sent_wm[partition] = wm
        frames, self._pending[partition], self._size[partition] = self._pending[partition], [], 0
        self._seq[partition] += 1
        head = orjson.dumps({"v": SCHEMA_VERSION, "id": f"{self.origin}:{partition}:{self._seq[partition]}",
                             "ts": wm, "kind": "batch", "origin": self.origin, "wm": wm, "end": end})
        await self.send(self.topic, None, head[:-1] + b',"frames":[' + b",".join(frames) + b"]}", partition)
        self.batches += 1


PACED_FLUSH_S = 0.01  # paced, what is pending goes out this often (wall time)


class ReplaySource:
    """Sends the tape of `paths` to `md.events` as `MarketBatch`es: per partition (by symbol hash), up to
    `batch_frames` frames each, with the partition's watermark.

    speed 0 sends as fast as possible; speed N paces event time at N x real time. Every `watermark_every_ms`
    of event time (and, when paced, every `flush_every_s` of wall time) every partition gets a batch, empty if
    it has nothing, so idle partitions advance too; the last batches say `end`. At full speed the same files
    give the same byte sequence of messages; paced, only the batch boundaries differ, never the frames' order.
    """

    def __init__(self, paths: Iterable[str | Path], send: Send, partitions: int,
                 partition_for: PartitionFor = kafka_partition, *, speed: float = 0,
                 watermark_every_ms: int = 1000, batch_frames: int = 500, flush_every_s: float = PACED_FLUSH_S,
                 progress: Callable[[ReplayProgress], object] | None = None, progress_every_s: float = 1.0,
                 topic: str = "md.events", max_seconds: float | None = None, origin: str = "replay",
                 frames: Iterable[WireFrame] | None = None):
        if speed < 0 or watermark_every_ms < 1:
            raise ValueError("need speed >= 0 and watermark_every_ms >= 1")
        self.paths = list(paths)
        self.frames = frames  # instead of the files' frames: any WireFrames in event-time order
        self.out = BatchSender(send, partitions, partition_for, batch_frames=batch_frames, topic=topic,
                               origin=origin)
        self.speed = speed
        self.watermark_every_ms = watermark_every_ms
        self.flush_every_s = flush_every_s
        self.progress = progress
        self.progress_every_s = progress_every_s
        self.max_ms = None if max_seconds is None else int(max_seconds * 1000)

    @property
    def batches(self) -> int:
        return self.out.batches

    async def run(self) -> ReplaySummary:
        tape = Tape(self.paths)
        frames = tape.wire_frames() if self.frames is None else self.frames
        loop = asyncio.get_running_loop()
        started = last_report = last_flush = loop.time()
        every = self.watermark_every_ms
        count = trades = 0
        first_ts: int | None = None
        last_ts: int | None = None
        next_watermark = 0  # set by the first frame
        out = self.out

        for frame in frames:
            ts = frame.ts
            if first_ts is None:
                first_ts, next_watermark = ts, ts - ts % every + every
            if self.max_ms is not None and ts - first_ts >= self.max_ms:
                break
            if self.speed:
                # Wait for the frame's time; what is pending goes out every flush_every_s meanwhile, not before
                # every wait (that made a batch per frame).
                due = started + (ts - first_ts) / 1000 / self.speed
                while True:
                    now = loop.time()
                    if now - last_flush >= self.flush_every_s:
                        await out.flush_all(ts)
                        last_flush = now
                    if now >= due:
                        break
                    await asyncio.sleep(min(due, last_flush + self.flush_every_s) - now)
            if ts >= next_watermark:
                # Frames come in event-time order: nothing later has an event time below this frame's.
                await out.flush_all(ts)
                next_watermark = ts - ts % every + every
            await out.add(frame)
            count += 1
            trades += frame.trades
            last_ts = ts
            if count % 1000 == 0:
                await asyncio.sleep(0)  # let the loop breathe when `send` never yields
            if self.progress and (now := loop.time()) - last_report >= self.progress_every_s:
                last_report = now
                self.progress(ReplayProgress(count, ts, count / (now - started)))

        end_ts = 0 if last_ts is None else last_ts + 1
        await out.flush_all(end_ts, end=True)
        if self.progress:
            self.progress(ReplayProgress(count, end_ts, count / max(loop.time() - started, 1e-9)))
        return ReplaySummary(count, trades, first_ts, last_ts, tape.bad_lines, out.batches, tuple(tape.bad_examples))
