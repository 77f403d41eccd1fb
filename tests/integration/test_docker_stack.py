"""The same pipeline on real Apache Kafka and a ClickHouse server (testcontainers). Needs a Docker engine;
skips cleanly where there is none (as on the development machines)."""
import asyncio

import docker
import pytest
from testcontainers.clickhouse import ClickHouseContainer
from testcontainers.kafka import KafkaContainer

from papertape.app.runtime import Pipeline
from papertape.config import Settings
from papertape.core.session.config import SessionConfig

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


def docker_available() -> bool:
    try:
        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.mark.skipif(not docker_available(), reason="no Docker engine")
def test_pipeline_on_apache_kafka_and_clickhouse_server(tmp_path):
    with KafkaContainer().with_kraft() as kafka, ClickHouseContainer() as ch:
        url = ch.get_connection_url().replace("clickhouse://", "http://").replace(
            f":{ch.get_exposed_port(9000)}", f":{ch.get_exposed_port(8123)}")
        script = [{"at": 1723161266299, "symbol": "BTCUSDT", "side": "buy", "qty": "0.002"}]
        settings = Settings(data_dir=tmp_path, kafka_bootstrap=kafka.get_bootstrap_server(), clickhouse_url=url,
                            replay_seconds=30, sessions=[SessionConfig(id="s", strategy="scripted",
                                                                      params={"orders": script})])

        async def go():
            pipe = Pipeline(settings)
            await pipe.start()
            try:
                await pipe.replay(progress=False)
                await pipe.wait_finished(timeout=600)
                return pipe.summary()
            finally:
                await pipe.stop()

        (row,) = asyncio.run(go())
        assert row["session"] == "s" and int(row["fills"]) == 1
