"""The whole pipeline on the real embedded broker and real chdb, replaying the bundled recording.

Expected values are computed here straight from the raw Binance lines with json and Decimal, following the
venue's published rules, without any papertape code."""
import asyncio
import gzip
import json
import sys
from decimal import Decimal as D
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

import schemas as s
from builders import run_settings
from papertape.app.runtime import Pipeline
from papertape.config import BUNDLED_TAPE
from papertape.core.market.partition import is_snapshot
from papertape.core.session.config import SessionConfig
from schemas.codec import decode_ticks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
SECONDS = 60  # of the tape's 345
LATENCY = 50


def raw_frames(symbol_file: Path):
    """(E, kind, data) of every line of a recording, in event-time order (the REST snapshot has no E)."""
    out = []
    with gzip.open(symbol_file, "rt") as f:
        for line in f:
            recv, payload = line.split(" ", 1)
            msg = json.loads(payload)
            if "stream" in msg:
                out.append((msg["data"]["E"], int(recv), msg["stream"].split("@")[1], msg["data"]))
    out.sort(key=lambda x: (x[0], x[1]))
    return out


@pytest.fixture(scope="module")
def tape():
    btc = raw_frames(BUNDLED_TAPE[0])
    eth = raw_frames(BUNDLED_TAPE[1])
    start = min(btc[0][0], eth[0][0])
    end = start + SECONDS * 1000
    return start, [f for f in btc if f[0] < end], [f for f in eth if f[0] < end]


def first_ts_at_or_after(frames, t):
    return next(f[0] for f in frames if f[0] >= t)


def top_before(frames, t):
    """bid, ask of the last bookTicker strictly before event time t."""
    last = None
    for e, _, kind, d in frames:
        if e >= t:
            break
        if kind == "bookTicker":
            last = d
    return D(last["b"]), D(last["a"])


def fee(price, qty, rate):
    return (price * qty * D(rate)).quantize(D("0.00000001"))


async def run_pipeline(tmp_path, sessions, queries, during=None):
    """Replay, wait until everything is in ClickHouse, and return (replay summary, session summary, rows of
    each query)."""
    settings = run_settings(data_dir=tmp_path, md_partitions=2, session_partitions=2, sessions=sessions,
                            replay_seconds=SECONDS)
    pipe = Pipeline(settings, console_alerts="critical")
    await pipe.start()
    try:
        if during:
            await during(pipe)
        done = await pipe.replay(progress=False)
        await pipe.wait_finished(timeout=300)
        return done, pipe.summary(), [rows(pipe.query(q)) for q in queries]
    finally:
        await pipe.stop()


def rows(res):
    return [dict(zip(res["columns"], r)) for r in res["rows"]]


def test_scripted_orders_end_to_end_match_a_hand_computation(tmp_path, tape):
    start, btc, eth = tape
    both = sorted(btc + eth, key=lambda f: f[0])
    t_buy, t_sell, t_eth = start + 10_000, start + 15_000, start + 20_000
    # the limit: 2.0 below the highest trade of the following 30 s, so the market trades through it
    a_sell = first_ts_at_or_after(both, t_sell) + LATENCY
    later = [D(d["p"]) for e, _, k, d in btc if k == "trade" and a_sell <= e < a_sell + 30_000]
    limit = max(later) - 2
    script = [
        {"at": t_buy, "symbol": "BTCUSDT", "side": "buy", "qty": "0.005"},
        {"at": t_sell, "symbol": "BTCUSDT", "side": "sell", "qty": "0.005", "type": "limit", "price": str(limit)},
        {"at": t_eth, "symbol": "ETHUSDT", "side": "sell", "qty": "0.10"},
        {"at": t_eth + 5_000, "symbol": "ETHUSDT", "side": "buy", "qty": "0.10", "reduce_only": True},
    ]
    # the venue's simplest model, so the hand computation stays short: takers fill whole at the touch, a maker
    # whole on the first trade through it (the full model is computed by hand in test_venue*.py)
    simple = {"book_walk": False, "queue_position": False, "quote_through": False, "partial_fills": False}
    session = SessionConfig(id="scripted", strategy="scripted", params={"orders": script}, latency_ms=LATENCY,
                            balance=D(5000), fill=simple)

    done, summary, (fills, positions) = asyncio.run(run_pipeline(tmp_path, [session], [
        "SELECT symbol, side, price, qty, liquidity, fee, realized_pnl, toUnixTimestamp64Milli(ts) AS t "
        "FROM fills WHERE session = 'scripted' ORDER BY ts",
        "SELECT symbol, argMax(qty, ts) AS q FROM positions GROUP BY symbol ORDER BY symbol"]))

    # market buy: decided on the first frame at/after t_buy, arrives LATENCY later, takes the ask standing then
    a_buy = first_ts_at_or_after(both, t_buy) + LATENCY
    buy_px = top_before(btc, a_buy)[1]
    # resting limit sell: fills at its price on the first trade above it after arrival (maker)
    sell_trade = next(d for e, _, k, d in btc if k == "trade" and e >= a_sell and D(d["p"]) > limit)
    a_e1 = first_ts_at_or_after(both, t_eth) + LATENCY
    a_e2 = first_ts_at_or_after(both, t_eth + 5_000) + LATENCY
    eth_sell_px, eth_buy_px = top_before(eth, a_e1)[0], top_before(eth, a_e2)[1]
    expected = [
        ("BTCUSDT", "buy", buy_px, D("0.005"), "taker", fee(buy_px, D("0.005"), "0.00055"), D(0)),
        ("BTCUSDT", "sell", limit, D("0.005"), "maker", fee(limit, D("0.005"), "0.0002"),
         (limit - buy_px) * D("0.005")),
        ("ETHUSDT", "sell", eth_sell_px, D("0.10"), "taker", fee(eth_sell_px, D("0.10"), "0.00055"), D(0)),
        ("ETHUSDT", "buy", eth_buy_px, D("0.10"), "taker", fee(eth_buy_px, D("0.10"), "0.00055"),
         (eth_sell_px - eth_buy_px) * D("0.10")),
    ]
    got = [(f["symbol"], f["side"], D(str(f["price"])), D(str(f["qty"])), f["liquidity"], D(str(f["fee"])),
            D(str(f["realized_pnl"]))) for f in fills]
    assert sorted(got) == sorted(expected)
    assert next(f["t"] for f in fills if f["liquidity"] == "maker") == sell_trade["T"]

    cash = D(5000) + sum(e[6] for e in expected) - sum(e[5] for e in expected)
    (row,) = summary
    assert (row["session"], int(row["fills"]), int(row["orders"])) == ("scripted", 4, 4)
    assert D(str(row["cash"])) == cash == D(str(row["equity"]))  # flat at the end: equity is cash
    assert [(p["symbol"], D(str(p["q"]))) for p in positions] == [("BTCUSDT", 0), ("ETHUSDT", 0)]
    assert done["frames"] >= len(btc) + len(eth)  # plus the REST snapshots, which carry no event time here


def test_bad_input_goes_to_the_dead_letter_topic_and_the_stream_goes_on(tmp_path, tape):
    start, btc, _ = tape
    session = SessionConfig(id="ext", strategy="scripted", params={"orders": []}, latency_ms=LATENCY)
    good_order = {"kind": "order", "id": "o-1", "ts": start + 30_000, "session": "ext", "symbol": "BTCUSDT",
                  "side": "buy", "qty": "0.002"}
    bad = {
        "md.events": [b"{not json", b'{"kind":"frame","id":"n","ts":1,"venue":"x","symbol":"BTCUSDT",'
                                    b'"recv_ts":0,"bid":"NaN"}',
                      json.dumps({"kind": "frame", "id": "u", "ts": start, "venue": "x", "symbol": "NOPEUSDT",
                                  "recv_ts": 0, "bid": "1", "ask": "2"}).encode(),
                      b'{"kind":"frame","id":"big","ts":1,"venue":"x","symbol":"BTCUSDT","recv_ts":0,"x":"'
                      + b"a" * (1100 << 10) + b'"}',
                      json.dumps({"kind": "batch", "id": "b", "ts": 1, "origin": "x", "wm": 1, "frames": [
                          {"id": "ok", "ts": 1, "venue": "x", "symbol": "BTCUSDT", "recv_ts": 0, "bid": "1",
                           "ask": "2"},
                          {"id": "neg", "ts": 1, "venue": "x", "symbol": "BTCUSDT", "recv_ts": 0,
                           "trades": [{"ts": 1, "price": "1", "qty": "-1", "side": "buy"}]},
                          {"id": "nan", "ts": 1, "venue": "x", "symbol": "BTCUSDT", "recv_ts": 0, "bid": "NaN",
                           "ask": "2"}]}).encode()],
        "orders": [json.dumps({**good_order, "id": "o-neg", "qty": "-1"}).encode(),
                   json.dumps({**good_order, "id": "o-unknown", "symbol": "NOPEUSDT"}).encode()],
    }

    async def inject(pipe):
        producer = AIOKafkaProducer(bootstrap_servers=pipe.settings.kafka_bootstrap, max_request_size=4 << 20)
        await producer.start()
        try:
            for topic, payloads in bad.items():
                for p in payloads:
                    await producer.send_and_wait(pipe.settings.names.topic(topic), p,
                                                 key=b"ext" if topic == "orders" else b"BTCUSDT")
            await producer.send_and_wait(pipe.settings.names.topic("orders"), json.dumps(good_order).encode(),
                                         key=b"ext")
        finally:
            await producer.stop()

    done, summary, (dead, alerts, fills, events) = asyncio.run(run_pipeline(tmp_path, [session], [
        "SELECT topic, error FROM dead_letters ORDER BY topic, offset, id",
        "SELECT title FROM alerts WHERE severity = 'warning'",
        "SELECT order_id, side, qty FROM fills",
        "SELECT order_id, status, reason FROM order_events ORDER BY ts, status = 'filled'"], during=inject))

    errors = [(d["topic"], d["error"]) for d in dead]
    assert [t for t, _ in errors] == ["md.events"] * 6 + ["orders"] * 2, errors
    assert "Invalid JSON" in errors[0][1] and "'NaN' is not a plain decimal" in errors[1][1]
    assert "unknown symbol NOPEUSDT" in errors[2][1] and "oversized" in errors[3][1]
    # each bad frame of a batch is refused alone, and each is its own dead letter (they share the batch's offset)
    assert errors[4][1].startswith("frame 1: trades.0.qty: '-1' is not a plain decimal"), errors[4]
    assert errors[5][1].startswith("frame 2: bid: 'NaN' is not a plain decimal"), errors[5]
    assert "greater than 0" in errors[6][1] and "unknown symbol NOPEUSDT" in errors[7][1]
    assert len(alerts) == len(errors)
    # the valid external order still reaches the session and fills: the market kept flowing
    assert [(f["order_id"], f["side"], D(str(f["qty"]))) for f in fills] == [("ext-x-o-1", "buy", D("0.002"))]
    assert [e["status"] for e in events] == ["new", "filled"]
    assert int(summary[0]["fills"]) == 1


async def books_sent(settings, session: str, symbols: set[str]) -> None:
    """Until the market actors have answered the md.interest of `session`'s engine partition with the books of
    `symbols`: a session started at run time trades from those snapshots on (DESIGN 11), so a test that wants it to
    see a whole tape waits for them before playing it."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(settings.names.topic("md.ticks"), settings.session_partition(session))])
        await consumer.seek_to_beginning()
        waiting = set(symbols)
        async with asyncio.timeout(120):
            while waiting:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    waiting -= {t.symbol for m in msgs for t in decode_ticks(m.value).ticks if is_snapshot(t.pos)}
    finally:
        await consumer.stop()


def test_sessions_are_started_paused_reconfigured_and_stopped_from_the_command_line(tmp_path):
    """`papertape session ...` against a running pipeline: the controls travel through Kafka to the engine, and
    their effects reach ClickHouse, where `session list` reads them. `late` is started before the tape plays, on an
    engine partition without sessions: the replay waits until the market actors have sent it their books, so its
    decisions do not depend on how fast the broker hands the worker its md.interest."""
    settings = run_settings(data_dir=tmp_path, md_partitions=2, session_partitions=2, replay_seconds=SECONDS,
                            sessions=[SessionConfig(id="trend", strategy="trend_following",
                                                    params={"fast": 3, "slow": 8, "bar_ms": 2000})])
    assert [settings.session_partition(x) for x in ("trend", "late")] == [0, 1]

    async def cli(*args):
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "papertape.app.cli", "session", *args,
                                                    "--data-dir", str(tmp_path), stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        return proc.returncode, out.decode(), err.decode()

    async def statuses(pipe, want):
        for _ in range(300):
            got = rows(pipe.query("SELECT event, status, intel FROM sessions WHERE session = 'late' ORDER BY id"))
            if len(got) >= want:
                return got
            await asyncio.sleep(0.1)
        raise AssertionError(f"session statuses: {got}")

    async def go():
        pipe = Pipeline(settings, console_alerts="critical")
        await pipe.start()
        try:
            code, out, err = await cli("start", "late", "--strategy", "mean_reversion", "--intel", "8",
                                       "--param", "window=10", "--param", "bar_ms=2000", "--balance", "5000")
            assert code == 0, err
            await books_sent(settings, "late", set(settings.instrument_map()))
            await pipe.replay(progress=False)
            await pipe.wait_finished(timeout=300)
            assert (await cli("pause", "late"))[0] == 0
            await statuses(pipe, 2)
            assert (await cli("config", "late", "intel=3", "risk.max_daily_trades=7"))[0] == 0
            await statuses(pipe, 3)
            refused = await cli("config", "late", "balance=1")  # refused before sending
            assert (await cli("stop", "late"))[0] == 0
            final = await statuses(pipe, 4)
            listed = await cli("list", "--json")
            decisions = rows(pipe.query("SELECT count() AS n, min(intel) AS lo, max(intel) AS hi FROM decisions "
                                        "WHERE session = 'late'"))
            equity = rows(pipe.query("SELECT count() AS n FROM equity WHERE session = 'late'"))
            return refused, final, listed, decisions, equity
        finally:
            await pipe.stop()

    refused, final, listed, decisions, equity = asyncio.run(go())
    assert [(r["event"], r["status"], int(r["intel"])) for r in final] == [
        ("started", "running", 8), ("paused: no new entries", "paused", 8),
        ("reconfigured: intel, risk", "paused", 3), ("stopped", "stopped", 3)]
    assert refused[0] == 1 and "balance" in refused[2]
    assert int(decisions[0]["n"]) > 0 and int(decisions[0]["lo"]) == int(decisions[0]["hi"]) == 8
    assert int(equity[0]["n"]) > 0
    code, out, err = listed
    assert code == 0, err
    table = json.loads(out)
    by_session = {row[table["columns"].index("session")]: dict(zip(table["columns"], row)) for row in table["rows"]}
    assert by_session["late"]["status"] == "stopped" and by_session["trend"]["status"] == "running"
    assert D(str(by_session["late"]["equity"])) > 0 and D(str(by_session["trend"]["equity"])) > 0


def test_a_session_started_mid_replay_on_a_partition_without_sessions_gets_the_book_and_trades(tmp_path, tape):
    """Engine partition 1 has no session, so it gets no ticks at all, only watermarks. `late`, started there while
    the tape plays, asks ETHUSDT's market agent for its book through md.interest (on the real broker), starts at
    the snapshot's event time and trades on that book: its market orders fill at the touch standing when they
    arrive, computed here from the raw lines."""
    start, btc, eth = tape
    t1, t2 = start + 45_000, start + 52_000
    script = [{"at": t1, "symbol": "ETHUSDT", "side": "buy", "qty": "0.10"},
              {"at": t2, "symbol": "ETHUSDT", "side": "sell", "qty": "0.10"}]
    simple = {"book_walk": False, "queue_position": False, "quote_through": False, "partial_fills": False}
    late = SessionConfig(id="late", strategy="scripted", symbols=["ETHUSDT"], params={"orders": script},
                         latency_ms=LATENCY, balance=D(5000), fill=simple)
    trend = SessionConfig(id="trend", strategy="trend_following", symbols=["BTCUSDT"],
                          params={"fast": 3, "slow": 8, "bar_ms": 2000})
    settings = run_settings(data_dir=tmp_path, md_partitions=2, session_partitions=2, sessions=[trend],
                            replay_seconds=SECONDS, speed=3)
    assert [settings.session_partition(x) for x in ("trend", "late")] == [0, 1]

    async def go():
        pipe = Pipeline(settings, console_alerts="critical")
        await pipe.start()
        try:
            replay = asyncio.create_task(pipe.replay(progress=False))
            await asyncio.sleep(5)  # about 15 s of the tape at 3x
            producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
            await producer.start()
            ctrl = s.Control(id="start-late", ts=0, session="late", command="start",
                             config=late.model_dump(mode="json"))
            await producer.send_and_wait(settings.names.topic("control"), s.encode(ctrl), key=b"late")
            await producer.stop()
            await replay
            await pipe.wait_finished(timeout=300)
            return (rows(pipe.query("SELECT event, toUnixTimestamp64Milli(ts) AS t FROM sessions "
                                    "WHERE session = 'late'")),
                    rows(pipe.query("SELECT side, price, qty FROM fills WHERE session = 'late' ORDER BY ts")),
                    rows(pipe.query("SELECT count() AS n FROM dead_letters")))
        finally:
            await pipe.stop()

    statuses, fills, dead = asyncio.run(go())
    (started,) = [r for r in statuses if r["event"] == "started"]
    assert start + 5_000 < started["t"] < t1  # mid-tape: the market actors had the book long before
    a1 = first_ts_at_or_after(eth, t1) + LATENCY
    a2 = first_ts_at_or_after(eth, t2) + LATENCY
    assert [(f["side"], D(str(f["price"])), D(str(f["qty"]))) for f in fills] == [
        ("buy", top_before(eth, a1)[1], D("0.10")), ("sell", top_before(eth, a2)[0], D("0.10"))]
    assert int(dead[0]["n"]) == 0
