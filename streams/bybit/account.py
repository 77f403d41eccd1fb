"""Bybit v5 private data as papertape's venue messages (issue 18), and the REST calls of a demo venue's gateway.

Translations (pure): an execution (the private stream's `execution` items and /v5/execution/list items share their
fields), an order (`order` items, /v5/order/realtime and /v5/order/history items), a position (`position` items,
/v5/position/list items), a wallet (`wallet` items, /v5/account/wallet-balance accounts), and a whole private stream
message as one VenueReport. REST (through pybit's HTTP, errors as BybitPrivateError with Bybit's retCode): open and
recent orders, executions since a time, positions, the reconciliation snapshot, amend, cancel, leverage, margin mode,
and `with_backoff` for Bybit's rate limits. Field meanings: Bybit's v5 docs ("Execution", "Order", "Position",
"Wallet" streams; "Get Trade History", "Get Open & Closed Orders", "Enums", "Error Codes", "Rate Limit Rules")."""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import schemas as s
from papertape.core.venue.remote import link_id
from schemas.venue import ExchangeExecType
from schemas.vocabulary import LIMIT_TYPES, TRIGGER_TYPES, BybitVenue, MarginMode, OrderStatus, OrderType, Side
from streams.bybit.orders import DIRECTION
from streams.bybit.private import BybitPrivateError, bybit_call, wallet_balance

log = logging.getLogger(__name__)
T = TypeVar("T")

SIDES: dict[str, Side] = {"Buy": "buy", "Sell": "sell"}
EXEC_TYPES: dict[str, ExchangeExecType] = {"Trade": "trade", "Funding": "funding", "BustTrade": "liquidation",
                                           "AdlTrade": "adl"}
STATUSES: dict[str, OrderStatus] = {
    "New": "new", "PartiallyFilled": "partially_filled", "Filled": "filled", "Rejected": "rejected",
    "Cancelled": "cancelled",  # a derivatives order cancelled after part of it filled too (filled_qty says)
    "PartiallyFilledCanceled": "cancelled",  # spot's name of the same
    "Untriggered": "new",  # a conditional order waiting for its trigger
    "Triggered": "triggered",  # the instant a conditional order becomes a New one
    "Deactivated": "cancelled",  # a conditional or TP/SL order cancelled before it triggered
}
# stopOrderType of a position's take-profit and stop-loss orders (Bybit's "Enums"); "Stop" is a conditional order,
# whose kind its triggerDirection tells
TAKE_PROFITS = {"TakeProfit", "PartialTakeProfit"}
STOP_LOSSES = {"StopLoss", "PartialStopLoss"}
# (triggerDirection, side, a limit order?) -> papertape's type: the inverse of orders.DIRECTION
TRIGGERED: dict[tuple[int, Side, bool], OrderType] = {
    (DIRECTION[(type_, side)], side, type_ in LIMIT_TYPES): type_ for type_ in TRIGGER_TYPES for side in SIDES.values()}
NO_REASON = {"", "EC_NoError", "UNKNOWN"}
MARGIN_MODES: dict[MarginMode, str] = {"cross": "REGULAR_MARGIN", "isolated": "ISOLATED_MARGIN"}

ORDER_NOT_FOUND = 110001  # "order not exists or too late to cancel": an amend or cancel that lost a race
LEVERAGE_NOT_MODIFIED = 110043
# Retried by with_backoff: Bybit's rate limits (10006 per UID, 10018 per IP, 10429 and HTTP 429 "system level
# frequency protection, please retry") and 10016 (server error, service restarting). Not HTTP 403: Bybit's IP ban
# asks for 10 minutes of silence, which a retry within seconds would only extend.
RETRYABLE = {10006, 10018, 10429, 429, 10016}
BACKOFF_S = 0.5
WEEK_MS = 7 * 24 * 3600 * 1000  # the widest startTime..endTime of one /v5/execution/list query
ID_MAX = 160


def _price(text: Any) -> Decimal | None:
    """Bybit's "0", "" or null for no price."""
    if text in (None, ""):
        return None
    value = Decimal(str(text))
    return value if value != 0 else None


def _decimal(text: Any) -> Decimal:
    return Decimal(str(text)) if text not in (None, "") else Decimal(0)


def _side(item: dict[str, Any]) -> Side:
    side = SIDES.get(item.get("side") or "")
    if side is None:
        raise ValueError(f"Bybit side {item.get('side')!r} of {item.get('symbol')} is neither Buy nor Sell")
    return side


def execution_of(item: dict[str, Any]) -> s.ExchangeExecution:
    """An execution. A funding settlement is one too (execType Funding), as a recorded one shows (ccxt issue
    #19629): no orderLinkId, an orderId made of the settlement time, symbol and side, side the position's
    (Buy: long), execQty the position's size, execPrice the mark price, execValue their product, feeRate the
    funding rate and execFee the value times the rate, signed as every fee (positive paid, negative received).
    Other execTypes (Delivery, Settle, BlockTrade, MovePosition...) are a ValueError."""
    exec_type = EXEC_TYPES.get(item.get("execType") or "")
    if exec_type is None:
        raise ValueError(f"Bybit execution {item.get('execId')} has execType {item.get('execType')!r}: papertape "
                         f"books only {', '.join(EXEC_TYPES)}")
    return s.ExchangeExecution(
        exec_id=item["execId"], order_id=item.get("orderLinkId") or "", venue_order_id=item.get("orderId") or "",
        ts=int(item["execTime"]), symbol=item["symbol"], side=_side(item), price=Decimal(item["execPrice"]),
        qty=Decimal(item["execQty"]), fee=_decimal(item.get("execFee")), fee_rate=_decimal(item.get("feeRate")),
        liquidity="maker" if str(item.get("isMaker")).lower() == "true" else "taker", exec_type=exec_type)


def _order_type(item: dict[str, Any], side: Side) -> OrderType:
    limit = item.get("orderType") == "Limit"
    stop_type = item.get("stopOrderType") or ""
    if stop_type == "TrailingStop":
        return "trailing_stop"
    if stop_type in TAKE_PROFITS:
        direction = DIRECTION[("take_profit_market", side)]
    elif stop_type in STOP_LOSSES:
        direction = DIRECTION[("stop_market", side)]
    elif (trigger := _price(item.get("triggerPrice"))) is None:
        return "limit" if limit else "market"
    else:
        direction = int(item.get("triggerDirection") or 0)
        if direction not in (1, 2):  # not said: a trigger above the price at creation waits for a rise
            created = _price(item.get("lastPriceOnCreated"))
            if created is None:
                raise ValueError(f"Bybit order {item.get('orderId')} has a trigger price but neither a trigger "
                                 f"direction nor the price at its creation")
            direction = 1 if trigger > created else 2
    return TRIGGERED[(direction, side, limit)]


def _reason(item: dict[str, Any]) -> str:
    for reason in (item.get("rejectReason"), item.get("cancelType")):
        if reason is not None and reason not in NO_REASON:
            return str(reason)[:500]
    return ""


def order_of(item: dict[str, Any]) -> s.ExchangeOrder:
    """An order: its id is the orderLinkId (papertape's order id, or remote.link_id of it), else
    Bybit's orderId (an order placed elsewhere); `reason` Bybit's rejectReason, else its cancelType."""
    status = STATUSES.get(item.get("orderStatus") or "")
    if status is None:
        raise ValueError(f"Bybit order {item.get('orderId')} has an unknown orderStatus {item.get('orderStatus')!r}")
    side = _side(item)
    return s.ExchangeOrder(
        order_id=item.get("orderLinkId") or item["orderId"], venue_order_id=item.get("orderId") or "",
        ts=int(item["updatedTime"]), symbol=item["symbol"], side=side, type=_order_type(item, side), status=status,
        qty=_decimal(item.get("qty")), price=_price(item.get("price")), trigger_price=_price(item.get("triggerPrice")),
        filled_qty=_decimal(item.get("cumExecQty")), avg_price=_price(item.get("avgPrice")), reason=_reason(item))


def position_of(item: dict[str, Any]) -> s.ExchangePosition:
    """A position, its quantity signed (a short is negative); side "" or "None" is flat. The average price is
    avgPrice (REST) or entryPrice (the private stream)."""
    size = _decimal(item.get("size"))
    side = SIDES.get(item.get("side") or "")
    if side is None or size == 0:
        return s.ExchangePosition(symbol=item["symbol"], qty=Decimal(0))
    return s.ExchangePosition(symbol=item["symbol"], qty=size if side == "buy" else -size,
                              avg_price=_price(item.get("avgPrice") or item.get("entryPrice")))


def wallet_of(item: dict[str, Any], coin: str) -> Decimal | None:
    """The wallet balance of `coin` in a `wallet` stream item or a wallet-balance account; None without the coin."""
    for entry in item.get("coin") or []:
        if entry.get("coin") == coin:
            return _decimal(entry.get("walletBalance"))
    return None


def _message_id(*parts: str) -> str:
    joined = ":".join(parts)
    return joined if len(joined) <= ID_MAX else f"{parts[0]}:{hashlib.sha256(joined.encode()).hexdigest()}"


def _known(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The executions papertape books; others are logged and left out, so one (say a BlockTrade) does not take the
    trades beside it down with it. A reconciliation still sees their effect, in the positions."""
    kept = []
    for x in items:
        if x.get("execType") in EXEC_TYPES:
            kept.append(x)
        else:
            log.warning("Bybit execution %s of %s has execType %r: not booked", x.get("execId"), x.get("symbol"),
                        x.get("execType"))
    return kept


def report_of(message: dict[str, Any], session: str, venue: BybitVenue) -> s.VenueReport | None:
    """A private stream message as a VenueReport: `order` (and order.linear...) gives orders, `execution` gives
    executions; None for position and wallet (papertape reads them in snapshots only), execution.fast (the same
    executions without fees, which `execution` brings too) and every message without data (auth, pong, acks).
    The id is the venue, topic and Bybit's message id, so a message read twice is the same report."""
    topic = message.get("topic")
    if not isinstance(topic, str) or topic.startswith("execution.fast"):
        return None
    kind = topic.split(".")[0]
    if kind not in ("order", "execution"):
        return None
    data = message.get("data") or []
    key = str(message.get("id") or hashlib.sha256(json.dumps(message, sort_keys=True).encode()).hexdigest())
    head: dict[str, Any] = {"id": _message_id(venue, topic, key), "ts": int(message["creationTime"]),
                            "session": session, "venue": venue}
    if kind == "order":
        return s.VenueReport(**head, orders=[order_of(x) for x in data])
    return s.VenueReport(**head, executions=[execution_of(x) for x in _known(data)])


def _pages(what: str, fn: Any, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every item of a cursor-paged Bybit list, page by page as they are consumed."""
    cursor, seen = "", set()
    while True:
        result = bybit_call(what, fn, **params, **({"cursor": cursor} if cursor else {}))["result"]
        items = result.get("list") or []
        yield from items
        cursor = result.get("nextPageCursor") or ""
        if not cursor or not items:
            return
        if cursor in seen:
            raise BybitPrivateError(f"Bybit sent the same page cursor twice for {what}")
        seen.add(cursor)


def open_orders(http: Any, settle_coin: str, category: str = "linear") -> list[s.ExchangeOrder]:
    """Every open order (New, PartiallyFilled, Untriggered) settled in `settle_coin`."""
    return [order_of(x) for x in _pages("the open orders", http.get_open_orders,
                                        {"category": category, "settleCoin": settle_coin, "limit": 50})]


def recent_orders(http: Any, settle_coin: str, limit: int = 50, category: str = "linear") -> list[s.ExchangeOrder]:
    """The `limit` newest orders of the order history (Bybit keeps a demo account's for 7 days)."""
    items = _pages("the order history", http.get_order_history,
                   {"category": category, "settleCoin": settle_coin, "limit": min(limit, 50)})
    return [order_of(x) for x in itertools.islice(items, limit)]


def executions(http: Any, since_ms: int, until_ms: int | None = None,
               category: str = "linear") -> list[s.ExchangeExecution]:
    """Every execution from `since_ms` to `until_ms` (now by default), oldest first: one query per 7 days (Bybit's
    widest window), each followed through its page cursors; an execution on a window's edge is kept once."""
    until = int(time.time() * 1000) if until_ms is None else until_ms
    found: dict[str, s.ExchangeExecution] = {}
    start = min(since_ms, until)
    while True:
        end = min(start + WEEK_MS, until)
        items = list(_pages("the executions", http.get_executions,
                            {"category": category, "startTime": start, "endTime": end, "limit": 100}))
        found.update((x.exec_id, x) for x in map(execution_of, _known(items)))
        if end >= until:
            return sorted(found.values(), key=lambda x: (x.ts, x.exec_id))
        start = end


def positions(http: Any, settle_coin: str, category: str = "linear") -> list[s.ExchangePosition]:
    """The open positions settled in `settle_coin` (Bybit lists flat ones too: left out)."""
    found = (position_of(x) for x in _pages("the positions", http.get_positions,
                                            {"category": category, "settleCoin": settle_coin, "limit": 200}))
    return [x for x in found if x.qty != 0]


def snapshot(http: Any, session: str, venue: BybitVenue, request_id: str, ts: int, settle_coin: str, since_ms: int,
             category: str = "linear") -> s.VenueReport:
    """What a reconciliation compares: open and recent orders (an order in both once, as the open list has it),
    the executions since `since_ms`, the open positions and the wallet balance of `settle_coin`."""
    orders = {x.venue_order_id or x.order_id: x for x in recent_orders(http, settle_coin, category=category)}
    orders.update((x.venue_order_id or x.order_id, x) for x in open_orders(http, settle_coin, category))
    return s.VenueReport(
        id=_message_id(venue, "snapshot", request_id), ts=ts, session=session, venue=venue, request=request_id,
        snapshot=True, orders=list(orders.values()), executions=executions(http, since_ms, category=category),
        positions=positions(http, settle_coin, category), wallet=wallet_balance(http, settle_coin))


def _order_ref(req: s.VenueRequest, category: str) -> dict[str, Any]:
    if req.symbol is None:
        raise BybitPrivateError(f"the {req.action} of order {req.order_id} names no symbol (Bybit needs it)")
    return {"category": category, "symbol": req.symbol, "orderLinkId": link_id(req.order_id)}


def amend(http: Any, req: s.VenueRequest, category: str = "linear") -> dict[str, Any]:
    """Amend papertape's order `req.order_id` (its qty, price, trigger price); Bybit's answer (orderId,
    orderLinkId). An order already filled or cancelled is BybitPrivateError code ORDER_NOT_FOUND: a refusal."""
    params = _order_ref(req, category)
    for name, value in (("qty", req.qty), ("price", req.price), ("triggerPrice", req.trigger_price)):
        if value is not None:
            params[name] = format(value, "f")
    if len(params) == 3:
        raise BybitPrivateError(f"the amend of order {req.order_id} changes nothing")
    answer: dict[str, Any] = bybit_call(f"the amend of order {req.order_id}", http.amend_order, **params)["result"]
    return answer


def cancel(http: Any, req: s.VenueRequest, category: str = "linear") -> dict[str, Any]:
    """Cancel papertape's order `req.order_id`; as `amend` for an order that is no longer open."""
    answer: dict[str, Any] = bybit_call(f"the cancel of order {req.order_id}", http.cancel_order,
                                        **_order_ref(req, category))["result"]
    return answer


def with_backoff(call: Callable[[], T], sleep: Callable[[float], Any] = time.sleep, attempts: int = 5) -> T:
    """call(), again after 0.5, 1, 2... s while Bybit answers with a rate limit or a restarting service (RETRYABLE);
    the last attempt's error, or any other at once, is raised. pybit retries 10006 by itself first (sleeping until
    Bybit's X-Bapi-Limit-Reset-Timestamp) unless its session's retry_codes leave 10006 out."""
    delay = BACKOFF_S
    for _ in range(attempts - 1):
        try:
            return call()
        except BybitPrivateError as exc:
            if exc.code not in RETRYABLE:
                raise
            log.warning("%s; again in %.1f s", exc, delay)
        sleep(delay)
        delay *= 2
    return call()


def set_leverage(http: Any, symbol: str, leverage: Decimal | int, category: str = "linear") -> None:
    """The leverage of `symbol`, both sides; already at it (Bybit's 110043) is success."""
    value = format(Decimal(leverage), "f")
    try:
        bybit_call(f"the leverage of {symbol}", http.set_leverage, category=category, symbol=symbol,
                   buyLeverage=value, sellLeverage=value)
    except BybitPrivateError as exc:
        if exc.code != LEVERAGE_NOT_MODIFIED:
            raise


def set_margin_mode(http: Any, mode: MarginMode) -> None:
    """The unified account's margin mode: cross (REGULAR_MARGIN) or isolated (ISOLATED_MARGIN)."""
    bybit_call(f"the margin mode {mode}", http.set_margin_mode, setMarginMode=MARGIN_MODES[mode])
