"""Every papertape metric follows Prometheus' naming conventions (https://prometheus.io/docs/practices/naming/)."""
import re
from collections import Counter

from faust.types import TP
from prometheus_client import REGISTRY

from infra import prometheus

BASE_UNITS = ("seconds", "bytes", "messages", "rows", "symbols", "total", "ratio")
UNBOUNDED = {"symbol", "order_id", "id", "session", "key", "offset"}  # one series per value, without end


def families():
    """Every papertape family of the registry, with a Faust monitor and every labelled metric touched once."""
    monitor = prometheus.WorkerMonitor()
    before = prometheus.FAUST.monitor, prometheus.FAUST.name_of  # another test's app may have set them
    prometheus.FAUST.monitor, prometheus.FAUST.name_of = monitor, str
    monitor.messages_received_by_topic["md.events"] += 1
    monitor.messages_sent_by_topic["md.ticks"] += 1
    monitor.tp_end_offsets[TP("md.events", 0)] = 10
    monitor.tp_committed_offsets[TP("md.events", 0)] = 7
    try:
        for metric in (prometheus.FRAMES, prometheus.DECISIONS, prometheus.DEAD_LETTERS, prometheus.RECORDER_ROWS,
                       prometheus.CHECKPOINT_SAVE):
            metric.labels(*("x" for _ in metric._labelnames))
        prometheus.FILLS.labels("maker", "trade")
        prometheus.ALERTS_DELIVERED.labels("webhook", "sent")
        return [f for f in REGISTRY.collect() if f.name.startswith("papertape_")]
    finally:
        prometheus.FAUST.monitor, prometheus.FAUST.name_of = before


def test_metric_names_follow_the_conventions():
    found = families()
    names = {f.name for f in found}
    problems = []
    for f in found:
        if not re.fullmatch(r"papertape_[a-z][a-z0-9_]*[a-z0-9]", f.name) or "__" in f.name:
            problems.append(f"{f.name}: not snake case under the papertape_ prefix")
        if not f.documentation:
            problems.append(f"{f.name}: no help text")
        samples = {s.name for s in f.samples}
        if f.type == "counter" and not all(n == f.name + "_total" or n == f.name + "_created" for n in samples):
            problems.append(f"{f.name}: counter samples {samples} lack _total")
        if f.type != "counter" and any(n.endswith("_total") for n in [f.name, *samples]):
            problems.append(f"{f.name}: a {f.type} named _total")
        if f.type == "histogram" and not f.name.endswith("_seconds"):
            problems.append(f"{f.name}: a histogram not in seconds (the base unit)")
        if f.type == "gauge" and not f.name.endswith(BASE_UNITS):
            problems.append(f"{f.name}: a gauge without its unit")
        if re.search(r"_(ms|milliseconds|minutes|hours|kb|mb)(_|$)", f.name):
            problems.append(f"{f.name}: not in a base unit")
        labels = {k for s in f.samples for k in s.labels if k not in ("le", "quantile")}
        if labels & UNBOUNDED:
            problems.append(f"{f.name}: unbounded labels {labels & UNBOUNDED}")
    assert not problems, problems
    # the list is all there (Faust's sensor included)
    want = {"papertape_frames_received", "papertape_stale_symbols", "papertape_fills", "papertape_decisions",
            "papertape_dead_letters", "papertape_orders_refused", "papertape_tick_to_fill_seconds",
            "papertape_checkpoint_save_seconds", "papertape_recorder_rows", "papertape_recorder_lag_messages",
            "papertape_alerts_delivered", "papertape_worker_restarts", "papertape_api_requests",
            "papertape_faust_messages_received", "papertape_faust_messages_sent",
            "papertape_faust_consumer_lag_messages", "papertape_faust_commit_latency_seconds"}
    assert want <= names, want - names
    assert Counter(f.name for f in found).most_common(1)[0][1] == 1


def test_the_faust_lag_is_end_minus_committed_by_topic():
    lag = {f.name: f for f in families()}["papertape_faust_consumer_lag_messages"]
    assert [(s.labels, s.value) for s in lag.samples] == [({"topic": "md.events"}, 3.0)]
