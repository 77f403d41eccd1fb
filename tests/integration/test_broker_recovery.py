"""Embedded Tansu broker, its ListOffsets bug, and exact Faust table recovery on it.

Everything runs against the real embedded broker (no mocks); the recovery tests run
tests/faust_recovery_app.py as worker subprocesses.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from builders import ROOT
from infra import tansu
from infra.broker import ensure_topics
from infra.tansu import EmbeddedTansu

APP_SCRIPT = ROOT / "tests" / "faust_recovery_app.py"


@pytest.fixture(scope="module")
def tansu_broker(tmp_path_factory):
    with EmbeddedTansu(tmp_path_factory.mktemp("tansu") / "broker.log") as b:
        yield b


def _wait_for(pred, timeout: float, what: str, logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (v := pred()) is not None:
            return v
        time.sleep(0.05)
    tails = "\n".join(f"--- {p}:\n" + "\n".join(p.read_text().splitlines()[-30:]) for p in logs)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")


def _alive(pid: int) -> bool:
    try:  # a zombie (state Z) waiting for a reaper counts as dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def _partition_counts(bootstrap: str, topics) -> dict:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await c.start()
    try:
        return {t: len(c.partitions_for_topic(t) or ()) for t in topics}
    finally:
        await asyncio.sleep(0)  # aiokafka: stop() right after start() raises CancelledError
        await c.stop()


@pytest.mark.timeout(30)
def test_broker_lifecycle(tmp_path):
    b = EmbeddedTansu(tmp_path / "b.log")
    pid = b.proc.pid
    try:
        assert b.bootstrap.startswith("127.0.0.1:")
        want = {"one": 1, "three": 3, "many": 64}
        asyncio.run(ensure_topics(b.bootstrap, want))
        asyncio.run(ensure_topics(b.bootstrap, {"one": 1, "three": 3}))  # idempotent
        assert asyncio.run(_partition_counts(b.bootstrap, want)) == want
        with pytest.raises(ValueError):
            asyncio.run(ensure_topics(b.bootstrap, {"three": 4}))
    finally:
        b.stop()
    assert not b.running
    assert not Path(f"/proc/{pid}").exists()  # gone and reaped


@pytest.mark.timeout(30)
def test_broker_dies_with_parent(tmp_path):
    code = (
        f"import sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
        "from infra.tansu import EmbeddedTansu\n"
        f"b = EmbeddedTansu({str(tmp_path / 'b.log')!r}); print(b.proc.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert _alive(pid)
    finally:
        parent.kill()
        parent.wait()
    _wait_for(lambda: None if _alive(pid) else True, 5, "the orphaned broker to die")


@pytest.mark.timeout(30)
def test_list_offsets_bug_and_fix(tansu_broker):
    """Tansu answers ListOffsets(latest) with (base offset of last batch) + 1."""
    topic = f"lo-{uuid.uuid4().hex[:8]}"
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)

    async def run():
        await ensure_topics(tansu_broker.bootstrap, {topic: 2})
        producer = AIOKafkaProducer(bootstrap_servers=tansu_broker.bootstrap)
        await producer.start()
        try:
            batch = producer.create_batch()  # one batch, 10 records -> p0
            for i in range(10):
                batch.append(key=None, value=b"%d" % i, timestamp=None)
            await (await producer.send_batch(batch, topic, partition=0))
            await producer.send_and_wait(topic, b"x", partition=1)  # one-record batch
        finally:
            await producer.stop()

        c = AIOKafkaConsumer(bootstrap_servers=tansu_broker.bootstrap, fetch_max_wait_ms=100)
        await c.start()
        try:
            listed = await c.end_offsets([p0, p1])
            c.assign([p0, p1])
            await c.seek_to_beginning(p0, p1)
            await c.getmany(timeout_ms=2000)
            fetched = {tp: c.highwater(tp) for tp in (p0, p1)}

            verified = await tansu.verified_end_offsets(
                listed, bootstrap_servers=tansu_broker.bootstrap
            )

            # The patched Faust driver method, on a real aiokafka consumer.
            saved = dict(tansu._state)  # apply() is process-global
            tansu.apply(tansu=True)
            try:
                app = faust.App("hw-probe", broker=f"kafka://{tansu_broker.bootstrap}")
                thread = SimpleNamespace(
                    app=app,
                    transport=app.transport,
                    consumer=SimpleNamespace(in_transaction=False),
                    _ensure_consumer=lambda: c,
                )
                patched = await AIOKafkaConsumerThread._highwaters(thread, [p0, p1])
            finally:
                tansu._state.update(saved)
            return listed, fetched, verified, patched
        finally:
            await c.stop()

    listed, fetched, verified, patched = asyncio.run(run())
    assert fetched == {p0: 10, p1: 1}  # Fetch's high watermark is right
    assert listed == {p0: 1, p1: 1}  # ListOffsets is wrong for the multi-record batch
    assert verified == fetched
    assert patched == fetched


# ---------------------------------------------------------------- recovery

N_EVENTS = 20
WRITES_PER_EVENT = 5
EXPECTED = N_EVENTS * WRITES_PER_EVENT


def _read_status(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


async def _send(bootstrap: str, topic: str, values) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await p.start()
    try:
        for v in values:
            await p.send_and_wait(topic, json.dumps(v).encode())
    finally:
        await p.stop()


async def _progress(bootstrap: str, group: str, input_tp, changelog_tp):
    """(committed input offset, ListOffsets changelog end, fetch-verified changelog end)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()  # no subscribe(): this never joins the worker's group
    try:
        committed = await c.committed(input_tp)
        listed = await c.end_offsets([changelog_tp])
        true = await tansu.verified_end_offsets(listed, bootstrap_servers=bootstrap)
        return committed, listed[changelog_tp], true[changelog_tp]
    finally:
        await c.stop()


def _start_worker(env: dict, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, str(APP_SCRIPT), "worker", "-l", "info"],
            env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "sig, fix",
    [(signal.SIGTERM, True), (signal.SIGKILL, True), (signal.SIGTERM, False)],
    ids=["sigterm-fixed", "sigkill-fixed", "sigterm-unpatched"],
)
def test_table_recovery_after_restart(tansu_broker, tmp_path, sig, fix):
    app_id = f"rec-{uuid.uuid4().hex[:8]}"
    input_topic, changelog = f"{app_id}-input", f"{app_id}-counter-changelog"
    input_tp, changelog_tp = TopicPartition(input_topic, 0), TopicPartition(changelog, 0)
    bs = tansu_broker.bootstrap
    asyncio.run(ensure_topics(bs, {input_topic: 1, changelog: 1}))
    status = tmp_path / "status.json"
    env = dict(
        os.environ, KAFKA_BOOTSTRAP=bs, APP_ID=app_id, STATUS_FILE=str(status),
        TANSU_FIX="1" if fix else "0", DATADIR=str(tmp_path / "data1"),
        WRITES_PER_EVENT=str(WRITES_PER_EVENT),
    )
    logs = [tmp_path / "worker1.log", tmp_path / "worker2.log"]

    w1 = _start_worker(env, logs[0])
    w2 = None
    try:
        asyncio.run(_send(bs, input_topic, ["inc"] * N_EVENTS))
        before = _wait_for(
            lambda: s if (s := _read_status(status)) and s["total"] == EXPECTED else None,
            40, f"worker 1 to count to {EXPECTED}", logs[:1],
        )["total"]
        # Everything must be durable before the kill: the changelog fully written
        # and the input offsets committed (else at-least-once replays would recount).
        def durable():
            committed, listed, true = asyncio.run(_progress(bs, app_id, input_tp, changelog_tp))
            return (listed, true) if (committed, true) == (N_EVENTS, EXPECTED) else None

        listed, true = _wait_for(durable, 15, "committed offsets and a full changelog", logs[:1])
        assert listed < true, "the last changelog batch should hold several records"
        _stop(w1, sig)

        env["DATADIR"] = str(tmp_path / "data2")  # fresh local state
        t0 = time.monotonic()
        w2 = _start_worker(env, logs[1])
        asyncio.run(_send(bs, input_topic, ["probe"]))
        after = _wait_for(
            lambda: s if (s := _read_status(status)) and s["pid"] == w2.pid else None,
            60, "worker 2 to answer the probe", logs,
        )
        print(f"worker 2 recovered in {time.monotonic() - t0:.1f}s: {after['total']} "
              f"(before {before}, changelog ListOffsets end {listed}, true end {true})")
        if fix:
            assert after["total"] == before
        else:
            # Stock Faust stops reading the changelog at Tansu's wrong end offset.
            assert after["total"] < before
    finally:
        _stop(w1, signal.SIGKILL)
        if w2 is not None:
            _stop(w2)
