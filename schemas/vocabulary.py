"""The shared vocabulary: every word a message, the core or a setting uses for a side, an order type, a status or
a category, as a `Literal` type. Code types its values with these instead of writing `str`, so mypy checks each
word against the list (a typo is a type error) at no cost when the code runs: the values stay plain strings."""
from __future__ import annotations

from typing import Literal

Side = Literal["buy", "sell"]  # of an order, a fill, or a trade's aggressor
PositionSide = Literal["long", "short"]
Exposure = Literal["long", "short", "flat"]  # what a signal asks to hold
OrderType = Literal["market", "limit", "stop_market", "stop_limit", "take_profit_market", "take_profit_limit",
                    "trailing_stop"]
TimeInForce = Literal["GTC", "IOC", "FOK", "PostOnly"]
TriggerBy = Literal["last", "mark"]
OrderStatus = Literal["new", "partially_filled", "filled", "cancelled", "rejected", "triggered", "expired", "amended"]
LiquidityRole = Literal["maker", "taker"]  # of a fill: it took liquidity (taker) or rested (maker)
ExecType = Literal["trade", "liquidation"]
DecisionAction = Literal["buy", "sell", "hold", "blocked", "reject", "cancel", "amend"]
Category = Literal["linear", "spot", "dex"]  # Bybit's USDT perpetuals and spot, and DEX tokens
# The venue a session trades on: papertape's paper venue (Bybit perpetuals and spot), its DEX model, or Bybit itself
# (real orders with the demo's or testnet's fake money; mainnet's real money only with a setting and a flag).
BybitVenue = Literal["bybit_demo", "bybit_testnet", "bybit_mainnet"]
VenueKind = Literal["paper", "dex", "bybit_demo", "bybit_testnet", "bybit_mainnet"]
VenueAction = Literal["new", "cancel", "amend", "snapshot"]  # what papertape asks of an exchange
# What a reconciliation found: nothing ("none": the check's summary row); an order of the exchange papertape did not
# place; an execution papertape had not booked; an order whose state differs; a position or a balance that differs.
Difference = Literal["none", "unknown_order", "missed_fill", "order_state", "position", "balance"]
MarginMode = Literal["cross", "isolated"]
# What a frame says about its symbol's feed: "live" data; "stale": no update for the source's limit until its ts,
# so nothing may trade on the old prices; "unavailable": no source can price it now.
FeedStatus = Literal["live", "stale", "unavailable"]
Severity = Literal["info", "warning", "error", "critical"]
# What an alert is about: a user's price rule; the account's performance (drawdown, daily loss, a breaker); trading
# (fills, liquidations, rejections); errors (dead letters, crashes); the system (stale feeds, lag, components down).
AlertType = Literal["price", "performance", "trading", "error", "system"]
# What a channel made of an alert: it took it; it refused it for good (a 4xx: retrying cannot help); or every
# attempt failed (down, timed out) until the relay gave up; or the relay held it back, a repeat of one just sent.
DeliveryOutcome = Literal["sent", "refused", "failed", "suppressed"]
Command = Literal["start", "stop", "pause", "resume", "config", "reconcile"]  # of a session, on the control topic
SessionState = Literal["running", "paused", "stopped"]

LIMIT_TYPES: tuple[OrderType, ...] = ("limit", "stop_limit", "take_profit_limit")  # they carry a limit price
TRIGGER_TYPES: tuple[OrderType, ...] = ("stop_market", "stop_limit", "take_profit_market", "take_profit_limit")
BYBIT_VENUES: tuple[BybitVenue, ...] = ("bybit_demo", "bybit_testnet", "bybit_mainnet")
