"""Prometheus /metrics of a real run: the supervisor's (recorder, relay) and the worker's (Faust's sensor, the
agents' counters), each found through data_dir/prometheus/<process>.json, against counts taken independently:
the replay's own summary and ClickHouse's rows."""
import asyncio
import urllib.request
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from builders import run_settings
from infra.prometheus import endpoint_of
from papertape.app.runtime import Pipeline
from papertape.config import DEFAULT_SESSIONS
from papertape.core.session.config import SessionConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]
SCRIPT = [{"at": 1723161266299, "symbol": "BTCUSDT", "side": "buy", "qty": "0.002"},
          {"at": 1723161271299, "symbol": "BTCUSDT", "side": "sell", "qty": "0.002"}]


async def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """sample name -> {sorted label items: value}."""
    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read().decode()

    out: dict[str, dict[tuple, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(await asyncio.to_thread(get)):
        for s in family.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def by(samples: dict[tuple, float], label: str) -> dict[str, float]:
    return {dict(k)[label]: v for k, v in samples.items()}


async def test_supervisor_and_worker_serve_metrics_that_match_the_archive(tmp_path):
    sessions = [*DEFAULT_SESSIONS, SessionConfig(id="script", strategy="scripted", params={"orders": SCRIPT})]
    settings = run_settings(data_dir=tmp_path, replay_seconds=20, sessions=sessions)
    pipe = Pipeline(settings, console_alerts="critical")
    await pipe.start()
    try:
        url = endpoint_of(tmp_path, "supervisor")
        assert url == pipe.prometheus.url
        before = await scrape(url)  # this process's registry: earlier tests' runs counted in it too
        done = await pipe.replay(progress=False)
        await pipe.wait_finished(timeout=300)
        worker = await scrape(endpoint_of(tmp_path, "worker-0"))
        supervisor = await scrape(url)
        written = {dict(k)["table"]: v - before["papertape_recorder_rows_total"].get(k, 0)
                   for k, v in supervisor["papertape_recorder_rows_total"].items()}
        in_archive = pipe.query("SELECT " + ", ".join(f"(SELECT count() FROM {t})" for t in written))["rows"][0]
        fills = pipe.query("SELECT count() FROM fills")["rows"][0][0]
        refused = pipe.query("SELECT count() FROM order_events WHERE status = 'rejected'")["rows"][0][0]
        decisions = dict(pipe.query("SELECT action, count() FROM decisions GROUP BY action")["rows"])
    finally:
        await pipe.stop()

    # the worker: the agents' own counters
    assert by(worker["papertape_frames_received_total"], "origin") == {"replay": done["frames"]}
    assert fills > 0 and sum(worker["papertape_fills_total"].values()) == fills
    assert worker["papertape_tick_to_fill_seconds_count"][()] == fills  # every fill of a replay comes from ticks
    assert 0 < worker["papertape_tick_to_fill_seconds_sum"][()] < 60 * fills
    assert decisions and by(worker["papertape_decisions_total"], "action") == decisions
    assert worker["papertape_orders_refused_total"][()] == refused
    assert set(by(worker["papertape_checkpoint_save_seconds_count"], "state")) == {"market-state", "engine-state"}
    assert worker["papertape_stale_symbols"][()] == 0  # the bundled tape has no stale frames
    # the worker: Faust's sensor
    received = by(worker["papertape_faust_messages_received_total"], "topic")
    sent = by(worker["papertape_faust_messages_sent_total"], "topic")
    assert received["md.events"] == done["batches"]
    assert received["md.ticks"] == sent["md.ticks"] > 0  # the worker has every partition: it reads what it sent
    assert sent["fills"] == fills
    assert worker["papertape_faust_commit_latency_seconds_count"][()] > 0
    assert "md.events" in by(worker["papertape_faust_consumer_lag_messages"], "topic")

    # the supervisor: recorder rows against what ClickHouse holds (no repeats in a clean run)
    assert dict(zip(written, in_archive)) == written
    assert written["fills_log"] == fills
    assert by(supervisor["papertape_recorder_lag_messages"], "topic")["fills"] == 0  # caught up
    assert "papertape_frames_received_total" not in supervisor  # each process serves its own

    # the endpoints' files go with their processes
    assert not list((tmp_path / "prometheus").iterdir())
