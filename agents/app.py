"""The Faust app: every agent of the pipeline, wired to its topics."""
from __future__ import annotations

import faust

from papertape.config import Settings

from . import engine, market, tansu_compat
from .outputs import Outputs


def create_app(settings: Settings, tansu: bool, replication: int = 1) -> faust.App:
    """`replication`: of the tables' changelog topics, as of the pipeline's topics."""
    tansu_compat.apply(tansu=tansu)
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
        **tansu_compat.faust_settings(web_enabled=False, producer_max_request_size=8 << 20),
    )
    instruments = settings.instrument_map()
    names = settings.names
    market.register(app, settings, instruments, Outputs(app, names))  # each agent's own: its saves wait for its sends
    engine.register(app, settings, instruments, Outputs(app, names))
    return app
