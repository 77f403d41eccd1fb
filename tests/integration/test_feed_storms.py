"""Exchange feed storms through the live Bybit feed (pybit) against the local v5 server: a disconnect storm,
duplicated and reordered deltas, a snapshot in the middle of deltas, a book out of sync after a gap, a frozen
topic. The last two go on through the pure core (market actor, engine, a scripted session): no session trades
on a stale book, and trading resumes once the symbol is live again.

Books are pushed by the test as Bybit sends them (a snapshot on subscribe, then deltas with consecutive update
ids `u`); `BookFeed` keeps the book the messages make, so expected tops are computed here, not read off the feed.
No pipeline: no broker, no ClickHouse."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from decimal import Decimal

import orjson
import pytest
import websocket

import schemas as s
from bybit_ws_server import BybitWsServer
from papertape.core.engine import Engine
from papertape.core.instruments import DEFAULT_INSTRUMENTS
from papertape.core.market.partition import MarketPartition
from papertape.core.session.config import SessionConfig
from streams.bybit.ws import BybitPublicFeed

pytestmark = pytest.mark.timeout(30)

SYMBOLS = ("BTCUSDT", "ETHUSDT")
TOPICS = sorted(f"{t}.{sym}" for sym in SYMBOLS for t in ("tickers", "publicTrade", "orderbook.1"))


_last_ts = [0]


def now_ms() -> int:
    """The wall clock in ms, never twice the same: no two messages of a test share an event time, so a session's
    order placed "at" a message's time is placed on that message's tick."""
    _last_ts[0] = max(int(time.time() * 1000), _last_ts[0] + 1)
    return _last_ts[0]


class BookFeed:
    """One orderbook.1 topic as Bybit sends it, and the book its messages make."""

    def __init__(self, symbol: str, bid: str, ask: str) -> None:
        self.symbol, self.topic = symbol, f"orderbook.1.{symbol}"
        self.u = 1
        self.bids, self.asks = {bid: "1"}, {ask: "1"}

    def _msg(self, kind: str, bids, asks, u: int | None = None) -> dict:
        u = self.u if u is None else u
        return {"topic": self.topic, "type": kind, "ts": now_ms(),
                "data": {"s": self.symbol, "b": [list(x) for x in bids], "a": [list(x) for x in asks], "u": u,
                         "seq": 10_000 + u}}

    def snapshot(self) -> dict:
        return self._msg("snapshot", self.bids.items(), self.asks.items())

    def reset(self, bid: str, ask: str, jump: int = 100) -> dict:
        """A snapshot of a new book, `jump` updates on (the ones in between never seen)."""
        self.u += jump
        self.bids, self.asks = {bid: "1"}, {ask: "1"}
        return self.snapshot()

    def delta(self, bids=(), asks=()) -> dict:
        self.u += 1
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, qty in levels:
                if Decimal(qty):
                    side[price] = qty
                else:
                    side.pop(price, None)
        return self._msg("delta", bids, asks)

    def top(self) -> tuple[str, str]:
        return max(self.bids, key=Decimal), min(self.asks, key=Decimal)

    def serve(self, server: BybitWsServer) -> None:
        """What a (re)subscription gets from now on: the current book."""
        server.feed[self.topic] = [self.snapshot()]


def trade_msg(symbol: str, i: str, price: str) -> dict:
    ts = now_ms()
    return {"topic": f"publicTrade.{symbol}", "type": "snapshot", "ts": ts,
            "data": [{"T": ts, "s": symbol, "S": "Buy", "v": "0.001", "p": price, "i": i, "BT": False}]}


class Got:
    def __init__(self) -> None:
        self.frames: list = []
        self.alerts: list = []

    async def on_frames(self, frames) -> None:
        self.frames += frames

    def on_alert(self, severity: str, title: str, text: str) -> None:
        self.alerts.append((severity, title, text))

    def bodies(self, symbol: str | None = None) -> list[dict]:
        return [orjson.loads(f.json) for f in self.frames if symbol is None or f.symbol == symbol]

    def ids(self) -> Counter:
        return Counter(b["id"] for b in self.bodies())

    def book_frames(self, symbol: str) -> list[dict]:
        return [b for b in self.bodies(symbol) if ":ob1:" in b["id"]]


async def until(done, what: str, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(server: BybitWsServer, got: Got, **kw):
    kw.setdefault("lateness_ms", 300)  # a frame later than this takes the time of the last released one
    feed = BybitPublicFeed(list(SYMBOLS), got.on_frames, url=server.url, on_alert=got.on_alert, flush_every_s=0.02,
                           **kw)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    try:
        yield feed
        assert not task.done(), task.exception()
    finally:
        stop.set()
        await task


def start_books(server: BybitWsServer) -> dict[str, BookFeed]:
    books = {"BTCUSDT": BookFeed("BTCUSDT", "60000.0", "60000.5"), "ETHUSDT": BookFeed("ETHUSDT", "3000.00", "3000.05")}
    for book in books.values():
        book.serve(server)
    return books


def push_all(server: BybitWsServer, topic: str, messages: list[dict]) -> None:
    """Each message to the one connection subscribed to `topic` (more would deliver it twice)."""
    for m in messages:
        assert server.push(topic, m) == 1


async def test_a_disconnect_storm_ends_with_one_connection_subscribed_once_and_nothing_twice():
    with BybitWsServer() as server:
        books = start_books(server)
        got = Got()
        async with running(server, got) as feed:
            await until(lambda: all(got.book_frames(sym) for sym in SYMBOLS), "the first snapshots")
            for n in range(10):  # the new connection cut as soon as it is accepted, or once it sent a subscription
                accepted = server.connections_accepted
                server.drop_connections()
                await until(lambda: server.connections_accepted > accepted, f"reconnect {n + 1}")
                if n % 2:
                    await until(lambda: server.subscribe_requests[-1], f"a subscription after cut {n + 1}")
            await until(lambda: server.open_connections == 1 and sorted(
                t for args in server.subscribe_requests[-1] for t in args) == TOPICS, "one connection subscribed")
            settled = server.connections_accepted
            btc = books["BTCUSDT"]
            deltas = [btc.delta([(f"{60000 - i}.0", "2")], []) for i in range(20)]
            trades = [trade_msg("BTCUSDT", f"storm-{i}", "60000.5") for i in range(5)]
            push_all(server, btc.topic, deltas)
            push_all(server, "publicTrade.BTCUSDT", trades)
            want = {f"bybit:BTCUSDT:ob1:{d['data']['seq']}" for d in deltas} | {
                f"bybit:BTCUSDT:trade:{t['data'][0]['i']}" for t in trades}
            await until(lambda: want <= set(got.ids()), "the deltas and trades after the storm")
            assert server.connections_accepted == settled and server.open_connections == 1
        subscribes = server.subscribe_requests
    assert server.connections_accepted >= 11
    for topics in subscribes:  # no connection was asked for a topic twice (Bybit refuses it: "already subscribed")
        flat = [t for args in topics for t in args]
        assert len(flat) == len(set(flat)) and set(flat) <= set(TOPICS)
    assert feed.stats.refused == 0 and feed.stats.gaps == 0
    ids = got.ids()
    assert [i for i in want if ids[i] != 1] == []  # each update and trade once in the output
    # only the books' snapshots repeat: each (re)subscription restates the book, at the same update id
    assert {i for i, n in ids.items() if n > 1} <= {f"bybit:{sym}:ob1:{10_000 + 1}" for sym in SYMBOLS}
    last = got.book_frames("BTCUSDT")[-1]
    assert (last["bid"], last["ask"], last["status"]) == (*btc.top(), "live")


async def test_a_duplicated_delta_is_dropped_without_a_resubscription():
    with BybitWsServer() as server:
        btc = start_books(server)["BTCUSDT"]
        got = Got()
        async with running(server, got) as feed:
            await until(lambda: got.book_frames("BTCUSDT"), "the snapshot")
            first = btc.delta([("60000.0", "3")], [])
            then = btc.delta([], [("60000.5", "4")])
            push_all(server, btc.topic, [first, first, then])
            # one connection's messages are handled in order: the duplicate was, once the next one's frame is out
            await until(lambda: got.book_frames("BTCUSDT")[-1]["id"] == f"bybit:BTCUSDT:ob1:{then['data']['seq']}"
                        or feed.stats.gaps, "the delta after the duplicate")
    frames = got.book_frames("BTCUSDT")
    assert feed.stats.gaps == 0
    assert [f["id"] for f in frames[1:]] == [f"bybit:BTCUSDT:ob1:{m['data']['seq']}" for m in (first, then)]
    assert (frames[-1]["bid_qty"], frames[-1]["ask_qty"], frames[-1]["status"]) == ("3", "4", "live")


async def test_reordered_deltas_are_a_gap_resnapshotted_and_the_late_one_never_applied():
    with BybitWsServer() as server:
        btc = start_books(server)["BTCUSDT"]
        got = Got()
        async with running(server, got) as feed:
            await until(lambda: got.book_frames("BTCUSDT"), "the snapshot")
            early = btc.delta([("59999.0", "5")], [])  # u 2
            late = btc.delta([("59998.0", "6")], [])  # u 3, sent first
            btc.serve(server)  # the resubscription's snapshot: both applied
            push_all(server, btc.topic, [late, early])
            resnapshot = f"bybit:BTCUSDT:ob1:{late['data']['seq']}"  # the snapshot's u is the late delta's
            await until(lambda: feed.stats.gaps and resnapshot in got.ids(), "the resnapshot")
            after = btc.delta([("60000.0", "0")], [])  # u 4: the book goes on from the snapshot
            btc.serve(server)  # (the late delta may come after the snapshot: another gap, another snapshot)
            push_all(server, btc.topic, [after])
            await until(lambda: f"bybit:BTCUSDT:ob1:{after['data']['seq']}" in got.ids(), "the next delta")
        sent = [orjson.loads(raw) for _, raw in server.messages_received]
    assert [m["op"] for m in sent if m.get("args") == [btc.topic]][:2] == ["unsubscribe", "subscribe"]
    bodies = got.bodies("BTCUSDT")
    assert any(b["status"] == "stale" and b["id"].startswith("bybit:BTCUSDT:status:gap:") for b in bodies)
    assert not [b for b in bodies if b["id"] == f"bybit:BTCUSDT:ob1:{early['data']['seq']}"]  # never applied
    last = got.book_frames("BTCUSDT")[-1]
    assert (last["bid"], last["bid_qty"], last["ask"], last["status"]) == (
        btc.top()[0], btc.bids[btc.top()[0]], btc.top()[1], "live")


async def test_a_snapshot_in_the_middle_of_deltas_resets_the_book_and_deltas_go_on_from_its_u():
    with BybitWsServer() as server:
        btc = start_books(server)["BTCUSDT"]
        got = Got()
        async with running(server, got) as feed:
            await until(lambda: got.book_frames("BTCUSDT"), "the snapshot")
            messages = [btc.delta([("60000.2", "1")], []), btc.delta([], [("60000.4", "1")]),
                        btc.reset("59990.0", "59990.5"),  # the better levels of the deltas are gone
                        btc.delta([("59990.1", "2")], []), btc.delta([], [("59990.5", "0"), ("59990.3", "7")])]
            push_all(server, btc.topic, messages)
            ids = [f"bybit:BTCUSDT:ob1:{m['data']['seq']}" for m in messages]
            await until(lambda: set(ids) <= set(got.ids()), "every message's frame")
    frames = [f for f in got.book_frames("BTCUSDT") if f["id"] in ids]
    assert [f["id"] for f in frames] == ids and {f["status"] for f in frames} == {"live"}
    assert (frames[2]["bid"], frames[2]["ask"], frames[2]["snapshot"]) == ("59990.0", "59990.5", False)  # top feed
    assert (frames[-1]["bid"], frames[-1]["bid_qty"], frames[-1]["ask"], frames[-1]["ask_qty"]) == (
        "59990.1", "2", "59990.3", "7") == (btc.top()[0], btc.bids["59990.1"], btc.top()[1], btc.asks["59990.3"])
    assert feed.stats.gaps == 0


def trade_on(got: Got, orders: list[dict]) -> tuple[list[s.Decision], list[s.Fill]]:
    """The feed's frames through the market actor's core and an engine running a scripted session."""
    frames = [s.MarketFrame.model_validate_json(f.json) for f in got.frames]
    market = MarketPartition(0, DEFAULT_INSTRUMENTS, 1)
    market.on_message(s.MarketBatch(id="feed", ts=frames[-1].ts, origin="bybit", wm=frames[-1].ts, end=True,
                                    frames=frames), 0)
    session = SessionConfig(id="storm", strategy="scripted", latency_ms=0, params={"orders": orders})
    engine = Engine(0, 1, DEFAULT_INSTRUMENTS, [session])
    out = [m for _, batches in market.flush()[0] for batch in batches for m in engine.on_ticks(batch)]
    return [m for m in out if m.kind == "decision"], [m for m in out if m.kind == "fill"]


def buy_btc(at: int) -> dict:
    return {"at": at, "symbol": "BTCUSDT", "side": "buy", "qty": "0.010"}


async def keep_eth_trading(server: BybitWsServer, stop: asyncio.Event) -> None:
    """ETHUSDT trades every 20 ms: the feed's event time moves on."""
    n = 0
    while not stop.is_set():
        n += 1
        await asyncio.to_thread(server.push, "publicTrade.ETHUSDT", trade_msg("ETHUSDT", f"eth-{n}", "3000.05"))
        await asyncio.sleep(0.02)


async def test_a_book_out_of_sync_after_a_gap_is_never_traded_on_until_its_snapshot():
    """The resubscription's snapshot is slow to come; BTCUSDT trades meanwhile must not make its old book
    tradable again."""
    with BybitWsServer() as server:
        btc = start_books(server)["BTCUSDT"]
        got = Got()
        async with running(server, got) as feed:
            await until(lambda: len(got.book_frames("BTCUSDT")) and got.book_frames("ETHUSDT"), "the snapshots")
            server.feed[btc.topic] = []  # no snapshot on resubscription, for now
            lost = btc.delta([], [("60000.5", "0"), ("60001.0", "1")])  # never arrives: the ask moved to 60001.0
            push_all(server, btc.topic, [btc.delta([("60000.0", "2")], [])])
            again = {"op": "subscribe", "args": [btc.topic]}.items()
            await until(lambda: feed.stats.gaps == 1 and any(
                again <= orjson.loads(m).items() for _, m in server.messages_received), "the gap's resubscription")
            trades = [trade_msg("BTCUSDT", f"after-gap-{i}", "60001.0") for i in range(3)]
            push_all(server, "publicTrade.BTCUSDT", trades)
            await until(lambda: {f"bybit:BTCUSDT:trade:after-gap-{i}" for i in range(3)} <= set(got.ids()),
                        "the trades")
            snapshot = btc.snapshot()  # sent once the resubscription is in
            await until(lambda: server.push(btc.topic, snapshot) == 1, "the snapshot sent")
            push_all(server, "publicTrade.BTCUSDT", [trade_msg("BTCUSDT", f"resynced-{i}", "60001.0") for i in (0, 1)])
            await until(lambda: "bybit:BTCUSDT:trade:resynced-1" in got.ids(), "the trades after the snapshot")
    assert lost["data"]["u"] == 2
    bodies = {b["id"]: b for b in got.bodies("BTCUSDT")}
    in_gap = [bodies[f"bybit:BTCUSDT:trade:after-gap-{i}"] for i in range(3)]
    assert {b["status"] for b in in_gap} == {"stale"}
    resynced = bodies[f"bybit:BTCUSDT:ob1:{snapshot['data']['seq']}"]
    assert resynced["status"] == "live" and resynced["ts"] < bodies["bybit:BTCUSDT:trade:resynced-0"]["ts"]
    # placed on the first tick after the snapshot's (a late frame may share the time of the one before it), filled
    # on the next
    decisions, fills = trade_on(got, [buy_btc(in_gap[0]["ts"]), buy_btc(resynced["ts"] + 1)])
    refused, placed = decisions
    assert refused.action == "reject" and "BTCUSDT data is stale" in refused.reasoning
    assert placed.action == "buy"
    (fill,) = fills
    assert fill.price == Decimal(btc.top()[1]) == Decimal("60001.0")  # the snapshot's ask, not the old 60000.5


async def test_a_frozen_topic_goes_stale_in_event_time_and_no_session_trades_on_it_until_it_is_live():
    with BybitWsServer() as server:
        btc = start_books(server)["BTCUSDT"]
        got = Got()
        async with running(server, got, stale_after_s=0.5) as feed:
            await until(lambda: got.book_frames("BTCUSDT") and got.book_frames("ETHUSDT"), "the snapshots")
            for topic in TOPICS:
                if topic.endswith("BTCUSDT"):
                    server.silence(topic)  # the connection stays open; BTCUSDT's topics say nothing
            stop = asyncio.Event()
            eth = asyncio.create_task(keep_eth_trading(server, stop))
            try:
                await until(lambda: any(not f.live for f in got.frames if f.symbol == "BTCUSDT"), "BTCUSDT stale",
                            timeout=5)
                server.silence(None, on=False)
                thawed = btc.delta([], [("60000.5", "0"), ("60000.7", "2")])
                push_all(server, btc.topic, [thawed])
                await until(lambda: f"bybit:BTCUSDT:ob1:{thawed['data']['seq']}" in got.ids(), "BTCUSDT again")
                await until(lambda: len({f.ts for f in got.frames if f.ts > max(
                    b.ts for b in got.frames if b.symbol == "BTCUSDT")}) >= 2, "two ETHUSDT ticks after it")
            finally:
                stop.set()
                await eth
        assert feed.stats.connects == 1 and server.connections_accepted == 1  # frozen, not cut
    stale = [b for b in got.bodies("BTCUSDT") if b["status"] != "live"]
    assert {b["status"] for b in stale} == {"stale"} and not [b for b in got.bodies("ETHUSDT") if b["status"] != "live"]
    live_before = max(b["ts"] for b in got.bodies("BTCUSDT") if b["status"] == "live" and b["ts"] < stale[0]["ts"])
    assert stale[0]["ts"] - live_before >= 500  # stale_after_s of event time without a BTCUSDT frame
    thawed_ts = next(b["ts"] for b in got.bodies("BTCUSDT") if b["id"].endswith(f":{thawed['data']['seq']}"))
    decisions, fills = trade_on(got, [buy_btc(stale[0]["ts"] + 1), buy_btc(thawed_ts + 1)])  # see the gap's test
    refused, placed = decisions
    assert refused.action == "reject" and "BTCUSDT data is stale" in refused.reasoning  # placed on an ETHUSDT tick
    assert placed.action == "buy"
    (fill,) = fills
    assert fill.price == Decimal("60000.7") == Decimal(btc.top()[1])


async def test_a_cut_while_subscribing_leaves_no_second_connection_behind(monkeypatch):
    """The connection is cut as the feed sends its subscriptions: the feed gives the socket up and opens another,
    while pybit, which already holds the subscriptions, reconnects the first one. Two subscribed connections would
    deliver every message twice."""
    send = websocket.WebSocketApp.send
    cut = []

    def cut_first_subscribe(self, data, *args, **kwargs):
        if not cut and '"subscribe"' in str(data):
            cut.append(server.drop_connections())
            raise websocket.WebSocketConnectionClosedException("cut by the test")
        return send(self, data, *args, **kwargs)

    monkeypatch.setattr(websocket.WebSocketApp, "send", cut_first_subscribe)
    with BybitWsServer() as server:
        start_books(server)
        got = Got()
        async with running(server, got) as feed:
            await until(lambda: feed.stats.connects >= 2, "the feed's new socket")  # after closing the first
            await until(lambda: server.open_connections == 1 and sorted(
                t for args in server.subscribe_requests[-1] for t in args) == TOPICS, "one connection subscribed")
            accepted = server.connections_accepted
            trades = [trade_msg("BTCUSDT", f"t{i}", "60000.5") for i in range(3)]
            push_all(server, "publicTrade.BTCUSDT", trades)
            await until(lambda: {f"bybit:BTCUSDT:trade:t{i}" for i in range(3)} <= set(got.ids()), "the trades")
            assert server.open_connections == 1 and server.connections_accepted == accepted
    assert cut == [1] and any(title == "bybit connection failed" for _, title, _ in got.alerts)
    assert [got.ids()[f"bybit:BTCUSDT:trade:t{i}"] for i in range(3)] == [1, 1, 1]
