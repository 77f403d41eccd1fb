"""Recorder throughput into embedded ClickHouse (chdb) on the bundled tape (issue 3 f: >= 300k rows/s).

Run on demand: python bench/bench_recorder.py [--runs N]

The tape's md.events messages are built as ReplaySource sends them (MarketBatches) and produced to an embedded
Tansu broker. Then, each the best of N runs:
  decode      messages -> rows, no insert (the recorder's path; schemas.decode, the full schema, for comparison)
  insert      prebuilt rows -> ClickHouse: encode_rows (Python) + raw_insert (ClickHouse parses and writes)
  end to end  a Recorder consumes every message into a fresh chdb directory, timed from its partition
              assignment until every row is written; CPU of this process (recorder + chdb) and of the broker.
Rows are md_trades + md_quotes rows. The machine may be shared: the load average is printed first.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaProducer  # noqa: E402

from infra.broker import ensure_topics  # noqa: E402
from infra.clickhouse import connect, migrate  # noqa: E402
from infra.tansu import EmbeddedTansu  # noqa: E402
from papertape.config import BUNDLED_TAPE  # noqa: E402
from schemas import decode, partition_counts  # noqa: E402
from streams.sinks.recorder import Recorder  # noqa: E402
from streams.sinks.rows import COLUMNS, INSERT_FORMAT, encode_rows, message_rows  # noqa: E402
from streams.sources.replay import ReplaySource  # noqa: E402

MD_PARTITIONS = 4


async def tape_messages() -> list[tuple[int, bytes]]:
    """(partition, value) of every md.events message ReplaySource sends for the bundled tape at full speed."""
    messages = []

    async def send(topic: str, key: bytes | None, value: bytes, partition: int | None) -> None:
        messages.append((partition, value))

    await ReplaySource(BUNDLED_TAPE, send, MD_PARTITIONS).run()
    return messages


async def produce(bootstrap: str, messages: list[tuple[int, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5,
                                max_batch_size=1 << 20, max_request_size=4 << 20)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send("md.events", value, partition=p) for p, value in messages])
    finally:
        await producer.stop()


def table_rows(values: list[bytes]) -> dict[str, list[tuple]]:
    rows: dict[str, list[tuple]] = defaultdict(list)
    for value in values:
        for table, table_rows in message_rows("md.events", value)[0].items():
            rows[table] += table_rows
    return rows


def best_of(runs: int, fn) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def bench_decode(values: list[bytes], n_rows: int, runs: int) -> None:
    def recorder_path() -> None:
        for value in values:
            message_rows("md.events", value)

    def full_schema() -> None:
        for value in values:
            decode("md.events", value)

    for name, fn in (("recorder (message_rows)", recorder_path), ("schemas.decode only", full_schema)):
        s = best_of(runs, fn)
        print(f"decode      {name:26} {s:6.2f} s  {n_rows / s:9,.0f} rows/s  {len(values) / s:7,.0f} msg/s")


def bench_insert(rows: dict[str, list[tuple]], n_rows: int, runs: int, chunk: int = 10_000) -> None:
    """Rows in chunks of `chunk` (about what one fetch brings) into a fresh directory's tables."""
    chunks = [(t, r[i:i + chunk]) for t, r in rows.items() for i in range(0, len(r), chunk)]
    encode_s = best_of(runs, lambda: [encode_rows(t, c) for t, c in chunks])
    encoded = [(t, encode_rows(t, c)) for t, c in chunks]
    data_dir = Path(tempfile.mkdtemp(prefix="bench-recorder-insert-"))
    client = connect(None, data_dir)
    try:
        migrate(client)

        def insert() -> None:
            for table in rows:
                client.command(f"TRUNCATE TABLE {table}")
            for table, data in encoded:
                client.raw_insert(table, COLUMNS[table], data, fmt=INSERT_FORMAT)

        insert_s = best_of(runs, insert)
    finally:
        client.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"insert      {'encode_rows (Python)':26} {encode_s:6.2f} s  {n_rows / encode_s:9,.0f} rows/s")
    print(f"insert      {'raw_insert (ClickHouse)':26} {insert_s:6.2f} s  {n_rows / insert_s:9,.0f} rows/s")
    both = encode_s + insert_s
    print(f"insert      {'both':26} {both:6.2f} s  {n_rows / both:9,.0f} rows/s")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def end_to_end(broker: EmbeddedTansu, run: int, expected: dict[str, int], n_messages: int) -> float:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-recorder-"))
    client = connect(None, data_dir)
    n_rows = sum(expected.values())
    try:
        migrate(client)
        recorder = Recorder(broker.bootstrap, client, group_id=f"bench-{run}")
        await recorder.start()
        try:
            while not await recorder.lag():  # the group join (seconds with Tansu) is not timed
                await asyncio.sleep(0.005)
            started, cpu0, broker0 = time.perf_counter(), own_cpu_s(), cpu_s(broker.proc.pid)
            while sum(recorder.rows_written.values()) < n_rows:
                await asyncio.sleep(0.002)
            elapsed = time.perf_counter() - started
            cpu, broker_cpu = own_cpu_s() - cpu0, cpu_s(broker.proc.pid) - broker0
            await recorder.wait_caught_up(60)
        finally:
            await recorder.stop()
        counts = {t: client.query(f"SELECT count() FROM {t.removesuffix('_log')}").result_rows[0][0] for t in expected}
        assert counts == expected and recorder.invalid == recorder.invalid_frames == 0, (counts, expected)
    finally:
        client.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"end to end  run {run}: {elapsed:6.2f} s  {n_rows / elapsed:9,.0f} rows/s  "
          f"{n_messages / elapsed:7,.0f} msg/s  cpu: recorder process {cpu:.2f} s "
          f"({100 * cpu / elapsed:.0f}% of one core), broker {broker_cpu:.2f} s; {recorder.batches} writes")
    return elapsed


async def main(runs: int) -> None:
    print(f"os.cpu_count() = {os.cpu_count()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"Python {sys.version.split()[0]}")
    messages = await tape_messages()
    values = [v for _, v in messages]
    rows = table_rows(values)
    expected = {t: len(r) for t, r in rows.items()}
    n_rows = sum(expected.values())
    print(f"tape: {len(messages):,} md.events messages (MarketBatch), {sum(map(len, values)) / 1e6:.1f} MB, "
          f"{n_rows:,} rows ({', '.join(f'{t} {n:,}' for t, n in expected.items())}); best of {runs}")
    bench_decode(values, n_rows, runs)
    bench_insert(rows, n_rows, runs)
    del rows

    with tempfile.TemporaryDirectory(prefix="bench-recorder-") as tmp, \
            EmbeddedTansu(Path(tmp) / "tansu.log") as broker:
        await ensure_topics(broker.bootstrap, partition_counts(MD_PARTITIONS, 4))
        await produce(broker.bootstrap, messages)
        best = min([await end_to_end(broker, run, expected, len(messages)) for run in range(1, runs + 1)])
    print(f"end to end  best: {n_rows / best:,.0f} rows/s, {len(messages) / best:,.0f} msg/s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    asyncio.run(main(ap.parse_args().runs))
