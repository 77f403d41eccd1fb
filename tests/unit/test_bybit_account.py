"""streams/bybit/account.py: Bybit's private v5 data (recorded messages and responses, tests/data/PROVENANCE.md) as
papertape's venue messages, with the expected values read off the fixture files by hand; and its REST calls made by
pybit's real HTTP client against a local server answering in Bybit's shapes."""
from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from pybit.unified_trading import HTTP

import schemas as s
from builders import DATA
from schemas.vocabulary import LIMIT_TYPES, TRIGGER_TYPES
from streams.bybit import account
from streams.bybit.account import (
    execution_of,
    order_of,
    position_of,
    report_of,
    wallet_of,
    with_backoff,
)
from streams.bybit.orders import order_params
from streams.bybit.private import BybitPrivateError

WS = DATA / "bybit" / "ws" / "nautilus_rust"
REST = DATA / "bybit" / "http" / "nautilus_rust"
D = Decimal


def ws(name: str) -> dict[str, Any]:
    return json.loads((WS / f"ws_account_{name}.json").read_text())


def rest(name: str) -> dict[str, Any]:
    return json.loads((REST / f"http_get_{name}.json").read_text())


def variant(item: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(item)
    out.update(changes)
    return out


# A real funding settlement of Bybit's execution list, as quoted in ccxt issue #19629 (2023-10-20)
FUNDING = {
    "symbol": "VETUSDT", "orderId": "1692316800-VETUSDT-76024047-Buy", "orderLinkId": "", "side": "Buy",
    "orderPrice": "0.00000", "orderQty": "0", "leavesQty": "0", "orderType": "UNKNOWN", "stopOrderType": "UNKNOWN",
    "execFee": "-0.00005586", "execId": "98d39eab-547e-41fe-bc59-0a4e09e9c4fe", "execPrice": "0.01565",
    "execQty": "932", "execType": "Funding", "execValue": "14.5858", "execTime": "1692316800000", "isMaker": False,
    "feeRate": "-0.00000383", "tradeIv": "", "markIv": "", "markPrice": "0.01565", "indexPrice": "",
    "underlyingPrice": "", "blockTradeId": "", "closedSize": "0", "seq": "36754582922"}


# --- executions


def test_a_trade_from_the_execution_stream():
    assert execution_of(ws("execution")["data"][0]) == s.ExchangeExecution(
        exec_id="0ab1bdf7-4219-438b-b30a-32ec863018f7", order_id="test-order-link-001",
        venue_order_id="9aac161b-8ed6-450d-9cab-c5cc67c21784", ts=1746270400353, symbol="BTCUSDT", side="sell",
        price=D("95900.1"), qty=D("0.5"), fee=D("26.3725275"), fee_rate=D("0.00055"), liquidity="taker",
        exec_type="trade")


def test_trades_from_the_execution_list():
    maker, taker = (execution_of(x) for x in rest("executions")["result"]["list"])
    assert maker == s.ExchangeExecution(
        exec_id="e0cbe81d-0f18-5866-9415-cf319b5dab3b", order_id="test-order-001",
        venue_order_id="8c065341-7b52-4ca9-ac2c-37e31ac55c94", ts=1672282722429, symbol="BTCUSDT", side="buy",
        price=D("50000.00"), qty=D("0.100"), fee=D("0.0150"), fee_rate=D("0.0003"), liquidity="maker")
    assert taker == s.ExchangeExecution(
        exec_id="f1dce92e-1g29-6977-a526-dg420c6ecb4c", order_id="test-order-002",
        venue_order_id="7b954230-6a41-3ba8-bc20-26d20ab44b83", ts=1672282822529, symbol="ETHUSDT", side="sell",
        price=D("3000.00"), qty=D("0.500"), fee=D("0.9000"), fee_rate=D("0.0006"), liquidity="taker")


def test_a_funding_settlement_received_is_a_negative_fee():
    assert execution_of(FUNDING) == s.ExchangeExecution(
        exec_id="98d39eab-547e-41fe-bc59-0a4e09e9c4fe", order_id="", venue_order_id="1692316800-VETUSDT-76024047-Buy",
        ts=1692316800000, symbol="VETUSDT", side="buy", price=D("0.01565"), qty=D("932"), fee=D("-0.00005586"),
        fee_rate=D("-0.00000383"), liquidity="taker", exec_type="funding")


@pytest.mark.parametrize("bybit, papertape", [("Trade", "trade"), ("Funding", "funding"),
                                               ("BustTrade", "liquidation"), ("AdlTrade", "adl")])
def test_exec_types(bybit, papertape):
    assert execution_of(variant(ws("execution")["data"][0], execType=bybit)).exec_type == papertape


@pytest.mark.parametrize("exec_type", ["Settle", "Delivery", "BlockTrade", "MovePosition", "UNKNOWN", ""])
def test_other_exec_types_are_refused_by_name(exec_type):
    with pytest.raises(ValueError, match="execType"):
        execution_of(variant(ws("execution")["data"][0], execType=exec_type))


# --- orders


ORDERS = {
    ("ws", "order"): s.ExchangeOrder(  # a position's stop-loss (stopOrderType StopLoss), Limit, cancelled by its user
        order_id="client-1", venue_order_id="abcdef123456", ts=1700000005000, symbol="BTCUSDT", side="buy",
        type="stop_limit", status="cancelled", qty=D("0.010"), price=D("30000"), reason="CancelByUser"),
    ("ws", "order_filled"): s.ExchangeOrder(  # "Stop", no direction: its trigger is below the price at creation
        order_id="test-client-order-001", venue_order_id="5cf98598-39a7-459e-97bf-76ca765ee020", ts=1672364262457,
        symbol="BTCUSDT", side="buy", type="take_profit_limit", status="filled", qty=D("0.100"),
        price=D("30000.50"), trigger_price=D("29500.00"), filled_qty=D("0.100"), avg_price=D("30000.50")),
    ("ws", "order_partially_filled_rejected"): s.ExchangeOrder(
        order_id="O-20251001-164609-APEX-000-49", venue_order_id="5cf98598-39a7-459e-97bf-76ca765ee021",
        ts=1672364262457, symbol="APEXUSDT", side="buy", type="limit", status="rejected", qty=D("100.0"),
        price=D("1.500"), filled_qty=D("50.0"), avg_price=D("1.500")),
    ("ws", "order_stop_market"): s.ExchangeOrder(
        order_id="test-client-stop-market-001", venue_order_id="test-stop-market-001", ts=1672364262457,
        symbol="BTCUSDT", side="sell", type="stop_market", status="new", qty=D("0.100"),
        trigger_price=D("45000.00")),
    ("ws", "order_take_profit"): s.ExchangeOrder(
        order_id="test-client-tp-001", venue_order_id="test-take-profit-001", ts=1672364262457, symbol="BTCUSDT",
        side="sell", type="take_profit_market", status="new", qty=D("0.500"), trigger_price=D("55000.00")),
}
OPEN_ORDERS = [
    s.ExchangeOrder(order_id="client-open-1", venue_order_id="open-order-1", ts=1761355905606, symbol="ETHUSDT",
                    side="buy", type="limit", status="new", qty=D("0.010"), price=D("3930.41")),
    s.ExchangeOrder(order_id="client-open-2", venue_order_id="open-order-2", ts=1761355905609, symbol="ETHUSDT",
                    side="sell", type="limit", status="new", qty=D("0.010"), price=D("3940.42"))]
HISTORY_ORDER = s.ExchangeOrder(order_id="client-1", venue_order_id="abcdef123456", ts=1700000005000,
                                symbol="BTCUSDT", side="buy", type="stop_limit", status="cancelled", qty=D("0.010"),
                                price=D("30000"), reason="CancelByUser")


@pytest.mark.parametrize("source, name", list(ORDERS))
def test_orders_of_the_stream(source, name):
    assert order_of(ws(name)["data"][0]) == ORDERS[(source, name)]


def test_orders_of_rest():
    assert [order_of(x) for x in rest("orders_realtime")["result"]["list"]] == OPEN_ORDERS
    assert [order_of(x) for x in rest("orders_history")["result"]["list"]] == [HISTORY_ORDER]


def test_an_order_without_a_link_id_is_named_by_bybits_id():
    assert order_of(variant(ws("order")["data"][0], orderLinkId="")).order_id == "abcdef123456"


@pytest.mark.parametrize("bybit, papertape", [
    ("New", "new"), ("PartiallyFilled", "partially_filled"), ("Filled", "filled"), ("Cancelled", "cancelled"),
    ("PartiallyFilledCanceled", "cancelled"), ("Rejected", "rejected"), ("Untriggered", "new"),
    ("Triggered", "triggered"), ("Deactivated", "cancelled")])
def test_statuses(bybit, papertape):
    assert order_of(variant(ws("order_stop_market")["data"][0], orderStatus=bybit)).status == papertape


def test_an_unknown_status_is_refused_by_name():
    with pytest.raises(ValueError, match="orderStatus 'Expired'"):
        order_of(variant(ws("order")["data"][0], orderStatus="Expired"))


@pytest.mark.parametrize("order_type, stop_type, trigger, direction, side, created, expected", [
    ("Market", "", "0", 0, "Buy", "", "market"),
    ("Limit", "UNKNOWN", "", 0, "Sell", "", "limit"),
    ("Market", "Stop", "100", 2, "Sell", "", "stop_market"),  # a sell when the price falls: a stop
    ("Limit", "Stop", "100", 2, "Sell", "", "stop_limit"),
    ("Market", "Stop", "100", 1, "Buy", "", "stop_market"),  # a buy when it rises: a stop
    ("Market", "Stop", "100", 1, "Sell", "", "take_profit_market"),  # a sell when it rises: a take-profit
    ("Limit", "Stop", "100", 2, "Buy", "", "take_profit_limit"),
    ("Market", "Stop", "120", 0, "Buy", "100", "stop_market"),  # no direction: above the price at creation
    ("Market", "Stop", "80", 0, "Buy", "100", "take_profit_market"),
    ("Market", "TakeProfit", "110", 0, "Sell", "", "take_profit_market"),  # a position's TP/SL: stopOrderType
    ("Market", "StopLoss", "90", 0, "Sell", "", "stop_market"),
    ("Market", "PartialStopLoss", "110", 0, "Buy", "", "stop_market"),
    ("Limit", "PartialTakeProfit", "90", 0, "Buy", "", "take_profit_limit"),
    ("Market", "TrailingStop", "90", 0, "Sell", "", "trailing_stop"),
])
def test_order_types(order_type, stop_type, trigger, direction, side, created, expected):
    item = variant(ws("order_stop_market")["data"][0], orderType=order_type, stopOrderType=stop_type,
                   triggerPrice=trigger, triggerDirection=direction, side=side, lastPriceOnCreated=created)
    assert order_of(item).type == expected


def test_a_trigger_without_direction_or_creation_price_is_refused():
    item = variant(ws("order_stop_market")["data"][0], triggerDirection=0, lastPriceOnCreated="")
    with pytest.raises(ValueError, match="trigger direction"):
        order_of(item)


@pytest.mark.parametrize("order_type", TRIGGER_TYPES)
@pytest.mark.parametrize("side", ["buy", "sell"])
def test_a_placed_conditional_order_reads_back_as_its_type(order_type, side):
    order = s.Order(id="o-1", ts=1, session="s1", symbol="BTCUSDT", side=side, type=order_type, qty=D("0.5"),
                    price=D("101") if order_type in LIMIT_TYPES else None, trigger_price=D("100"))
    sent = order_params(order)
    echoed = {"orderId": "b-1", "orderLinkId": sent["orderLinkId"], "symbol": sent["symbol"], "side": sent["side"],
              "orderType": sent["orderType"], "stopOrderType": "Stop", "triggerPrice": sent["triggerPrice"],
              "triggerDirection": sent["triggerDirection"], "price": sent.get("price", "0"), "qty": sent["qty"],
              "orderStatus": "Untriggered", "cumExecQty": "0", "avgPrice": "0", "updatedTime": "1"}
    back = order_of(echoed)
    assert (back.order_id, back.type, back.side, back.trigger_price, back.price) == (
        "o-1", order_type, side, D("100"), order.price)


# --- positions and wallet


def test_positions_of_rest():
    assert [position_of(x) for x in rest("positions")["result"]["list"]] == [
        s.ExchangePosition(symbol="BTCUSDT", qty=D("0.5"), avg_price=D("50000.00")),
        s.ExchangePosition(symbol="ETHUSDT", qty=D("-5.0"), avg_price=D("3000.00")),
        s.ExchangePosition(symbol="SOLUSDT", qty=D(0))]


@pytest.mark.parametrize("name", ["position", "position_short"])
def test_a_short_of_the_stream(name):
    assert position_of(ws(name)["data"][0]) == s.ExchangePosition(symbol="ETHUSDT", qty=D("-0.01"),
                                                                    avg_price=D("3641.075"))


def test_side_none_is_flat():
    assert position_of(variant(ws("position")["data"][0], side="None", size="0")) == s.ExchangePosition(
        symbol="ETHUSDT", qty=D(0))


def test_wallet():
    item = ws("wallet")["data"][0]
    assert (wallet_of(item, "USDT"), wallet_of(item, "BTC"), wallet_of(item, "SOL")) == (
        D("9647.75537647"), D("0.00102964"), None)
    assert wallet_of(rest("wallet_balance")["result"]["list"][0], "USDT") == D("1000.50")


# --- stream messages


def test_an_order_message_is_a_report():
    report = report_of(ws("order"), "s1", "bybit_demo")
    assert report is not None
    assert (report.id, report.ts, report.session, report.venue, report.snapshot, report.executions) == (
        "bybit_demo:order:9b8d7cf0-1234-4567-8abc-00d0beef0001", 1700000007000, "s1", "bybit_demo", False, [])
    assert report.orders == [ORDERS[("ws", "order")]]


def test_an_execution_message_is_a_report():
    report = report_of(ws("execution"), "s1", "bybit_testnet")
    assert report is not None
    assert (report.id, report.ts, report.orders) == (
        "bybit_testnet:execution:386825804_BTCUSDT_140612148849382", 1746270400355, [])
    assert [x.exec_id for x in report.executions] == ["0ab1bdf7-4219-438b-b30a-32ec863018f7"]


def test_an_execution_papertape_does_not_book_leaves_the_others():
    message = ws("execution")
    message["data"].append(variant(message["data"][0], execType="BlockTrade", execId="other"))
    report = report_of(message, "s1", "bybit_demo")
    assert report is not None and [x.exec_id for x in report.executions] == ["0ab1bdf7-4219-438b-b30a-32ec863018f7"]


def test_a_category_topic_is_its_kind():
    report = report_of(variant(ws("order"), topic="order.linear"), "s1", "bybit_demo")
    assert report is not None and report.id == "bybit_demo:order.linear:9b8d7cf0-1234-4567-8abc-00d0beef0001"


@pytest.mark.parametrize("message", [
    ws("position"), ws("position_short"), ws("wallet"), ws("execution_fast"),
    json.loads((WS / "ws_auth_success.json").read_text()), json.loads((WS / "ws_auth_failure.json").read_text()),
    json.loads((WS / "ws_order_response.json").read_text()),
    {"success": True, "ret_msg": "pong", "conn_id": "c1", "op": "ping"},
    {"success": True, "ret_msg": "", "op": "subscribe", "conn_id": "c1"}])
def test_other_messages_give_no_report(message):
    assert report_of(message, "s1", "bybit_demo") is None


def test_ids_are_bounded_and_the_same_each_time():
    long = variant(ws("order"), id="x" * 300)
    first, again = report_of(long, "s1", "bybit_demo"), report_of(copy.deepcopy(long), "s1", "bybit_demo")
    assert first is not None and again is not None
    assert len(first.id) <= 160 and first.id == again.id and first.id.startswith("bybit_demo:")
    no_id = {k: v for k, v in ws("order").items() if k != "id"}
    a, b = report_of(no_id, "s1", "bybit_demo"), report_of(variant(no_id, creationTime=1), "s1", "bybit_demo")
    assert a is not None and b is not None and a.id != b.id


# --- rate limits


class Flaky:
    def __init__(self, *codes: int | None) -> None:
        self.codes, self.calls = list(codes), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.codes:
            raise BybitPrivateError("Bybit refused it", self.codes.pop(0))
        return "done"


@pytest.mark.parametrize("code", [10006, 10018, 10429, 429, 10016])
def test_rate_limits_are_retried_with_backoff(code):
    slept: list[float] = []
    assert with_backoff(Flaky(code, code, code), sleep=slept.append) == "done"
    assert slept == [0.5, 1.0, 2.0]


def test_backoff_gives_up_with_the_last_error():
    slept: list[float] = []
    call = Flaky(*[10006] * 10)
    with pytest.raises(BybitPrivateError) as err:
        with_backoff(call, sleep=slept.append, attempts=5)
    assert (err.value.code, call.calls, slept) == (10006, 5, [0.5, 1.0, 2.0, 4.0])


@pytest.mark.parametrize("code", [10001, 110001, 10003, 403, None])
def test_other_errors_are_raised_at_once(code):
    slept: list[float] = []
    call = Flaky(code)
    with pytest.raises(BybitPrivateError):
        with_backoff(call, sleep=slept.append)
    assert (call.calls, slept) == (1, [])


# --- REST, through pybit, against a local server in Bybit's shapes


class Bybit:
    """Answers each request with `answer(method, path, params)`: a result dict, or (retCode, retMsg)."""

    def __init__(self) -> None:
        self.answer: Callable[[str, str, dict[str, Any]], Any] = lambda method, path, params: {}
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        bybit = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                bybit._reply(self, "GET", url.path, dict(parse_qsl(url.query)))

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                bybit._reply(self, "POST", self.path, json.loads(body))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _reply(self, handler: BaseHTTPRequestHandler, method: str, path: str, params: dict[str, Any]) -> None:
        self.requests.append((method, path, params))
        answer = self.answer(method, path, params)
        code, msg, result = (answer[0], answer[1], {}) if isinstance(answer, tuple) else (0, "OK", answer)
        body = json.dumps({"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": 1}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@pytest.fixture(scope="module")
def bybit() -> Iterator[Bybit]:
    server = Bybit()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def http(bybit: Bybit) -> HTTP:
    bybit.requests.clear()
    session = HTTP(api_key="key", api_secret="secret", max_retries=1, log_requests=False)
    session.endpoint = bybit.url
    return session


def page(items: list[dict[str, Any]], cursor: str = "") -> dict[str, Any]:
    return {"category": "linear", "list": items, "nextPageCursor": cursor}


SINCE = 1672282000000
WEEK = 7 * 24 * 3600 * 1000


def test_executions_follow_cursors_and_weeks(bybit, http):
    btc, eth = rest("executions")["result"]["list"]
    settle = variant(btc, execType="Settle", execId="settle-1")

    def answer(method, path, params):
        assert (method, path) == ("GET", "/v5/execution/list")
        if params["startTime"] == str(SINCE):
            return page([eth, btc], "132766%3A2%2C132766%3A2") if "cursor" not in params else page([FUNDING])
        return page([eth, settle])  # the second week: one execution on the edge again, and one not booked
    bybit.answer = answer
    found = account.executions(http, SINCE, until_ms=SINCE + WEEK + 5000)
    assert [x.exec_id for x in found] == [  # oldest first (execTime 1672282722429, 1672282822529, 1692316800000)
        "e0cbe81d-0f18-5866-9415-cf319b5dab3b", "f1dce92e-1g29-6977-a526-dg420c6ecb4c",
        "98d39eab-547e-41fe-bc59-0a4e09e9c4fe"]
    assert [(p["startTime"], p["endTime"], p.get("cursor"), p["category"], p["limit"])
            for _, _, p in bybit.requests] == [
        (str(SINCE), str(SINCE + WEEK), None, "linear", "100"),
        (str(SINCE), str(SINCE + WEEK), "132766:2,132766:2", "linear", "100"),
        (str(SINCE + WEEK), str(SINCE + WEEK + 5000), None, "linear", "100")]


def test_a_repeated_cursor_stops(bybit, http):
    bybit.answer = lambda method, path, params: page(rest("executions")["result"]["list"], "same")
    with pytest.raises(BybitPrivateError, match="cursor"):
        account.executions(http, SINCE, until_ms=SINCE + 1000)


def test_a_snapshot(bybit, http):
    open_1, open_2 = rest("orders_realtime")["result"]["list"]
    history = rest("orders_history")["result"]["list"] + [variant(open_1, orderStatus="PartiallyFilled")]
    answers = {
        "/v5/order/realtime": lambda p: page([open_1], "next") if "cursor" not in p else page([open_2]),
        "/v5/order/history": lambda p: page(history),
        "/v5/execution/list": lambda p: page(rest("executions")["result"]["list"]),
        "/v5/position/list": lambda p: rest("positions")["result"],
        "/v5/account/wallet-balance": lambda p: rest("wallet_balance")["result"]}
    bybit.answer = lambda method, path, params: answers[path](params)
    report = account.snapshot(http, "s1", "bybit_demo", "check-7", 1761355906000, "USDT", since_ms=SINCE)
    assert (report.id, report.request, report.ts, report.snapshot, report.wallet) == (
        "bybit_demo:snapshot:check-7", "check-7", 1761355906000, True, D("1000.50"))
    assert sorted(report.orders, key=lambda x: x.order_id) == [HISTORY_ORDER] + OPEN_ORDERS  # the open one wins
    assert [x.exec_id for x in report.executions] == [
        "e0cbe81d-0f18-5866-9415-cf319b5dab3b", "f1dce92e-1g29-6977-a526-dg420c6ecb4c"]
    assert report.positions == [s.ExchangePosition(symbol="BTCUSDT", qty=D("0.5"), avg_price=D("50000.00")),
                                s.ExchangePosition(symbol="ETHUSDT", qty=D("-5.0"), avg_price=D("3000.00"))]
    asked = {path: params for _, path, params in bybit.requests}
    assert asked["/v5/order/realtime"]["settleCoin"] == asked["/v5/position/list"]["settleCoin"] == "USDT"
    assert asked["/v5/account/wallet-balance"] == {"accountType": "UNIFIED", "coin": "USDT"}


def test_recent_orders_stop_at_the_limit(bybit, http):
    item = rest("orders_history")["result"]["list"][0]
    bybit.answer = lambda method, path, params: page([variant(item, orderId=f"b{n}") for n in range(2)], "more")
    assert [x.venue_order_id for x in account.recent_orders(http, "USDT", limit=3)] == ["b0", "b1", "b0"]
    assert [p["limit"] for _, _, p in bybit.requests] == ["3", "3"]


def request(action: str, **fields: Any) -> s.VenueRequest:
    return s.VenueRequest(id="r1", ts=1, session="s1", venue="bybit_demo", action=action, order_id="sess-1:o-42",
                          symbol="BTCUSDT", **fields)


def test_amend_and_cancel_by_link_id(bybit, http):
    bybit.answer = lambda method, path, params: {"orderId": "b-9", "orderLinkId": params["orderLinkId"]}
    assert account.amend(http, request("amend", qty=D("0.020"), price=D("30100.5")))["orderId"] == "b-9"
    account.cancel(http, request("cancel"), category="linear")
    link = "pt-" + hashlib.sha256(b"sess-1:o-42").hexdigest()[:33]  # a colon is no orderLinkId character
    assert bybit.requests == [
        ("POST", "/v5/order/amend", {"category": "linear", "symbol": "BTCUSDT", "orderLinkId": link, "qty": "0.020",
                                     "price": "30100.5"}),
        ("POST", "/v5/order/cancel", {"category": "linear", "symbol": "BTCUSDT", "orderLinkId": link})]


def test_an_order_gone_is_a_refusal_with_bybits_code(bybit, http):
    bybit.answer = lambda method, path, params: (110001, "order not exists or too late to cancel")
    for change in (account.cancel, account.amend):
        with pytest.raises(BybitPrivateError) as err:
            change(http, request("amend", trigger_price=D("29000")))
        assert err.value.code == account.ORDER_NOT_FOUND == 110001


def test_an_amend_needs_a_change_and_a_symbol(http):
    with pytest.raises(BybitPrivateError, match="changes nothing"):
        account.amend(http, request("amend"))
    with pytest.raises(BybitPrivateError, match="no symbol"):
        account.cancel(http, s.VenueRequest(id="r", ts=1, session="s1", venue="bybit_demo", action="cancel",
                                            order_id="o-1"))


def test_leverage_and_margin_mode(bybit, http):
    answers = iter([{}, (110043, "Set leverage not modified"), {"reasons": []}, (10001, "params error")])
    bybit.answer = lambda method, path, params: next(answers)
    account.set_leverage(http, "BTCUSDT", D("10"))
    account.set_leverage(http, "BTCUSDT", 10)  # already 10: fine
    account.set_margin_mode(http, "isolated")
    with pytest.raises(BybitPrivateError) as err:
        account.set_leverage(http, "BTCUSDT", D("2.5"))
    assert err.value.code == 10001
    assert [(path, params) for _, path, params in bybit.requests] == [
        ("/v5/position/set-leverage", {"category": "linear", "symbol": "BTCUSDT", "buyLeverage": "10",
                                       "sellLeverage": "10"})] * 2 + [
        ("/v5/account/set-margin-mode", {"setMarginMode": "ISOLATED_MARGIN"}),
        ("/v5/position/set-leverage", {"category": "linear", "symbol": "BTCUSDT", "buyLeverage": "2.5",
                                       "sellLeverage": "2.5"})]
