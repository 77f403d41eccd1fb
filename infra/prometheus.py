"""Prometheus metrics of every papertape process, and the HTTP endpoint that serves them.

Everything is on prometheus_client's default registry, so the endpoint `serve` starts, or the API's
`prometheus_client.make_asgi_app()`, shows every metric the process has. Labels stay few: an origin, a topic, a
table, a decision's action, a channel; never a symbol or an order id (one series each, without bound).

Counters count what a process did, repeats included: a worker that restarts recomputes and sends again what its
last checkpoint did not cover (the consumers drop the repeats by id), and counts it again.
"""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faust.sensors.monitor import Monitor
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from papertape.config import Settings

LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0, 30.0)

# --- the market actor ----------------------------------------------------------------------------------------
FRAMES = Counter("papertape_frames_received_total",
                 "Market frames the market actor took in, by the source that sent them (a batch's origin: replay, "
                 "bybit...; 'frame' for a lone frame)", ["origin"])
STALE_SYMBOLS = Gauge("papertape_stale_symbols",
                      "Symbols whose feed is stale (their last frame said so), on this worker's md.events partitions")

# --- what the agents send ------------------------------------------------------------------------------------
FILLS = Counter("papertape_fills_total", "Fills the engine sent", ["liquidity", "exec_type"])
DECISIONS = Counter("papertape_decisions_total", "Decisions the sessions logged, by action", ["action"])
ORDERS_REFUSED = Counter("papertape_orders_refused_total", "Order events with status rejected")
DEAD_LETTERS = Counter("papertape_dead_letters_total", "Messages refused to errors.dlq, by the topic they came on",
                       ["topic"])
TICK_TO_FILL = Histogram(
    "papertape_tick_to_fill_seconds",
    "Wall time from the market actor's send of a tick batch (its md.ticks record's timestamp) to the engine's "
    "send of a fill the batch caused: the hop through Kafka, the engine's queue and its work",
    buckets=LATENCY_BUCKETS)
CHECKPOINT_SAVE = Histogram("papertape_checkpoint_save_seconds",
                            "Time an agent spent making the snapshots of one save (the agent waits for it)",
                            ["state"], buckets=LATENCY_BUCKETS)

# --- the supervisor: recorder, alert relay, workers ----------------------------------------------------------
RECORDER_ROWS = Counter("papertape_recorder_rows_total", "Rows the recorder inserted into ClickHouse, by table",
                        ["table"])
ALERTS_DELIVERED = Counter("papertape_alerts_delivered_total",
                           "Alerts the relay handed to a channel, by its outcome (sent, refused, failed)",
                           ["channel", "outcome"])
WORKER_RESTARTS = Counter("papertape_worker_restarts_total", "Worker processes the supervisor replaced")

# --- the API ---------------------------------------------------------------------------------------------------
API_REQUESTS = Counter("papertape_api_requests_total",
                       "Requests the API answered, by method, route (its path template) and status code",
                       ["method", "route", "status"])


def took_market(item: Any) -> None:
    """A decoded md.events message (a batch, a lone frame or a watermark) the market actor took: its frames."""
    if item.kind == "batch":
        FRAMES.labels(item.origin).inc(len(item.frames))
    elif item.kind == "frame":
        FRAMES.labels("frame").inc()


def count_sent(msgs: Iterable[Any], tick_sent_at: float | None = None) -> None:
    """Counts what an agent sends (fills, decisions, refused orders, dead letters); `tick_sent_at`: the wall time
    (s) the tick batch that produced `msgs` was sent, to observe each fill's latency."""
    now = time.time()
    for msg in msgs:
        kind = msg.kind
        if kind == "decision":
            DECISIONS.labels(msg.action).inc()
        elif kind == "fill":
            FILLS.labels(msg.liquidity, msg.exec_type).inc()
            if tick_sent_at is not None:
                TICK_TO_FILL.observe(max(0.0, now - tick_sent_at))
        elif kind == "order_event":
            if msg.status == "rejected":
                ORDERS_REFUSED.inc()
        elif kind == "dead_letter":
            DEAD_LETTERS.labels(msg.topic).inc()


# --- consumer lag ----------------------------------------------------------------------------------------------
def _lags(end: Mapping[Any, int], done: Mapping[Any, int], name_of: Callable[[str], str]) -> dict[str, int]:
    """Per topic: the partitions' end offsets (high watermarks of the last fetches) minus their next offsets to be
    done, summed."""
    lag: dict[str, int] = defaultdict(int)
    done = dict(done)  # copies: the event loop's thread changes them while this one scrapes
    for tp, high in dict(end).items():
        next_done = done.get(tp)
        if high is not None and next_done is not None:
            lag[name_of(tp.topic)] += max(0, high - next_done)
    return lag


def _lag_family(name: str, doc: str, lag: Mapping[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["topic"])
    for topic, n in sorted(lag.items()):
        family.add_metric([topic], n)
    return family


class RecorderLag:
    """`papertape_recorder_lag_messages`: messages on the broker not yet in ClickHouse. The recorder tells it each
    fetch's high watermarks and each commit; the lag is computed when scraped."""

    name = "papertape_recorder_lag_messages"
    doc = "Messages on the broker the recorder has not inserted into ClickHouse yet, as of its last fetch"

    def __init__(self) -> None:
        self.end: dict[Any, int] = {}
        self.done: dict[Any, int] = {}
        self.name_of: Callable[[str], str] = str

    def track(self, name_of: Callable[[str], str]) -> None:
        """A recorder starts (one a process): what an earlier one saw is dropped."""
        self.end, self.done, self.name_of = {}, {}, name_of

    def fetched(self, consumer: Any, batch: Mapping[Any, list]) -> None:
        """An aiokafka consumer's `getmany` answer."""
        for tp, records in batch.items():
            if (high := consumer.highwater(tp)) is not None:
                self.end[tp] = high
            if records:
                self.done.setdefault(tp, records[0].offset)  # the first fetch starts at the committed offset

    def committed(self, offsets: Mapping[Any, int]) -> None:
        self.done.update(offsets)

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily(self.name, self.doc, labels=["topic"])]

    def total(self) -> int:
        """Every topic's lag: what the supervisor's "recorder behind" alert watches."""
        return sum(_lags(self.end, self.done, self.name_of).values())

    def collect(self) -> Iterator[Metric]:
        yield _lag_family(self.name, self.doc, _lags(self.end, self.done, self.name_of))


RECORDER_LAG = RecorderLag()
REGISTRY.register(RECORDER_LAG)


# --- Faust's sensor --------------------------------------------------------------------------------------------
FAUST_COMMIT = Histogram("papertape_faust_commit_latency_seconds", "Time a worker's offset commits took",
                         buckets=LATENCY_BUCKETS)


class WorkerMonitor(Monitor):
    """Faust's own Monitor (the worker's default sensor, which already counts messages by topic and tracks the
    partitions' end and committed offsets), read when scraped, so the hot path pays nothing more; only commit
    latency, which it keeps as a bounded history, is observed into a histogram as it happens (every commit
    interval, 0.5 s)."""

    def on_commit_completed(self, consumer: Any, state: Any) -> None:
        super().on_commit_completed(consumer, state)
        FAUST_COMMIT.observe(self.commit_latency[-1])


class FaustCollector:
    """The Faust metrics of the worker's monitor, by topic (its name without the namespace)."""

    def __init__(self) -> None:
        self.monitor: Monitor | None = None
        self.name_of: Callable[[str], str] = str

    def families(self) -> tuple[CounterMetricFamily, CounterMetricFamily]:
        received = CounterMetricFamily("papertape_faust_messages_received", "Messages the worker's consumer took, "
                                       "by topic", labels=["topic"])
        sent = CounterMetricFamily("papertape_faust_messages_sent", "Messages the worker's producer was given, by "
                                   "topic", labels=["topic"])
        return received, sent

    def describe(self) -> list[Metric]:
        return [*self.families(), GaugeMetricFamily("papertape_faust_consumer_lag_messages", "", labels=["topic"])]

    def collect(self) -> Iterator[Metric]:
        monitor = self.monitor
        if monitor is None:
            return
        received, sent = self.families()
        for family, counts in ((received, monitor.messages_received_by_topic), (sent, monitor.messages_sent_by_topic)):
            by_topic: dict[str, int] = defaultdict(int)
            for topic, n in dict(counts).items():
                by_topic[self.name_of(topic)] += n
            for topic, n in sorted(by_topic.items()):
                family.add_metric([topic], n)
            yield family
        yield _lag_family("papertape_faust_consumer_lag_messages",
                          "Messages on the worker's partitions past its committed offsets (high watermark of the "
                          "last fetch minus the committed offset), by topic",
                          _lags(monitor.tp_end_offsets, monitor.tp_committed_offsets, self.name_of))


FAUST = FaustCollector()
REGISTRY.register(FAUST)


def instrument_faust(app: Any, name_of: Callable[[str], str]) -> None:
    """Give a Faust app the monitor whose metrics this process serves (before the app starts)."""
    app.monitor = WorkerMonitor()
    FAUST.monitor, FAUST.name_of = app.monitor, name_of


# --- the endpoint ------------------------------------------------------------------------------------------------
@dataclass
class Endpoint:
    url: str
    file: Path
    server: Any

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        try:
            if json.loads(self.file.read_text()).get("pid") == os.getpid():  # not a successor's
                self.file.unlink()
        except (OSError, ValueError):
            pass


def serve(settings: Settings, process: str, data_dir: Path, offset: int = 0) -> Endpoint:
    """prometheus_client's HTTP server on the settings' host and port (+ `offset`; a free port when the port is 0),
    its address written to `data_dir/prometheus/<process>.json`. The supervisor's workers on one host each need a
    port: `papertape run` gives its i-th worker offset i + 1."""
    port = settings.prometheus_port + offset if settings.prometheus_port else 0
    server, _ = start_http_server(port, addr=settings.prometheus_host)
    host, port = str(server.server_address[0]), server.server_address[1]
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # where a user on this machine reaches an endpoint bound to every address
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
    file = data_dir / "prometheus" / f"{process}.json"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    return Endpoint(url, file, server)


def endpoint_of(data_dir: Path, process: str) -> str | None:
    """The /metrics URL a process of the run in `data_dir` serves, if it wrote one."""
    try:
        return json.loads((data_dir / "prometheus" / f"{process}.json").read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None
