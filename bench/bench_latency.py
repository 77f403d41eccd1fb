"""Issue 3 (c): tick-to-fill latency at fixed offered rates (default 1k and 7k events/s), paced in real time, on
each embedded broker of --brokers (default kafka,tansu: Apache Kafka, then Tansu), and a table of all of it.

For each broker and rate a fresh `papertape.app.runtime.Pipeline` (that embedded broker, recorder, worker) runs; the
source is a ReplaySource built here (as Pipeline.replay builds it) whose send() notes the wall time of every
md.events batch and the event times of its frames. The bundled tape (~490 frames/s of event time) is paced at
speed = rate / its event rate, looped (shifted in event time) when one pass is too short. A scripted session
(latency_ms=0, BTCUSDT only) places a market order every 200 ms of event time, sides alternating; EMA-cross
sessions run beside it.

Latency of a fill = wall time a plain aiokafka consumer of `fills` receives it - wall time the source sent the
first frame whose event time is >= fill.ts (fill.ts is the event time of the tick it filled on). The breakdown
measures the same way the arrival of md.events batches (source -> broker -> consumer) and of md.ticks (partition
0: source -> market agent -> consumer), and each Kafka record's timestamp tells when its agent produced it; the
consumers use fetch_max_wait_ms=10 (--no-breakdown: only the fills consumer, less load on the broker).
--coalesce-ms N is an experiment: event times rounded up so the paced source flushes at most once per N wall ms.

Run on demand: python bench/bench_latency.py [--brokers kafka,tansu] [--rates 1000,7000] [--seconds 45]
               [--sessions 2] [--timeline] [--no-breakdown] [--coalesce-ms N] [--take-ms 20,5] [--profile]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from per_broker import Figures, add_arguments, describe, run  # noqa: E402
from proc_stats import ProcStats  # noqa: E402
from pyspy import Profiler  # noqa: E402
from synthetic import MachineBusy, coalesced, ema_sessions, event_rate, load_tape, looped, percentile, summary_ms  # noqa: E402

from papertape.app.runtime import Pipeline  # noqa: E402
from papertape.config import Settings  # noqa: E402
from papertape.core.session.config import SessionConfig  # noqa: E402
from papertape.core.session.risk import RiskSettings  # noqa: E402
from schemas.topics import kafka_partition  # noqa: E402
from streams.sources.replay import ReplaySource  # noqa: E402

BATCH_ID = re.compile(rb'"id":"([^"]+)"')


class SendLog:
    """Wall time of each md.events batch sent, and the highest event time of its frames."""

    def __init__(self) -> None:
        self.max_ts: list[int] = []  # running maximum, in send order
        self.wall: list[float] = []
        self.by_id: dict[bytes, float] = {}

    def note(self, value: bytes) -> None:
        now = time.time()
        frames = orjson.loads(value)["frames"]
        if frames:
            self.by_id[BATCH_ID.search(value, 0, 200).group(1)] = now
            self.max_ts.append(max(self.max_ts[-1] if self.max_ts else 0, max(f["ts"] for f in frames)))
            self.wall.append(now)

    def sent_at(self, ts: int) -> float | None:
        """When the first frame with event time >= ts was sent."""
        i = bisect_left(self.max_ts, ts)
        return self.wall[i] if i < len(self.wall) else None


async def consume(bootstrap: str, partitions: list[TopicPartition], on_record, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest",
                                fetch_max_wait_ms=10, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        for tp in partitions:
            await consumer.position(tp)  # resolve "latest" now, before the replay starts
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=50)).values():
                now = time.time()
                for r in records:
                    on_record(r, now)
    finally:
        await consumer.stop()


def scripted(first_ts: int, event_s: float, every_ms: int = 200) -> SessionConfig:
    orders = [{"at": first_ts + k * every_ms, "symbol": "BTCUSDT", "side": ("buy", "sell")[k % 2], "qty": "0.001"}
              for k in range(1, int(event_s * 1000 / every_ms))]
    return SessionConfig(id="scripted", strategy="scripted", symbols=["BTCUSDT"], latency_ms=0,
                         params={"orders": orders}, risk=RiskSettings.off())  # every order is measured


def pcts_ms(values) -> list[float] | None:
    """p50, p99 and max of `values` (seconds), in ms; None without samples."""
    v = sorted(values)
    return [1000 * percentile(v, 50), 1000 * percentile(v, 99), 1000 * v[-1]] if v else None


def paced_frames(tape: list, seconds: float, speed: float, coalesce_ms: float) -> list:
    """The tape looped to `seconds` of wall time at `speed`, event times coalesced to `coalesce_ms` if asked."""
    frames = looped(tape, seconds * speed)
    if coalesce_ms:
        frames = coalesced(frames, max(1, round(coalesce_ms * speed)))
    return list(frames)


def start_consumers(boot: str, settings: Settings, stop: asyncio.Event, breakdown: bool,
                    fills: list[tuple[int, float, float]], md_events: list[tuple[bytes, float]],
                    ticks: list[tuple[int, float, float]]) -> list[asyncio.Task]:
    """Consumers of fills (and with `breakdown` of md.events and md.ticks[0]) noting what they receive, until
    `stop`."""
    tasks = [asyncio.create_task(consume(
        boot, [TopicPartition("fills", p) for p in range(settings.session_partitions)],
        lambda r, now: fills.append((orjson.loads(r.value)["ts"], r.timestamp / 1000, now)), stop))]
    if breakdown:
        tasks += [
            asyncio.create_task(consume(
                boot, [TopicPartition("md.events", p) for p in range(settings.md_partitions)],
                lambda r, now: md_events.append((BATCH_ID.search(r.value, 0, 200).group(1), now)), stop)),
            asyncio.create_task(consume(
                boot, [TopicPartition("md.ticks", 0)],
                lambda r, now: ticks.extend((t[1], r.timestamp / 1000, now)
                                            for t in orjson.loads(r.value)["ticks"]),
                stop)),
        ]
    return tasks


async def replay_noted(pipe: Pipeline, speed: float, frames: list, sends: SendLog):
    """The frames onto md.events, paced at `speed`, by a producer of the bench's that notes every batch in `sends`;
    (the replay's summary, when it started, its wall seconds to the producer's flush)."""
    producer = pipe.md_events_producer()
    await producer.start()

    async def send(topic, key, value, partition):
        sends.note(value)
        await producer.send(topic, value=value, key=key, partition=partition)

    started = time.time()
    summary = await ReplaySource([], send, pipe.settings.md_partitions, kafka_partition, speed=speed,
                                 frames=frames).run()
    await producer.flush()
    replayed = time.time() - started
    await producer.stop()
    return summary, started, replayed


def report_latency(fig: Figures, tag: str, sends: SendLog, fills: list[tuple[int, float, float]],
                   md_events: list[tuple[bytes, float]], ticks: list[tuple[int, float, float]], started: float,
                   replayed: float, breakdown: bool, timeline: bool) -> None:
    """Tick-to-fill and the hops of the breakdown, printed and added to the figures."""
    # (received, produced, sent by the source)
    fill_times = [(at, made, sent) for ts, made, at in fills if (sent := sends.sent_at(ts)) is not None]
    tick_times = [(at, made, sent) for ts, made, at in ticks if (sent := sends.sent_at(ts)) is not None]
    print(f"  tick-to-fill             {summary_ms(at - sent for at, _, sent in fill_times)}  fills {len(fill_times)}"
          f"  (target p99 <= 100 ms)")
    print("  breakdown, from the source's send of the frame to:")
    if breakdown:
        got = [at - sends.by_id[i] for i, at in md_events if i in sends.by_id]
        print(f"    md.events received     {summary_ms(got)}")
        print(f"    md.ticks produced      {summary_ms(made - sent for _, made, sent in tick_times)}  (market agent)")
        print(f"    md.ticks[0] received   {summary_ms(at - sent for at, _, sent in tick_times)}")
    print(f"    fill produced          {summary_ms(made - sent for _, made, sent in fill_times)}  (engine agent)")
    print(f"    fill received          (tick-to-fill above); after its production "
          f"{summary_ms(at - made for at, made, _ in fill_times)}")
    if timeline:
        print_timeline(fill_times, tick_times, started, replayed, breakdown)
    fig.add(f"{tag} tick-to-fill p50/p99/max ms", pcts_ms(at - sent for at, _, sent in fill_times),
            target=("<=", 100), target_text="p99 <= 100 ms", check_at=1)
    fig.add(f"{tag} fills measured", len(fill_times), "{:,}")
    if breakdown:
        fig.add(f"{tag} hop md.events received, ms", pcts_ms(got))
        fig.add(f"{tag} hop md.ticks produced, ms", pcts_ms(made - sent for _, made, sent in tick_times))
        fig.add(f"{tag} hop md.ticks[0] received, ms", pcts_ms(at - sent for at, _, sent in tick_times))
    fig.add(f"{tag} hop fill produced, ms", pcts_ms(made - sent for _, made, sent in fill_times))
    fig.add(f"{tag} hop fill produced->received, ms", pcts_ms(at - made for at, made, _ in fill_times))


def print_timeline(fills: list[tuple[float, float, float]], ticks: list[tuple[float, float, float]],
                   started: float, replayed: float, breakdown: bool) -> None:
    """Latencies per 5 s of sending; rows are (received, produced, sent)."""
    print("  timeline, per 5 s of sending: tick-to-fill p50/max ms" + (" | md.ticks produced p50/max ms"
                                                                     if breakdown else ""))
    for w in range(int(replayed // 5) + 1):
        cut = [sorted(at - sent for at, _, sent in rows if started + 5 * w <= sent < started + 5 * w + 5)
               for rows in ((fills, ticks) if breakdown else (fills,))]
        print(f"    {5 * w:>4}-{5 * w + 5:<4} s  " + "  |  ".join(
            f"{1000 * percentile(c, 50):7.0f} {1000 * c[-1]:7.0f}" if c else "      -       -" for c in cut))


def report_usage(fig: Figures, tag: str, usage: dict, machine: float, window: float) -> None:
    """CPU and memory of the machine and of each process over `window` seconds, printed and added to the figures."""
    mine = sum(u["cpu_s"] for u in usage.values()) / window / os.cpu_count()
    print(f"  machine busy {100 * machine:.0f}% of all {os.cpu_count()} cores (other processes' share "
          f"{100 * (machine - mine):.0f}%); per process (the supervisor's RSS includes the "
          f"bench's frames):")
    for name, u in usage.items():
        print(f"    {name:<44} cpu {100 * u['cpu_s'] / window:5.1f}% of one core"
              f"  max rss {u['rss_mb']:7.1f} MB", flush=True)
    fig.add(f"{tag} machine busy, % of all cores", 100 * machine, "{:.0f}")
    for name, u in usage.items():
        fig.add(f"{tag} cpu {name.split()[0]}, % of one core", 100 * u["cpu_s"] / window)
    for name, u in usage.items():
        fig.add(f"{tag} max rss {name.split()[0]}, MB", u["rss_mb"], "{:.0f}")


async def run_rate(broker: str, fig: Figures, rate: float, seconds: float, tape: list, n_ema: int, profile: bool,
                   keep: bool, timeline: bool, coalesce_ms: float, breakdown: bool, take_ms: float) -> None:
    speed = rate / event_rate(tape)
    frames = paced_frames(tape, seconds, speed, coalesce_ms)
    sessions = ema_sessions(n_ema) + [scripted(frames[0].ts, seconds * speed)]
    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-latency-{broker}-"))
    settings = Settings(data_dir=data_dir, sessions=sessions, speed=speed, broker=broker, take_within_ms=take_ms)
    pipe = Pipeline(settings, out=io.StringIO())
    stop = asyncio.Event()
    sends = SendLog()
    fills: list[tuple[int, float, float]] = []  # (event time, produced, received); wall clock, s
    md_events: list[tuple[bytes, float]] = []
    ticks: list[tuple[int, float, float]] = []
    try:
        await pipe.start()
        fig.broker = describe(pipe)
        await asyncio.sleep(3)  # the worker joins its group
        tasks = start_consumers(pipe.settings.kafka_bootstrap, settings, stop, breakdown, fills, md_events, ticks)
        await asyncio.sleep(1)  # the consumers have their positions
        pids = {"supervisor (source, recorder, relay, bench)": os.getpid(), "worker": pipe.worker.pid,
                "broker": pipe.broker.pids}
        stats, busy, stats_from = ProcStats(pids), MachineBusy(), time.time()
        profiler = Profiler({k: v for k, v in pids.items() if k != "broker"}, data_dir) if profile else None

        summary, started, replayed = await replay_noted(pipe, speed, frames, sends)
        await pipe.wait_finished(timeout=300, progress_every_s=0)
        lag = time.time() - started - replayed
        await asyncio.sleep(1)
        usage, machine, window = stats.since_start(), busy.since_start(), time.time() - stats_from
        stop.set()
        await asyncio.gather(*tasks)
        if profiler:
            profiler.stop()

        print(f"{fig.broker}: offered {rate:,.0f} events/s (speed {speed:.2f} x the tape): {summary.frames} frames in "
              f"{replayed:.1f} s = {summary.frames / replayed:,.0f} events/s sent, in {summary.batches} md.events "
              f"batches ({summary.batches / replayed:,.0f}/s, {len(sends.wall)} with frames); engines done {lag:.2f} s "
              f"after the source", flush=True)
        tag = f"(c) {rate / 1000:g}k/s, take {take_ms:g} ms"
        fig.add(f"{tag} events/s sent", summary.frames / replayed, "{:,.0f}")
        report_latency(fig, tag, sends, fills, md_events, ticks, started, replayed, breakdown, timeline)
        fig.add(f"{tag} engines done after the source, s", lag, "{:.2f}")
        report_usage(fig, tag, usage, machine, window)
    finally:
        stop.set()
        await pipe.stop()
        if keep or profile:
            print(f"  data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


async def measure(broker: str, args, rates: list[float]) -> Figures:
    fig = Figures()
    tape = load_tape()
    print(f"tape: {len(tape)} frames, {event_rate(tape):.0f} frames/s of event time; sessions: 1 scripted "
          f"(a BTCUSDT market order every 200 ms of event time) + {args.sessions} EMA-cross; broker: {broker}",
          flush=True)
    for take_ms in map(float, args.take_ms.split(",")):
        for rate in rates:
            await run_rate(broker, fig, rate, args.seconds, tape, args.sessions, args.profile, args.keep,
                           args.timeline, args.coalesce_ms, not args.no_breakdown, take_ms)
    return fig


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1000,7000", help="offered events/s, comma separated")
    ap.add_argument("--seconds", type=float, default=45, help="wall seconds of replay per rate")
    ap.add_argument("--sessions", type=int, default=2, help="EMA-cross sessions beside the scripted one")
    ap.add_argument("--coalesce-ms", type=float, default=0, help="experiment: round event times up so that the "
                    "paced source wakes (and flushes) at most once per this many wall ms")
    ap.add_argument("--no-breakdown", action="store_true", help="consume only fills: the md.events and md.ticks "
                    "consumers of the breakdown add fetches, and so load, to the broker")
    ap.add_argument("--timeline", action="store_true", help="latencies per 5 s of the run")
    ap.add_argument("--take-ms", default=str(Settings().take_within_ms), help="the agents' take_within_ms, comma "
                    "separated to compare several in one run (the first is the baseline)")
    ap.add_argument("--keep", action="store_true", help="keep the data directories (logs, ClickHouse)")
    ap.add_argument("--profile", action="store_true", help="py-spy the supervisor and the worker (implies --keep)")
    add_arguments(ap)
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    run(args, "bench_latency (c) tick-to-fill latency", lambda broker: measure(broker, args, rates))
