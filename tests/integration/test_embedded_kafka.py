"""Embedded Apache Kafka (KRaft): durability across a SIGKILL, and a 3-node cluster
that keeps taking acks=all writes while a node is down.

Real JVMs, no mocks. The first run on a machine resolves the Kafka jars with Maven.
"""

import asyncio
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra import kafka as kafka_mod
from infra.kafka import EmbeddedKafka, java_available, unavailable_reason

pytestmark = pytest.mark.skipif(
    not java_available(), reason=f"embedded Kafka cannot run here: {unavailable_reason()}"
)


async def _create_topic(bootstrap: str, topic: str, partitions: int, rf: int) -> dict[int, int]:
    """Create the topic; return {partition: leader} once every partition has a leader."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resp = await admin.create_topics([NewTopic(topic, partitions, rf)], timeout_ms=30000)
        assert all(code == 0 for _, code, *_ in resp.topic_errors), resp.topic_errors
        for _ in range(100):
            (desc,) = await admin.describe_topics([topic])
            parts = desc.get("partitions") or []
            leaders = {p["partition"]: p["leader"] for p in parts}
            if len(leaders) == partitions and all(v >= 0 for v in leaders.values()):
                assert all(len(p["replicas"]) == rf for p in parts)
                return leaders
            await asyncio.sleep(0.1)
        raise AssertionError(f"{topic} has no leader for every partition: {desc}")
    finally:
        await admin.close()


async def _isr_sizes(bootstrap: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (desc,) = await admin.describe_topics([topic])
        return {p["partition"]: len(p["isr"]) for p in desc["partitions"]}
    finally:
        await admin.close()


async def _consume_all(bootstrap: str, topic: str, partitions: int, timeout: float = 60.0):
    """Every record of the topic, as {partition: [value, ...]} in offset order."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=200)
    await c.start()
    try:
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        end = await c.end_offsets(tps)
        got = {tp.partition: [] for tp in tps}
        next_offset = {tp: 0 for tp in tps}
        deadline = time.monotonic() + timeout
        while any(next_offset[tp] < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"consumed up to {next_offset}, end {end}"
            for tp, records in (await c.getmany(timeout_ms=500)).items():
                got[tp.partition].extend(r.value.decode() for r in records)
                next_offset[tp] = records[-1].offset + 1
        return got
    finally:
        await c.stop()


def test_classpath_cache_needs_no_maven(monkeypatch):
    kafka_mod.kafka_classpath()  # resolves once if this machine has no cache yet
    real_run, real_which = subprocess.run, kafka_mod.shutil.which

    def no_maven(cmd, *a, **kw):
        assert "mvn" not in cmd[0], f"Maven called with a valid cache: {cmd}"
        return real_run(cmd, *a, **kw)

    monkeypatch.setattr(kafka_mod.subprocess, "run", no_maven)
    monkeypatch.setattr(kafka_mod.shutil, "which", lambda name: None if name == "mvn" else real_which(name))
    cp = kafka_mod.kafka_classpath()
    assert any(Path(j).name.startswith("kafka_2.13-") for j in cp.split(":"))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_single_node_survives_sigkill(tmp_path):
    topic = f"durable-{uuid.uuid4().hex[:8]}"
    n = 1000
    with EmbeddedKafka(tmp_path / "kafka", nodes=1) as k:
        bootstrap = k.bootstrap

        async def produce():
            await _create_topic(k.bootstrap, topic, 1, 1)
            p = AIOKafkaProducer(bootstrap_servers=k.bootstrap, acks="all", linger_ms=5)
            await p.start()
            try:
                futs = [await p.send(topic, b"%d" % i) for i in range(n)]
                metas = await asyncio.gather(*futs)
            finally:
                await p.stop()
            assert [m.offset for m in metas] == list(range(n))

        asyncio.run(produce())
        pid = k.nodes[0].proc.pid
        k.kill(0)
        assert not k.running and not Path(f"/proc/{pid}").exists()
        k.start_node(0)
        assert k.running and k.bootstrap == bootstrap  # same address after the restart
        got = asyncio.run(_consume_all(k.bootstrap, topic, 1))
        assert got[0] == [str(i) for i in range(n)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_three_nodes_keep_producing_through_a_node_kill(tmp_path):
    topic = f"replicated-{uuid.uuid4().hex[:8]}"
    partitions, n, kill_at = 3, 3000, 1000
    with EmbeddedKafka(tmp_path / "kafka", nodes=3) as k:
        leaders = asyncio.run(_create_topic(k.bootstrap, topic, partitions, 3))
        victim = leaders[0]  # lead partition 0, so the kill forces a leader election

        async def produce():
            # idempotence: retries across the failover neither duplicate nor reorder
            p = AIOKafkaProducer(
                bootstrap_servers=k.bootstrap, acks="all", enable_idempotence=True,
                linger_ms=5, request_timeout_ms=60000,
            )
            await p.start()
            try:
                pending, t_kill, t_resumed = [], None, None
                for i in range(n):
                    if i == kill_at:
                        await asyncio.gather(*pending)
                        pending.clear()
                        k.kill(victim)
                        t_kill = time.monotonic()
                    part = i % partitions
                    pending.append(await p.send(topic, f"{part}:{i // partitions}".encode(), partition=part))
                    if len(pending) >= 200:
                        await asyncio.gather(*pending)
                        pending.clear()
                        if t_kill is not None and t_resumed is None:
                            t_resumed = time.monotonic()
                await asyncio.gather(*pending)
                return t_resumed - t_kill
            finally:
                await p.stop()

        stall = asyncio.run(produce())
        assert not k.node_running(victim)
        print(f"acks=all writes resumed {stall:.1f}s after SIGKILL of node {victim}")

        got = asyncio.run(_consume_all(k.bootstrap, topic, partitions))
        per_part = n // partitions
        for part in range(partitions):  # exactly once, in order, per partition
            assert got[part] == [f"{part}:{j}" for j in range(per_part)], f"partition {part}"

        k.start_node(victim)
        assert k.running
        deadline = time.monotonic() + 60
        while (isr := asyncio.run(_isr_sizes(k.bootstrap, topic))) != {p: 3 for p in range(partitions)}:
            assert time.monotonic() < deadline, f"node {victim} did not rejoin the ISRs: {isr}"
            time.sleep(0.5)
