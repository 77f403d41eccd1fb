"""Recorder: the mapping of every topic to rows, and the consumer against the suite's broker (Apache Kafka)."""
from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from infra.broker import ensure_topics
from infra.clickhouse import connect, migrate
from schemas import (
    TOPICS,
    Alert,
    AlertAck,
    AlertDelivery,
    AmendOrder,
    CancelOrder,
    Control,
    DeadLetter,
    Decision,
    Equity,
    Fill,
    Funding,
    InvalidMessage,
    Mark,
    MarketBatch,
    MarketFrame,
    Order,
    OrderEvent,
    Position,
    Reconciliation,
    SessionStatus,
    ShadowFill,
    Signal,
    TickBatch,
    Trade,
    VenueReport,
    VenueRequest,
    Watermark,
    encode,
    partition_counts,
)
from streams.sinks.recorder import Recorder
from streams.sinks.rows import (
    COLUMNS,
    INSERT_FORMAT,
    RECORDED_TOPICS,
    encode_rows,
    md_events_rows,
    message_rows,
    rows_for,
)

TS = 1_700_000_000_000
D = Decimal


def frame(n: int = 0, symbol: str = "BTCUSDT") -> MarketFrame:
    """A frame with two trades, a top of book and depth levels (which are not recorded)."""
    return MarketFrame(id=f"bybit:{symbol}:{n}", ts=TS + n, venue="bybit", symbol=symbol, recv_ts=1,
                       trades=[Trade(ts=TS + n, price="37000.5", qty="0.002", side="buy"),
                               Trade(ts=TS + n + 1, price="37000.4", qty="0.5", side="sell")],
                       bid="37000.4", bid_qty="1.2", ask="37000.5", ask_qty="0.7",
                       bids=[("37000.4", "1.2")], asks=[("37000.5", "0.7"), ("37001", "0")])


def batch(n: int, frames: list[MarketFrame]) -> MarketBatch:
    return MarketBatch(id=f"replay:0:{n}", ts=TS + n, origin="replay", wm=TS + n, frames=frames)


def sample_messages(n: int = 0) -> list[tuple[str, object]]:
    """(topic, message): one message of every recorded table (ids made unique by `n`); `orders` carries an order,
    a cancel and an amend (both into order_changes_log)."""
    common = {"ts": TS + n, "session": "s1"}
    return [
        ("md.events", batch(n, [frame(n)])),
        ("md.marks", Mark(id=f"mk{n}", ts=TS + n, symbol="BTCUSDT", bid="1.5", last="1.6", mark="1.55")),
        ("signals", Signal(id=f"sg{n}", symbol="BTCUSDT", target="long", confidence=0.7, reasoning="up", **common)),
        ("orders", Order(id=f"o{n}", symbol="BTCUSDT", side="sell", type="stop_limit", qty=D("0.01"),
                         price=D("36000"), trigger_price=D("36100.5"), trigger_by="mark", tif="IOC",
                         reduce_only=True, expire_ts=TS + 60_000, oco="g1", **common)),
        ("orders", CancelOrder(id=f"cx{n}", order_id=f"o{n}", **common)),
        ("orders", AmendOrder(id=f"am{n}", order_id=f"o{n}", qty=D("0.02"), trigger_price=D("36200"), **common)),
        ("control", Control(id=f"c{n}", command="config", config={"b": [1, D("0.5")], "a": "x"}, **common)),
        ("sessions", SessionStatus(id=f"st{n}", status="running", event="circuit breaker tripped: daily_trades",
                                   strategy="mean_reversion", intel=8, breakers={"daily_trades": "50 orders today"},
                                   config={"intel": 8}, **common)),
        ("order.events", OrderEvent(id=f"oe{n}", order_id=f"o{n}", symbol="BTCUSDT", side="sell", type="stop_limit",
                                    status="triggered", qty=D("0.01"), price=D("36000"), trigger_price=D("36100.5"),
                                    filled_qty=D("0"),
                                    **common)),
        ("fills", Fill(id=f"f{n}", order_id=f"o{n}", symbol="BTCUSDT", side="buy", price=D("37000.5"),
                       qty=D("0.01"), liquidity="taker", fee_rate=D("0.00055"), fee=D("0.0000337"),
                       realized_pnl=D("-1.25"), exec_type="liquidation", **common)),
        ("funding", Funding(id=f"fu{n}", symbol="BTCUSDT", rate=D("0.0001"), mark=D("37000.5"), qty=D("-0.01"),
                            amount=D("0.0370005"), settle_coin="USDT", **common)),
        ("positions", Position(id=f"p{n}", symbol="BTCUSDT", qty=D("-0.01"), avg_price=D("37000.5"),
                               realized_pnl=D("0"), unrealized_pnl=D("0.3"), **common)),
        ("equity", Equity(id=f"e{n}", cash=D("10000"), equity=D("10000.3"), realized_pnl=D("0"),
                          unrealized_pnl=D("0.3"), fees=D("0.0000337"), funding=D("-0.25"), open_positions=1,
                          **common)),
        ("decisions", Decision(id=f"d{n}", symbol="BTCUSDT", action="hold", reasoning="flat market",
                               features={"rsi": 51.5}, **common)),
        ("alerts", Alert(id=f"a{n}", ts=TS + n, severity="warning", type="performance", source="risk",
                         title="drawdown")),
        ("alerts.status", AlertAck(id=f"ack{n}", ts=TS + n, alert_id=f"a{n}", by="api")),
        ("alerts.status", AlertDelivery(id=f"dv{n}", ts=TS + n, alert_id=f"a{n}", channel="telegram",
                                        outcome="sent", attempts=2, detail="")),
        ("errors.dlq", DeadLetter(id=f"dl{n}", ts=TS + n, topic="orders", partition=1, offset=42, key="s1",
                                  error="bad json", payload="{oops")),
        ("shadow.fills", ShadowFill(id=f"sf{n}", order_id="o1", symbol="BTCUSDT", side="buy", price=D("65000.1"),
                                    qty=D("0.002"), liquidity="taker", fee_rate=D("0.00055"), fee=D("0.07150011"),
                                    realized_pnl=D("0"), **common)),
        ("venue.requests", VenueRequest(id=f"vq{n}", venue="bybit_demo", action="cancel", order_id="o1", **common)),
        ("venue.reports", VenueReport(id=f"vr{n}", venue="bybit_demo", refused="order not exists", **common)),
        ("reconciliation", Reconciliation(id=f"rc{n}", check="c1", difference="position", symbol="BTCUSDT",
                                          papertape="0.002 @ 65000.1", exchange="flat", **common)),
    ]


def sample(topic: str, n: int = 0):
    """The first sample message of `topic`."""
    return next(m for t, m in sample_messages(n) if t == topic)


def other_orders(n: int = 0) -> list[Order]:
    """Orders with the fields the sample order cannot have: trailing stops and a bracket."""
    common = {"ts": TS + n, "session": "s1", "symbol": "BTCUSDT", "qty": D("0.5")}
    return [
        Order(id=f"tp{n}", side="sell", type="trailing_stop", trail_percent=D("1.25"), activation_price=D("38000"),
              reduce_only=True, **common),
        Order(id=f"ta{n}", side="sell", type="trailing_stop", trail_amount=D("150.5"), **common),
        Order(id=f"br{n}", side="buy", type="limit", price=D("36000"), stop_loss=D("35000"), take_profit=D("39000"),
              tif="PostOnly", **common),
    ]


# Rows per table of one round of sample_messages.
SAMPLE_ROWS = {t: 1 for t in COLUMNS} | {"md_trades_log": 2, "order_changes_log": 2}


# --- the mapping ---------------------------------------------------------------------------------------------

def test_recorded_topics():
    # what the market actors and the engines say to each other is not archived
    assert set(RECORDED_TOPICS) == {t for t, _ in sample_messages()} == set(TOPICS) - {"md.ticks", "md.interest"}
    assert by_table([pair for t, m in sample_messages() for pair in rows_for(t, m)]).keys() == COLUMNS.keys()
    assert rows_for("md.ticks", TickBatch(id="t", ts=TS, origin=0, seq=0, wm=TS)) == []
    assert rows_for("md.events", Watermark(id="w", ts=TS, origin="bybit")) == []


def test_rows_for_every_topic():
    for topic, model in sample_messages() + [("orders", o) for o in other_orders()]:
        rows = rows_for(topic, model)
        assert rows, topic
        assert recorded(encode(model), topic) == (by_table(rows), [])
        for table, row in rows:
            assert len(row) == len(COLUMNS[table]), table
            assert row[COLUMNS[table].index("ts")] in (TS, TS + 1)
    frame_rows = [
        ("md_trades_log", ("bybit:BTCUSDT:0:0", "bybit:BTCUSDT:0", TS, "bybit", "BTCUSDT", "37000.5", "0.002", "buy")),
        ("md_trades_log", ("bybit:BTCUSDT:0:1", "bybit:BTCUSDT:0", TS + 1, "bybit", "BTCUSDT", "37000.4", "0.5",
                           "sell")),
        ("md_quotes_log", ("bybit:BTCUSDT:0", TS, "bybit", "BTCUSDT", "37000.4", "1.2", "37000.5", "0.7")),
    ]
    assert rows_for("md.events", sample("md.events")) == frame_rows
    assert rows_for("md.events", frame(0)) == frame_rows  # a single frame, as before batches
    no_top = MarketFrame(id="x", ts=TS, venue="v", symbol="ETHUSDT", recv_ts=0, bids=[("1", "2")])
    assert rows_for("md.events", no_top) == []
    assert rows_for("control", sample("control"))[0][1][-1] == '{"a":"x","b":[1,"0.5"]}'
    # the orders topic: an order into orders_log, a cancel or an amend into order_changes_log
    orders = [pair for t, m in sample_messages() if t == "orders" for pair in rows_for(t, m)]
    assert orders == [
        ("orders_log", ("o0", TS, "s1", "BTCUSDT", "sell", "stop_limit", D("0.01"), D("36000"), "IOC", True,
                        D("36100.5"), "mark", None, None, None, TS + 60_000, "g1", None, None)),
        ("order_changes_log", ("cx0", TS, "s1", "cancel", "o0", None, None, None)),
        ("order_changes_log", ("am0", TS, "s1", "amend", "o0", D("0.02"), None, D("36200"))),
    ]


def by_table(pairs: list[tuple[str, tuple]]) -> dict[str, list[tuple]]:
    rows: dict[str, list[tuple]] = {}
    for table, row in pairs:
        rows.setdefault(table, []).append(row)
    return rows


def recorded(value: bytes, topic: str = "md.events") -> tuple[dict[str, list[tuple]], list[str]]:
    """message_rows without the tables it leaves empty."""
    rows, refused = message_rows(topic, value)
    return {table: table_rows for table, table_rows in rows.items() if table_rows}, refused


def test_md_events_rows_of_batches_frames_and_watermarks():
    frames = [frame(0), frame(1, "ETHUSDT"), MarketFrame(id="x", ts=TS, venue="v", symbol="ETHUSDT", recv_ts=0)]
    expected = by_table([row for f in frames for row in rows_for("md.events", f)])
    assert list(map(len, expected.values())) == [4, 2]
    assert recorded(encode(batch(1, frames))) == (expected, [])
    assert recorded(encode(frames[1])) == (by_table(rows_for("md.events", frames[1])), [])
    assert recorded(encode(Watermark(id="w", ts=TS, origin="bybit"))) == ({}, [])
    assert recorded(encode(batch(2, []))) == ({}, [])
    for bad in (None, b"", b"not json", b"[1]", b'{"kind": "batch"}', b'{"kind": "batch", "frames": 1}',
                b'{"kind": "frame"}', b'{"kind": "nope", "frames": []}'):
        with pytest.raises(InvalidMessage):
            md_events_rows(bad)


def bad_frame_batch(n: int) -> bytes:
    """A batch of three frames of which the middle one has an invalid trade price."""
    raw = orjson.loads(encode(batch(n, [frame(3 * n), frame(3 * n + 1), frame(3 * n + 2, "ETHUSDT")])))
    raw["frames"][1]["trades"][1]["price"] = "-1"
    return orjson.dumps(raw)


def test_a_bad_frame_loses_only_itself():
    rows, refused = recorded(bad_frame_batch(0))
    assert rows == by_table(rows_for("md.events", batch(0, [frame(0), frame(2, "ETHUSDT")])))
    assert len(refused) == 1 and refused[0].startswith("frame 1: trades.1.price")


def test_what_is_not_recorded_is_not_validated():
    """Depth levels are the market actor's business: a bad level does not keep a frame's trades and quote out."""
    raw = orjson.loads(encode(batch(0, [frame(0)])))
    raw["frames"][0]["bids"] = [["x", "y", "z"]]
    raw["frames"][0]["recv_ts"] = -1
    assert recorded(orjson.dumps(raw)) == (by_table(rows_for("md.events", frame(0))), [])


def test_rows_for_refuses_values_that_do_not_fit():
    huge = sample("fills").model_copy(update={"fee": D("1e25")})
    with pytest.raises(ValueError, match="out of range"):
        rows_for("fills", huge)


def test_rows_round_trip_through_clickhouse(tmp_path):
    client = connect(None, tmp_path)
    try:
        migrate(client)
        for topic, model in sample_messages() + [("orders", o) for o in other_orders()]:
            for table, row in rows_for(topic, model):
                client.raw_insert(table, COLUMNS[table], encode_rows(table, [row]), fmt=INSERT_FORMAT)
        fills = client.query("SELECT fee, fee_rate, realized_pnl, toUnixTimestamp64Milli(ts), exec_type FROM fills")
        assert fills.result_rows == [(D("0.0000337"), D("0.00055"), D("-1.25"), TS, "liquidation")]
        assert client.query("SELECT count() FROM md_trades").result_rows == [(2,)]
        assert client.query("SELECT bid, bid_qty, ask, ask_qty FROM md_quotes").result_rows == [
            (D("37000.4"), D("1.2"), D("37000.5"), D("0.7"))]
        assert client.query("SELECT bid, ask FROM md_marks").result_rows == [(D("1.5"), None)]
        assert client.query("SELECT JSONExtractFloat(features, 'rsi') FROM decisions").result_rows == [(51.5,)]
        assert client.query(
            "SELECT id, type, reduce_only, price, tif, trigger_price, trigger_by, trail_amount, trail_percent, "
            "activation_price, toUnixTimestamp64Milli(expire_ts), oco, stop_loss, take_profit FROM orders ORDER BY id"
        ).result_rows == [
            ("br0", "limit", False, D("36000"), "PostOnly", None, "last", None, None, None, None, None, D("35000"),
             D("39000")),
            ("o0", "stop_limit", True, D("36000"), "IOC", D("36100.5"), "mark", None, None, None, TS + 60_000, "g1",
             None, None),
            ("ta0", "trailing_stop", False, None, "GTC", None, "last", D("150.5"), None, None, None, None, None, None),
            ("tp0", "trailing_stop", True, None, "GTC", None, "last", None, D("1.25"), D("38000"), None, None, None,
             None),
        ]
        assert client.query("SELECT id, toUnixTimestamp64Milli(ts), session, kind, order_id, qty, price, "
                            "trigger_price FROM order_changes ORDER BY id").result_rows == [
            ("am0", TS, "s1", "amend", "o0", D("0.02"), None, D("36200")),
            ("cx0", TS, "s1", "cancel", "o0", None, None, None)]
        assert client.query("SELECT type, status, price, trigger_price FROM order_events").result_rows == [
            ("stop_limit", "triggered", D("36000"), D("36100.5"))]
        assert client.query("SELECT id, toUnixTimestamp64Milli(ts), session, symbol, rate, mark, qty, amount, "
                            "settle_coin FROM funding").result_rows == [
            ("fu0", TS, "s1", "BTCUSDT", D("0.0001"), D("37000.5"), D("-0.01"), D("0.0370005"), "USDT")]
        assert client.query("SELECT fees, funding, open_positions FROM equity").result_rows == [
            (D("0.0000337"), D("-0.25"), 1)]
        assert client.query("SELECT offset, key FROM dead_letters").result_rows == [(42, "s1")]
        # Decimals go as their str(): exponents are read, digits past the 18th decimal cut, as a native insert does
        odd = Equity(id="odd", ts=TS, session="s1", cash=D("1E+2"), equity=D("-1.5E-7"), realized_pnl=D("0"),
                     unrealized_pnl=D("0.1234567890123456789"), fees=D("0E-5"), open_positions=0)
        for table, row in rows_for("equity", odd):
            client.raw_insert(table, COLUMNS[table], encode_rows(table, [row]), fmt=INSERT_FORMAT)
        assert client.query("SELECT cash, equity, unrealized_pnl, fees FROM equity WHERE id = 'odd'").result_rows == [
            (D("100"), D("-0.00000015"), D("0.123456789012345678"), D("0"))]
    finally:
        client.close()


# --- against a broker --------------------------------------------------------------------------------------

async def produce(broker, messages: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(broker.names.topic(topic), value) for topic, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def counts(client) -> dict[str, int]:
    return {t: client.query(f"SELECT count() FROM {t.removesuffix('_log')}").result_rows[0][0] for t in COLUMNS}


class FlakyClient:
    """A client whose first `failures` inserts raise, as when the ClickHouse server is down."""

    def __init__(self, client, failures: int) -> None:
        self.client, self.failures, self.calls = client, failures, 0

    def raw_insert(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"ClickHouse unavailable (simulated, call {self.calls})")
        return self.client.raw_insert(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


async def record_all(recorder: Recorder) -> None:
    """Start the recorder, wait until ClickHouse holds everything produced so far, stop it."""
    await recorder.start()
    try:
        await recorder.wait_caught_up(60)
    finally:
        await recorder.stop()


async def new_topics(broker) -> None:
    await ensure_topics(broker.bootstrap, partition_counts(3, 2, broker.names))


async def test_records_every_topic_and_skips_invalid(broker, ch):
    await new_topics(broker)
    messages = [(t, encode(m)) for n in range(5) for t, m in sample_messages(n)]
    too_big = sample("fills", 7).model_copy(update={"id": "big", "fee": D("1e25")})  # valid, unrecordable
    invalid = [("fills", b"not json"), ("orders", b'{"kind": "order"}'), ("md.events", b""), ("fills", encode(too_big)),
               ("orders", b'{"kind": "amend", "id": "x", "ts": 1, "session": "s1", "order_id": "o1"}')]
    watermark = ("md.events", encode(Watermark(id="w", ts=TS, origin="bybit")))
    await produce(broker, messages + invalid + [watermark])
    recorder = Recorder(broker.bootstrap, ch, names=broker.names)
    await recorder.start()
    try:
        await recorder.wait_caught_up(60)
        assert recorder.invalid == 5
        expected = {t: 5 * n for t, n in SAMPLE_ROWS.items()}
        assert counts(ch) == expected
        assert dict(recorder.rows_written) == expected
        assert await recorder.caught_up()
        # more data later is picked up too
        await produce(broker, [("fills", encode(sample("fills", 99)))])
        await recorder.wait_caught_up(60)
        assert counts(ch)["fills_log"] == 6
        assert ch.query("SELECT kind, count() FROM order_changes GROUP BY kind ORDER BY kind").result_rows == [
            ("amend", 5), ("cancel", 5)]
    finally:
        await recorder.stop()


async def test_batches_land_as_rows_with_exact_values(broker, ch):
    """Frames with extreme decimals and times, in batches over partitions, one batch with a bad frame."""
    await new_topics(broker)
    frames = [
        MarketFrame(id=f"v:S{n % 3}:{n}", ts=TS + 7 * n, venue="v", symbol=f"S{n % 3}", recv_ts=0,
                    trades=[Trade(ts=TS + 7 * n + i, price=f"{n + 1}.{i:018d}", qty=f"0.{n:017d}1",
                                  side="sell" if i % 2 else "buy") for i in range(n % 4)],
                    bid=f"{10**19 + n}.5", bid_qty="0",
                    ask=None if n % 5 else "99999999999999999999.999999999999999999")
        for n in range(300)
    ]
    messages = [("md.events", encode(batch(n, frames[n:n + 50]))) for n in range(0, 300, 50)]
    await produce(broker, messages + [("md.events", bad_frame_batch(1000))])
    recorder = Recorder(broker.bootstrap, ch, names=broker.names)
    await record_all(recorder)
    assert (recorder.invalid, recorder.invalid_frames) == (0, 1)

    trades = {(f"{f.id}:{i}", f.id, t.ts, f.venue, f.symbol, D(t.price), D(t.qty), t.side)
              for f in frames for i, t in enumerate(f.trades)}
    quotes = {(f.id, f.ts, f.venue, f.symbol, D(f.bid), D(f.bid_qty), f.ask and D(f.ask), None) for f in frames}
    kept = [frame(3000), frame(3002, "ETHUSDT")]  # the bad batch's good frames
    trades |= {(f"{f.id}:{i}", f.id, t.ts, "bybit", f.symbol, D(t.price), D(t.qty), t.side)
               for f in kept for i, t in enumerate(f.trades)}
    quotes |= {(f.id, f.ts, "bybit", f.symbol, D("37000.4"), D("1.2"), D("37000.5"), D("0.7")) for f in kept}
    got_trades = ch.query("SELECT id, frame_id, toUnixTimestamp64Milli(ts), venue, symbol, price, qty, side "
                          "FROM md_trades").result_rows
    got_quotes = ch.query("SELECT id, toUnixTimestamp64Milli(ts), venue, symbol, bid, bid_qty, ask, ask_qty "
                          "FROM md_quotes").result_rows
    assert len(got_trades) == len(trades) == 450 + 4 and set(got_trades) == trades
    assert len(got_quotes) == len(quotes) == 302 and set(got_quotes) == quotes


async def test_clickhouse_outage_loses_and_duplicates_nothing(broker, ch):
    await new_topics(broker)
    fills = [("fills", encode(sample("fills", n))) for n in range(2000)]
    await produce(broker, fills + fills[:100])  # 100 redelivered
    flaky = FlakyClient(ch, failures=3)
    recorder = Recorder(broker.bootstrap, flaky, names=broker.names, backoff=(0.05, 0.2))
    await record_all(recorder)
    assert recorder.insert_failures == 3
    assert recorder.rows_written["fills_log"] == 2100
    assert counts(ch)["fills_log"] == 2000
    assert ch.query("SELECT uniqExact(id), sum(fee) FROM fills").result_rows == [(2000, D("0.0674"))]


async def test_stop_while_clickhouse_is_down_commits_nothing(broker, ch):
    await new_topics(broker)
    await produce(broker, [("fills", encode(sample("fills", n))) for n in range(50)])
    down = FlakyClient(ch, failures=10**9)
    recorder = Recorder(broker.bootstrap, down, names=broker.names, group_id="g", backoff=(0.05, 0.1))
    await recorder.start()
    while down.calls < 3:
        await asyncio.sleep(0.05)
    assert not await recorder.caught_up()
    await recorder.stop(timeout=0.5)
    assert counts(ch)["fills_log"] == 0

    again = Recorder(broker.bootstrap, ch, names=broker.names, group_id="g")
    await record_all(again)
    assert again.rows_written["fills_log"] == 50
    assert counts(ch)["fills_log"] == 50


async def test_restart_mid_way_with_the_same_group_records_exactly_once(broker, ch):
    await new_topics(broker)
    first = [(t, m) for n in range(1000) for t, m in sample_messages(n)]
    second = [(t, m) for n in range(1000, 1500) for t, m in sample_messages(n)]
    redelivered = first[:50]
    await produce(broker, [(t, encode(m)) for t, m in first])
    recorder = Recorder(broker.bootstrap, ch, names=broker.names, group_id="g", max_records=300, max_rows=300)
    await recorder.start()
    while recorder.batches < 3:
        await asyncio.sleep(0.01)
    await recorder.stop()  # mid-way: the batch in hand is inserted and committed
    written_before = sum(recorder.rows_written.values())
    assert 0 < written_before < sum(len(rows_for(t, m)) for t, m in first)

    await produce(broker, [(t, encode(m)) for t, m in second + redelivered])
    restarted = Recorder(broker.bootstrap, ch, names=broker.names, group_id="g")
    await record_all(restarted)
    # the new consumer started at the committed offsets: nothing was read twice but the redelivered messages
    produced_rows = sum(len(rows_for(t, m)) for t, m in first + second + redelivered)
    assert written_before + sum(restarted.rows_written.values()) == produced_rows
    assert counts(ch) == {t: 1500 * n for t, n in SAMPLE_ROWS.items()}
