"""The Bybit stand-in as an exchange (issue 18): pybit's own clients (the signed HTTP session papertape makes, and
pybit's private WebSocket pointed at the stand-in) trade against orders matched on the recorded public frames that a
public client (papertape's PublicSocket) was sent by tests/bybit_ws_server.py. Expected prices, fees and P&L are
computed here from the frames and Bybit's fee rates, not read from the stand-in."""
from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from decimal import Decimal as D
from typing import Any

import pytest
from pybit.unified_trading import WebSocket
from websockets.sync.client import connect

from builders import DATA
from bybit_private_server import BybitPrivate
from bybit_ws_server import BybitWsServer, recorded_feed
from papertape.config import BybitTradingSettings
from streams.bybit.private import BybitKeys, BybitPrivateError, bybit_call, trading_client
from streams.bybit.ws import PublicSocket

KEY, SECRET = "stAndInKey0123456789", "stAndInSecret-abcdefghijklmnopqrstuvwxyz"
RECORDED = recorded_feed()
FEED = {"orderbook.1.BTCUSDT": RECORDED["orderbook.1.BTCUSDT"][:2], "tickers.BTCUSDT": RECORDED["tickers.BTCUSDT"]}
FIXTURES = DATA / "bybit" / "ws" / "nautilus_rust"
TAKER, MAKER = D("0.00055"), D("0.0002")


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def wait(done, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


class PrivateSocket(WebSocket):
    """pybit's private WebSocket, dialling the stand-in instead of stream-demo.bybit.com."""

    def __init__(self, url: str) -> None:
        self._url = url
        super().__init__(channel_type="private", testnet=False, demo=True, api_key=KEY, api_secret=SECRET)

    def _connect(self, url: str) -> None:
        super()._connect(self._url)

    # pybit records a subscribe's req_id only after sending it; a server on loopback may answer first (see
    # test_bybit_ws_server.local_pybit): give pybit the moment a real network would
    def _process_subscription_message(self, message):
        wait(lambda: message.get("req_id") in self.subscriptions, 2)
        super()._process_subscription_message(message)

    def _get_callback(self, topic):
        wait(lambda: topic in self.callback_directory, 2)
        return super()._get_callback(topic)


@dataclass
class Venue:
    bybit: BybitPrivate
    public: BybitWsServer
    sent: list[tuple[str, dict]]  # what the public server sent, in order
    pushed: list[dict]  # what the private WebSocket pushed
    private: PrivateSocket

    @property
    def session(self) -> Any:
        return trading_client(BybitTradingSettings(rest_url=self.bybit.url), BybitKeys(KEY, SECRET))

    def top(self, side: str) -> D:
        """The best bid ("b") or ask ("a") of the depth-1 book the public server sent last."""
        for topic, frame in reversed(self.sent):
            levels = [p for p, q in frame["data"][side] if D(q)] if topic.startswith("orderbook.1.") else []
            if levels:
                return D(levels[-1])
        raise AssertionError("no book sent")

    def place(self, **params: Any) -> dict[str, Any]:
        params = {"category": "linear", "symbol": "BTCUSDT"} | params
        return bybit_call("order", self.session.place_order, **params)["result"]

    def pushed_for(self, topic: str, link: str) -> list[dict]:
        return [d for m in list(self.pushed) if m["topic"] == topic for d in m["data"] if d.get("orderLinkId") == link]

    def executions(self, **query: Any) -> list[dict]:
        """Every page of /v5/execution/list, one row a page."""
        rows, cursor = [], None
        while True:
            page = bybit_call("executions", self.session.get_executions, category="linear", limit=1, cursor=cursor,
                              **query)["result"]
            rows += page["list"]
            cursor = page["nextPageCursor"] or None
            if cursor is None:
                return rows


@pytest.fixture
def venue():
    bybit = BybitPrivate(KEY, SECRET)
    sent: list[tuple[str, dict]] = []

    def on_frame(topic: str, frame: dict) -> None:
        sent.append((topic, frame))
        bybit.on_public_frame(topic, frame)

    with BybitWsServer(FEED, on_frame=on_frame) as public:
        received: list[str] = []
        sockets: list[WebSocket] = []
        try:
            feed = PublicSocket(public.url, "linear", lambda ns, message: received.append(message))
            sockets.append(feed)
            private = PrivateSocket(bybit.ws_url)
            sockets.append(private)
            feed.subscribe_topics([*FEED, "publicTrade.BTCUSDT"])  # no recorded BTCUSDT trades: the tests push some
            pushed: list[dict] = []
            for stream in (private.order_stream, private.execution_stream, private.position_stream,
                           private.wallet_stream):
                stream(pushed.append)
            assert wait(lambda: sum('"topic"' in m for m in received) == 3 and bybit.subscriptions == 4)
            yield Venue(bybit, public, sent, pushed, private)
        finally:
            for socket in sockets:
                socket.exit()
            bybit.close()


def book_delta(venue: Venue, bid: str, ask: str, u: int) -> dict:
    """A depth-1 delta moving the top: the old levels leave (size 0), the new ones come."""
    frame = copy.deepcopy(FEED["orderbook.1.BTCUSDT"][1])
    frame["data"].update(b=[[str(venue.top("b")), "0"], [bid, "1.000"]],
                         a=[[str(venue.top("a")), "0"], [ask, "2.000"]], u=u)
    return frame


def trade(price: str, size: str, trade_id: str) -> dict:
    frame = copy.deepcopy(RECORDED["publicTrade.LTCUSDT"][0])
    frame["topic"] = "publicTrade.BTCUSDT"
    frame["data"] = [frame["data"][0] | {"s": "BTCUSDT", "p": price, "v": size, "i": trade_id}]
    return frame


def test_market_orders_take_the_top_of_the_book_the_feed_showed(venue):
    ask = venue.top("a")
    placed = venue.place(side="Buy", orderType="Market", qty="0.010", orderLinkId="m-1")
    assert wait(lambda: venue.pushed_for("execution", "m-1") and any(m["topic"] == "wallet" for m in venue.pushed))
    [execution] = venue.pushed_for("execution", "m-1")
    template = fixture("ws_account_execution.json")
    message = next(m for m in venue.pushed if m["topic"] == "execution")
    assert set(message) == set(template) and set(execution) == set(template["data"][0])
    fee1 = D("0.010") * ask * TAKER
    assert (D(execution["execPrice"]), D(execution["execQty"]), D(execution["execFee"]), execution["isMaker"],
            execution["orderId"]) == (ask, D("0.010"), fee1, False, placed["orderId"])
    [row] = venue.executions(symbol="BTCUSDT")
    assert {k: row[k] for k in ("execId", "execPrice", "execFee")} == {k: execution[k] for k in
                                                                          ("execId", "execPrice", "execFee")}
    [position] = bybit_call("positions", venue.session.get_positions, category="linear",
                            symbol="BTCUSDT")["result"]["list"]
    assert (position["side"], D(position["size"]), D(position["avgPrice"]), position["positionIdx"]) == (
        "Buy", D("0.010"), ask, 0)

    # the book moves (a frame the public server sends now): a market sell closes at the new bid
    assert venue.public.push("orderbook.1.BTCUSDT", book_delta(venue, "28540.50", "28560.00", 7003307)) == 1
    bid = venue.top("b")
    assert bid == D("28540.50")
    venue.place(side="Sell", orderType="Market", qty="0.010", orderLinkId="m-2")
    assert wait(lambda: venue.pushed_for("execution", "m-2"))
    [closing] = venue.pushed_for("execution", "m-2")
    fee2 = D("0.010") * bid * TAKER
    assert (D(closing["execPrice"]), D(closing["execFee"]), D(closing["closedSize"])) == (bid, fee2, D("0.010"))
    balance = D("1000.50") + D("0.010") * (bid - ask) - fee1 - fee2
    wallet = bybit_call("wallet", venue.session.get_wallet_balance, accountType="UNIFIED")["result"]["list"][0]
    assert D(next(c for c in wallet["coin"] if c["coin"] == "USDT")["walletBalance"]) == balance
    assert bybit_call("positions", venue.session.get_positions, category="linear")["result"]["list"] == []
    assert [D(r["execPrice"]) for r in venue.executions()] == [bid, ask]  # newest first, one a page


def test_resting_limits_fill_as_maker_from_public_trades_amend_cancel_and_triggers(venue):
    venue.place(side="Buy", orderType="Limit", qty="0.010", price="28500", timeInForce="GTC", orderLinkId="l-1")
    bybit_call("amend", venue.session.amend_order, category="linear", symbol="BTCUSDT", orderLinkId="l-1",
               qty="0.020", price="28510")
    [open_order] = bybit_call("open", venue.session.get_open_orders, category="linear")["result"]["list"]
    assert (open_order["orderStatus"], open_order["qty"], open_order["price"]) == ("New", "0.020", "28510")

    venue.public.push("publicTrade.BTCUSDT", trade("28511.00", "5", "t-1"))  # not through the price: no fill
    venue.public.push("publicTrade.BTCUSDT", trade("28505.50", "0.005", "t-2"))
    assert wait(lambda: venue.pushed_for("execution", "l-1"))
    [part] = venue.pushed_for("execution", "l-1")
    assert (part["isMaker"], D(part["execPrice"]), D(part["execQty"]), D(part["execFee"])) == (
        True, D("28510"), D("0.005"), D("0.005") * D("28510") * MAKER)
    assert wait(lambda: venue.pushed_for("order", "l-1")[-1]["orderStatus"] == "PartiallyFilled")
    venue.public.push("publicTrade.BTCUSDT", trade("28509.00", "1", "t-3"))
    assert wait(lambda: venue.pushed_for("order", "l-1")[-1]["orderStatus"] == "Filled")
    assert D(venue.pushed_for("execution", "l-1")[-1]["execQty"]) == D("0.015")

    placed = venue.place(side="Sell", orderType="Limit", qty="0.010", price="29000", orderLinkId="l-2")
    bybit_call("cancel", venue.session.cancel_order, category="linear", symbol="BTCUSDT", orderId=placed["orderId"])
    with pytest.raises(BybitPrivateError) as again:
        bybit_call("cancel", venue.session.cancel_order, category="linear", symbol="BTCUSDT",
                   orderId=placed["orderId"])
    assert again.value.code == 110001
    history = bybit_call("history", venue.session.get_order_history, category="linear")["result"]["list"]
    assert [(o["orderLinkId"], o["orderStatus"]) for o in history] == [("l-2", "Cancelled"), ("l-1", "Filled")]

    # a conditional buy: untriggered until the last price rises to 28700, then a market order at the ask
    venue.place(side="Buy", orderType="Market", qty="0.010", triggerPrice="28700", triggerDirection=1,
                triggerBy="LastPrice", orderLinkId="c-1")
    assert venue.pushed_for("execution", "c-1") == []
    venue.public.push("orderbook.1.BTCUSDT", book_delta(venue, "28699.50", "28700.50", 7003307))
    venue.public.push("publicTrade.BTCUSDT", trade("28700.00", "0.1", "t-4"))
    assert wait(lambda: venue.pushed_for("execution", "c-1"))
    assert D(venue.pushed_for("execution", "c-1")[0]["execPrice"]) == D("28700.50")


def test_refusals_and_a_private_stream_cut(venue):
    bybit = venue.bybit
    for params, code in (({"qty": "1.000"}, 110007), ({"qty": "0.0015"}, 10001), ({"symbol": "NOPEUSDT"}, 10001)):
        with pytest.raises(BybitPrivateError) as refused:
            venue.place(**({"side": "Buy", "orderType": "Market", "qty": "0.010"} | params))
        assert refused.value.code == code

    bybit.fail_next(10006)  # pybit waits for the reset time Bybit's headers name, and sends it again
    venue.place(side="Buy", orderType="Market", qty="0.001", orderLinkId="r-1")
    assert [q.ret_code for q in bybit.requests if q.path == "/v5/order/create"][-2:] == [10006, 0]
    bybit.rate_limit, bybit.clock = 2, lambda: 0.0  # one frozen second
    session = venue.session
    session.retry_codes = set()  # the refusal itself, not pybit's retry
    for _ in range(2):
        session.get_open_orders(category="linear")
    with pytest.raises(BybitPrivateError) as limited:
        bybit_call("open orders", session.get_open_orders, category="linear")
    assert limited.value.code == 10006
    bybit.rate_limit = None

    with connect(bybit.ws_url) as ws:  # a wrong signature
        expires = int(time.time() * 1000) + 5000
        ws.send(json.dumps({"op": "auth", "args": [KEY, expires, "0" * 64]}))
        refusal = json.loads(ws.recv(timeout=5))
        assert set(refusal) == set(fixture("ws_auth_failure.json"))
        assert (refusal["success"], refusal["retCode"]) == (False, 10004)
        sign = hmac.new(SECRET.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
        ws.send(json.dumps({"op": "auth", "args": [KEY, expires, sign]}))
        assert json.loads(ws.recv(timeout=5))["success"] is True
        ws.send(json.dumps({"op": "ping", "req_id": "p"}))
        assert json.loads(ws.recv(timeout=5))["op"] == "pong"
    assert bybit.auths == 2

    start = int(time.time() * 1000)
    assert bybit.drop_private(hold=True) == 1  # the stream is cut and stays down while the order fills
    venue.place(side="Sell", orderType="Market", qty="0.001", orderLinkId="cut-1")
    bybit.resume_private()
    assert wait(lambda: bybit.auths == 3 and bybit.subscriptions == 8 and bybit.connections == 3)
    venue.place(side="Buy", orderType="Market", qty="0.001", orderLinkId="after-1")
    assert wait(lambda: venue.pushed_for("execution", "after-1"))
    assert venue.pushed_for("execution", "cut-1") == []  # not pushed later, as Bybit
    found = venue.executions(startTime=start)
    assert [r["orderLinkId"] for r in found] == ["after-1", "cut-1"]
