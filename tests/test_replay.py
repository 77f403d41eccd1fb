"""Binance USD-M normalizer and the replay source, on the bundled real recordings."""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from schemas import MarketFrame, Watermark, decode
from streams.binance_usdm import parse_line
from streams.replay import ReplaySource, iter_tape, kafka_partition

RECORDINGS = Path(__file__).resolve().parents[1] / "streams" / "recordings" / "binance_usdm"
BTC = RECORDINGS / "usdm_btcusdt_20240808.gz"
ETH = RECORDINGS / "usdm_ethusdt_20240808.gz"
PARTITIONS = 4  # BTCUSDT lands on 2, ETHUSDT on 1: partitions 0 and 3 stay idle


def raw_lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines()


def split(line: bytes) -> tuple[int, dict]:
    recv, payload = line.split(b" ", 1)
    return int(recv), json.loads(payload)


def first_line(path: Path, predicate) -> bytes:
    return next(line for line in raw_lines(path) if predicate(split(line)[1]))


def event(msg: dict) -> str:
    return msg["data"]["e"] if "data" in msg else "snapshot"


# --- normalizer -----------------------------------------------------------------------------------------------

def test_trade_line():
    line = first_line(BTC, lambda m: event(m) == "trade")
    recv, msg = split(line)
    d = msg["data"]
    frame = parse_line(line)
    assert (frame.venue, frame.symbol, frame.ts, frame.recv_ts) == ("binance_usdm", d["s"], d["E"], recv)
    assert frame.id == f"binance_usdm:{d['s']}:trade:{d['t']}"
    (trade,) = frame.trades
    assert trade.ts == d["T"]
    assert str(trade.price) == d["p"] and str(trade.qty) == d["q"]  # exact, trailing zeros kept
    assert frame.bid is None and frame.bids == [] and not frame.snapshot


@pytest.mark.parametrize("maker_is_buyer, side", [(True, "sell"), (False, "buy")])
def test_aggressor_side(maker_is_buyer, side):
    line = first_line(ETH, lambda m: event(m) == "trade" and m["data"]["m"] is maker_is_buyer)
    assert parse_line(line).trades[0].side == side


def test_book_ticker_line():
    line = first_line(ETH, lambda m: event(m) == "bookTicker")
    recv, msg = split(line)
    d = msg["data"]
    frame = parse_line(line)
    assert frame.id == f"binance_usdm:ETHUSDT:bookTicker:{d['u']}"
    assert (frame.ts, frame.recv_ts) == (d["E"], recv)
    assert (frame.bid, frame.bid_qty, frame.ask, frame.ask_qty) == tuple(Decimal(d[k]) for k in "bBaA")
    assert frame.trades == [] and frame.bids == []


def test_depth_update_line():
    line = first_line(BTC, lambda m: event(m) == "depthUpdate")
    _, msg = split(line)
    d = msg["data"]
    frame = parse_line(line)
    assert frame.id == f"binance_usdm:BTCUSDT:depth:{d['u']}" and frame.ts == d["E"]
    assert [(str(lv.price), str(lv.qty)) for lv in frame.bids] == [tuple(x) for x in d["b"]]
    assert [(str(lv.price), str(lv.qty)) for lv in frame.asks] == [tuple(x) for x in d["a"]]
    assert not frame.snapshot and frame.bid is None


def test_rest_snapshot_line():
    line = first_line(BTC, lambda m: event(m) == "snapshot")
    recv, msg = split(line)
    with pytest.raises(ValueError, match="symbol"):
        parse_line(line)  # the REST answer names no symbol
    frame = parse_line(line, "BTCUSDT")
    assert frame.snapshot and frame.id == f"binance_usdm:BTCUSDT:snapshot:{msg['lastUpdateId']}"
    assert (frame.ts, frame.recv_ts) == (msg["E"], recv)
    assert len(frame.bids) == len(msg["bids"]) == 1000 and len(frame.asks) == len(msg["asks"])
    assert (frame.bids[0].price, frame.asks[-1].qty) == (Decimal(msg["bids"][0][0]), Decimal(msg["asks"][-1][1]))


def test_fast_path_equals_full_validation():
    for path in (BTC, ETH):
        for line in raw_lines(path)[::7]:
            fast, checked = parse_line(line, "X"), parse_line(line, "X", validate=True)
            assert fast == checked and fast.model_dump_json() == checked.model_dump_json()


TRADE = {"e": "trade", "E": 1723161256322, "T": 1723161256322, "s": "BTCUSDT", "t": 1, "p": "61800.30",
         "q": "0.006", "X": "MARKET", "m": False}


def trade_line(**changes) -> bytes:
    return b"1 " + orjson.dumps({"stream": "btcusdt@trade", "data": TRADE | changes})


def test_unusual_but_valid_values_go_through_validation():
    assert parse_line(trade_line(p="6.18E+4")).trades[0].price == Decimal("61800")


@pytest.mark.parametrize("line", [
    b"", b"garbage", b"12 not json", b"-5 {}", b"1 []", b"1 {}",
    b'1 {"stream": "btcusdt@aggTrade", "data": {"e": "aggTrade"}}',
    trade_line(p="0"), trade_line(p="-1"), trade_line(p="NaN"), trade_line(q="Infinity"), trade_line(m="true"),
    trade_line(s="btc usdt"), trade_line(E=-1), trade_line(t="1"), trade_line(T=None),
    b"1 " + orjson.dumps({"stream": "x", "data": {k: v for k, v in TRADE.items() if k != "p"}}),
    b'1 {"stream": "x@depth", "data": {"e": "depthUpdate", "E": 1, "s": "X", "u": 1, "b": [["1"]], "a": []}}',
    b'1 {"stream": "x@depth", "data": {"e": "depthUpdate", "E": 1, "s": "X", "u": 1, "b": 5, "a": []}}',
    b'1 {"stream": "x@depth", "data": {"e": "depthUpdate", "E": 1, "s": "X", "u": 1, "b": [], "a": '
    + orjson.dumps([["1", "1"]] * 1001) + b"}}",  # over the schema's 1000 levels
])
def test_malformed_lines_raise_value_error(line):
    with pytest.raises(ValueError):
        parse_line(line, "BTCUSDT")


# --- tape and replay ------------------------------------------------------------------------------------------

def test_kafka_partition_matches_aiokafka():
    # Kafka's own murmur2 test vectors (UtilsTest), signed 32-bit.
    from streams.replay import murmur2
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
               b"a-little-bit-longer-string": -1486304829, b"abc": 479470107,
               b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971}
    for data, signed in vectors.items():
        assert murmur2(data) == signed & 0xFFFFFFFF
    partitioner = DefaultPartitioner()
    keys = [b"", b"BTCUSDT", b"ETHUSDT", b"1000PEPEUSDT"] + [f"SYM{i}USDT".encode() * (i % 5 + 1) for i in range(300)]
    for n in (1, 2, 3, 4, 6, 12, 64):
        for key in keys:
            assert kafka_partition(key, n) == partitioner(key, list(range(n)), list(range(n)))


def independent_counts(path: Path) -> tuple[int, int]:
    messages = [json.loads(line.split(b" ", 1)[1]) for line in raw_lines(path) if line.strip()]
    return len(messages), sum(event(m) == "trade" for m in messages)


@pytest.mark.parametrize("path", [BTC, ETH], ids=["btc", "eth"])
def test_counts_per_file(path):
    tape = iter_tape([path])
    frames = trades = 0
    for frame in tape:
        frames += 1
        trades += len(frame.trades)
    assert (frames, trades) == independent_counts(path)
    assert tape.bad_lines == 0


class Recorder:
    """A `send` that keeps what a broker would need to check the stream, and a digest of every byte."""

    def __init__(self):
        self.messages: list[tuple[str, bytes | None, int | None, dict]] = []
        self.digest = hashlib.sha256()

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None) -> None:
        for part in (topic.encode(), key or b"-", str(partition).encode(), value):
            self.digest.update(len(part).to_bytes(8, "big") + part)
        msg = orjson.loads(value)
        light = {k: msg[k] for k in ("kind", "id", "ts", "symbol", "end", "recv_ts") if k in msg}
        self.messages.append((topic, key, partition, light))


def replay(paths, **options):
    recorder = Recorder()
    summary = asyncio.run(ReplaySource(paths, recorder.send, PARTITIONS, **options).run())
    return recorder, summary


@pytest.fixture(scope="module")
def full_replay():
    return replay([BTC, ETH])


def test_full_replay_summary(full_replay):
    recorder, summary = full_replay
    (btc_frames, btc_trades), (eth_frames, eth_trades) = independent_counts(BTC), independent_counts(ETH)
    assert (summary.frames, summary.trades) == (btc_frames + eth_frames, btc_trades + eth_trades)
    frames = [m for _, _, _, m in recorder.messages if m["kind"] == "frame"]
    assert len(frames) == summary.frames and summary.bad_lines == 0
    assert (summary.first_ts, summary.last_ts) == (frames[0]["ts"], frames[-1]["ts"])
    assert len({m["id"] for m in frames}) == len(frames)  # ids unique over both files


def test_merge_is_in_event_time_order(full_replay):
    recorder, _ = full_replay
    keys = [(m["ts"], m["recv_ts"]) for _, _, _, m in recorder.messages if m["kind"] == "frame"]
    assert keys == sorted(keys)
    symbols_seen = {m["symbol"] for _, _, _, m in recorder.messages[:200] if m["kind"] == "frame"}
    assert symbols_seen == {"BTCUSDT", "ETHUSDT"}  # interleaved, not one file after the other


def test_frames_keyed_by_symbol_on_the_kafka_partition(full_replay):
    recorder, _ = full_replay
    for topic, key, partition, msg in recorder.messages:
        assert topic == "md.events"
        if msg["kind"] == "frame":
            assert key == msg["symbol"].encode() and partition == kafka_partition(key, PARTITIONS)


def test_watermarks_reach_every_partition(full_replay):
    recorder, summary = full_replay
    marks = [(partition, key, m) for _, key, partition, m in recorder.messages if m["kind"] == "watermark"]
    assert all(key is None for _, key, _ in marks)
    assert summary.watermarks == len(marks)
    by_partition = {p: [m for q, _, m in marks if q == p] for p in range(PARTITIONS)}
    span_s = (summary.last_ts - summary.first_ts) / 1000
    for partition, seen in by_partition.items():
        assert len(seen) >= span_s - 1, partition  # about one a second of event time, idle partitions too
        assert [m["ts"] for m in seen] == sorted(m["ts"] for m in seen)
        assert [m["end"] for m in seen] == [False] * (len(seen) - 1) + [True]
        assert seen[-1]["ts"] == summary.last_ts + 1
    # A watermark promises no later frame below its ts.
    low = 0
    for _, _, _, m in recorder.messages:
        if m["kind"] == "watermark":
            low = m["ts"]
        else:
            assert m["ts"] >= low


def test_same_input_gives_the_same_bytes(full_replay):
    first, _ = full_replay
    second, _ = replay([BTC, ETH])
    assert first.digest.digest() == second.digest.digest()


def test_bad_lines_are_counted_not_fatal(tmp_path):
    lines = raw_lines(ETH)[:300]
    good = len(lines)
    bad = [b"garbage", b"1723161255088156767 {\"stream\": \"x\"", trade_line(s="ETHUSDT", p="0"),
           b'1 {"stream": "x", "data": {"e": "aggTrade", "E": 1}}']
    path = tmp_path / "eth_slice.txt"  # plain text, not gzip
    path.write_bytes(b"\n".join(lines[:100] + bad[:2] + lines[100:] + bad[2:]) + b"\n\n")
    recorder, summary = replay([path])
    assert (summary.frames, summary.bad_lines) == (good, len(bad))
    assert recorder.messages[-1][3]["end"] is True


def test_every_message_decodes_for_the_topic(tmp_path):
    path = tmp_path / "slice"
    path.write_bytes(b"\n".join(raw_lines(BTC)[:400]))  # holds the REST snapshot
    values = []

    async def send(topic, key, value, partition):
        values.append((topic, value))

    summary = asyncio.run(ReplaySource([path], send, PARTITIONS).run())
    decoded = [decode(topic, value) for topic, value in values]
    assert sum(isinstance(m, MarketFrame) for m in decoded) == summary.frames == 400
    assert any(isinstance(m, MarketFrame) and m.snapshot for m in decoded)
    assert isinstance(decoded[-1], Watermark) and decoded[-1].end


def test_pacing_at_speed(tmp_path):
    lines = raw_lines(BTC)
    start = split(lines[100])[1]["data"]["E"]
    window = [line for line in lines[100:3000] if start <= split(line)[1].get("data", {}).get("E", 0) < start + 2000]
    span_ms = max(split(line)[1]["data"]["E"] for line in window) - start
    (tmp_path / "btc_slice").write_bytes(b"\n".join(window))
    speed = 4
    reports = []
    began = time.perf_counter()
    _, summary = replay([tmp_path / "btc_slice"], speed=speed, progress=reports.append, progress_every_s=0.1)
    elapsed = time.perf_counter() - began
    assert summary.frames == len(window) and summary.last_ts - summary.first_ts == span_ms > 1500
    expected = span_ms / 1000 / speed
    assert expected * 0.9 <= elapsed <= expected + 1.0
    assert len(reports) >= 3 and reports[-1].frames == len(window)
    assert [r.event_ts for r in reports] == sorted(r.event_ts for r in reports)
