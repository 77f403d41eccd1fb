"""Issue 20 (1): cost follows interest. CPU per market event of the pure core (the market actor and every engine
partition) as symbols and sessions grow, each engine partition getting the ticks of its sessions' symbols
("interest", papertape since issue 20) beside every engine partition getting every tick ("broadcast", before), in the
same run.

N synthetic instruments (bench/synthetic.synthetic_instruments) take the bundled tape's frames in turn
(bench/synthetic.relabelled); S EMA-cross sessions on 4 engine partitions, laid out as the worker lays them, session i
trading the symbols j with j % S == i (each symbol traded by one session), or symbol i % N when S > N. The md.events
messages are decoded before the clock starts, as in bench_core.py; the clock covers MarketPartition.on_message +
flush and Engine.on_ticks of every batch routed to each engine partition. Best of --repeat runs.

Run on demand: python bench/bench_interest.py [--symbols 1,10,100,700] [--sessions 1,20,100] [--frames 100000]
               [--repeat 1]
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_core import MD_PARTITIONS, md_messages  # noqa: E402
from synthetic import ema_sessions, load_tape, relabelled, synthetic_instruments  # noqa: E402

import schemas as s  # noqa: E402
from papertape import native  # noqa: E402
from papertape.config import Settings  # noqa: E402
from papertape.core.engine import Engine, symbols_traded  # noqa: E402
from papertape.core.market.partition import MarketPartition  # noqa: E402

ENGINE_PARTITIONS = 4


def layout(n_symbols: int, n_sessions: int, symbols: list[str]) -> list[list[str]]:
    return [[sym for j, sym in enumerate(symbols) if j % n_sessions == i] or [symbols[i % n_symbols]]
            for i in range(n_sessions)]


def run(batches, settings: Settings, broadcast: bool) -> tuple[float, int, int]:
    """(CPU seconds, ticks delivered to engine partitions, fills)."""
    instruments = settings.instrument_map()
    mine = [[c for c in settings.sessions if settings.session_partition(c.id) == e] for e in range(ENGINE_PARTITIONS)]
    interest = [set(instruments) if broadcast else symbols_traded(c, instruments) for c in mine]
    markets = [MarketPartition(p, instruments, MD_PARTITIONS, None, [set(x) for x in interest])
               for p in range(MD_PARTITIONS)]
    engines = [Engine(e, MD_PARTITIONS, instruments, c) for e, c in enumerate(mine)]
    offsets = [0] * MD_PARTITIONS
    delivered = fills = 0
    gc.collect()
    started = time.process_time()
    for p, batch in batches:
        markets[p].on_message(batch, offsets[p])
        offsets[p] += 1
        for partitions, tick_batches in markets[p].flush()[0]:
            for tb in tick_batches:
                for e in partitions:
                    delivered += len(tb.ticks)
                    fills += sum(m.kind == "fill" for m in engines[e].on_ticks(tb))
    return time.process_time() - started, delivered, fills


def cell(tape, n_symbols: int, n_sessions: int, frames: int, repeat: int) -> dict[str, float]:
    instruments, groups = synthetic_instruments(max(n_symbols, 2))
    instruments = instruments[:n_symbols]
    groups = {k: [x for x in v if x in {i.symbol for i in instruments}] or [instruments[0].symbol]
              for k, v in groups.items()}
    symbols = [i.symbol for i in instruments]
    sessions = ema_sessions(n_sessions, layout(n_symbols, n_sessions, symbols))
    settings = Settings(instruments=instruments, sessions=sessions, session_partitions=ENGINE_PARTITIONS)
    wire = list(relabelled(tape, groups, 1000.0, frames, tape[0].ts))
    batches = [(p, s.decode("md.events", v)) for p, v in md_messages(wire)]
    figures: dict[str, float] = {}
    for mode in ("interest", "broadcast"):
        best = min((run(batches, settings, mode == "broadcast") for _ in range(repeat)), key=lambda r: r[0])
        cpu, delivered, fills = best
        figures[mode] = cpu / frames * 1e6
        figures[mode + "_ticks"] = delivered / frames
        figures[mode + "_fills"] = fills
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--symbols", default="1,10,100,700")
    ap.add_argument("--sessions", default="1,20,100")
    ap.add_argument("--frames", type=int, default=100_000, help="market events per cell")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; one process; {native.status()}")
    print(f"{args.frames:,} events per cell, {ENGINE_PARTITIONS} engine partitions, {MD_PARTITIONS} market "
          f"partitions; CPU per market event (us), best of {args.repeat}")
    tape = load_tape()
    print(f"{'symbols':>7} {'sessions':>8} | {'interest':>9} {'broadcast':>9} {'ratio':>6} | "
          f"{'ticks/event to engines':>22} | fills")
    for n_symbols in map(int, args.symbols.split(",")):
        for n_sessions in map(int, args.sessions.split(",")):
            f = cell(tape, n_symbols, n_sessions, args.frames, args.repeat)
            assert f["interest_fills"] == f["broadcast_fills"], "the two layouts must trade alike"
            print(f"{n_symbols:>7} {n_sessions:>8} | {f['interest']:>9.1f} {f['broadcast']:>9.1f} "
                  f"{f['broadcast'] / f['interest']:>5.1f}x | {f['interest_ticks']:>9.2f} vs "
                  f"{f['broadcast_ticks']:>9.2f} | {f['interest_fills']:.0f}", flush=True)


if __name__ == "__main__":
    main()
