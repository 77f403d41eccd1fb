"""The broker changes nothing: `papertape run` on the embedded defaults gives byte-identical fills, order events,
equity and summary on Apache Kafka (the default) and on Tansu (the fallback where no Java is found)."""
import subprocess

import pytest

from builders import papertape_cmd, query_rows, run_env
from infra.kafka import unavailable_reason

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

QUERIES = {
    "fills": "SELECT id, session, symbol, side, toString(price), toString(qty), toString(fee), "
             "toString(realized_pnl), toUnixTimestamp64Milli(ts) FROM fills ORDER BY id",
    "order_events": "SELECT id, status, toString(filled_qty), reason FROM order_events ORDER BY id",
    "equity": "SELECT id, toString(cash), toString(equity) FROM equity ORDER BY id",
}


def summary(output: str) -> str:
    return output[output.index("events processed:"):]



def own_run(data_dir, *args: str) -> str:
    """`papertape run` with the broker it starts itself, as `make run` does."""
    r = subprocess.run(papertape_cmd("run", "--data-dir", str(data_dir), *args), capture_output=True, text=True,
                       timeout=500, env=run_env(own_broker=True))
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.skipif(unavailable_reason() is not None, reason=f"Apache Kafka: {unavailable_reason()}")
def test_the_default_run_gives_the_same_fills_on_kafka_and_on_tansu(tmp_path):
    kafka = own_run(tmp_path / "kafka")
    tansu = own_run(tmp_path / "tansu", "--broker", "tansu")
    assert "broker: embedded Apache Kafka 4.4.0" in kafka and "broker: embedded Tansu" in tansu
    # the README's figures
    assert "revert   7       3      20.60653936  6.99000000   24986.38346064  24966.05216064" in kafka
    assert "trend    20      17     13.66258115  -3.40280000  9982.93461885   9982.93461885" in kafka
    assert summary(kafka) == summary(tansu)
    on_kafka, on_tansu = query_rows(tmp_path / "kafka", QUERIES), query_rows(tmp_path / "tansu", QUERIES)
    assert len(on_kafka["fills"]) == 20
    assert on_kafka == on_tansu
