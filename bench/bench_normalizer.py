"""Throughput of the Binance USD-M normalizer and the tape merge on the bundled recordings, on one core.

Run on demand: python bench/bench_normalizer.py [runs]. Prints the best of `runs` (default 3) in CPU time of
this process, which a busy shared machine disturbs less than wall time.
"""
from __future__ import annotations

import gzip
import os
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.binance_usdm import parse_line, recording_symbol, wire_line  # noqa: E402
from streams.replay import iter_tape  # noqa: E402

PATHS = sorted((ROOT / "streams" / "recordings" / "binance_usdm").glob("*.gz"))


def to_wire(line: bytes, symbol: str | None) -> bytes:
    """What the replay source does per frame."""
    return parse_line(line, symbol).model_dump_json().encode()


def bench_lines(files: list[list[bytes]], normalize) -> float:
    started = time.process_time()
    for lines in files:
        symbol = recording_symbol(lines)
        for line in lines:
            normalize(line, symbol)
    return time.process_time() - started


def bench_tape(dump: bool) -> float:
    started = time.process_time()
    for frame in iter_tape(PATHS):
        if dump:
            frame.model_dump_json()
    return time.process_time() - started


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"os.cpu_count() = {os.cpu_count()}, pinned to one core, best of {runs} in CPU time; "
          f"files: {', '.join(p.name for p in PATHS)}")
    files = [gzip.decompress(p.read_bytes()).splitlines() for p in PATHS]
    frames = trades = levels = 0
    for lines in files:
        symbol = recording_symbol(lines)
        for line in lines:
            frame = parse_line(line, symbol, validate=True)
            frames, trades, levels = frames + 1, trades + len(frame.trades), levels + len(frame.bids) + len(frame.asks)
    print(f"{frames:,} frames, {trades:,} trades, {levels:,} book levels")

    cases = [
        ("parse_line fast path", lambda: bench_lines(files, parse_line)),
        ("parse_line validated", lambda: bench_lines(files, partial(parse_line, validate=True))),
        ("parse_line + model_dump_json", lambda: bench_lines(files, to_wire)),
        ("wire_line", lambda: bench_lines(files, wire_line)),
        ("iter_tape", lambda: bench_tape(dump=False)),
        ("iter_tape + model_dump_json", lambda: bench_tape(dump=True)),
    ]
    for what, bench in cases:
        elapsed = min(bench() for _ in range(runs))
        print(f"{what:29} {elapsed:5.2f} s: {frames / elapsed:9,.0f} frames/s, {trades / elapsed:8,.0f} trades/s, "
              f"{levels / elapsed:10,.0f} levels/s")


if __name__ == "__main__":
    main()
