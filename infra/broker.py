"""What every broker needs: topics created, the group coordinator up, child processes that die with us."""

from __future__ import annotations

import asyncio
import ctypes
import signal
import socket
import time
from collections.abc import Collection

from aiokafka import AIOKafkaClient
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

_PR_SET_PDEATHSIG = 1


def free_ports(n: int, avoid: Collection[int] = ()) -> list[int]:
    """`n` distinct loopback ports free now, none of `avoid`."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:  # hold every socket until all are picked: no duplicates
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            if (p := s.getsockname()[1]) not in avoid:
                ports.append(p)
    finally:
        for s in socks:
            s.close()
    return ports


def die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


# consumers in a group (worker aside): a dead member's partitions move on after 6 s
GROUP_SESSION = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


async def ensure_topics(
    bootstrap: str, topics: dict[str, int], *, timeout: float = 30.0, config: dict[str, str] | None = None
) -> int:
    """Create topics with the given partition counts (and topic `config`); existing ones are fine. Returns the
    replication factor new topics get: 3, or every broker of a smaller cluster (Faust's tables take the same).

    Returns once metadata shows every requested partition with a leader. Raises ValueError if a
    topic already exists with another partition count: Tansu auto-creates any topic
    a client merely looks up, with 4 partitions, so call this before clients start.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        replication = min(3, len((await admin.describe_cluster())["brokers"]))
        existing = set(await admin.list_topics())
        new = [NewTopic(t, n, replication, topic_configs=config or {}) for t, n in topics.items() if t not in existing]
        if new:
            resp = await admin.create_topics(new, timeout_ms=int(timeout * 1000))
            for topic, code, *msg in resp.topic_errors:
                if code not in (0, TopicAlreadyExistsError.errno):  # lost a race: fine
                    raise for_code(code)(f"creating {topic}: {msg}")
        deadline = time.monotonic() + timeout
        while True:
            described = [d for d in await admin.describe_topics(list(topics)) if d.get("error_code", 0) == 0]
            have = {d["topic"]: len(d.get("partitions") or []) for d in described}
            # a partition without a leader yet (a new topic on Kafka) is not ready: clients would log and retry
            led = {d["topic"]: sum(p.get("leader", -1) >= 0 for p in d.get("partitions") or []) for d in described}
            wrong = {t: (have.get(t, 0), n) for t, n in topics.items() if t in existing and have.get(t, 0) != n}
            if wrong:
                raise ValueError(f"topics exist with other partition counts (have, want): {wrong}")
            missing = {t: (led.get(t, 0), n) for t, n in topics.items() if led.get(t, 0) < n}
            if not missing:
                return replication
            if time.monotonic() > deadline:
                raise KafkaError(f"topics not ready after {timeout}s (partitions with a leader, wanted): {missing}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def wait_group_coordinator(bootstrap: str, timeout: float = 30.0) -> None:
    """Until the cluster can coordinate consumer groups. A new Kafka cluster creates its offsets topic on the first
    group lookup; clients that join meanwhile log errors and retry."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, client_id="papertape-probe")
    await client.bootstrap()
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await client.coordinator_lookup(0, "papertape-probe")  # 0: a group coordinator
                return
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await client.close()
