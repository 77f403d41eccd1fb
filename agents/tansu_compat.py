"""Faust settings and patches that make Faust correct and fast on the Tansu 0.6 broker.

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
  right after Faust builds it (aiokafka reads it only in ``start()``).
* Group joins take about half the session timeout: :func:`faust_settings` uses 6 s.
* Generations start at 0, and aiokafka sends LeaveGroup only for generation > 0, so
  a cleanly stopped first member stayed in the group and the next worker waited a
  session timeout plus a failed SyncGroup (~11 s instead of ~3 s).
* Idempotent/transactional producers fail: ``at_least_once`` keeps them off.

Real Kafka needs none of the patches: call ``apply(tansu=False)`` (or nothing) there.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

import aiokafka
from aiokafka import TopicPartition

log = logging.getLogger(__name__)

#: ~100 ms is the sweet spot on Tansu: 20 ms made the broker spin.
FETCH_MAX_WAIT_MS = 100

_state: dict[str, Any] = {"installed": False, "tansu": False, "fetch_max_wait_ms": None}


def faust_settings(**overrides: Any) -> dict[str, Any]:
    """``faust.App`` kwargs for a low-latency, fast-starting worker on Tansu."""
    settings: dict[str, Any] = dict(
        processing_guarantee="at_least_once",  # exactly_once needs a transactional producer
        broker_session_timeout=6.0,  # group joins take ~session_timeout/2 on Tansu
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=10.0,
        broker_commit_interval=0.5,  # less replay after a crash; commits are cheap
        producer_linger=0.0,
    )
    settings.update(overrides)
    return settings


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


def _install() -> None:
    from faust.transport.drivers import aiokafka as drv

    thread_cls = drv.AIOKafkaConsumerThread
    orig_create = thread_cls._create_worker_consumer
    orig_highwaters = thread_cls._highwaters

    def _create_worker_consumer(self, transport):  # type: ignore[no-untyped-def]
        consumer = orig_create(self, transport)
        if _state["fetch_max_wait_ms"] is not None:
            consumer._fetch_max_wait_ms = _state["fetch_max_wait_ms"]
        return consumer

    async def _highwaters(self, partitions):  # type: ignore[no-untyped-def]
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

    thread_cls._create_worker_consumer = _create_worker_consumer
    thread_cls._highwaters = _highwaters

    from aiokafka.consumer.group_coordinator import GroupCoordinator

    orig_leave = GroupCoordinator._maybe_leave_group

    async def _maybe_leave_group(self):  # type: ignore[no-untyped-def]
        # aiokafka only sends LeaveGroup when generation > 0 (Kafka numbers them
        # from 1); Tansu starts at 0. LeaveGroup carries no generation, so lifting
        # 0 to 1 just unblocks the guard.
        if _state["tansu"] and self.generation == 0:
            self.generation = 1
        await orig_leave(self)

    GroupCoordinator._maybe_leave_group = _maybe_leave_group


def apply(tansu: bool, *, fetch_max_wait_ms: int | None = None) -> None:
    """Install the patches (once per process) and select their behaviour.

    ``tansu=True`` when the broker is Tansu (e.g. we started the embedded one):
    enables the end-offset fix, LeaveGroup at generation 0 and, unless
    ``fetch_max_wait_ms`` says otherwise, a 100 ms worker fetch wait.
    ``tansu=False`` restores stock Faust/aiokafka behaviour (``fetch_max_wait_ms``
    still applies if given). Call it before the Faust worker's consumer starts.
    """
    if not _state["installed"]:
        _install()
        _state["installed"] = True
    _state["tansu"] = tansu
    if fetch_max_wait_ms is None and tansu:
        fetch_max_wait_ms = FETCH_MAX_WAIT_MS
    _state["fetch_max_wait_ms"] = fetch_max_wait_ms
