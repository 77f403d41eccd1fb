"""papertape orders as Bybit v5 orders (issue 18): the parameters of /v5/order/create for a schemas.Order, and
placing one so that a retry never doubles it. Bybit's v5 docs ("Place Order") name the parameters: side Buy/Sell,
orderType Market/Limit, timeInForce, reduceOnly, triggerPrice with triggerDirection (1: triggered when the price
rises to it, 2: when it falls) and triggerBy, takeProfit/stopLoss on the entry, orderLinkId (at most 36 characters,
unique per account)."""
from __future__ import annotations

from typing import Any

import requests

import schemas as s
from papertape.core.venue.remote import exchange_problem, link_id
from streams.bybit.private import BybitPrivateError, bybit_call

DUPLICATE_LINK_ID = 110072  # Bybit: "OrderLinkedID is duplicate"
TRIGGER_BY = {"last": "LastPrice", "mark": "MarkPrice"}
# (type, side) -> Bybit's triggerDirection: a stop triggers when the price moves against the side that will trade
# (a sell stop when it falls to the trigger), a take-profit when it moves the other way
DIRECTION = {("stop_market", "sell"): 2, ("stop_limit", "sell"): 2, ("stop_market", "buy"): 1, ("stop_limit", "buy"): 1,
             ("take_profit_market", "sell"): 1, ("take_profit_limit", "sell"): 1,
             ("take_profit_market", "buy"): 2, ("take_profit_limit", "buy"): 2}


def order_params(order: s.Order, category: str = "linear") -> dict[str, Any]:
    """The /v5/order/create body of `order`; BybitPrivateError for what Bybit has no order type for."""
    problem = exchange_problem(order)
    if problem:
        raise BybitPrivateError(f"{problem}: order {order.id} is refused before it is sent")
    params: dict[str, Any] = {
        "category": category, "symbol": order.symbol, "side": order.side.capitalize(),
        "orderType": "Limit" if order.price is not None else "Market", "qty": format(order.qty, "f"),
        "orderLinkId": link_id(order.id)}
    if order.price is not None:
        params["price"] = format(order.price, "f")
        params["timeInForce"] = order.tif
    if order.reduce_only:
        params["reduceOnly"] = True
    if order.trigger_price is not None:
        params["triggerPrice"] = format(order.trigger_price, "f")
        params["triggerDirection"] = DIRECTION[(order.type, order.side)]
        params["triggerBy"] = TRIGGER_BY[order.trigger_by]
    if order.take_profit is not None:
        params["takeProfit"] = format(order.take_profit, "f")
    if order.stop_loss is not None:
        params["stopLoss"] = format(order.stop_loss, "f")
    return params


def place(session: Any, order: s.Order, category: str = "linear", attempts: int = 3) -> dict[str, Any]:
    """Place `order`; Bybit's answer (orderId, orderLinkId). A request whose answer was lost is sent again with the
    same orderLinkId: if the first had arrived, Bybit refuses the second as a duplicate, and the order that is
    already there is looked up instead of placed twice."""
    params = order_params(order, category)
    for attempt in range(attempts):
        try:
            answer: dict[str, Any] = bybit_call(f"order {order.id}", session.place_order, **params)["result"]
            return answer
        except requests.RequestException as exc:  # no answer: did it arrive? the retry's link id will tell
            if attempt == attempts - 1:
                raise BybitPrivateError(f"order {order.id}: no answer from Bybit after {attempts} attempts "
                                        f"({type(exc).__name__})") from None
        except BybitPrivateError as exc:
            if exc.code != DUPLICATE_LINK_ID:
                raise
            break
    found = bybit_call(f"order {order.id}", session.get_open_orders, category=category,
                       orderLinkId=params["orderLinkId"])["result"]["list"]
    if not found:
        raise BybitPrivateError(f"order {order.id}: Bybit says its link id is taken, but has no such open order")
    return {"orderId": found[0]["orderId"], "orderLinkId": found[0]["orderLinkId"]}
