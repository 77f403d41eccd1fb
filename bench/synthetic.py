"""Shared helpers of the benches: the bundled tape as WireFrames, re-timed or re-labelled streams of it, synthetic
instruments, percentiles and sessions."""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from decimal import Decimal

from papertape.config import BUNDLED_TAPE
from papertape.core.instruments import Instrument
from papertape.core.session.config import SessionConfig
from streams.frames.wire import WireFrame
from streams.sources.replay import Tape

# The fields of a frame's JSON that a re-timed or re-labelled copy changes ("ts" also matches each trade's).
_FIELD = re.compile(rb'"(id|ts|recv_ts|symbol)":("[^"]*"|\d+)')


def load_tape(limit: int | None = None) -> list[WireFrame]:
    """The bundled tape (BTCUSDT + ETHUSDT, ~345 s of event time), as WireFrames in event-time order."""
    out = []
    for f in Tape(BUNDLED_TAPE).wire_frames():
        out.append(f)
        if limit is not None and len(out) >= limit:
            break
    return out


def event_rate(frames: list[WireFrame]) -> float:
    """Frames per second of event time."""
    return len(frames) / max((frames[-1].ts - frames[0].ts) / 1000, 1e-3)


def rewrite(frame: WireFrame, ts: int | None = None, shift: int = 0, symbol: str | None = None,
            tag: str = "") -> WireFrame:
    """A copy of `frame` with its event time set to `ts` (trades too) or moved by `shift` ms, its symbol replaced,
    and `tag` appended to its id (ids stay unique across copies)."""
    new_ts = frame.ts + shift if ts is None else ts
    sym = (symbol or frame.symbol).encode()

    def field(m: re.Match) -> bytes:
        key, val = m.group(1), m.group(2)
        if key == b"ts":
            v = str(new_ts if ts is not None else int(val) + shift).encode()
        elif key == b"recv_ts":
            v = str(new_ts * 1_000_000).encode()
        elif key == b"symbol":
            v = b'"' + sym + b'"'
        else:
            v = val[:-1] + tag.encode() + b'"'
        return b'"' + key + b'":' + v

    return WireFrame(new_ts, new_ts * 1_000_000, sym.decode(), frame.trades, _FIELD.sub(field, frame.json))


def looped(frames: list[WireFrame], seconds: float | None = None) -> Iterator[WireFrame]:
    """The tape played again and again (each copy shifted in event time to follow the previous one), until
    `seconds` of event time (None: once)."""
    first, span = frames[0].ts, frames[-1].ts - frames[0].ts + 1
    end = first + (span if seconds is None else int(seconds * 1000))
    loop = 0
    while True:
        shift = loop * span
        for f in frames:
            if f.ts + shift >= end:
                return
            yield f if loop == 0 else rewrite(f, shift=shift, tag=f":L{loop}")
        loop += 1


def coalesced(frames: Iterable[WireFrame], quantum_ms: int) -> Iterator[WireFrame]:
    """The frames with event times rounded up to a multiple of `quantum_ms`: a paced ReplaySource then wakes, and
    flushes every partition, once per quantum instead of once per distinct event time."""
    for f in frames:
        ts = -(-f.ts // quantum_ms) * quantum_ms
        yield f if ts == f.ts else rewrite(f, ts=ts)


class MachineBusy:
    """Share of all cores (and of each core) busy since construction (/proc/stat), without blocking."""

    def __init__(self) -> None:
        self.start, self.start_cores = self._sample(), self._sample_cores()

    @staticmethod
    def _sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            vals = list(map(int, f.readline().split()[1:]))
        return sum(vals), vals[3] + vals[4]

    @staticmethod
    def _sample_cores() -> dict[str, tuple[int, int]]:
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                name, *rest = line.split()
                if name.startswith("cpu") and name != "cpu":
                    vals = list(map(int, rest))
                    out[name] = (sum(vals), vals[3] + vals[4])
        return out

    def since_start(self) -> float:
        (t0, i0), (t1, i1) = self.start, self._sample()
        return 1 - (i1 - i0) / max(t1 - t0, 1)

    def cores_since_start(self) -> dict[str, float]:
        """Busy share of each core (cpu0, cpu1, ...)."""
        now = self._sample_cores()
        return {c: 1 - (now[c][1] - i0) / max(now[c][0] - t0, 1) for c, (t0, i0) in self.start_cores.items()
                if c in now}


def relabelled(frames: list[WireFrame], groups: dict[str, list[str]], rate: float, count: int,
               start_ts: int) -> Iterator[WireFrame]:
    """`count` frames at `rate` frames/s of event time from `start_ts`: the tape's frames in a cycle, each frame
    of tape symbol X given to the next symbol of `groups[X]` in turn (prices kept: an S-symbol of the BTC group
    sees BTC prices)."""
    turn = {sym: 0 for sym in groups}
    n = 0
    while True:
        for f in frames:
            if n >= count:
                return
            names = groups[f.symbol]
            i = turn[f.symbol]
            turn[f.symbol] = (i + 1) % len(names)
            yield rewrite(f, ts=start_ts + int(n * 1000 / rate), symbol=names[i], tag=f":{n}")
            n += 1


def synthetic_instruments(n: int) -> tuple[list[Instrument], dict[str, list[str]]]:
    """n instruments S001USDT...: the first half BTC-like (tick 0.10, lot 0.001), the rest ETH-like (tick 0.01,
    lot 0.01); and which tape symbol feeds each group."""
    btc = [Instrument(f"S{i:03d}USDT", Decimal("0.10"), Decimal("0.001"), Decimal("0.001"), Decimal(5))
           for i in range(1, n // 2 + 1)]
    eth = [Instrument(f"S{i:03d}USDT", Decimal("0.01"), Decimal("0.01"), Decimal("0.01"), Decimal(5))
           for i in range(n // 2 + 1, n + 1)]
    return btc + eth, {"BTCUSDT": [i.symbol for i in btc], "ETHUSDT": [i.symbol for i in eth]}


def ema_sessions(n: int, symbols: list[list[str]] | None = None) -> list[SessionConfig]:
    """n EMA-cross sessions with different speeds (as bench_pipeline's); session i trades symbols[i] (all: None)."""
    out = []
    for i in range(n):
        fast, slow = 3 + i % 4, 8 + 2 * (i % 5)
        out.append(SessionConfig(id=f"ema-{i}", strategy="ema_cross",
                                 symbols=symbols[i] if symbols else ["*"],
                                 params={"fast": fast, "slow": slow, "bar_ms": 5_000 * (1 + i % 3),
                                         "full_confidence_bps": 1.0}))
    return out


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def summary_ms(values: Iterable[float]) -> str:
    v = sorted(values)
    if not v:
        return "no samples"
    return (f"p50 {percentile(v, 50) * 1000:7.1f} ms  p99 {percentile(v, 99) * 1000:7.1f} ms  "
            f"max {v[-1] * 1000:7.1f} ms  (n={len(v)})")
