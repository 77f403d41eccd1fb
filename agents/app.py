"""The Faust app: every agent of the pipeline, wired to its topics."""
from __future__ import annotations

from typing import Any

import faust

from agents import engine, market
from agents.outputs import Outputs
from infra import prometheus, tansu
from infra.broker import ensure_topics
from papertape.config import Settings

# aiokafka sends one fetch at a time to a broker, without the partitions whose fetched records still wait to be read:
# a fetch of only quiet partitions (orders, control) parked on the broker for Faust's 1500 ms while md.events and
# md.ticks piled up behind it (tick-to-fill p99 3.7 s at 7k events/s, two hops of ~1.5 s; 0.9-1.1 s with 50 ms)
KAFKA_FETCH_WAIT_MS = 50


def create_app(settings: Settings, use_tansu: bool, replication: int = 1) -> faust.App:
    """`replication`: of the tables' changelog topics, as of the pipeline's topics."""
    tansu.apply(tansu=use_tansu, fetch_max_wait_ms=None if use_tansu else KAFKA_FETCH_WAIT_MS)
    app = faust.App(
        settings.names.group(settings.app_id),  # the consumer group, and the prefix of the tables' changelogs
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        datadir=str(settings.data_dir / "faust"),
        topic_partitions=settings.session_partitions,
        topic_replication_factor=replication,
        stream_wait_empty=False,
        **faust_settings(web_enabled=False, producer_max_request_size=8 << 20),
    )
    instruments = settings.instrument_map()
    names = settings.names
    prometheus.instrument_faust(app, names.name_of)  # events in and out by topic, lag, commit latency
    market.register(app, settings, instruments, Outputs(app, names))  # each agent's own: its saves wait for its sends
    engine.register(app, settings, instruments, Outputs(app, names))
    return app


def faust_settings(**overrides: Any) -> dict[str, Any]:
    """``faust.App`` kwargs for a low-latency, fast-starting worker."""
    settings: dict[str, Any] = dict(
        processing_guarantee="at_least_once",  # exactly_once needs a transactional producer
        broker_session_timeout=6.0,  # a dead worker's partitions move on after this (Tansu: a join takes half)
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=10.0,
        broker_commit_interval=0.5,  # less replay after a crash; commits are cheap
        producer_linger=0.0,
        # per partition per fetch (Faust's default 1 MiB): a full-speed replay's md.events batches are ~220 KiB, and
        # the agents sat waiting for input between fetches (bench_pipeline 8.8-9.5k -> 12.4-12.7k events/s)
        consumer_max_fetch_size=8 << 20,
    )
    settings.update(overrides)
    return settings


async def create_changelogs(app: faust.App, bootstrap: str) -> None:
    """The tables' changelog topics, as Faust would declare them (compacted), before the worker starts. Faust declares
    them while its consumer joins the group: an assignment made before the broker's metadata showed a new changelog
    left that table's partitions out, and the worker never began (seen twice in ~40 benchmark starts)."""
    changelogs = {table.changelog_topic.get_topic_name(): table.partitions for table in app.tables.values()}
    await ensure_topics(bootstrap, changelogs, config={"cleanup.policy": "compact"})
