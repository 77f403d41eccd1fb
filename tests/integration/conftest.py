"""Fixtures of the real components, shared by the integration tests.

One Apache Kafka broker serves the whole run (a JVM start per test would cost seconds each) and every test
reaches it through KAFKA_BOOTSTRAP, as a user's own cluster would be reached. Runs do not see each other's
messages: each `papertape run` of a test gets a namespace of its own (tests/builders.py), so its topics and
consumer groups are new.

PAPERTAPE_TEST_BROKER=tansu runs the suite on Tansu instead (each run then starts its own, as without Java);
a KAFKA_BOOTSTRAP already set is used as it is.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from builders import fresh_namespace, papertape
from infra.clickhouse import connect, migrate
from infra.kafka import EmbeddedKafka, unavailable_reason
from infra.tansu import EmbeddedTansu
from schemas import Namespace


@pytest.fixture(scope="session", autouse=True)
def kafka_bootstrap(tmp_path_factory):
    """The bootstrap servers every test's runs use, or None where each run starts its own broker (Tansu)."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        yield os.environ["KAFKA_BOOTSTRAP"]
        return
    if os.environ.get("PAPERTAPE_TEST_BROKER", "kafka") == "tansu" or unavailable_reason() is not None:
        os.environ["PAPERTAPE_BROKER"] = "tansu"
        yield None
        os.environ.pop("PAPERTAPE_BROKER", None)
        return
    with EmbeddedKafka(tmp_path_factory.mktemp("kafka")) as kafka:
        os.environ["KAFKA_BOOTSTRAP"] = kafka.bootstrap
        try:
            yield kafka.bootstrap
        finally:
            os.environ.pop("KAFKA_BOOTSTRAP", None)


@pytest.fixture
def broker(tmp_path, kafka_bootstrap):
    """The suite's broker with topics of the test's own (Tansu, started for the test, where the suite has none)."""
    if kafka_bootstrap:
        yield SimpleNamespace(bootstrap=kafka_bootstrap, names=Namespace(fresh_namespace()))
        return
    with EmbeddedTansu(tmp_path / "tansu.log") as b:
        yield SimpleNamespace(bootstrap=b.bootstrap, names=Namespace())


@pytest.fixture
def ch(tmp_path):
    """A migrated ClickHouse archive (embedded chdb) in the test's directory."""
    client = connect(None, tmp_path)
    migrate(client)
    yield client
    client.close()  # chdb opens one data directory per process: release it for the next test


ARCHIVED_RUN_CONFIG = """
md_partitions = 2
session_partitions = 2
replay_seconds = 90

[[sessions]]
id = "fast"
params = { fast = 2, slow = 5, bar_ms = 2000, full_confidence_bps = 0.5 }

[[sessions]]
id = "revert"
strategy = "mean_reversion"
intel = 8
balance = 25000
params = { window = 10, bar_ms = 2000 }

[[sessions]]
id = "script"
strategy = "scripted"
balance = 20000
params = { orders = [
  { at = 1723161260000, symbol = "BTCUSDT", side = "buy", qty = "0.003" },
  { at = 1723161265000, symbol = "BTCUSDT", side = "buy", qty = "0.002" },
  { at = 1723161270000, symbol = "BTCUSDT", side = "sell", qty = "0.001" },
  { at = 1723161275000, symbol = "BTCUSDT", side = "sell", qty = "0.007" },
  { at = 1723161280000, symbol = "ETHUSDT", side = "sell", qty = "0.2", type = "limit", price = "2660.00" },
  { at = 1723161285000, symbol = "BTCUSDT", side = "buy", qty = "0.003", reduce_only = true },
  { at = 1723161300000, symbol = "ETHUSDT", side = "buy", qty = "0.2" },
  { at = 1723161310000, symbol = "BTCUSDT", side = "buy", qty = "0.004" },
  { at = 1723161330000, symbol = "BTCUSDT", side = "sell", qty = "0.004" },
] }
"""


@pytest.fixture(scope="session")
def archived_run(tmp_path_factory):
    """One real run for the tests that read an archive (metrics, report, export, compare): 90 s of the bundled
    tape through the real broker, worker and ClickHouse, three sessions (a trend follower, a mean reverter, and
    a scripted one that adds, partly closes, reverses, and trades both symbols). SimpleNamespace(data_dir,
    config, stdout)."""
    root = tmp_path_factory.mktemp("archived_run")
    config = root / "papertape.toml"
    config.write_text(ARCHIVED_RUN_CONFIG)
    r = papertape("run", "--config", str(config), "--data-dir", str(root / "data"), timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    return SimpleNamespace(data_dir=root / "data", config=config, stdout=r.stdout)
