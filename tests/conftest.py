"""What every test shares: each run gets topics and consumer groups of its own (tests/builders.py).

Fixtures of the real components (the suite's Apache Kafka broker, a ClickHouse archive) are in
tests/integration/conftest.py: the unit tests (`make test-fast`) start none of them.
"""
from __future__ import annotations

import pytest

from builders import fresh_namespace


@pytest.fixture(autouse=True)
def own_namespace(monkeypatch):
    """A test's runs in this process (`main(["run", ...])`) get a namespace of their own too."""
    monkeypatch.setenv("PAPERTAPE_NAMESPACE", fresh_namespace())


@pytest.fixture
def no_env(monkeypatch):
    """No broker, ClickHouse server, data directory or namespace from the environment (the command line's
    defaults)."""
    for name in ("KAFKA_BOOTSTRAP", "CLICKHOUSE_URL", "PAPERTAPE_DATA", "PAPERTAPE_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
