"""Issue 3 (e): the pure core alone (books, matching, accounting), in one process on one core: events/s.

The bundled tape is cut into md.events MarketBatches exactly as the replay source sends them at full speed, and
decoded, before the clock starts. Then, timed separately:
  (i)   market: MarketPartition.on_message + flush() of every batch, in send order (books -> TickBatches);
  (ii)  engine: Engine.on_ticks of every TickBatch (i) produced, on every engine partition, as the worker lays the
        sessions out (settings.session_partition): EMA-cross sessions plus a scripted one that places market
        orders and resting limit orders on BTCUSDT, so matching and accounting run;
  (iii) both chained, batch by batch, as the worker does.
An event is a market frame (one tick). No Kafka, no JSON on the clock: decoding md.events is timed apart (iv),
for context. --profile adds a cProfile of (iii), top functions by own time. --compare-pure runs it all again in a
subprocess on the pure-Python core (PAPERTAPE_PURE_PYTHON=1) and prints both side by side, with the compiled core's
status (papertape/native.py).

Each part runs --repeat times from fresh state; the best time is reported (the machine may be shared).

Run on demand: python bench/bench_core.py [--sessions N] [--engine-partitions N] [--repeat N] [--profile]
                                          [--compare-pure]
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synthetic import ema_sessions, load_tape  # noqa: E402

import schemas as s  # noqa: E402
from papertape import native  # noqa: E402
from papertape.config import Settings  # noqa: E402
from papertape.core.engine import Engine, symbols_traded  # noqa: E402
from papertape.core.market.partition import MarketPartition, Route  # noqa: E402
from papertape.core.session.config import SessionConfig  # noqa: E402
from papertape.core.session.risk import RiskSettings  # noqa: E402
from schemas.topics import kafka_partition  # noqa: E402
from streams.sources.replay import ReplaySource  # noqa: E402

MD_PARTITIONS = 4


def md_messages(frames) -> list[tuple[int, bytes]]:
    """(partition, value) of every md.events message the source sends for `frames` at full speed."""
    sent: list[tuple[int, bytes]] = []

    async def send(topic, key, value, partition):
        sent.append((partition, value))

    asyncio.run(ReplaySource([], send, MD_PARTITIONS, kafka_partition, frames=frames).run())
    return sent


def scripted_session(frames) -> SessionConfig:
    """Every 0.5 s of event time a BTCUSDT market order, every 2 s a limit order 2 USDT away from the last trade
    (buy below, sell above), sides alternating: they rest, then fill when trades print through them."""
    orders, next_market, next_limit, n = [], 0, 0, 0
    for f in frames:
        if f.symbol != "BTCUSDT" or not f.trades:
            continue
        if f.ts >= next_market:
            next_market = f.ts + 500
            orders.append({"at": f.ts, "symbol": "BTCUSDT", "side": ("buy", "sell")[n % 2], "qty": "0.001"})
        if f.ts >= next_limit:
            next_limit = f.ts + 2000
            side = ("buy", "sell")[n % 2]
            price = Decimal(f.trades[-1].price) + (-2 if side == "buy" else 2)
            orders.append({"at": f.ts, "symbol": "BTCUSDT", "side": side, "qty": "0.002", "type": "limit",
                           "price": str(price)})
        n += 1
    return SessionConfig(id="scripted", strategy="scripted", params={"orders": orders},
                         risk=RiskSettings.off())  # every order reaches the venue: this measures matching


def new_market(sessions: list[SessionConfig], partitions: int) -> list[MarketPartition]:
    """Each engine partition gets the ticks of its sessions' symbols, as the worker lays them out."""
    settings = Settings(sessions=sessions, session_partitions=partitions)
    instruments = settings.instrument_map()
    interest = [symbols_traded([c for c in sessions if settings.session_partition(c.id) == e], instruments)
                for e in range(partitions)]
    return [MarketPartition(p, instruments, MD_PARTITIONS, None, [set(x) for x in interest])
            for p in range(MD_PARTITIONS)]


def new_engines(sessions: list[SessionConfig], partitions: int) -> list[Engine]:
    settings = Settings(sessions=sessions, session_partitions=partitions)
    instruments = settings.instrument_map()
    return [Engine(p, MD_PARTITIONS, instruments, [c for c in sessions if settings.session_partition(c.id) == p])
            for p in range(partitions)]


def run_market(mps, batches) -> list[Route]:
    routes, offsets = [], [0] * MD_PARTITIONS
    for p, batch in batches:
        mps[p].on_message(batch, offsets[p])
        offsets[p] += 1
        routes += mps[p].flush()[0]
    return routes


def run_engines(engines, routes: list[Route]) -> Counter:
    out: Counter = Counter()
    for partitions, tick_batches in routes:
        for tb in tick_batches:
            for e in partitions:
                for m in engines[e].on_ticks(tb):
                    out[m.kind] += 1
    return out


def chained(mps, engines, batches) -> Iterator[s.Message]:
    """Everything the market and engine workers send for `batches`, in order: each market partition's marks and
    alerts, its tick batches, each followed by what the engine partitions it goes to send for it."""
    offsets = [0] * MD_PARTITIONS
    for p, batch in batches:
        mps[p].on_message(batch, offsets[p])
        offsets[p] += 1
        routes, marks_and_alerts = mps[p].flush()
        yield from marks_and_alerts
        for partitions, tick_batches in routes:
            for tb in tick_batches:
                yield tb
                for e in partitions:
                    yield from engines[e].on_ticks(tb)


def run_chained(mps, engines, batches) -> Counter:
    return Counter(m.kind for m in chained(mps, engines, batches))


def timed(fn, *args, repeat: int = 1):
    """fn's result and its best time of `repeat` runs (the machine may be shared: the best run is the least
    disturbed one). Arguments that hold state are factories, called afresh for each run."""
    best = float("inf")
    for _ in range(repeat):
        fresh = [a() if callable(a) else a for a in args]
        gc.collect()
        started = time.perf_counter()
        result = fn(*fresh)
        best = min(best, time.perf_counter() - started)
    return result, best


def main(n_sessions: int, engine_partitions: int, repeat: int, profile: bool) -> dict[str, float]:
    """Prints the figures; returns events/s of (i), (ii), (iii)."""
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; one process, one thread; "
          f"{native.status()}")
    wire = load_tape()
    messages = md_messages(wire)
    batches, decode_s = timed(lambda: [(p, s.decode("md.events", v)) for p, v in messages])  # once
    n = sum(len(b.frames) for _, b in batches)
    sessions = ema_sessions(n_sessions) + [scripted_session(f for _, b in batches for f in b.frames)]

    def engines() -> list[Engine]:
        return new_engines(sessions, engine_partitions)

    def market() -> list[MarketPartition]:
        return new_market(sessions, engine_partitions)

    layout = ", ".join(str(len(e.sessions)) for e in engines())
    gc.freeze()  # the tape held in memory is the bench's, not the core's: keep it out of the collector's scans
    print(f"tape: {n} frames in {len(batches)} md.events batches; {n_sessions} EMA-cross sessions + 1 scripted "
          f"({len(sessions[-1].params['orders'])} orders) on {engine_partitions} engine partitions "
          f"(sessions per partition: {layout})")

    tick_batches, market_s = timed(run_market, market, batches, repeat=repeat)
    print(f"(i)   market (books -> ticks):     {n / market_s:>10,.0f} events/s  ({market_s:.2f} s, "
          f"{sum(len(b) for _, b in tick_batches)} tick batches)")
    out, engine_s = timed(run_engines, engines, tick_batches, repeat=repeat)
    print(f"(ii)  engine (sessions, matching):  {n / engine_s:>10,.0f} events/s  ({engine_s:.2f} s; "
          f"{sum(len(t.ticks) * len(e) for e, b in tick_batches for t in b) / engine_s:,.0f} ticks/s counting "
          f"every partition's copy)")
    print("      outputs: " + ", ".join(f"{k} {v}" for k, v in sorted(out.items())))
    out2, chained_s = timed(run_chained, market, engines, batches, repeat=repeat)
    print(f"(iii) chained:                      {n / chained_s:>10,.0f} events/s  ({chained_s:.2f} s)  "
          f"fills {out2['fill']}  (target >= 500,000 events/s)")
    assert out2["fill"] > 0, "no fills: matching and accounting did not run"
    print(f"(iv)  for context, decoding md.events (pydantic, not core): {n / decode_s:,.0f} frames/s")

    if profile:
        prof = cProfile.Profile()
        prof.runcall(run_chained, market(), engines(), batches)
        stats = pstats.Stats(prof)
        total = stats.total_tt
        print(f"cProfile of (iii) ({total:.2f} s under the profiler), top 10 by own time:")
        rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:10]
        for (file, line, fn), (cc, nc, tt, ct, _) in rows:
            where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
            print(f"  {100 * tt / total:5.1f}% own  {100 * ct / total:5.1f}% incl  {nc:>9} calls  {fn}  ({where})")
    return {"market": n / market_s, "engine": n / engine_s, "chained": n / chained_s}


def pure_python_figures(argv: list[str]) -> dict[str, float]:
    """This bench with the same arguments in a subprocess on the pure-Python core: its events/s."""
    env = dict(os.environ, **{native.PURE_ENV: "1"})
    out = subprocess.run([sys.executable, __file__, *argv, "--figures-json"], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def side_by_side(compiled: dict[str, float], pure: dict[str, float]) -> None:
    print(f"\ncompiled vs pure Python (PAPERTAPE_PURE_PYTHON=1, a subprocess), events/s:  [{native.status()}]")
    print(f"{'':10} {'compiled':>12} {'pure Python':>12} {'speed-up':>9}")
    for part in ("market", "engine", "chained"):
        print(f"{part:10} {compiled[part]:>12,.0f} {pure[part]:>12,.0f} {compiled[part] / pure[part]:>8.2f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=4, help="EMA-cross sessions (plus one scripted)")
    ap.add_argument("--engine-partitions", type=int, default=Settings().session_partitions)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each part; the best is reported")
    ap.add_argument("--profile", action="store_true", help="cProfile the chained run")
    ap.add_argument("--compare-pure", action="store_true",
                    help="also run on the pure-Python core (a subprocess) and print both side by side")
    ap.add_argument("--figures-json", action="store_true", help=argparse.SUPPRESS)  # --compare-pure's subprocess
    args = ap.parse_args()
    figures = main(args.sessions, args.engine_partitions, args.repeat, args.profile)
    if args.figures_json:
        print(json.dumps(figures))
    if args.compare_pure:
        side_by_side(figures, pure_python_figures(
            [f"--sessions={args.sessions}", f"--engine-partitions={args.engine_partitions}",
             f"--repeat={args.repeat}"]))
