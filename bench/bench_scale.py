"""Issue 3 (d): 700 symbols x 20 sessions at 7k events/s for 5 minutes: CPU and resident memory of each process
(the broker's included), machine-wide and per-core busy share (target: both cores under 70% busy), and whether it
keeps up; once per embedded broker of --brokers (default kafka,tansu: Apache Kafka, then Tansu), then a table.

`papertape.app.runtime.Pipeline` (that embedded broker, recorder into chdb, alert relay, worker) runs with 700 synthetic
instruments S001USDT.. (half BTC-like, tick 0.10 / lot 0.001, half ETH-like, tick 0.01 / lot 0.01) and 20
EMA-cross sessions, each trading 35 of them (every 20th symbol). The stream is the bundled tape re-labelled: its
frames in a cycle, each BTCUSDT frame given to the next BTC-like symbol in turn (ETHUSDT likewise), prices kept,
event times spaced 1/rate apart; Pipeline.replay(frames=...) paces it at speed 1, so events/s = rate.

CPU is measured from the first frame sent to the last (steady state); memory is the peak RSS over the whole run.
"Kept up" is the lag at the end: from the source's last frame to every engine partition reporting the end of
the tape (then to the recorder having all of it in ClickHouse), or, if that takes more than --catchup-timeout, the
pace the market agent kept. Every --every seconds a line shows the rate sent, the lag of md.ticks (market agent
output, partition 0) and the CPU of the interval.

`--load live` (issue 20 (4)) sends a live-like Bybit load instead (bench/live_load.py): the v5 WebSocket messages
of the universe (tickers for every symbol every ~150 ms, orderbook.1 and publicTrade in bursts, skewed by a Zipf
activity per symbol, orderbook.50 only for the symbols the sessions trade), with the rates of recorded Bybit
frames (--recording), through the live feed's BybitNormalizer into frames, as the live source does, and sent in
lumps every 50 ms of wall time, as the live feed releases them (the tape load: every 10 ms; --flush-ms sets it);
--rate is then what those rates give. Either load ends with the lag's trend over the second half of sending (the mean
lag of its first and last quarters, the slope): the issue 20 target is a lag that does not grow.

Run on demand: python bench/bench_scale.py [--brokers kafka,tansu] [--seconds 300] [--rate 7000] [--symbols 700]
               [--sessions 20] [--catchup-timeout 120] [--coalesce-ms N] [--flush-ms N] [--profile]
Issue 20's target: python bench/bench_scale.py --load live --seconds 600 --brokers kafka
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import sys
import tempfile
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from statistics import fmean

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from live_load import BURST, RECORDED, LiveLoad, load_recorded  # noqa: E402
from live_load import frames as live_frames  # noqa: E402
from per_broker import Figures, add_arguments, describe, run  # noqa: E402
from proc_stats import ProcStats, group_cpu_seconds  # noqa: E402
from pyspy import Profiler  # noqa: E402
from synthetic import MachineBusy, coalesced, ema_sessions, load_tape, relabelled, synthetic_instruments  # noqa: E402

from papertape.app.runtime import Pipeline  # noqa: E402
from papertape.config import Settings  # noqa: E402
from streams.bybit.ws import FLUSH_EVERY_S  # noqa: E402
from streams.frames.wire import WireFrame  # noqa: E402
from streams.sources.replay import PACED_FLUSH_S  # noqa: E402

WM = re.compile(rb'"wm":(\d+)')


def cpu_or_nan(pid: int | list[int]) -> float:
    try:
        return group_cpu_seconds(pid)
    except OSError:  # the process died (a worker that crashed is replaced by a new one)
        return float("nan")


class Sent:
    """Wall time at which the source took the frames of each event time (noted every 100 frames)."""

    def __init__(self, frames) -> None:
        self.frames, self.count, self.ts, self.wall = frames, 0, [], []

    def __iter__(self):
        for f in self.frames:
            if self.count % 100 == 0:
                self.ts.append(f.ts)
                self.wall.append(time.time())
            self.count += 1
            yield f

    def at(self, ts: int) -> float | None:
        i = bisect_left(self.ts, ts)
        return self.wall[i - 1] if i else None  # the sample just before ts: the lag is over-, never under-stated


async def watch_ticks(bootstrap: str, sent: Sent, lags: list[tuple[float, float]], stop: asyncio.Event) -> None:
    """Lag of md.ticks partition 0: now - when the source took the frames of the batch's watermark."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest",
                                fetch_max_wait_ms=100, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition("md.ticks", 0)
        consumer.assign([tp])
        await consumer.position(tp)
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=200)).values():
                m = WM.search(records[-1].value, 0, 300)
                at = sent.at(int(m.group(1))) if m else None
                if at is not None:
                    now = time.time()
                    lags.append((now, now - at))
    finally:
        await consumer.stop()


def generation_cost(frames: Iterable, n: int = 20_000, skip: int = 0) -> float:
    """CPU seconds it costs the supervisor to make one frame of `frames` (`n` of them, after the first `skip`);
    CPU, not wall time: the machine is shared."""
    frames = iter(frames)
    for _ in islice(frames, skip):
        pass
    started_gen = time.process_time()
    made = sum(1 for _ in islice(frames, n))
    return (time.process_time() - started_gen) / max(made, 1)


@dataclass
class LagTrend:
    """The md.ticks lag over the second half of sending: bounded, or growing (the source outruns the pipeline)."""

    first: float  # mean lag of the second half's first quarter, s
    last: float  # ... of its last quarter
    slope: float  # least-squares slope over the second half, s of lag per s
    samples: int

    @property
    def grew(self) -> bool:
        """More than half a second and half again of the first quarter's lag, and rising."""
        return self.slope > 0 and self.last - self.first > max(0.5, 0.5 * self.first)

    def text(self) -> str:
        if self.samples < 8:
            return f"lag trend over the second half: too few samples ({self.samples})"
        return (f"lag over the second half: {self.first:.2f} s in its first quarter, {self.last:.2f} s in its last, "
                f"slope {60 * self.slope:+.3f} s per minute: {'GREW' if self.grew else 'bounded'}")


def lag_trend(lags: list[tuple[float, float]], start: float, end: float) -> LagTrend:
    """The trend of the (wall time, lag) samples between the middle of [start, end] and its end."""
    mid, quarter = (start + end) / 2, (end - start) / 4
    half = [(t, lag) for t, lag in lags if mid <= t <= end]
    if len(half) < 8:
        return LagTrend(float("nan"), float("nan"), float("nan"), len(half))
    first = [lag for t, lag in half if t < mid + quarter / 2]
    last = [lag for t, lag in half if t >= end - quarter / 2]
    mt, ml = fmean(t for t, _ in half), fmean(lag for _, lag in half)
    var = sum((t - mt) ** 2 for t, _ in half)
    slope = sum((t - mt) * (lag - ml) for t, lag in half) / var if var else 0.0
    return LagTrend(fmean(first) if first else ml, fmean(last) if last else ml, slope, len(half))


async def progress_lines(every: float, stats: ProcStats, pids: dict, sent: Sent, lags: list[tuple[float, float]],
                         started: float) -> None:
    """Every `every` seconds, a line with the rate sent, the md.ticks lag and the CPU of the interval."""
    last_n, last_t, last_cpu, last_busy = 0, time.perf_counter(), dict(stats.cpu0), MachineBusy()
    while True:
        await asyncio.sleep(every)
        now, cpu = time.perf_counter(), {k: cpu_or_nan(p) for k, p in pids.items()}
        dt = now - last_t
        print(f"  {now - started:5.0f} s  sent {(sent.count - last_n) / dt:7,.0f} events/s  md.ticks lag "
              f"{lags[-1][1] if lags else float('nan'):6.2f} s  machine {100 * last_busy.since_start():3.0f}%  "
              + "  ".join(f"{k.split()[0]} {100 * (cpu[k] - last_cpu[k]) / dt:3.0f}%" for k in pids),
              flush=True)
        last_n, last_t, last_cpu, last_busy = sent.count, now, cpu, MachineBusy()


def market_pace(lags: list[tuple[float, float]], rate: float, replayed: float) -> float:
    """The market agent's pace over the second half of the run, from how fast its lag grew (0 without samples)."""
    half = [lag for lag in lags if lag[0] >= time.time() - replayed / 2]
    return rate * (1 - (half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0])) if len(half) > 1 else 0


async def catch_up(pipe: Pipeline, partitions: int, started: float, replayed: float,
                   timeout: float) -> tuple[float | None, float | None]:
    """Seconds from the source's last frame to every engine partition done, then to the recorder having all of
    it; (None, None) if the engines are not done within `timeout`."""
    while time.perf_counter() - started - replayed < timeout:
        if len(pipe.finish.partitions) == partitions:
            engines_lag = time.perf_counter() - started - replayed
            await pipe.recorder.wait_caught_up(timeout=timeout)
            return engines_lag, time.perf_counter() - started - replayed
        await asyncio.sleep(0.1)
    return None, None


def final_usage(stats: ProcStats, pids: dict) -> dict:
    """Each process's usage; only the peak RSS if one of them is gone."""
    try:
        return stats.since_start()
    except OSError:
        return {k: {"rss_mb": stats.peak[k]} for k in pids}


@dataclass
class Outcome:
    """What one run measured."""

    frames: int
    batches: int
    replayed: float  # wall seconds of sending
    engines_lag: float | None  # from the source's last frame to every engine partition done; None: not in time
    recorder_lag: float | None  # ... to the recorder having all of it
    lag_at_end: float  # md.ticks lag at the end of sending
    pace: float  # the market agent's events/s over the second half
    machine: float  # busy share of all cores while sending
    cores: dict[str, float]  # busy share of each core while sending
    cpu: dict[str, float]  # cpu seconds of each process while sending
    usage: dict[str, dict]  # each process's peak RSS (rss_mb)
    worker_restarts: int
    rows: dict[str, int]  # rows recorded per table
    trend: LagTrend  # the md.ticks lag over the second half of sending
    offered: float  # events/s the load offers

    @property
    def mine(self) -> float:
        """The pipeline's processes' share of all cores while sending."""
        return sum(self.cpu.values()) / self.replayed / os.cpu_count()


def print_outcome(o: Outcome, args, partitions_done: int, partitions: int, data_dir: Path) -> None:
    print(f"sent {o.frames:,} frames in {o.replayed:.1f} s = {o.frames / o.replayed:,.0f} events/s "
          f"(offered {o.offered:,.0f}), in {o.batches:,} md.events batches "
          f"({o.batches / o.replayed:,.0f}/s)")
    if o.engines_lag is not None:
        print(f"kept up? engines done {o.engines_lag:.2f} s after the source's last frame, recorder "
              f"{o.recorder_lag:.2f} s; md.ticks lag at the end of sending {o.lag_at_end:.2f} s")
    else:
        print(f"kept up? NO: {partitions_done}/{partitions} engine partitions done "
              f"{args.catchup_timeout:.0f} s after the source's last frame; md.ticks lag at the end of sending "
              f"{o.lag_at_end:.1f} s; the market agent kept a pace of ~{o.pace:,.0f} events/s over the second half")
    print(o.trend.text())
    print(f"machine busy while sending: {100 * o.machine:.0f}% of all {os.cpu_count()} cores (target < 70%; "
          + ", ".join(f"{c} {100 * b:.0f}%" for c, b in o.cores.items())
          + f"); other processes' share {100 * (o.machine - o.mine):.0f}%")
    for name, u in o.usage.items():
        print(f"  {name:<38} cpu {100 * o.cpu[name] / o.replayed:5.1f}% of one core  max rss {u['rss_mb']:7.1f} MB")
    if o.worker_restarts:
        print(f"  THE WORKER DIED {o.worker_restarts} time(s) and was restarted: see {data_dir}/worker-*.log")
    print("  rows recorded: " + ", ".join(f"{k} {v}" for k, v in sorted(o.rows.items())), flush=True)


def add_figures(fig: Figures, o: Outcome) -> None:
    fig.add(f"(d) events/s sent (offered {o.offered:,.0f})", o.frames / o.replayed, "{:,.0f}")
    fig.add("(d) md.events batches/s", o.batches / o.replayed, "{:,.0f}")
    fig.add("(d) kept up (engines done within --catchup-timeout)", "yes" if o.engines_lag is not None else "NO",
            target_text="yes", met=o.engines_lag is not None)
    fig.add("(d) engines / recorder done after the last frame, s", [o.engines_lag, o.recorder_lag], "{:.2f}")
    fig.add("(d) md.ticks lag at the end of sending, s", o.lag_at_end, "{:.2f}")
    fig.add("(d) lag, 2nd half: first / last quarter, s", [o.trend.first, o.trend.last], "{:.2f}")
    fig.add("(d) lag grew over the 2nd half", "YES" if o.trend.grew else "no", target_text="no", met=not o.trend.grew)
    if o.engines_lag is None:
        fig.add("(d) market agent's pace, 2nd half, events/s", o.pace, "{:,.0f}")
    fig.add("(d) machine busy while sending, % of all cores", 100 * o.machine, "{:.0f}", target=("<", 70))
    for c, b in o.cores.items():
        fig.add(f"(d) {c} busy while sending, %", 100 * b, "{:.0f}", target=("<", 70))
    fig.add("(d) of which this pipeline's processes, % of all cores", 100 * o.mine, "{:.0f}")
    fig.add("(d) of which other processes, % of all cores", 100 * (o.machine - o.mine), "{:.0f}")
    for name in o.cpu:  # the processes in the order of the pids
        fig.add(f"(d) cpu {name.split()[0]}, % of one core", 100 * o.cpu[name] / o.replayed)
    for name, u in o.usage.items():
        fig.add(f"(d) max rss {name.split()[0]}, MB", u["rss_mb"], "{:.0f}", target=("<", 1024))
    fig.add("(d) worker restarts", o.worker_restarts, "{:d}", target=("==", 0))
    fig.add("(d) rows recorded", sum(o.rows.values()), "{:,}")


def tape_load(args, groups) -> tuple[Iterator[WireFrame], float]:
    """The bundled tape re-labelled at --rate: the frames and the events/s they offer."""
    tape = load_tape(args.tape_frames)
    count = int(args.rate * args.seconds)
    gen_cost = generation_cost(relabelled(tape, groups, args.rate, 20_000, tape[0].ts))
    print(f"load: the tape re-labelled, {args.rate:,.0f} events/s for {args.seconds:.0f} s ({count:,} frames from "
          f"{len(tape):,} tape frames; making them costs the supervisor {gen_cost * 1e6:.1f} us each = "
          f"{100 * gen_cost * args.rate:.1f}% of a core)", flush=True)
    frames = relabelled(tape, groups, args.rate, count, tape[0].ts)
    if args.coalesce_ms:
        frames = coalesced(frames, max(1, round(args.coalesce_ms)))
    return frames, args.rate


def live_like_load(args, instruments, deep: set[str]) -> tuple[Iterator[WireFrame], float]:
    """Bybit v5 messages at the recorded rates through BybitNormalizer: the frames and the events/s they offer."""
    rec = load_recorded(Path(args.recording))
    print(f"load: live-like Bybit v5 messages, rates measured in {args.recording}:\n    " + "\n    ".join(rec.lines()))

    def load() -> LiveLoad:
        return LiveLoad(instruments, deep, rec, seed=args.seed, zipf=args.zipf, burst=args.burst)

    snapshots = 2 * len(instruments) + len(deep)  # a ticker and an orderbook.1 each, a depth book for the deep
    gen_cost = generation_cost(live_frames(load().messages(60)), skip=snapshots)
    msg_cost = generation_cost(load().messages(60), skip=snapshots)
    live = load()
    rates = live.expected_rates()
    offered = sum(rates.values())
    print(f"    over {len(instruments)} symbols (activity of rank r: r^-{args.zipf:g}; {len(deep)} with depth): "
          + ", ".join(f"{k} {v:,.0f}/s" for k, v in rates.items()) + f"; {offered:,.0f} messages/s for "
          f"{args.seconds:.0f} s, a frame each (after the snapshots); book and trade messages in bursts of "
          f"{args.burst:g} on average (assumed: the recording is too short to tell)")
    print(f"    a frame after the snapshots costs the supervisor {gen_cost * 1e6:.1f} us ({msg_cost * 1e6:.1f} us to "
          f"make the message, the rest the normalizer, which live runs too) = {100 * gen_cost * offered:.1f}% of a "
          "core", flush=True)
    return live_frames(live.messages(args.seconds)), offered


async def measure(broker: str, args) -> Figures:
    fig = Figures()
    instruments, groups = synthetic_instruments(args.symbols)
    names = [i.symbol for i in instruments]
    per = args.symbols_per_session
    traded = [names[i::args.sessions][:per] if per else names for i in range(args.sessions)]
    sessions = ema_sessions(args.sessions, traded if per else None)
    print(f"{args.symbols} symbols, {args.sessions} EMA-cross sessions x {per or 'all'} symbols", flush=True)
    if args.load == "live":
        frames, offered = live_like_load(args, instruments, {s for symbols in traded for s in symbols})
    else:
        frames, offered = tape_load(args, groups)
    flush_ms = args.flush_ms or 1000 * (FLUSH_EVERY_S if args.load == "live" else PACED_FLUSH_S)
    print(f"the source sends what it has every {flush_ms:g} ms of wall time"
          + (" (as the live Bybit feed releases its frames)" if args.load == "live" and not args.flush_ms else ""),
          flush=True)

    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-scale-{broker}-"))
    settings = Settings(data_dir=data_dir, instruments=instruments, sessions=sessions, speed=1.0, broker=broker)
    pipe = Pipeline(settings, out=io.StringIO())
    stop = asyncio.Event()
    try:
        await pipe.start()
        fig.broker = describe(pipe)
        print(f"broker: {fig.broker}", flush=True)
        await asyncio.sleep(3)  # the worker joins its group
        pids = {"supervisor (source, recorder, relay)": os.getpid(), "worker": pipe.worker.pid,
                "broker": pipe.broker.pids}
        sent = Sent(frames)
        lags: list[tuple[float, float]] = []  # (wall time, md.ticks lag)
        watcher = asyncio.create_task(watch_ticks(pipe.settings.kafka_bootstrap, sent, lags, stop))
        await asyncio.sleep(1)
        stats, busy = ProcStats(pids), MachineBusy()
        profiler = Profiler({k: v for k, v in pids.items() if k != "broker"}, data_dir) if args.profile else None

        started, started_wall = time.perf_counter(), time.time()
        reporter = asyncio.create_task(progress_lines(args.every, stats, pids, sent, lags, started))
        done = await pipe.replay(progress=False, frames=sent, flush_every_s=flush_ms / 1000)
        replayed = time.perf_counter() - started
        reporter.cancel()
        cpu = {k: cpu_or_nan(p) - stats.cpu0[k] for k, p in pids.items()}
        machine, cores = busy.since_start(), busy.cores_since_start()
        lag_at_end = lags[-1][1] if lags else float("nan")
        pace = market_pace(lags, offered, replayed)
        trend = lag_trend(lags, started_wall, started_wall + replayed)
        engines_lag, recorder_lag = await catch_up(pipe, settings.session_partitions, started, replayed,
                                                   args.catchup_timeout)
        usage = final_usage(stats, pids)
        stop.set()
        await watcher
        if profiler:
            profiler.stop()

        outcome = Outcome(done["frames"], done["batches"], replayed, engines_lag, recorder_lag, lag_at_end, pace,
                          machine, cores, cpu, usage, pipe.workers_started - 1, dict(pipe.recorder.rows_written),
                          trend, offered)
        if outcome.worker_restarts:
            args.keep = True
        print_outcome(outcome, args, len(pipe.finish.partitions), settings.session_partitions, data_dir)
        add_figures(fig, outcome)
    finally:
        stop.set()
        await pipe.stop()
        if args.keep or args.profile:
            print(f"data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return fig


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--load", choices=("tape", "live"), default="tape", help="tape: the bundled tape re-labelled at "
                    "--rate; live: live-like Bybit v5 messages at recorded rates (bench/live_load.py)")
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--rate", type=float, default=7000, help="offered events/s (--load tape)")
    ap.add_argument("--recording", default=str(RECORDED), help="--load live: the recorded Bybit v5 messages whose "
                    "rates it follows (one per line, or a papertape Bybit tape)")
    ap.add_argument("--zipf", type=float, default=1.0, help="--load live: activity of the symbol of rank r is r^-zipf")
    ap.add_argument("--seed", type=int, default=0, help="--load live: the generator's seed")
    ap.add_argument("--burst", type=float, default=BURST, help="--load live: mean messages per burst of a book or "
                    "trade topic")
    ap.add_argument("--flush-ms", type=float, default=0, help="the source's flush interval (default: the live feed's "
                    f"{1000 * FLUSH_EVERY_S:g} ms with --load live, else the replay's {1000 * PACED_FLUSH_S:g} ms)")
    ap.add_argument("--symbols", type=int, default=700)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--symbols-per-session", type=int, default=35, help="0: every symbol")
    ap.add_argument("--tape-frames", type=int, default=30_000, help="frames of the tape cycled through")
    ap.add_argument("--every", type=float, default=30, help="seconds between progress lines")
    ap.add_argument("--coalesce-ms", type=float, default=0, help="experiment: round event times up to a multiple "
                    "of this many ms, so the paced source wakes (and flushes) at most once per that")
    ap.add_argument("--catchup-timeout", type=float, default=120, help="seconds to wait for the engines to finish "
                    "after the source's last frame")
    ap.add_argument("--keep", action="store_true", help="keep the data directory (logs, ClickHouse)")
    ap.add_argument("--profile", action="store_true", help="py-spy the supervisor and the worker (implies --keep)")
    add_arguments(ap)
    args = ap.parse_args()
    run(args, "bench_scale (d) symbols x sessions at a paced rate", lambda broker: measure(broker, args))
