"""The Bybit gateway between the broker and the private API stand-in (issue 18): every order type Bybit has goes out
with its parameters and comes back through the private stream as the same papertape type; amend and cancel, and the
cancel that lost its race; Bybit's refusals (invalid parameter, insufficient balance, order not found) as rejections
with Bybit's reason, a rate limit waited out, wrong keys as one alert; and a snapshot for reconciliation."""
from __future__ import annotations

import asyncio
from decimal import Decimal as D

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

import schemas as s
from bybit_private_server import BybitPrivate
from infra.broker import ensure_topics
from papertape.config import BybitTradingSettings, Settings
from papertape.core.session.config import SessionConfig
from streams.bybit.gateway import BybitGateway, check_exchange_sessions
from streams.bybit.private import BybitKeys, BybitPrivateError

KEY, SECRET = "gwKey-0123456789ab", "gwSecret-fedcba9876543210"
TS = 1_765_000_000_000


def book(bid: str, ask: str, ts: int) -> dict:
    return {"topic": "orderbook.1.BTCUSDT", "type": "snapshot", "ts": ts, "cts": ts,
            "data": {"s": "BTCUSDT", "b": [[bid, "5.000"]], "a": [[ask, "5.000"]], "u": ts, "seq": ts}}


def new(n: int, **fields) -> s.VenueRequest:
    order = s.Order(id=f"demo-{n}", ts=TS, session="demo", symbol="BTCUSDT", **fields)
    return s.VenueRequest(id=f"demo-{n}:new", ts=TS, session="demo", venue="bybit_demo", action="new", order=order,
                          order_id=order.id, symbol="BTCUSDT", leverage=D("10"), margin_mode="cross")


def change(n: int, action: str, order: int, **fields) -> s.VenueRequest:
    return s.VenueRequest(id=f"demo-{order}:{action}:{n}", ts=TS, session="demo", venue="bybit_demo", action=action,
                          order_id=f"demo-{order}", symbol="BTCUSDT", **fields)


async def exchange(broker, bybit: BybitPrivate, keys: BybitKeys, requests: list[s.VenueRequest],
                   done) -> tuple[list[s.VenueReport], list[s.Alert]]:
    """Run a gateway, send `requests` one by one, and read venue.reports and alerts until done(reports)."""
    await ensure_topics(broker.bootstrap, s.partition_counts(1, 1, broker.names))
    settings = Settings(kafka_bootstrap=broker.bootstrap, namespace=broker.names.prefix,
                        bybit_trading=BybitTradingSettings(rest_url=bybit.url, ws_url=bybit.ws_url))
    gateway = BybitGateway(broker.bootstrap, settings, keys, ws_url=bybit.ws_url)
    stop = asyncio.Event()
    running = asyncio.create_task(gateway.run(stop))
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    consumer = AIOKafkaConsumer(broker.names.topic("venue.reports"), broker.names.topic("alerts"),
                                bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    reports: list[s.VenueReport] = []
    alerts: list[s.Alert] = []
    try:
        for req in requests:
            await producer.send_and_wait(broker.names.topic("venue.requests"), s.encode(req), key=b"demo")
        async with asyncio.timeout(60):
            while not done(reports, alerts):
                for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                    topic = broker.names.name_of(tp.topic)
                    for r in records:
                        (reports if topic == "venue.reports" else alerts).append(s.decode(topic, r.value))
    finally:
        stop.set()
        await running
        await consumer.stop()
        await producer.stop()
    return reports, alerts


def orders_of(reports: list[s.VenueReport]) -> dict[str, list[s.ExchangeOrder]]:
    out: dict[str, list[s.ExchangeOrder]] = {}
    for r in reports:
        for o in r.orders:
            out.setdefault(o.order_id, []).append(o)
    return out


@pytest.mark.timeout(120)
def test_every_order_type_amend_cancel_and_bybit_s_refusals_through_the_gateway(broker):
    bybit = BybitPrivate(KEY, SECRET, balance=D("5000"))
    bybit.on_public_frame("orderbook.1.BTCUSDT", book("60000.0", "60000.5", TS))
    bybit.fail_next(10006)  # the first placement meets Bybit's rate limit: waited out, then placed
    requests = [
        new(1, side="buy", qty=D("0.010")),  # market
        new(2, side="buy", type="limit", qty=D("0.010"), price=D("59000"), tif="GTC"),
        new(3, side="buy", type="limit", qty=D("0.010"), price=D("60001"), tif="PostOnly"),  # would take: cancelled
        new(4, side="buy", type="limit", qty=D("0.010"), price=D("59000"), tif="IOC"),  # nothing to take: cancelled
        new(5, side="sell", type="stop_market", qty=D("0.010"), trigger_price=D("59500"), reduce_only=True),
        new(6, side="sell", type="take_profit_limit", qty=D("0.010"), trigger_price=D("61000"), price=D("61000"),
            reduce_only=True),
        new(7, side="buy", type="stop_limit", qty=D("0.010"), trigger_price=D("60500"), price=D("60600")),
        new(8, side="sell", qty=D("0.004"), reduce_only=True),  # market, reduce-only
        change(9, "amend", 2, price=D("59100")),
        change(10, "cancel", 2),
        change(11, "cancel", 2),  # lost the race: the order is gone (110001)
        new(12, side="buy", qty=D("10")),  # 600,000 USDT at 10x on a 5,000 wallet: 110007
        new(13, side="buy", qty=D("0.0001")),  # under the lot step: 10001
        s.VenueRequest(id="check-1", ts=TS, session="demo", venue="bybit_demo", action="snapshot", since=0),
    ]

    def done(reports, alerts) -> bool:
        return any(r.snapshot for r in reports)

    try:
        reports, alerts = asyncio.run(exchange(broker, bybit, BybitKeys(KEY, SECRET), requests, done))
    finally:
        bybit.close()
    by_order = orders_of(reports)

    def last(n: int) -> s.ExchangeOrder:
        return [o for o in by_order[f"demo-{n}"] if not o.order_id.startswith("check")][-1]

    # each type came back as itself, with the status Bybit gave it
    assert (last(1).type, last(1).status, last(1).filled_qty) == ("market", "filled", D("0.010"))
    assert (last(3).type, last(3).status) == ("limit", "cancelled")
    assert (last(4).type, last(4).status) == ("limit", "cancelled")
    assert (last(5).type, last(5).status, last(5).trigger_price) == ("stop_market", "new", D("59500"))
    assert (last(6).type, last(6).status, last(6).price) == ("take_profit_limit", "new", D("61000"))
    assert (last(7).type, last(7).status) == ("stop_limit", "new")
    assert (last(8).type, last(8).status, last(8).filled_qty) == ("market", "filled", D("0.004"))
    # amend then cancel of the resting limit, and the second cancel refused as Bybit refuses it
    assert [o.price for o in by_order["demo-2"] if o.status == "new"][-1] == D("59100")
    assert last(2).status == "cancelled"
    refused = [r for r in reports if r.refused]
    assert [(r.request, "110001" in r.refused) for r in refused] == [("demo-2", True)]
    # placements Bybit refused: rejected, with its reason and code
    assert (last(12).status, "110007" in last(12).reason) == ("rejected", True)
    assert (last(13).status, "10001" in last(13).reason) == ("rejected", True)
    # the rate limit was waited out: order 1 was placed after one refusal
    creates = [r for r in bybit.requests if r.path == "/v5/order/create"]
    assert [r.ret_code for r in creates][:2] == [10006, 0] and creates[1].body["orderLinkId"] == "demo-1"
    # executions with Bybit's price and fee: the market buy took the ask
    trades = [e for r in reports if not r.snapshot for e in r.executions]
    assert [(e.order_id, e.side, e.price, e.qty, e.liquidity) for e in trades] == [
        ("demo-1", "buy", D("60000.5"), D("0.010"), "taker"), ("demo-8", "sell", D("60000.0"), D("0.004"), "taker")]
    assert trades[0].fee == (D("60000.5") * D("0.010") * D("0.00055")).quantize(D("1e-8"))
    # the snapshot: the open orders, both executions, the position and the wallet
    snap = next(r for r in reports if r.snapshot)
    assert snap.request == "check-1"
    assert {o.order_id for o in snap.orders if o.status == "new"} == {"demo-5", "demo-6", "demo-7"}
    assert {e.order_id for e in snap.executions} == {"demo-1", "demo-8"}
    assert [(p.symbol, p.qty) for p in snap.positions] == [("BTCUSDT", D("0.006"))]
    assert snap.wallet == bybit.balances["USDT"]
    assert not alerts
    # leverage and margin mode were set before the symbol's first order
    paths = [r.path for r in bybit.requests]
    assert paths.index("/v5/position/set-leverage") < paths.index("/v5/order/create")


@pytest.mark.timeout(120)
def test_wrong_keys_reject_the_orders_with_one_alert(broker):
    bybit = BybitPrivate(KEY, SECRET)
    bybit.on_public_frame("orderbook.1.BTCUSDT", book("60000.0", "60000.5", TS))

    def done(reports, alerts) -> bool:
        return sum(len(r.orders) for r in reports) >= 2

    try:
        reports, alerts = asyncio.run(exchange(broker, bybit, BybitKeys("not-the-key", "nor-the-secret"),
                                               [new(1, side="buy", qty=D("0.010")), new(2, side="buy", qty=D("0.010"))],
                                               done))
    finally:
        bybit.close()
    assert [(o.order_id, o.status) for r in reports for o in r.orders] == [("demo-1", "rejected"),
                                                                          ("demo-2", "rejected")]
    assert all("10003" in o.reason for r in reports for o in r.orders)
    assert [a.title for a in alerts if a.title == "Bybit refused the keys"] == ["Bybit refused the keys"]
    assert "not-the-key" not in str(alerts) + str(reports)


def test_a_run_refuses_a_bybit_session_it_cannot_start_with_one_clear_reason(monkeypatch):
    bybit = BybitPrivate(KEY, SECRET, balance=D("500"))
    monkeypatch.setenv("BYBIT_API_KEY", KEY)
    monkeypatch.setenv("BYBIT_API_SECRET", SECRET)
    trading = BybitTradingSettings(rest_url=bybit.url, ws_url=bybit.ws_url)

    def check(*sessions: dict, mainnet: bool = False, **trading_fields) -> str:
        settings = Settings(bybit_trading=trading.model_copy(update=trading_fields),
                            sessions=[SessionConfig(**s) for s in sessions])
        with pytest.raises(BybitPrivateError) as refused:
            check_exchange_sessions(settings, mainnet)
        return str(refused.value)

    try:
        assert "needs 1000 USDT; the Bybit demo wallet holds 500" in check({"id": "d", "venue": "bybit_demo",
                                                                            "balance": "1000"})
        assert "not on bybit_demo" in check({"id": "t", "venue": "bybit_testnet"})
        assert "one session per account" in check({"id": "a", "venue": "bybit_demo"},
                                                   {"id": "b", "venue": "bybit_demo"})
        assert "allow_mainnet" in check({"id": "m", "venue": "bybit_mainnet"}, environment="mainnet")
        assert "allow_mainnet" in check({"id": "m", "venue": "bybit_mainnet"}, environment="mainnet",
                                        allow_mainnet=True)  # the setting without the flag
        monkeypatch.setenv("BYBIT_API_SECRET", "a-wrong-secret")
        why = check({"id": "d", "venue": "bybit_demo", "balance": "100"})
        assert "retCode 10004" in why and "a-wrong-secret" not in why
        monkeypatch.setenv("BYBIT_API_SECRET", SECRET)
        settings = Settings(bybit_trading=trading, sessions=[SessionConfig(id="d", venue="bybit_demo", balance="100")])
        assert check_exchange_sessions(settings) == "bybit: session d on bybit_demo, wallet 500 USDT"
    finally:
        bybit.close()
