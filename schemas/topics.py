"""Every topic papertape uses: its name, what keys it, how many partitions, which messages it carries."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from .market import Mark, MarketFrame, TickBatch, Watermark
from .ops import Alert, Control, DeadLetter
from .trading import Decision, Equity, Fill, Order, OrderEvent, Position, Signal


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str  # what the message key is: "symbol", "session", "partition" or "none"
    partitions: str  # "md" (per-symbol count), "session" (per-session count) or "one"
    value: Any  # a model or an annotated union of models
    doc: str

    @property
    def adapter(self) -> TypeAdapter:
        return _adapter(self.name)


def _union(*models: type) -> Any:
    return Annotated[Union[models], Field(discriminator="kind")]  # type: ignore[valid-type]


TOPICS: dict[str, TopicSpec] = {
    t.name: t
    for t in [
        TopicSpec("md.events", "symbol", "md", _union(MarketFrame, Watermark),
                  "normalized exchange frames (one message per frame) and source watermarks"),
        TopicSpec("md.ticks", "partition", "session", TickBatch,
                  "market actor output: ticks of a batch, broadcast to every engine partition"),
        TopicSpec("md.marks", "symbol", "md", Mark, "latest bid, ask, last and mark per symbol (conflated)"),
        TopicSpec("signals", "session", "session", Signal, "external signals into a session"),
        TopicSpec("orders", "session", "session", Order, "external orders into a session"),
        TopicSpec("control", "session", "session", Control, "session start, stop, pause, config"),
        TopicSpec("order.events", "session", "session", OrderEvent, "every order state change"),
        TopicSpec("fills", "session", "session", Fill, "executions with fee and realized P&L"),
        TopicSpec("positions", "session", "session", Position, "a session's position after each change"),
        TopicSpec("equity", "session", "session", Equity, "account snapshots in event time"),
        TopicSpec("decisions", "session", "session", Decision, "every trade or no-trade decision, with reasons"),
        TopicSpec("alerts", "none", "one", Alert, "alerts for the relay (console, webhook)"),
        TopicSpec("errors.dlq", "none", "one", DeadLetter, "messages an agent refused, with the reason"),
    ]
}

_ADAPTERS: dict[str, TypeAdapter] = {}


def _adapter(name: str) -> TypeAdapter:
    if name not in _ADAPTERS:
        _ADAPTERS[name] = TypeAdapter(TOPICS[name].value)
    return _ADAPTERS[name]


def partition_counts(md_partitions: int, session_partitions: int) -> dict[str, int]:
    sizes = {"md": md_partitions, "session": session_partitions, "one": 1}
    return {name: sizes[spec.partitions] for name, spec in TOPICS.items()}
