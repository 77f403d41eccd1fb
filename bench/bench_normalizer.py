"""Throughput of the Binance USD-M normalizer and the tape merge on the bundled recordings, on one core.

Run on demand: python bench/bench_normalizer.py [runs]. Prints the best of `runs` (default 3): a shared
machine is noisy.
"""
from __future__ import annotations

import gzip
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas import encode  # noqa: E402
from streams.binance_usdm import parse_line, recording_symbol  # noqa: E402
from streams.replay import iter_tape  # noqa: E402

PATHS = sorted((ROOT / "streams" / "recordings" / "binance_usdm").glob("*.gz"))


def bench_tape(encode_frames: bool) -> tuple[int, int, float]:
    started = time.perf_counter()
    frames = trades = 0
    for frame in iter_tape(PATHS):
        frames += 1
        trades += len(frame.trades)
        if encode_frames:
            encode(frame)
    return frames, trades, time.perf_counter() - started


def bench_parse(validate: bool) -> tuple[int, float]:
    files = [gzip.decompress(p.read_bytes()).splitlines() for p in PATHS]
    started = time.perf_counter()
    for lines in files:
        symbol = recording_symbol(lines)
        for line in lines:
            parse_line(line, symbol, validate=validate)
    return sum(map(len, files)), time.perf_counter() - started


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"os.cpu_count() = {os.cpu_count()}, pinned to one core, best of {runs}; files: {', '.join(p.name for p in PATHS)}")
    for encode_frames in (False, True):
        frames, trades, elapsed = min((bench_tape(encode_frames) for _ in range(runs)), key=lambda r: r[2])
        what = "iter_tape + encode" if encode_frames else "iter_tape"
        print(f"{what:20} {frames:,} frames, {trades:,} trades in {elapsed:.2f} s: "
              f"{frames / elapsed:,.0f} frames/s, {trades / elapsed:,.0f} trades/s")
    for validate in (False, True):
        lines, elapsed = min((bench_parse(validate) for _ in range(runs)), key=lambda r: r[1])
        what = "parse_line validated" if validate else "parse_line fast path"
        print(f"{what:20} {lines:,} lines in {elapsed:.2f} s: {lines / elapsed:,.0f} lines/s")


if __name__ == "__main__":
    main()
