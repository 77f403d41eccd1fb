"""The Faust app: every agent of the pipeline, wired to its topics."""
from __future__ import annotations

import faust

from papertape.config import Settings

from . import engine, market, tansu_compat
from .outputs import Outputs


def create_app(settings: Settings, tansu: bool) -> faust.App:
    tansu_compat.apply(tansu=tansu)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        datadir=str(settings.data_dir / "faust"),
        topic_partitions=settings.session_partitions,
        stream_wait_empty=False,
        **tansu_compat.faust_settings(web_enabled=False, producer_max_request_size=8 << 20),
    )
    outputs = Outputs(app)
    instruments = settings.instrument_map()
    market.register(app, settings, instruments, outputs)
    engine.register(app, settings, instruments, outputs)
    return app
