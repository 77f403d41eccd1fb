"""Issue 3 (a) and (b): the broker's own limit, then the whole pipeline on the bundled tape, in one run per broker
(--brokers, default kafka,tansu: the embedded Apache Kafka, then the embedded Tansu), and a table of both.

(a) aiokafka produces the tape's frames, one message each, to the embedded broker and consumes them back.
(b) `papertape run`'s pipeline (broker, worker, recorder into chdb, alert relay) replays the same tape at full
    speed with several sessions trading: market events (frames) per second from the first message sent
    until every engine partition has finished the tape and ClickHouse holds all of it.

Run on demand: python bench/bench_pipeline.py [--brokers kafka,tansu] [--sessions N] [--tape-seconds S]
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from per_broker import Figures, add_arguments, describe, run  # noqa: E402
from proc_stats import ProcStats  # noqa: E402
from pyspy import Profiler  # noqa: E402

from infra.broker import ensure_topics  # noqa: E402
from papertape.app.runtime import Pipeline  # noqa: E402
from papertape.config import BUNDLED_TAPE, Settings  # noqa: E402
from papertape.core.session.config import SessionConfig  # noqa: E402
from schemas.topics import kafka_partition  # noqa: E402
from streams.sources.replay import Tape  # noqa: E402


def sessions(n: int) -> list[SessionConfig]:
    """n EMA-cross sessions with different speeds, all trading both symbols."""
    out = []
    for i in range(n):
        fast, slow = 3 + i % 4, 8 + 2 * (i % 5)
        out.append(SessionConfig(id=f"ema-{i}", strategy="ema_cross",
                                 params={"fast": fast, "slow": slow, "bar_ms": 5_000 * (1 + i % 3),
                                         "full_confidence_bps": 1.0}))
    return out


async def broker_baseline(bootstrap: str, messages: list[tuple[bytes, bytes]], partitions: int = 4) -> dict:
    """(a): produce with aiokafka's batch API (its fastest), then consume everything with one consumer (the
    producer's connections and the partitions' leaders warmed up first, by one record per partition)."""
    topic = "bench.baseline"
    await ensure_topics(bootstrap, {topic: partitions})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20,
                                max_request_size=8 << 20)
    await producer.start()
    # one record per partition before the clock: connections, metadata and partition leaders are then ready
    await asyncio.gather(*[await producer.send(topic, b"warm-up", key=b"warm-up", partition=p)
                           for p in range(partitions)])
    started = time.perf_counter()
    batches: dict[int, object] = {}
    sent = []
    for key, value in messages:
        p = kafka_partition(key, partitions)
        batch = batches.get(p) or batches.setdefault(p, producer.create_batch())
        if batch.append(key=key, value=value, timestamp=None) is None:
            sent.append(await producer.send_batch(batch, topic, partition=p))
            batch = batches[p] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)
    for p, batch in batches.items():
        sent.append(await producer.send_batch(batch, topic, partition=p))
    await asyncio.gather(*sent)
    produce_s = time.perf_counter() - started
    await producer.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20)
    await consumer.start()
    started = time.perf_counter()
    got = 0
    while got < len(messages) + partitions:  # the warm-up records too
        for records in (await consumer.getmany(timeout_ms=1000, max_records=100_000)).values():
            got += len(records)
    consume_s = time.perf_counter() - started
    await consumer.stop()
    return {"produce_per_s": len(messages) / produce_s, "consume_per_s": len(messages) / consume_s}


# Where a process's busy samples go, by the first part whose marker is in the stack (--profile): the pure core
# apart from the machinery around it (Faust, aiokafka, decoding, outputs, checkpoints, the recorder, the source).
PARTS = (
    ("md.events validation (market actor)", ("decode_leniently",)),
    ("md.ticks decoding (engine)", ("decode (agents/engine.py",)),
    ("md.ticks encoding", ("_tick_batch_json",)),
    ("outputs: sends", ("agents/outputs.py",)),
    ("checkpoints", ("agents/checkpoint.py",)),
    ("pure core: market actor", ("papertape/core/market/partition.py",)),
    ("pure core: engine, sessions", ("papertape/core/",)),
    ("recorder: md.events rows", ("md_events_rows",)),
    ("recorder: other rows", ("message_rows",)),
    ("metrics writer", ("streams/sinks/metrics.py",)),
    ("recorder: insert (chdb)", ("_insert (streams/sinks/recorder.py", "encode_rows", "chdb")),
    ("source: tape, frames", ("streams/sources/", "streams/formats/", "streams/frames/")),
    ("aiokafka consumer", ("aiokafka/consumer",)),
    ("aiokafka producer", ("aiokafka/producer",)),
    ("aiokafka, other", ("aiokafka/",)),
    ("Faust, mode", ("faust/", "mode/")),
)


def breakdown(path: Path, name: str) -> str:
    """The busy samples of a py-spy raw profile by part (PARTS), most first."""
    shares: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or "select (selectors.py" in stack.rsplit(";", 1)[-1]:
            continue  # idle in the event loop
        shares[next((part for part, marks in PARTS if any(m in stack for m in marks)), "other")] += int(n)
    total = max(sum(shares.values()), 1)
    return "\n".join([f"  {name}, busy samples by part:"]
                     + [f"    {100 * n / total:5.1f}%  {part}" for part, n in shares.most_common()])


async def measure(broker: str, args) -> Figures:
    fig = Figures()
    limit_ms = None if args.tape_seconds is None else int(args.tape_seconds * 1000)
    messages, first_ts = [], None
    for f in Tape(BUNDLED_TAPE).wire_frames():
        first_ts = f.ts if first_ts is None else first_ts
        if limit_ms is not None and f.ts - first_ts >= limit_ms:
            break  # as Pipeline.replay's replay_seconds cuts the tape
        messages.append((f.symbol.encode(), f.json))
    n_events = len(messages)
    print(f"tape: {n_events} market events (frames: trades, book diffs, best bid/ask), "
          f"{sum(map(len, (v for _, v in messages))) / n_events:.0f} bytes each on average", flush=True)

    data_dir = Path(tempfile.mkdtemp(prefix=f"bench-pipeline-{broker}-"))
    settings = Settings(data_dir=data_dir, sessions=sessions(args.sessions), broker=broker,
                        replay_seconds=args.tape_seconds)
    log = io.StringIO()
    pipe = Pipeline(settings, out=log)
    keep = args.keep or args.profile
    try:
        await pipe.start()
        fig.broker = describe(pipe)
        print(f"broker: {fig.broker}", flush=True)
        a = await broker_baseline(pipe.settings.kafka_bootstrap, messages)
        del messages  # not to count them in the supervisor's memory
        print(f"(a) broker baseline, aiokafka on the {fig.broker}: produce {a['produce_per_s']:,.0f} msg/s,"
              f" consume {a['consume_per_s']:,.0f} msg/s", flush=True)
        fig.add("(a) produce, msg/s", a["produce_per_s"], "{:,.0f}")
        fig.add("(a) consume, msg/s", a["consume_per_s"], "{:,.0f}")

        await asyncio.sleep(3)  # the worker joins its group before the clock starts
        pids = {"supervisor (source, recorder, relay)": os.getpid(), "worker": pipe.worker.pid,
                "broker": pipe.broker.pids}
        stats = ProcStats(pids)
        profiler = Profiler({k: v for k, v in pids.items() if k != "broker"}, data_dir) if args.profile else None
        started = time.perf_counter()
        done = await pipe.replay(progress=False)
        replayed = time.perf_counter() - started
        await pipe.wait_finished(progress_every_s=0)
        elapsed = time.perf_counter() - started
        usage = stats.since_start()
        if profiler:
            profiler.stop()
            for name, path in profiler.files.items():
                if path.exists():
                    print(breakdown(path, name))
        rate = done["frames"] / elapsed
        print(f"(b) pipeline, {args.sessions} sessions, recorder on: {done['frames']} events in {elapsed:.2f} s = "
              f"{rate:,.0f} events/s end to end ({100 * rate / a['consume_per_s']:.1f}% of (a)'s consume rate); "
              f"the source finished sending after {replayed:.2f} s")
        fig.add("(b) events/s end to end", rate, "{:,.0f}", target=(">=", 50_000))
        fig.add("(b) events replayed", done["frames"], "{:,}")
        fig.add("(b) share of (a)'s consume rate, %", 100 * rate / a["consume_per_s"], target=(">=", 25))
        fig.add("(b) wall s: source done / all recorded", [replayed, elapsed], "{:.2f}")
        for name, u in usage.items():
            print(f"    {name:<38} cpu {u['cpu_s']:6.2f} s ({100 * u['cpu_s'] / elapsed:5.1f}% of one core)"
                  f"  max rss {u['rss_mb']:7.1f} MB")
        for name, u in usage.items():
            fig.add(f"(b) cpu {name.split()[0]}, % of one core", 100 * u["cpu_s"] / elapsed)
        for name, u in usage.items():
            fig.add(f"(b) max rss {name.split()[0]}, MB", u["rss_mb"])
        fills = pipe.query("SELECT count() AS n FROM fills")["rows"][0][0]
        rows = dict(pipe.recorder.rows_written)
        print(f"    fills {fills}; rows recorded: " + ", ".join(f"{k} {v}" for k, v in sorted(rows.items())),
              flush=True)
        fig.add("(b) fills (the same on every broker)", fills, "{:,}")
        fig.add("(b) rows recorded", sum(rows.values()), "{:,}")
    finally:
        await pipe.stop()
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            print(f"data kept in {data_dir}")
    return fig


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--tape-seconds", type=float, default=None, help="only the first N seconds of the tape's event "
                    "time, in (a) and (b) (default: all of it, ~345 s); for smoke runs")
    ap.add_argument("--keep", action="store_true", help="keep the data directory (logs, ClickHouse)")
    ap.add_argument("--profile", action="store_true", help="sample the processes with py-spy and print where "
                    "the CPU goes (implies --keep)")
    add_arguments(ap)
    args = ap.parse_args()
    run(args, "bench_pipeline (a) broker alone, (b) whole pipeline", lambda broker: measure(broker, args))
