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

import streams.formats.binance_usdm as usdm
from builders import ROOT
from schemas import MarketBatch, decode
from schemas.codec import MAX_MESSAGE_BYTES
from schemas.topics import kafka_partition, murmur2
from streams.formats.binance_usdm import parse_line, recording_symbol, wire_line
from streams.frames import frame_json
from streams.sources.replay import BATCH_BYTES, ReplaySource, Tape

RECORDINGS = ROOT / "streams" / "recordings" / "binance_usdm"
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


@pytest.fixture(scope="module")
def tape_lines() -> list[tuple[bytes, str]]:
    """Every line of the bundled tape, with its file's symbol (for the REST snapshots)."""
    return [(line, recording_symbol(lines)) for lines in map(raw_lines, (BTC, ETH)) for line in lines]


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
    assert (trade.price, trade.qty) == (d["p"], d["q"])  # the exchange's strings, trailing zeros kept
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
    assert (frame.bid, frame.bid_qty, frame.ask, frame.ask_qty) == tuple(d[k] for k in "bBaA")
    assert Decimal(frame.bid) < Decimal(frame.ask)
    assert frame.trades == [] and frame.bids == []


def test_depth_update_line():
    line = first_line(BTC, lambda m: event(m) == "depthUpdate")
    _, msg = split(line)
    d = msg["data"]
    frame = parse_line(line)
    assert frame.id == f"binance_usdm:BTCUSDT:depth:{d['u']}" and frame.ts == d["E"]
    assert frame.bids == [(p, q) for p, q in d["b"]] and frame.asks == [(p, q) for p, q in d["a"]]
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
    assert frame.bids == [tuple(level) for level in msg["bids"]]
    assert frame.asks == [tuple(level) for level in msg["asks"]]


@pytest.mark.slow  # the whole bundled tape
def test_fast_path_equals_full_validation(tape_lines):
    for line, symbol in tape_lines:
        fast, checked = parse_line(line, symbol), parse_line(line, symbol, validate=True)
        assert fast == checked and fast.model_dump_json() == checked.model_dump_json(), line[:200]
        assert fast.model_fields_set == checked.model_fields_set
        assert all(type(level) is tuple for level in fast.bids + fast.asks)


@pytest.mark.slow  # the whole bundled tape
def test_wire_line_is_the_frames_json(tape_lines):
    for line, symbol in tape_lines:
        frame = parse_line(line, symbol, validate=True)
        assert wire_line(line, symbol)[:5] == (frame.ts, frame.recv_ts, frame.symbol, len(frame.trades),
                                           frame.model_dump_json().encode()), line[:200]


@pytest.mark.slow  # the whole bundled tape
def test_the_whole_tape_takes_the_fast_path(tape_lines, monkeypatch):
    def refuse(fields):
        raise AssertionError(f"validated: {fields['id']}")

    monkeypatch.setattr(usdm, "_validate", refuse)
    monkeypatch.setattr(frame_json, "validate", refuse)
    for line, symbol in tape_lines[::3]:
        parse_line(line, symbol)
        wire_line(line, symbol)


TRADE = {"e": "trade", "E": 1723161256322, "T": 1723161256322, "s": "BTCUSDT", "t": 1, "p": "61800.30",
         "q": "0.006", "X": "MARKET", "m": False}


def trade_line(**changes) -> bytes:
    return b"1 " + orjson.dumps({"stream": "btcusdt@trade", "data": TRADE | changes})


def depth_line(bids, asks=()) -> bytes:
    data = {"e": "depthUpdate", "E": 1, "s": "X", "u": 1, "b": bids, "a": list(asks)}
    return b"1 " + orjson.dumps({"stream": "x@depth", "data": data})


@pytest.mark.parametrize("line", [
    trade_line(T=1723161256322.0),  # pydantic's lax mode takes an integral float for an int
    trade_line(E="1723161256322"),  # a string of digits
    trade_line(T=True),  # and a bool (1)
    b"1 " + orjson.dumps({"stream": "x", "data": {"e": "bookTicker", "E": 1, "s": "X", "u": 1, "b": None,
                                                  "B": None, "a": "0.5", "A": "0"}}),
    b"10000000000000000000000000 " + trade_line()[2:],  # recv_ts beyond 64 bits: orjson cannot write it
    depth_line([["0." + "0" * 17 + "123456", "1"]]),  # 23 decimals: a price but not a quantity
    depth_line([[p, "1"] for p in map(str, range(1, 1001))]),  # 1000 levels
])
def test_unusual_but_valid_values(line):
    checked = parse_line(line, "X", validate=True)
    assert parse_line(line, "X") == checked
    assert wire_line(line, "X")[:5] == (checked.ts, checked.recv_ts, checked.symbol, len(checked.trades),
                                    checked.model_dump_json().encode())


def test_a_quantity_known_valid_is_no_valid_price():
    assert parse_line(depth_line([["1", "0.000"]])).bids == [("1", "0.000")]
    with pytest.raises(ValueError, match="price"):
        parse_line(trade_line(p="0.000"))


@pytest.mark.parametrize("line", [
    b"", b"garbage", b"12 not json", b"-5 {}", b"1 []", b"1 {}",
    b'1 {"stream": "btcusdt@aggTrade", "data": {"e": "aggTrade"}}',
    b'1 {"stream": "x", "data": {"e": ["trade"], "E": 1}}', b'1 {"stream": "x", "data": {"e": {}, "E": 1}}',
    trade_line(p="0"), trade_line(p="0.00"), trade_line(p="-1"), trade_line(p="NaN"), trade_line(q="Infinity"),
    trade_line(p="6.18E+4"), trade_line(p="61800."), trade_line(p=".5"), trade_line(p="061800"),
    trade_line(p=" 61800"), trade_line(p="61800\n"), trade_line(p="６１８００"), trade_line(p=61800.3),
    trade_line(p="1" * 21), trade_line(q="-0"), trade_line(q="0.0000000000000000001"), trade_line(m="true"),
    trade_line(s="btc usdt"), trade_line(s="B" * 41), trade_line(E=-1), trade_line(E=10**14),
    trade_line(t="1"), trade_line(t=1.0), trade_line(T=None),
    b"1 " + orjson.dumps({"stream": "x", "data": {k: v for k, v in TRADE.items() if k != "p"}}),
    b"1 " + orjson.dumps({"stream": "x", "data": {"e": "bookTicker", "E": 1, "s": "X", "u": 1, "b": "1",
                                                  "B": "1", "a": ["1"], "A": "1"}}),
    depth_line([["1"]]), depth_line([["1", "1", "1"]]), depth_line([["1", "1"], ["2"]]), depth_line(5),
    depth_line(0), depth_line(None), depth_line(["12"]), depth_line([{"1": 1, "2": 2}]), depth_line([["0", "1"]]),
    depth_line([["1", "1"]], [["1", "-1"]]), depth_line([[1, "1"]]), depth_line([[["1"], "1"]]),
    depth_line([["1", "1"]] * 1001),  # over the schema's 1000 levels
])
def test_malformed_lines_raise_value_error(line):
    with pytest.raises(ValueError):
        parse_line(line, "BTCUSDT")
    with pytest.raises(ValueError):
        wire_line(line, "BTCUSDT")


# --- tape and replay ------------------------------------------------------------------------------------------

def test_kafka_partition_matches_aiokafka():
    # Kafka's own murmur2 test vectors (UtilsTest), signed 32-bit.
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


SYMBOLS = {BTC: "BTCUSDT", ETH: "ETHUSDT"}
ID_KEYS = {"trade": ("trade", "t"), "bookTicker": ("bookTicker", "u"), "depthUpdate": ("depth", "u"),
           "snapshot": ("snapshot", "lastUpdateId")}


def expected_frames(path: Path, lines: list[bytes] | None = None) -> list[tuple[int, int, str]]:
    """(event time, receive time, frame id) of every line of a one-symbol file, in the order a replay keeps:
    event time, then receive time, then line order."""
    rows = []
    for line in raw_lines(path) if lines is None else lines:
        if line.strip():
            recv, msg = split(line)
            d = msg.get("data", msg)
            kind, key = ID_KEYS[event(msg)]
            rows.append((d["E"], recv, f"binance_usdm:{SYMBOLS[path]}:{kind}:{d[key]}"))
    return sorted(rows, key=lambda row: row[:2])


def independent_counts(path: Path) -> tuple[int, int]:
    messages = [json.loads(line.split(b" ", 1)[1]) for line in raw_lines(path) if line.strip()]
    return len(messages), sum(event(m) == "trade" for m in messages)


@pytest.mark.slow  # the whole bundled tape
@pytest.mark.parametrize("path", [BTC, ETH], ids=["btc", "eth"])
def test_counts_per_file(path):
    tape = Tape([path])
    frames = trades = 0
    for frame in tape:
        frames += 1
        trades += len(frame.trades)
    assert (frames, trades) == independent_counts(path)
    assert tape.bad_lines == 0


def test_tape_merges_files_in_event_time_order(tmp_path):
    slices = {}
    for path in (BTC, ETH):
        slices[path] = raw_lines(path)[:3000]
        (tmp_path / path.name).write_bytes(b"\n".join(slices[path]))
    got = [(f.ts, f.recv_ts, f.id) for f in Tape([tmp_path / BTC.name, tmp_path / ETH.name])]
    assert got == sorted(expected_frames(BTC, slices[BTC]) + expected_frames(ETH, slices[ETH]))
    assert {i.split(":")[1] for _, _, i in got[:200]} == {"BTCUSDT", "ETHUSDT"}  # interleaved, not one after the other


class Recorder:
    """A `send` that keeps each batch (its frames reduced to (ts, recv_ts, id, symbol, trades)), its size, and
    a digest of every byte."""

    def __init__(self):
        self.batches: list[tuple[str, bytes | None, int | None, int, dict]] = []  # topic, key, partition, size, batch
        self.digest = hashlib.sha256()

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None) -> None:
        for part in (topic.encode(), key or b"-", str(partition).encode(), value):
            self.digest.update(len(part).to_bytes(8, "big") + part)
        batch = orjson.loads(value)
        batch["frames"] = [(f["ts"], f["recv_ts"], f["id"], f["symbol"], len(f["trades"])) for f in batch["frames"]]
        self.batches.append((topic, key, partition, len(value), batch))

    def of(self, partition: int) -> list[dict]:
        return [b for _, _, p, _, b in self.batches if p == partition]

    def frames(self, partition: int) -> list[tuple[int, int, str]]:
        return [f[:3] for b in self.of(partition) for f in b["frames"]]


def replay(paths, **options):
    recorder = Recorder()
    summary = asyncio.run(ReplaySource(paths, recorder.send, PARTITIONS, **options).run())
    return recorder, summary


@pytest.fixture(scope="module")
def full_replay():
    return replay([BTC, ETH])


@pytest.mark.slow  # the whole bundled tape
def test_full_replay_summary(full_replay):
    recorder, summary = full_replay
    (btc_frames, btc_trades), (eth_frames, eth_trades) = independent_counts(BTC), independent_counts(ETH)
    assert (summary.frames, summary.trades) == (btc_frames + eth_frames, btc_trades + eth_trades)
    frames = [f for _, _, _, _, b in recorder.batches for f in b["frames"]]
    assert len(frames) == summary.frames and sum(f[4] for f in frames) == summary.trades
    assert summary.batches == len(recorder.batches) and summary.bad_lines == 0
    assert (summary.first_ts, summary.last_ts) == (min(f[0] for f in frames), max(f[0] for f in frames))
    assert len({f[2] for f in frames}) == len(frames)  # ids unique over both files


@pytest.mark.slow  # the whole bundled tape
def test_each_symbol_on_its_partition_in_event_time_order(full_replay):
    recorder, _ = full_replay
    for topic, key, partition, _, batch in recorder.batches:
        assert topic == "md.events" and key is None  # a batch is addressed to its partition, not keyed
        assert all(kafka_partition(f[3].encode(), PARTITIONS) == partition for f in batch["frames"])
    for path, symbol in SYMBOLS.items():
        # Every frame once, none lost, in event-time order within and across batches.
        assert recorder.frames(kafka_partition(symbol.encode(), PARTITIONS)) == expected_frames(path)
    assert recorder.frames(0) == recorder.frames(3) == []


@pytest.mark.slow  # the whole bundled tape
def test_every_partition_gets_batches_and_an_end(full_replay):
    recorder, summary = full_replay
    span_s = (summary.last_ts - summary.first_ts) / 1000
    for partition in range(PARTITIONS):
        batches = recorder.of(partition)
        assert len(batches) >= span_s - 1, partition  # about one a second of event time, idle partitions too
        assert [b["end"] for b in batches] == [False] * (len(batches) - 1) + [True]
        assert batches[-1]["wm"] == summary.last_ts + 1
        wms = [b["wm"] for b in batches]
        assert wms == sorted(wms) and all(b["ts"] == b["wm"] and b["origin"] == "replay" for b in batches)
    assert len({b["id"] for _, _, _, _, b in recorder.batches}) == len(recorder.batches)


@pytest.mark.slow  # the whole bundled tape
def test_a_watermark_is_kept(full_replay):
    """A batch's frames are at or below its watermark, and no later frame on its partition is below it."""
    recorder, _ = full_replay
    for partition in range(PARTITIONS):
        low = 0
        for batch in recorder.of(partition):
            assert all(low <= f[0] <= batch["wm"] for f in batch["frames"])
            low = batch["wm"]


@pytest.mark.slow  # the whole bundled tape
def test_batch_limits(full_replay):
    recorder, _ = full_replay
    assert max(len(b["frames"]) for _, _, _, _, b in recorder.batches) == 500  # batch_frames, reached
    assert max(size for _, _, _, size, _ in recorder.batches) <= MAX_MESSAGE_BYTES


def test_large_frames_split_batches_under_a_megabyte(tmp_path):
    lines = raw_lines(BTC)
    snapshot = first_line(BTC, lambda m: event(m) == "snapshot")
    path = tmp_path / "snapshots"  # a REST snapshot frame is about 50 kB
    path.write_bytes(b"\n".join(lines[:1] + [snapshot] * 40))
    recorder, summary = replay([path], batch_frames=10_000)
    assert summary.frames == 41
    sizes = [size for _, _, _, size, b in recorder.batches if b["frames"]]
    assert len(sizes) > 1 and max(sizes) <= MAX_MESSAGE_BYTES
    assert max(sizes) < BATCH_BYTES + len(parse_line(snapshot, "BTCUSDT").model_dump_json()) + 1000


@pytest.mark.slow  # the whole bundled tape
def test_same_input_gives_the_same_bytes(full_replay):
    first, _ = full_replay
    second, _ = replay([BTC, ETH])
    assert first.digest.digest() == second.digest.digest()


def test_batch_boundaries_never_change_the_frames(tmp_path):
    path = tmp_path / "slice"
    path.write_bytes(b"\n".join(raw_lines(ETH)[:2000]))
    small, _ = replay([path], batch_frames=7)
    default, _ = replay([path])
    assert max(len(b["frames"]) for _, _, _, _, b in small.batches) == 7
    for partition in range(PARTITIONS):
        assert small.frames(partition) == default.frames(partition)
    assert small.frames(kafka_partition(b"ETHUSDT", PARTITIONS)) == expected_frames(ETH, raw_lines(ETH)[:2000])


def test_bad_lines_are_counted_not_fatal(tmp_path):
    lines = raw_lines(ETH)[:300]
    good = len(lines)
    bad = [b"garbage", b"1723161255088156767 {\"stream\": \"x\"", trade_line(s="ETHUSDT", p="0"),
           b'1 {"stream": "x", "data": {"e": "aggTrade", "E": 1}}',
           b'1 {"stream": "x", "data": {"e": ["trade"], "E": 1}}']  # an unhashable event type crashed the replay
    path = tmp_path / "eth_slice.txt"  # plain text, not gzip
    path.write_bytes(b"\n".join(lines[:100] + bad[:2] + lines[100:] + bad[2:]) + b"\n\n")
    recorder, summary = replay([path])
    assert (summary.frames, summary.bad_lines) == (good, len(bad))
    assert all(recorder.of(p)[-1]["end"] for p in range(PARTITIONS))


def test_every_message_decodes_for_the_topic(tmp_path):
    path = tmp_path / "slice"
    path.write_bytes(b"\n".join(raw_lines(BTC)[:400]))  # holds the REST snapshot
    values = []

    async def send(topic, key, value, partition):
        values.append((topic, partition, value))

    summary = asyncio.run(ReplaySource([path], send, PARTITIONS).run())
    decoded = [(partition, decode(topic, value)) for topic, partition, value in values]
    assert all(isinstance(m, MarketBatch) for _, m in decoded)
    frames = [f for _, m in decoded for f in m.frames]
    assert len(frames) == summary.frames == 400 and any(f.snapshot for f in frames)
    assert frames == list(Tape([path]))  # one symbol, so one partition: the tape's frames, as they were
    assert all([m for p, m in decoded if p == partition][-1].end for partition in range(PARTITIONS))


def test_pacing_at_speed(tmp_path):
    lines = raw_lines(BTC)
    start = split(lines[100])[1]["data"]["E"]
    window = [line for line in lines[100:3000] if start <= split(line)[1].get("data", {}).get("E", 0) < start + 2000]
    span_ms = max(split(line)[1]["data"]["E"] for line in window) - start
    (tmp_path / "btc_slice").write_bytes(b"\n".join(window))
    speed = 4
    reports = []
    began = time.perf_counter()
    recorder, summary = replay([tmp_path / "btc_slice"], speed=speed, progress=reports.append, progress_every_s=0.1)
    elapsed = time.perf_counter() - began
    assert summary.frames == len(window) and summary.last_ts - summary.first_ts == span_ms > 1500
    expected = span_ms / 1000 / speed
    assert expected * 0.9 <= elapsed <= expected + 1.0
    assert len(reports) >= 3 and reports[-1].frames == len(window)
    assert [r.event_ts for r in reports] == sorted(r.event_ts for r in reports)
    # Paced, batches are cut by wall time too, but the frames and their order stay those of full speed.
    unpaced, _ = replay([tmp_path / "btc_slice"])
    assert len(recorder.batches) > len(unpaced.batches)
    for partition in range(PARTITIONS):
        assert recorder.frames(partition) == unpaced.frames(partition)
