"""The local Bybit v5 public WebSocket server, driven by plain `websockets` and by pybit."""

import json
import time
import uuid

import pytest
from pybit.unified_trading import WebSocket
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidStatus,
)
from websockets.sync.client import connect

from bybit_ws_server import BybitWsServer, load_frames, recorded_feed, relabel

RECORDED = recorded_feed()
# The third recorded orderbook.1.BTCUSDT frame belongs to another recording; keep a clean book.
CLEAN_FEED = {**RECORDED, "orderbook.1.BTCUSDT": RECORDED["orderbook.1.BTCUSDT"][:2]}


@pytest.fixture
def server():
    with BybitWsServer(RECORDED) as running:
        yield running


def send(ws, **request):
    ws.send(json.dumps(request))


def recv(ws) -> dict:
    return json.loads(ws.recv(timeout=2))


def request(ws, **payload) -> dict:
    send(ws, **payload)
    return recv(ws)


def assert_nothing_pending(ws) -> None:
    """Replies come in request order, so a pong next means no frame was queued before it."""
    assert request(ws, op="ping", req_id="probe")["ret_msg"] == "pong"


def topics(args_count: int, length: int, tag: str) -> list[str]:
    return [f"tickers.{tag}{i:04d}".ljust(length, "X") for i in range(args_count)]


def test_subscribe_is_acknowledged_like_bybit(server):
    with connect(server.url) as ws:
        send(ws, op="subscribe", req_id="r1", args=["tickers.ETHUSDT"])
        raw = ws.recv(timeout=2)
    reply = json.loads(raw)
    assert list(reply) == ["success", "ret_msg", "conn_id", "req_id", "op"]
    assert reply == {**reply, "success": True, "ret_msg": "", "req_id": "r1", "op": "subscribe"}
    uuid.UUID(reply["conn_id"])
    assert server.subscribe_requests == [[["tickers.ETHUSDT"]]]


def test_unknown_topic_fails_the_whole_request(server):
    with connect(server.url) as ws:
        reply = request(ws, op="subscribe", req_id="r", args=["tickers.BTCUSDT", "foo.BAR"])
        assert reply["success"] is False
        assert reply["ret_msg"] == "error:handler not found,topic:foo.BAR"
        assert_nothing_pending(ws)  # tickers.BTCUSDT has a feed, but the batch was refused
        assert request(ws, op="subscribe", args=["tickers.BTCUSDT"])["success"] is True
        assert recv(ws) == RECORDED["tickers.BTCUSDT"][0]
        again = request(ws, op="subscribe", args=["tickers.BTCUSDT"])
    assert again["ret_msg"] == "error:already subscribed,topic:tickers.BTCUSDT"


def test_allowed_symbols_restrict_the_known_topics():
    with BybitWsServer(symbols={"BTCUSDT"}) as server, connect(server.url) as ws:
        assert request(ws, op="subscribe", args=["orderbook.50.BTCUSDT"])["success"] is True
        refused = request(ws, op="subscribe", args=["orderbook.50.ETHUSDT"])
        odd_depth = request(ws, op="subscribe", args=["orderbook.30.BTCUSDT"])
    assert refused["ret_msg"] == "error:handler not found,topic:orderbook.50.ETHUSDT"
    assert odd_depth["success"] is False


def test_more_than_ten_args_are_refused_with_bybits_go_encoding(server):
    with connect(server.url) as ws:
        assert request(ws, op="subscribe", args=topics(10, 20, "A"))["success"] is True
        send(ws, op="subscribe", req_id="big", args=topics(11, 20, "B"))
        raw = ws.recv(timeout=2)
    assert "args size \\u003e10" in raw
    assert json.loads(raw)["ret_msg"] == "args size >10"


def test_a_connection_holds_at_most_21000_characters_of_args(server):
    accepted = topics(21, 1000, "T")  # exactly 21,000 characters
    with connect(server.url) as ws:
        for start in (0, 10, 20):
            assert request(ws, op="subscribe", args=accepted[start : start + 10])["success"] is True
        over = request(ws, op="subscribe", args=["tickers.BTCUSDT"])
    with connect(server.url) as fresh:
        assert request(fresh, op="subscribe", args=["tickers.BTCUSDT"])["success"] is True
    assert (over["success"], over["ret_msg"]) == (False, "args length >21000")


def test_ping_is_answered_with_pong(server):
    with connect(server.url) as ws:
        reply = request(ws, op="ping", req_id="p1")
        assert ws.ping().wait(2)  # protocol-level ping, answered by the library
    assert {k: reply[k] for k in ("success", "ret_msg", "req_id", "op")} == {
        "success": True, "ret_msg": "pong", "req_id": "p1", "op": "ping",
    }
    assert server.pings_received == 1


def test_bad_requests_get_an_error_and_the_connection_stays_open(server):
    with connect(server.url) as ws:
        ws.send("hello")
        not_json = recv(ws)
        unknown_op = request(ws, op="nope", req_id="x")
        assert_nothing_pending(ws)
    assert not_json["success"] is False
    assert not_json["ret_msg"].startswith("Failed to decode incoming data")
    assert (unknown_op["success"], unknown_op["op"]) == (False, "nope")
    assert unknown_op["ret_msg"] == "error:invalid op"
    assert server.messages_received[0] == (0, "hello")


def test_recorded_frames_follow_the_subscribe_in_order(server):
    wanted = ["orderbook.1.BTCUSDT", "tickers.BTCUSD"]
    with connect(server.url) as ws:
        assert_nothing_pending(ws)  # nothing is sent before a subscribe
        assert request(ws, op="subscribe", args=wanted)["success"] is True
        frames = [recv(ws) for _ in range(5)]
        assert_nothing_pending(ws)
    for topic in wanted:
        assert [f for f in frames if f["topic"] == topic] == RECORDED[topic]


def test_push_reaches_only_subscribed_connections(server):
    trade = load_frames()[1]
    with connect(server.url) as subscriber, connect(server.url) as bystander:
        assert request(subscriber, op="subscribe", args=["publicTrade.LTCUSDT"])["success"]
        assert recv(subscriber) == trade  # the recorded feed
        assert server.push("publicTrade.LTCUSDT", trade) == 1
        assert recv(subscriber) == trade
        server.push("publicTrade.LTCUSDT", '{"not": "a bybit frame"')  # strings go out verbatim
        assert subscriber.recv(timeout=2) == '{"not": "a bybit frame"'
        assert_nothing_pending(bystander)


def test_unsubscribe_stops_delivery():
    feed = {"orderbook.1.BTCUSDT": RECORDED["orderbook.1.BTCUSDT"]}
    with BybitWsServer(feed, pace_s=0.3) as server, connect(server.url) as ws:
        request(ws, op="subscribe", args=["orderbook.1.BTCUSDT"])
        assert recv(ws)["type"] == "snapshot"
        reply = request(ws, op="unsubscribe", req_id="u", args=["orderbook.1.BTCUSDT"])
        assert server.push("orderbook.1.BTCUSDT", {"topic": "orderbook.1.BTCUSDT"}) == 0
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)  # longer than the pace: the feed's next frame would be here
    assert (reply["success"], reply["op"], reply["req_id"]) == (True, "unsubscribe", "u")


def test_silence_holds_the_feed_until_lifted(server):
    with connect(server.url) as ws:
        server.silence("tickers.BTCUSDT")
        request(ws, op="subscribe", args=["tickers.BTCUSDT"])
        assert server.push("tickers.BTCUSDT", RECORDED["tickers.BTCUSDT"][0]) == 0
        assert_nothing_pending(ws)  # acks and pongs still flow
        server.silence("tickers.BTCUSDT", on=False)
        assert recv(ws) == RECORDED["tickers.BTCUSDT"][0]


def test_drop_connections_cuts_without_a_close_frame(server):
    with connect(server.url) as ws:
        assert_nothing_pending(ws)
        assert server.drop_connections() == 1
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=2)
    assert closed.value.rcvd is None
    assert server.wait_until(lambda s: s.open_connections == 0)


def test_close_connections_sends_a_close_frame(server):
    with connect(server.url) as ws:
        assert_nothing_pending(ws)
        server.close_connections(1000)
        with pytest.raises(ConnectionClosedOK) as closed:
            ws.recv(timeout=2)
    assert closed.value.rcvd.code == 1000


def test_refuse_fails_the_handshake(server):
    server.refuse = True
    with pytest.raises(InvalidStatus) as refused:
        connect(server.url, open_timeout=2)
    assert refused.value.response.status_code == 503
    assert (server.connections_accepted, server.handshakes_refused) == (0, 1)


def test_relabel_moves_a_frame_to_another_symbol():
    trade, ticker = load_frames()[1], RECORDED["tickers.BTCUSDT"][0]
    moved_trade, moved_ticker = relabel(trade, "XYZUSDT"), relabel(ticker, "XYZUSDT")
    assert moved_trade["topic"] == "publicTrade.XYZUSDT"
    assert moved_ticker["topic"] == "tickers.XYZUSDT"
    assert moved_trade["data"][0]["s"] == "XYZUSDT"
    assert moved_ticker["data"]["symbol"] == "XYZUSDT"
    assert moved_trade["data"][0]["p"] == trade["data"][0]["p"]
    assert trade["topic"] == "publicTrade.LTCUSDT"  # the original is untouched


async def test_usable_from_an_async_test(server):
    async with async_connect(server.url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "args": ["liquidation.XRPUSD"]}))
        ack, frame = json.loads(await ws.recv()), json.loads(await ws.recv())
    assert ack["success"] is True
    assert frame == RECORDED["liquidation.XRPUSD"][0]


# -- pybit ------------------------------------------------------------------------------------


def local_pybit(server: BybitWsServer, **options) -> WebSocket:
    """pybit hardcodes wss://stream.bybit.com; this one dials the local server instead."""

    class LocalWebSocket(WebSocket):
        def _connect(self, url):
            super()._connect(server.url)

        # pybit records a subscribe's req_id and registers its callback only after sending it. A server on
        # loopback may answer first: pybit's thread then raises KeyError (the req_id, seen in CI), pybit exits for
        # good and the next subscribe waits forever. A real Bybit is a network away; give pybit that moment.
        def _process_subscription_message(self, message):
            req_id = message.get("req_id")
            registered(lambda: not req_id or req_id in self.subscriptions)
            super()._process_subscription_message(message)

        def _get_callback(self, topic):
            registered(lambda: topic in self.callback_directory)
            return super()._get_callback(topic)

    def registered(done) -> None:
        deadline = time.monotonic() + 2
        while not done() and time.monotonic() < deadline:
            time.sleep(0.001)

    return LocalWebSocket(testnet=False, channel_type="linear", **options)


def test_pybit_receives_frames_and_resubscribes_after_a_network_cut():
    books, tickers = [], []
    with BybitWsServer(CLEAN_FEED) as server:
        ws = local_pybit(server)
        try:
            ws.ticker_stream(
                symbol="BTCUSDT", callback=lambda m: tickers.append(m["data"]["lastPrice"])
            )
            # pybit hands over its own live book, mutated by later deltas: copy what you keep
            ws.orderbook_stream(
                depth=1, symbol="BTCUSDT", callback=lambda m: books.append(json.dumps(m["data"]))
            )
            assert server.wait_until(lambda s: len(books) == 2 and len(tickers) == 1)
            assert json.loads(books[1])["b"] == [["28552.00", "0.012"]]  # snapshot + delta

            server.drop_connections()
            assert server.wait_until(
                lambda s: s.connections_accepted == 2 and len(s.subscribe_requests[1]) == 2
            )
            assert server.subscribe_requests[1] == server.subscribe_requests[0]
            assert server.wait_until(lambda s: len(books) == 4 and len(tickers) == 2)
            assert ws.is_connected()
        finally:
            ws.exit()
    assert json.loads(books[2])["u"] == 7003305  # the fresh snapshot after resubscribing


def test_pybit_shuts_itself_down_on_a_refused_subscribe():
    """pybit 5.17 breaks on Bybit's refusal (KeyError in its thread), closes, never reconnects."""
    with BybitWsServer(RECORDED) as server:
        ws = local_pybit(server)
        try:
            ws.ticker_stream(symbol="NOPE!", callback=lambda m: None)
            assert server.wait_until(lambda s: s.open_connections == 0)
            assert not ws.is_connected() and ws.exited
            assert server.connections_accepted == 1
        finally:
            ws.exit()


def test_pybit_gives_up_when_reconnects_are_refused():
    """pybit retries without backoff and stops for good once `retries` handshakes failed."""
    with BybitWsServer(RECORDED) as server:
        ws = local_pybit(server, retries=3)
        try:
            server.refuse = True
            server.drop_connections()
            assert server.wait_until(lambda s: s.handshakes_refused == 3)
            server.refuse = False
            assert not server.wait_until(lambda s: s.connections_accepted > 1, timeout=0.5)
            assert server.handshakes_refused == 3 and ws.exited and not ws.is_connected()
        finally:
            ws.exit()
