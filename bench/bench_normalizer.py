"""Throughput of the Binance USD-M normalizer and the tape merge on the bundled recordings, then of the Bybit v5
normalizer (`BybitNormalizer.on_message`), on one core.

Run on demand: python bench/bench_normalizer.py [runs]. Prints the best of `runs` (default 3) in CPU time of
this process, which a busy shared machine disturbs less than wall time.

Bybit: (a) the real recorded Bybit v5 messages of tests/data/bybit/ws, repeated (21 messages are too few to time);
(b) the bundled real Binance trade tape re-encoded as Bybit v5 `publicTrade` messages, the trades of one trade
time `T` in one message as Bybit sends a taker order's fills; (c) the bundled Binance depth diffs as Bybit v5
`orderbook.50` deltas after a snapshot of the REST snapshot's top 50 levels.
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

import orjson  # noqa: E402

from streams.bybit.v5 import BybitNormalizer  # noqa: E402
from streams.formats.binance_usdm import parse_line, recording_symbol, wire_line  # noqa: E402
from streams.sources.replay import Tape  # noqa: E402

PATHS = sorted((ROOT / "streams" / "recordings" / "binance_usdm").glob("*.gz"))
BYBIT_RECORDED = [ROOT / "tests" / "data" / "bybit" / "ws" / name
                  for name in ("bybit_derivatives_v5_messages.jsonl", "bybit_spot_v5_messages.jsonl")]
BYBIT_REPEAT = 5_000  # passes over the recorded Bybit messages
TRADES_REPEAT = 5  # passes over the re-encoded Binance trades (35k trades take 0.1 s once)
TRADE_TARGET = 200_000  # trades/s on one core for the Bybit normalizer


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
    for frame in Tape(PATHS):
        if dump:
            frame.model_dump_json()
    return time.process_time() - started


def best_of(runs: int, bench) -> float:
    return min(bench() for _ in range(runs))


# --- Bybit ---------------------------------------------------------------------------------------------------

def binance_events(lines: list[bytes]) -> list[tuple[int, dict]]:
    """(receive ns, payload) of a Binance recording: combined-stream `data`, or the REST snapshot itself."""
    out = []
    for line in lines:
        head, _, raw = line.partition(b" ")
        msg = orjson.loads(raw)
        out.append((int(head), msg.get("data", msg)))
    return out


def binance_trades_as_bybit(files: list[list[bytes]]) -> list[list[tuple[int, bytes]]]:
    """Each file's Binance `trade` events as Bybit v5 `publicTrade` messages (receive ns, raw), one message per run
    of trades with the same trade time `T` (the message's receive time and `ts` those of its last trade). Binance
    `m` (buyer is maker) means the taker sold."""
    out = []
    for lines in files:
        groups: list[tuple[int, int, list[dict]]] = []  # (receive ns, ts, trades)
        last_price, tick = None, "ZeroPlusTick"
        for recv, d in binance_events(lines):
            if d.get("e") != "trade":
                continue
            price = float(d["p"])
            if last_price is not None and price != last_price:
                tick = "PlusTick" if price > last_price else "MinusTick"
            elif last_price is not None:
                tick = "ZeroPlusTick" if tick in ("PlusTick", "ZeroPlusTick") else "ZeroMinusTick"
            last_price = price
            trade = {"T": d["T"], "s": d["s"], "S": "Sell" if d["m"] else "Buy", "v": d["q"], "p": d["p"], "L": tick,
                     "i": str(d["t"]), "BT": False}
            if groups and groups[-1][2][0]["T"] == d["T"]:
                groups[-1] = (recv, max(groups[-1][1], d["E"]), groups[-1][2] + [trade])
            else:
                groups.append((recv, d["E"], [trade]))
        out.append([(recv, orjson.dumps({"topic": f"publicTrade.{trades[0]['s']}", "type": "snapshot", "ts": ts,
                                         "data": trades})) for recv, ts, trades in groups])
    return out


def _bybit_qty(q: str) -> str:
    return "0" if float(q) == 0 else q  # Bybit deletes a level with "0"


def binance_depth_as_bybit(files: list[list[bytes]]) -> list[list[tuple[int, bytes]]]:
    """Each file's Binance depth: its REST snapshot's top 50 levels as an `orderbook.50` snapshot, then every later
    depth diff as a delta with the next update id (all the diff's levels: more than the 50-level book Bybit keeps
    would send, so count levels/s)."""
    out = []
    for lines in files:
        messages: list[tuple[int, bytes]] = []
        snapshot_id = None
        symbol = recording_symbol(lines)
        topic = f"orderbook.50.{symbol}"
        u = 0
        for recv, d in binance_events(lines):
            if "lastUpdateId" in d:
                snapshot_id, u = d["lastUpdateId"], 1
                messages.append((recv, orjson.dumps({"topic": topic, "type": "snapshot", "ts": d["E"], "data": {
                    "s": symbol, "b": d["bids"][:50], "a": d["asks"][:50], "u": u, "seq": snapshot_id},
                    "cts": d["T"]})))
            elif d.get("e") == "depthUpdate" and snapshot_id is not None and d["u"] > snapshot_id:
                u += 1
                messages.append((recv, orjson.dumps({"topic": topic, "type": "delta", "ts": d["E"], "data": {
                    "s": symbol, "b": [[p, _bybit_qty(q)] for p, q in d["b"]],
                    "a": [[p, _bybit_qty(q)] for p, q in d["a"]], "u": u, "seq": d["u"]}, "cts": d["T"]})))
        out.append(messages)
    return out


def bybit_counts(streams: list[list[tuple[int, bytes]]], check_books: bool = False) -> tuple[int, int, int, int]:
    """Messages, frames, trades and book levels the normalizer gives (one normalizer per stream: a connection)."""
    messages = frames = trades = levels = 0
    for stream in streams:
        norm = BybitNormalizer(check_books)
        for recv_ns, raw in stream:
            out, _ = norm.on_message(raw, recv_ns)
            messages += 1
            frames += len(out)
            trades += sum(f.trades for f in out)
            for f in out:
                body = orjson.loads(f.json)
                levels += len(body["bids"]) + len(body["asks"])
    return messages, frames, trades, levels


def bench_bybit(streams: list[list[tuple[int, bytes]]], check_books: bool = False) -> float:
    started = time.process_time()
    for stream in streams:
        on_message = BybitNormalizer(check_books).on_message
        for recv_ns, raw in stream:
            on_message(raw, recv_ns)
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
        ("Tape", lambda: bench_tape(dump=False)),
        ("Tape + model_dump_json", lambda: bench_tape(dump=True)),
    ]
    for what, bench in cases:
        elapsed = min(bench() for _ in range(runs))
        print(f"{what:29} {elapsed:5.2f} s: {frames / elapsed:9,.0f} frames/s, {trades / elapsed:8,.0f} trades/s, "
              f"{levels / elapsed:10,.0f} levels/s")
    bybit(files, runs)


def bybit(files: list[list[bytes]], runs: int) -> None:
    print()
    print(f"Bybit v5: BybitNormalizer.on_message (raw bytes in, wire frames out; one normalizer per stream), "
          f"best of {runs} in CPU time, same core")
    recorded = [[(i, line) for i, line in enumerate(p.read_bytes().splitlines()) if line.strip()]
                for p in BYBIT_RECORDED]
    repeated = [stream * BYBIT_REPEAT for stream in recorded]
    trades_bybit = [stream * TRADES_REPEAT for stream in binance_trades_as_bybit(files)]  # stateless: repeatable
    depth_bybit = binance_depth_as_bybit(files)
    cases = [
        ((f"(a) recorded Bybit messages: the {sum(map(len, recorded))} real v5 messages of "
          f"{', '.join(p.name for p in BYBIT_RECORDED)}, repeated {BYBIT_REPEAT:,} times (too few to time once)"),
         repeated, False),
        ((f"(b) Binance's real trade tape (the bundled BTCUSDT and ETHUSDT trades) in Bybit's publicTrade message "
          f"format, one message per trade time T, {TRADES_REPEAT} passes"), trades_bybit, False),
        ("(c) the bundled Binance depth diffs as Bybit orderbook.50 deltas (live feed: check_books=False)",
         depth_bybit, False),
        ("(c') the same, books kept and checked as a tape replay does (check_books=True)", depth_bybit, True),
    ]
    for what, streams, check_books in cases:
        messages, frames, trades, levels = bybit_counts(streams, check_books)
        elapsed = best_of(runs, partial(bench_bybit, streams, check_books))
        print(what)
        print(f"    {messages:,} messages, {frames:,} frames, {trades:,} trades, {levels:,} book levels: "
              f"{elapsed:5.2f} s: {messages / elapsed:9,.0f} messages/s, {frames / elapsed:9,.0f} frames/s, "
              f"{trades / elapsed:9,.0f} trades/s, {levels / elapsed:10,.0f} levels/s")
        if streams is trades_bybit:
            verdict = "meets" if trades / elapsed >= TRADE_TARGET else "is under"
            print(f"    {verdict} the target of {TRADE_TARGET:,} trades/s on one core")


if __name__ == "__main__":
    main()
