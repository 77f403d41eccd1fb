"""papertape orders as Bybit v5 orders (issue 18): the /v5/order/create parameters of each order type, written here
from Bybit's "Place Order" docs, and a placement whose answer is lost: sent again with the same orderLinkId, Bybit
(the stand-in, checking every signature) refuses the duplicate, and the one order that exists is found, not doubled."""
from __future__ import annotations

from decimal import Decimal as D

import pytest

import schemas as s
from bybit_private_server import BybitPrivate
from papertape.config import BybitTradingSettings
from streams.bybit.orders import link_id, order_params, place
from streams.bybit.private import BybitKeys, BybitPrivateError, trading_client

KEY, SECRET = "stAndInKey0123456789", "stAndInSecret-abcdefghijklmnopqrstuvwxyz"


def order(**kw) -> s.Order:
    fields = {"id": "desk-1", "ts": 1, "session": "desk", "symbol": "BTCUSDT", "side": "buy", "qty": D("0.010")} | kw
    return s.Order(**fields)


def test_each_order_type_becomes_bybit_s_parameters():
    assert order_params(order()) == {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market",
                                     "qty": "0.010", "orderLinkId": "desk-1"}
    limit = order_params(order(type="limit", price=D("61000.5"), tif="PostOnly", side="sell", reduce_only=True))
    assert (limit["orderType"], limit["price"], limit["timeInForce"], limit["reduceOnly"], limit["side"]) == (
        "Limit", "61000.5", "PostOnly", True, "Sell")
    stop = order_params(order(type="stop_market", side="sell", trigger_price=D("60000"), trigger_by="mark"))
    assert (stop["orderType"], stop["triggerPrice"], stop["triggerDirection"], stop["triggerBy"]) == (
        "Market", "60000", 2, "MarkPrice")  # a sell stop triggers when the price falls to it
    take = order_params(order(type="take_profit_limit", side="buy", price=D("59000"), trigger_price=D("59100")))
    assert (take["orderType"], take["triggerDirection"], take["triggerBy"]) == ("Limit", 2, "LastPrice")
    bracket = order_params(order(type="limit", price=D("61000"), stop_loss=D("59000"), take_profit=D("64000")))
    assert (bracket["stopLoss"], bracket["takeProfit"]) == ("59000", "64000")
    with pytest.raises(BybitPrivateError, match="no trailing-stop order"):
        order_params(order(type="trailing_stop", side="sell", trail_percent=D("1"), reduce_only=True))
    long_id = "desk-x-" + "a" * 40
    assert len(link_id(long_id)) == 36 and link_id(long_id) == link_id(long_id) != link_id(long_id + "b")


def test_a_placement_whose_answer_is_lost_is_not_doubled():
    bybit = BybitPrivate(KEY, SECRET)
    try:
        session = trading_client(BybitTradingSettings(rest_url=bybit.url), BybitKeys(KEY, SECRET))
        bybit.lose_answers = 1  # Bybit took the order; its answer never came back
        placed = place(session, order(id="desk-7", type="limit", price=D("61000")))
        assert placed == {"orderId": "bybit-1", "orderLinkId": "desk-7"}
        assert list(bybit.orders) == ["desk-7"]  # one order, though it was sent twice
        assert [(q.path, q.ret_code) for q in bybit.requests] == [
            ("/v5/order/create", 0), ("/v5/order/create", 110072), ("/v5/order/realtime", 0)]
        assert place(session, order(id="desk-8")) == {"orderId": "bybit-2", "orderLinkId": "desk-8"}
        with pytest.raises(BybitPrivateError, match="retCode 10004"):  # a signature Bybit refuses: no retry
            place(trading_client(BybitTradingSettings(rest_url=bybit.url), BybitKeys(KEY, "x" + SECRET)),
                  order(id="desk-9"))
        assert "desk-9" not in bybit.orders
    finally:
        bybit.close()
