"""Versioned message contracts of every topic."""
from .base import SCHEMA_VERSION, Message
from .codec import InvalidMessage, decode, encode
from .market import (
    Bar,
    Interest,
    Level,
    Mark,
    MarketBatch,
    MarketFrame,
    Tick,
    TickBatch,
    Ticker,
    TickTrade,
    Trade,
    Watermark,
)
from .ops import Alert, AlertAck, AlertDelivery, Control, DeadLetter, SessionStatus
from .topics import TOPICS, Namespace, TopicSpec, partition_counts
from .trading import AmendOrder, CancelOrder, Decision, Equity, Fill, Funding, Order, OrderEvent, Position, Signal
from .venue import (
    ExchangeExecution,
    ExchangeOrder,
    ExchangePosition,
    Reconciliation,
    ShadowFill,
    VenueReport,
    VenueRequest,
)

__all__ = [
    "SCHEMA_VERSION", "Message", "InvalidMessage", "decode", "encode", "Bar", "Interest", "Level", "Mark",
    "MarketBatch", "MarketFrame", "Tick", "TickBatch", "Ticker", "TickTrade", "Trade", "Watermark", "Alert", "AlertAck",
    "AlertDelivery", "Control", "DeadLetter",
    "SessionStatus", "TOPICS", "TopicSpec", "partition_counts", "Namespace", "AmendOrder", "CancelOrder", "Decision",
    "Equity", "Fill", "Funding", "Order", "OrderEvent", "Position", "Signal", "ExchangeExecution", "ExchangeOrder",
    "ExchangePosition", "Reconciliation", "ShadowFill", "VenueReport", "VenueRequest",
]
