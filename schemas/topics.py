"""Every topic papertape uses: its name, what keys it, how many partitions, which messages it carries."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from .market import Interest, Mark, MarketBatch, MarketFrame, TickBatch, Watermark
from .ops import Alert, AlertAck, AlertDelivery, Control, DeadLetter, SessionStatus
from .trading import AmendOrder, CancelOrder, Decision, Equity, Fill, Funding, Order, OrderEvent, Position, Signal
from .venue import Reconciliation, ShadowFill, VenueReport, VenueRequest


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str  # what the message key is: "symbol", "session", "partition", "alert" (its id) or "none"
    partitions: str  # "md" (per-symbol count), "session" (per-session count) or "one"
    value: Any  # a model or an annotated union of models
    doc: str

    @property
    def adapter(self) -> TypeAdapter[Any]:
        return _adapter(self.name)


def _union(*models: type) -> Any:
    return Annotated[Union[models], Field(discriminator="kind")]


TOPICS: dict[str, TopicSpec] = {
    t.name: t
    for t in [
        TopicSpec("md.events", "symbol", "md", _union(MarketBatch, MarketFrame, Watermark),
                  "normalized exchange frames, batched per partition by the source, and source watermarks"),
        TopicSpec("md.ticks", "partition", "session", TickBatch,
                  "market actor output: ticks of a batch, to each engine partition those of its sessions' symbols"),
        TopicSpec("md.interest", "symbol", "md", Interest,
                  "an engine partition asks a symbol's market actor for its ticks (a session started at run time)"),
        TopicSpec("md.marks", "symbol", "md", Mark, "latest bid, ask, last and mark per symbol (conflated)"),
        TopicSpec("signals", "session", "session", Signal, "external signals into a session"),
        TopicSpec("orders", "session", "session", _union(Order, CancelOrder, AmendOrder),
                  "external orders, cancels and amends into a session"),
        TopicSpec("control", "session", "session", Control, "session start, stop, pause, resume, config"),
        TopicSpec("sessions", "session", "session", SessionStatus,
                  "a session's status after each change (started, paused, breaker tripped, stopped...)"),
        TopicSpec("order.events", "session", "session", OrderEvent, "every order state change"),
        TopicSpec("fills", "session", "session", Fill, "executions with fee and realized P&L"),
        TopicSpec("funding", "session", "session", Funding, "funding settlements of perpetual positions"),
        TopicSpec("positions", "session", "session", Position, "a session's position after each change"),
        TopicSpec("equity", "session", "session", Equity, "account snapshots in event time"),
        TopicSpec("decisions", "session", "session", Decision, "every trade or no-trade decision, with reasons"),
        TopicSpec("alerts", "none", "one", Alert, "alerts for the relay (console, webhook, apprise's channels)"),
        TopicSpec("alerts.status", "alert", "one", _union(AlertAck, AlertDelivery),
                  "acknowledgements of alerts, and what each channel made of each alert (the relay's memory)"),
        TopicSpec("venue.requests", "session", "session", VenueRequest,
                  "a session's orders, cancels, amends and reconciliation snapshots for its exchange (Bybit)"),
        TopicSpec("venue.reports", "session", "session", VenueReport,
                  "what the exchange said: order updates, executions, refusals and reconciliation snapshots"),
        TopicSpec("reconciliation", "session", "session", Reconciliation,
                  "each reconciliation of a session with its exchange: a summary row and every difference"),
        TopicSpec("shadow.fills", "session", "session", ShadowFill,
                  "the paper venue's fills of an exchange session's orders, simulated on the same market data"),
        TopicSpec("errors.dlq", "none", "one", DeadLetter, "messages an agent refused, with the reason"),
    ]
}


@dataclass(frozen=True)
class Namespace:
    """One deployment's names on the broker: every topic and consumer group behind one prefix, so several
    deployments (teams, or the test suite's runs on its one broker) share a cluster without seeing each other's
    messages. The code speaks of topics by their names in TOPICS; only the Kafka clients see the prefixed ones."""

    prefix: str = ""

    def topic(self, name: str) -> str:
        return self.prefix + name

    def name_of(self, kafka_topic: str) -> str:
        """The TOPICS name of a topic as Kafka calls it."""
        return kafka_topic[len(self.prefix):]

    def group(self, group_id: str) -> str:
        return self.prefix + group_id


_ADAPTERS: dict[str, TypeAdapter[Any]] = {}


def _adapter(name: str) -> TypeAdapter[Any]:
    if name not in _ADAPTERS:
        _ADAPTERS[name] = TypeAdapter(TOPICS[name].value)
    return _ADAPTERS[name]


def partition_counts(md_partitions: int, session_partitions: int, names: Namespace = Namespace()) -> dict[str, int]:
    """Partitions per topic, by the topics' Kafka names."""
    sizes = {"md": md_partitions, "session": session_partitions, "one": 1}
    return {names.topic(name): sizes[spec.partitions] for name, spec in TOPICS.items()}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (org.apache.kafka.common.utils.Utils.murmur2), as an unsigned 32-bit int."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = 0x9747B28C ^ length
    tail = length & ~3
    for i in range(0, tail, 4):
        k = (int.from_bytes(data[i:i + 4], "little") * m) & mask
        k = ((k ^ (k >> 24)) * m) & mask
        h = ((h * m) & mask) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h = ((h ^ data[tail]) * m) & mask
    h = ((h ^ (h >> 13)) * m) & mask
    return h ^ (h >> 15)


def kafka_partition(key: bytes, n: int) -> int:
    """The partition Kafka's (and aiokafka's) default partitioner picks for `key` among `n`."""
    return (murmur2(key) & 0x7FFFFFFF) % n
