"""Bybit v5 public messages -> market frames (streams/bybit/v5.py), subscription planning
(streams/bybit/subscriptions.py), stale symbols (streams/frames/stale.py), event-time ordering
(streams/frames/event_order.py) and tapes (streams/bybit/tape.py).

Expected values are read off the recorded messages by the meaning Bybit's v5 docs give their fields
(`T` trade time, `p` price, `v` size, `S` taker side, `BT` block trade, `u` update id, `b`/`a` levels with a
"0" size deleting the level, ticker snapshot + partial deltas, kline `confirm` = candle closed), or are
hand-written numbers. Messages marked "hand-made" are written here from that documented protocol.
"""
from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import orjson
import pytest

from builders import DATA
from schemas.market import Bar, MarketFrame, Ticker
from streams.bybit.subscriptions import (
    MAX_ARGS_PER_REQUEST,
    Connection,
    Request,
    args_chars,
    plan,
)
from streams.bybit.tape import BYBIT_V5_FORMAT, TAPE_FORMAT, TapeWriter, header_of
from streams.bybit.v5 import BybitNormalizer, Gap, Reply, stale_frame
from streams.frames import frame_json
from streams.frames.event_order import EventOrder, restamp
from streams.frames.stale import StaleWatch
from streams.frames.wire import WireFrame
from streams.sources.replay import Tape

WS = DATA / "bybit" / "ws"
RECV = 1_700_000_000_123_456_789  # a receive time in ns; frames carry it as recv_ts


def _lines(name: str) -> list[bytes]:
    return [line for line in (WS / name).read_bytes().splitlines() if line.strip()]


DERIV = _lines("bybit_derivatives_v5_messages.jsonl")
SPOT = _lines("bybit_spot_v5_messages.jsonl")
LEGACY = _lines("bybit_legacy_2019_messages.jsonl")


def real(lines: list[bytes], topic: str, n: int = 0) -> bytes:
    """The n-th recorded message of `topic`, raw."""
    return [line for line in lines if orjson.loads(line).get("topic") == topic][n]


def raw(msg: dict) -> bytes:
    return orjson.dumps(msg)


def check(wire: WireFrame) -> MarketFrame:
    """The frame the schema reads from the wire JSON; the WireFrame's routing fields agree with it and the JSON
    is byte for byte what the model writes."""
    frame = MarketFrame.model_validate_json(wire.json)
    assert wire.json == frame.model_dump_json().encode()
    assert (wire.ts, wire.recv_ts, wire.symbol, wire.trades, wire.live) == (
        frame.ts, frame.recv_ts, frame.symbol, len(frame.trades), frame.status == "live")
    assert frame.venue == "bybit"
    return frame


def feed(norm: BybitNormalizer, message: bytes | dict, recv_ns: int = RECV):
    """(frames as MarketFrames, event) of one message."""
    wires, event = norm.on_message(raw(message) if isinstance(message, dict) else message, recv_ns)
    return [check(w) for w in wires], event


def book_msg(topic: str, kind: str, ts: int, u: int, bids: list, asks: list, seq: int | None = None) -> dict:
    """A hand-made orderbook message in Bybit v5's documented shape."""
    data = {"s": topic.rsplit(".", 1)[1], "b": bids, "a": asks, "u": u}
    if seq is not None:
        data["seq"] = seq
    return {"topic": topic, "type": kind, "ts": ts, "data": data}


# --- publicTrade -------------------------------------------------------------------------------------------

def test_inverse_trades_every_trade_mapped_and_frame_at_message_time():
    frames, event = feed(BybitNormalizer(), real(DERIV, "publicTrade.BTCUSD"))
    assert event is None
    (f,) = frames
    # the message: ts 1680673823566, three Buy trades at T 1680673823564, p 28560.50, v 5823 / 3 / 5593
    assert (f.symbol, f.ts, f.recv_ts, f.status) == ("BTCUSD", 1680673823566, RECV, "live")
    assert [(t.ts, t.price, t.qty, t.side) for t in f.trades] == [
        (1680673823564, "28560.50", "5823", "buy"),
        (1680673823564, "28560.50", "3", "buy"),
        (1680673823564, "28560.50", "5593", "buy")]
    assert (f.bid, f.ask, f.bids, f.asks, f.ticker, f.bar) == (None, None, [], [], None, None)


def test_spot_sell_trades():
    (f,), _ = feed(BybitNormalizer(), real(SPOT, "publicTrade.BTCUSDT"))
    assert (f.symbol, f.ts) == ("BTCUSDT", 1680652847526)
    assert [(t.ts, t.price, t.qty, t.side) for t in f.trades] == [
        (1680652847524, "28165.38", "0.041732", "sell"),
        (1680652847524, "28165.38", "0.008513", "sell"),
        (1680652847524, "28165.38", "0.042384", "sell"),
        (1680652847524, "28165.38", "0.055371", "sell")]


def test_same_message_gives_the_same_frame_id_and_another_message_another():
    norm = BybitNormalizer()
    (a,), _ = feed(norm, real(DERIV, "publicTrade.BTCUSD"))
    (b,), _ = feed(norm, real(DERIV, "publicTrade.BTCUSD"))
    (c,), _ = feed(norm, real(DERIV, "publicTrade.LTCUSDT"))
    assert a.id == b.id and a.id != c.id


def test_block_trades_left_out():
    """Hand-made from the documented protocol (`BT` true: a block trade, which did not cross the book), on the
    shape of the recorded LTCUSDT trade."""
    norm = BybitNormalizer()
    msg = {"topic": "publicTrade.LTCUSDT", "type": "snapshot", "ts": 1680688979985, "data": [
        {"T": 1680688979983, "s": "LTCUSDT", "S": "Buy", "v": "0.4", "p": "94.53", "i": "t1", "BT": False},
        {"T": 1680688979983, "s": "LTCUSDT", "S": "Sell", "v": "500", "p": "94.00", "i": "t2", "BT": True},
        {"T": 1680688979984, "s": "LTCUSDT", "S": "Sell", "v": "1.5", "p": "94.52", "i": "t3"}]}  # no BT: not one
    (f,), event = feed(norm, msg)
    assert event is None and f.ts == 1680688979985
    assert [(t.ts, t.price, t.qty, t.side) for t in f.trades] == [
        (1680688979983, "94.53", "0.4", "buy"), (1680688979984, "94.52", "1.5", "sell")]
    only_block = {**msg, "data": [msg["data"][1]]}
    assert feed(norm, only_block) == ([], None)


# --- order books -------------------------------------------------------------------------------------------

def test_orderbook_1_snapshot_then_delta_gives_top_of_book():
    norm = BybitNormalizer()
    (snap,), event = feed(norm, real(DERIV, "orderbook.1.BTCUSDT", 0))
    assert event is None
    # snapshot u 7003305: b 28552.00 x 0.047, a 28552.10 x 25.433
    assert (snap.symbol, snap.ts) == ("BTCUSDT", 1680673820717)
    assert (snap.bid, snap.bid_qty, snap.ask, snap.ask_qty) == ("28552.00", "0.047", "28552.10", "25.433")
    assert (snap.trades, snap.bids, snap.asks) == ([], [], [])
    # delta u 7003306: the bid level's size becomes 0.012, no ask change
    (delta,), event = feed(norm, real(DERIV, "orderbook.1.BTCUSDT", 1))
    assert event is None and delta.ts == 1680673821137
    assert (delta.bid, delta.bid_qty, delta.ask, delta.ask_qty) == ("28552.00", "0.012", "28552.10", "25.433")
    assert delta.id != snap.id


def test_orderbook_1_delta_removing_levels_and_adding_new_ones():
    """The recorded 2023-04-21 delta (u 1188472) after a hand-made snapshot (u 1188471) holding the levels it
    deletes: bid 27994.60 and ask 27994.80."""
    norm = BybitNormalizer()
    snapshot = book_msg("orderbook.1.BTCUSDT", "snapshot", 1682092584400, 1188471,
                        [["27994.60", "0.300"]], [["27994.80", "1.250"]])
    (f,), _ = feed(norm, snapshot)
    assert (f.bid, f.bid_qty, f.ask, f.ask_qty) == ("27994.60", "0.300", "27994.80", "1.250")
    # delta: b [27994.60 -> 0, 27991.70 x 0.777], a [27994.40 x 0.058, 27994.80 -> 0]
    (f,), event = feed(norm, real(DERIV, "orderbook.1.BTCUSDT", 2))
    assert event is None and f.ts == 1682092584425
    assert (f.bid, f.bid_qty, f.ask, f.ask_qty) == ("27991.70", "0.777", "27994.40", "0.058")


def test_top_of_book_is_the_best_price_by_number():
    """Hand-made orderbook.1 messages in which a delta adds a better level before the old one is deleted:
    the top is the highest bid and lowest ask as numbers ("99.5" sorts after "100.0" as text)."""
    norm = BybitNormalizer()
    (f,), _ = feed(norm, book_msg("orderbook.1.XUSDT", "snapshot", 1000, 1, [["99.5", "1"]], [["101.0", "1"]]))
    assert (f.bid, f.ask) == ("99.5", "101.0")
    (f,), _ = feed(norm, book_msg("orderbook.1.XUSDT", "delta", 1001, 2, [["100.0", "2"]], [["100.8", "3"]]))
    assert (f.bid, f.bid_qty, f.ask, f.ask_qty) == ("100.0", "2", "100.8", "3")
    (f,), _ = feed(norm, book_msg("orderbook.1.XUSDT", "delta", 1002, 3, [["99.5", "0"]], [["101.0", "0"]]))
    assert (f.bid, f.ask) == ("100.0", "100.8")
    (f,), _ = feed(norm, book_msg("orderbook.1.XUSDT", "delta", 1003, 4, [["100.0", "0"]], []))
    assert (f.bid, f.bid_qty, f.ask) == (None, None, "100.8")  # an empty side: no bid


def test_spot_orderbook_1():
    norm = BybitNormalizer()
    (f,), _ = feed(norm, real(SPOT, "orderbook.1.BTCUSDT", 0))
    assert (f.ts, f.bid, f.bid_qty, f.ask, f.ask_qty) == (
        1680652806504, "28165.07", "0.175231", "28165.08", "0.996816")
    (f,), _ = feed(norm, real(SPOT, "orderbook.1.BTCUSDT", 1))
    assert (f.ts, f.bid, f.bid_qty, f.ask, f.ask_qty) == (
        1680652806615, "28165.07", "0.166754", "28165.08", "0.996816")


def test_orderbook_50_levels_passed_through_with_snapshot_flag():
    norm = BybitNormalizer()
    (snap,), _ = feed(norm, real(DERIV, "orderbook.50.BTCPERP", 0))
    assert (snap.symbol, snap.ts, snap.snapshot) == ("BTCPERP", 1680673821591, True)
    assert (snap.bids, snap.asks) == ([("28555.20", "0.597")], [("28555.30", "0.225")])
    assert (snap.bid, snap.ask) == (None, None)  # a depth feed, not the top feed
    (delta,), _ = feed(norm, real(DERIV, "orderbook.50.BTCPERP", 1))
    assert (delta.ts, delta.snapshot) == (1680673821651, False)
    assert (delta.bids, delta.asks) == ([("28555.20", "0.677")], [("28555.30", "0.029")])

    spot = BybitNormalizer()
    (snap,), _ = feed(spot, real(SPOT, "orderbook.50.BTCUSDT", 0))
    assert (snap.snapshot, snap.bids, snap.asks) == (True, [("28162.57", "0.07562")], [("28162.58", "0.506829")])
    (delta,), _ = feed(spot, real(SPOT, "orderbook.50.BTCUSDT", 1))  # "0" sizes: deletions, passed on as such
    assert (delta.snapshot, delta.bids, delta.asks) == (
        False, [("28161.04", "0.177474"), ("28145.71", "0")], [("28184.33", "0")])


def test_delta_before_any_snapshot_gives_nothing():
    norm = BybitNormalizer()
    assert feed(norm, real(DERIV, "orderbook.1.BTCUSDT", 1)) == ([], None)
    assert feed(norm, real(DERIV, "orderbook.50.BTCPERP", 1)) == ([], None)


def test_update_id_gap_marks_the_symbol_stale_until_the_next_snapshot():
    norm = BybitNormalizer()
    feed(norm, real(DERIV, "orderbook.1.BTCUSDT", 0))  # u 7003305
    feed(norm, real(DERIV, "orderbook.1.BTCUSDT", 1))  # u 7003306
    # the third recorded orderbook.1.BTCUSDT message is from another recording: u 1188472, not 7003307
    (stale,), event = feed(norm, real(DERIV, "orderbook.1.BTCUSDT", 2))
    assert event == Gap("orderbook.1.BTCUSDT", "BTCUSDT", 7003307, 1188472)
    assert (stale.symbol, stale.status, stale.ts, stale.recv_ts) == ("BTCUSDT", "stale", 1682092584425, RECV)
    assert (stale.trades, stale.bid, stale.ask, stale.bids, stale.asks) == ([], None, None, [], [])
    # later deltas are dropped, even one that follows the one that made the gap
    following = book_msg("orderbook.1.BTCUSDT", "delta", 1682092584500, 1188473, [["27991.70", "1.000"]], [])
    assert feed(norm, following) == ([], None)
    # the next snapshot (hand-made) resumes: its top of book, then deltas again
    (f,), event = feed(norm, book_msg("orderbook.1.BTCUSDT", "snapshot", 1682092585000, 1188480,
                                      [["27991.70", "0.500"]], [["27994.40", "0.058"]]))
    assert event is None and (f.status, f.bid, f.bid_qty, f.ask, f.ask_qty) == (
        "live", "27991.70", "0.500", "27994.40", "0.058")
    (f,), event = feed(norm, book_msg("orderbook.1.BTCUSDT", "delta", 1682092585100, 1188481,
                                      [], [["27994.40", "0"], ["27994.50", "2.000"]]))
    assert event is None and (f.bid, f.ask, f.ask_qty) == ("27991.70", "27994.50", "2.000")


def test_gap_on_a_depth_book():
    """Hand-made orderbook.50 messages: u 10, then 12 (11 lost)."""
    norm = BybitNormalizer()
    feed(norm, book_msg("orderbook.50.ETHUSDT", "snapshot", 1000, 10, [["1800.00", "1"]], [["1800.10", "1"]]))
    (f,), event = feed(norm, book_msg("orderbook.50.ETHUSDT", "delta", 1100, 12, [["1800.00", "2"]], []))
    assert event == Gap("orderbook.50.ETHUSDT", "ETHUSDT", 11, 12)
    assert (f.status, f.ts, f.bids) == ("stale", 1100, [])
    assert feed(norm, book_msg("orderbook.50.ETHUSDT", "delta", 1200, 13, [["1800.00", "3"]], [])) == ([], None)
    (f,), event = feed(norm, book_msg("orderbook.50.ETHUSDT", "snapshot", 1300, 20,
                                      [["1799.90", "4"]], [["1800.10", "1"]]))
    assert event is None and (f.status, f.snapshot, f.bids) == ("live", True, [("1799.90", "4")])


def test_book_equal_to_the_next_snapshot_is_counted_and_not_a_mismatch():
    """The recorded BTCPERP snapshot and delta, then a hand-made later snapshot holding the book they make
    (bid 28555.20 x 0.677, ask 28555.30 x 0.029), written with other trailing zeros: the same numbers."""
    norm = BybitNormalizer(check_books=True)
    feed(norm, real(DERIV, "orderbook.50.BTCPERP", 0))
    feed(norm, real(DERIV, "orderbook.50.BTCPERP", 1))
    later = book_msg("orderbook.50.BTCPERP", "snapshot", 1680673824000, 20683600,
                     [["28555.2", "0.6770"]], [["28555.30", "0.029"]])
    (f,), event = feed(norm, later)
    assert event is None and f.snapshot
    assert norm.book_check.compared == 1
    assert norm.book_check.mismatches == []


def test_book_contradicted_by_the_next_snapshot_is_a_mismatch_naming_the_topic():
    """The recorded BTCPERP delta moved the bid to 0.677; a hand-made later snapshot says 0.597."""
    norm = BybitNormalizer(check_books=True)
    feed(norm, real(DERIV, "orderbook.50.BTCPERP", 0))
    feed(norm, real(DERIV, "orderbook.50.BTCPERP", 1))
    later = book_msg("orderbook.50.BTCPERP", "snapshot", 1680673824000, 20683600,
                     [["28555.20", "0.597"]], [["28555.30", "0.029"]])
    feed(norm, later)
    assert norm.book_check.compared == 1
    (mismatch,) = norm.book_check.mismatches
    assert "orderbook.50.BTCPERP" in mismatch and "bids" in mismatch


def test_top_book_checked_too_and_deleted_levels_count():
    """orderbook.1: the recorded 2023-04-21 delta after a hand-made snapshot; a later hand-made snapshot that
    still shows the deleted bid 27994.60 contradicts the book."""
    norm = BybitNormalizer(check_books=True)
    feed(norm, book_msg("orderbook.1.BTCUSDT", "snapshot", 1682092584400, 1188471,
                        [["27994.60", "0.300"]], [["27994.80", "1.250"]]))
    feed(norm, real(DERIV, "orderbook.1.BTCUSDT", 2))
    feed(norm, book_msg("orderbook.1.BTCUSDT", "snapshot", 1682092587425, 1188472,
                        [["27991.70", "0.777"]], [["27994.40", "0.058"]]))
    assert (norm.book_check.compared, norm.book_check.mismatches) == (1, [])
    feed(norm, book_msg("orderbook.1.BTCUSDT", "snapshot", 1682092590425, 1188472,
                        [["27994.60", "0.300"]], [["27994.40", "0.058"]]))
    assert norm.book_check.compared == 2
    (mismatch,) = norm.book_check.mismatches
    assert "orderbook.1.BTCUSDT" in mismatch


def test_no_book_check_unless_asked_and_none_after_a_gap():
    norm = BybitNormalizer()  # check_books False
    feed(norm, real(DERIV, "orderbook.50.BTCPERP", 0))
    feed(norm, real(DERIV, "orderbook.50.BTCPERP", 0))
    assert norm.book_check.compared == 0
    checked = BybitNormalizer(check_books=True)
    feed(checked, real(DERIV, "orderbook.1.BTCUSDT", 0))
    feed(checked, real(DERIV, "orderbook.1.BTCUSDT", 2))  # gap: out of sync
    feed(checked, real(DERIV, "orderbook.1.BTCUSDT", 0))  # a snapshot after a gap has nothing to compare
    assert (checked.book_check.compared, checked.book_check.mismatches) == (0, [])


# --- tickers ---------------------------------------------------------------------------------------------------

def test_ticker_snapshot_fields():
    (f,), event = feed(BybitNormalizer(), real(DERIV, "tickers.BTCUSDT"))
    assert event is None
    assert (f.symbol, f.ts) == ("BTCUSDT", 1680673821770)
    assert f.ticker == Ticker(last="28550.70", mark="28552.81", index="28562.25", funding_rate="0.0001",
                              next_funding_ts=1680681600000, open_interest="52774.528",
                              turnover_24h="4273027716.4294")
    assert (f.bid, f.ask, f.trades) == (None, None, [])  # bid1/ask1 are not used: orderbook.1 is the top feed


def test_every_recorded_ticker_takes_the_fast_path(monkeypatch):
    """Tickers are most of a whole universe's messages: their frames' JSON is written without the schema's
    validation, byte for byte what the model writes (`check`)."""
    def refuse(fields):
        raise AssertionError(f"validated: {fields['id']}")

    monkeypatch.setattr(frame_json, "validate", refuse)
    norm = BybitNormalizer()
    tickers = [line for line in DERIV if orjson.loads(line).get("topic", "").startswith("tickers.")]
    frames = [f for line in tickers for f in feed(norm, line)[0]]
    assert len(frames) >= 4 and all(f.ticker is not None for f in frames)  # the recording has 4 that give frames


def test_ticker_delta_merged_into_snapshot():
    norm = BybitNormalizer()
    (f,), _ = feed(norm, real(DERIV, "tickers.BTCUSD", 0))
    snapshot = Ticker(last="28560.00", mark="28560.00", index="28566.94", funding_rate="0.0001",
                      next_funding_ts=1680681600000, open_interest="449736676", turnover_24h="23389.1894")
    assert (f.ts, f.ticker) == (1680673822577, snapshot)
    # recorded delta: openInterest 449736674, fundingRate 0.0001 (and fields papertape does not use)
    (f,), _ = feed(norm, real(DERIV, "tickers.BTCUSD", 1))
    assert (f.ts, f.ticker) == (1680673822776, snapshot.model_copy(update={"open_interest": "449736674"}))


def test_ticker_delta_changing_only_the_mark_keeps_the_rest():
    """A hand-made delta of markPrice alone after the recorded BTCUSDT snapshot."""
    norm = BybitNormalizer()
    feed(norm, real(DERIV, "tickers.BTCUSDT"))
    delta = {"topic": "tickers.BTCUSDT", "type": "delta", "cs": 50193544300, "ts": 1680673821870,
             "data": {"symbol": "BTCUSDT", "markPrice": "28553.00"}}
    (f,), _ = feed(norm, delta)
    assert f.ts == 1680673821870
    assert f.ticker == Ticker(last="28550.70", mark="28553.00", index="28562.25", funding_rate="0.0001",
                              next_funding_ts=1680681600000, open_interest="52774.528",
                              turnover_24h="4273027716.4294")


def test_dated_future_empty_funding_fields_dropped_and_unused_delta_gives_no_frame():
    norm = BybitNormalizer()
    (f,), _ = feed(norm, real(DERIV, "tickers.BTCUSDU23", 0))
    # fundingRate "" and nextFundingTime "": a dated future has no funding
    assert f.ticker == Ticker(last="29026.00", mark="29023.60", index="28566.94", open_interest="4547176",
                              turnover_24h="279.6816")
    assert f.ticker.funding_rate is None and f.ticker.next_funding_ts is None
    # the recorded delta only moves bid1/ask1, price24hPcnt, basisRate, deliveryFeeRate: nothing used
    assert feed(norm, real(DERIV, "tickers.BTCUSDU23", 1)) == ([], None)


def test_ticker_delta_before_any_snapshot_gives_no_frame():
    norm = BybitNormalizer()
    assert feed(norm, real(DERIV, "tickers.BTCUSD", 1)) == ([], None)
    (f,), _ = feed(norm, real(DERIV, "tickers.BTCUSD", 0))  # the snapshot still works afterwards
    assert f.ticker.open_interest == "449736676"


def test_snapshot_replaces_the_merged_ticker():
    """Hand-made: a second snapshot without indexPrice forgets the first one's index."""
    norm = BybitNormalizer()
    feed(norm, real(DERIV, "tickers.BTCUSDT"))
    (f,), _ = feed(norm, {"topic": "tickers.BTCUSDT", "type": "snapshot", "cs": 1, "ts": 1680673830000,
                          "data": {"symbol": "BTCUSDT", "lastPrice": "28600.00"}})
    assert f.ticker == Ticker(last="28600.00")


# --- klines ----------------------------------------------------------------------------------------------------

def test_kline_5_minutes():
    norm = BybitNormalizer()
    (f,), event = feed(norm, (WS / "nautilus_py_ws_kline.json").read_bytes())  # pretty-printed JSON is fine
    assert event is None
    # start 1672324800000, end 1672325099999: five minutes; confirm false: still open
    assert (f.symbol, f.ts) == ("BTCUSDT", 1672324988882)
    assert f.bar == Bar(start=1672324800000, interval_ms=300_000, open="16649.5", high="16677", low="16608",
                        close="16677", volume="2.081", turnover="34666.4005", closed=False)


def test_kline_daily_closed():
    """Hand-made daily candle: interval "D", 2022-12-29 00:00 UTC to the last ms of the day, confirm true."""
    norm = BybitNormalizer()
    msg = {"topic": "kline.D.BTCUSDT", "type": "snapshot", "ts": 1672358400005, "data": [
        {"start": 1672272000000, "end": 1672358399999, "interval": "D", "open": "16631.5", "close": "16605.0",
         "high": "16793.0", "low": "16442.5", "volume": "41201.314", "turnover": "684539120.8116",
         "confirm": True, "timestamp": 1672358400003}]}
    (f,), _ = feed(norm, msg)
    assert f.ts == 1672358400003  # the candle's own timestamp
    assert f.bar == Bar(start=1672272000000, interval_ms=86_400_000, open="16631.5", high="16793.0",
                        low="16442.5", close="16605.0", volume="41201.314", turnover="684539120.8116",
                        closed=True)


# --- replies and ignored topics ------------------------------------------------------------------------------------

def test_replies():
    """Hand-made replies in the shapes of Bybit's v5 "connect" docs, and the recorded old-style ack."""
    norm = BybitNormalizer()
    ack = {"success": True, "ret_msg": "", "conn_id": "3cd84cb1-4d06-4a05-930a-2efe5fc70f0f", "req_id": "10001",
           "op": "subscribe"}
    assert norm.on_message(raw(ack), RECV) == ([], Reply("subscribe", True, "", "10001"))
    refused = {"success": False, "ret_msg": "error:handler not found,topic:orderbook.3.BTCUSDT",
               "conn_id": "3cd84cb1-4d06-4a05-930a-2efe5fc70f0f", "req_id": "7", "op": "subscribe"}
    assert norm.on_message(raw(refused), RECV) == (
        [], Reply("subscribe", False, "error:handler not found,topic:orderbook.3.BTCUSDT", "7"))
    pong = {"success": True, "ret_msg": "pong", "conn_id": "465772b1-7630-4fdc-a492-e003e6f0f260", "req_id": "",
            "op": "ping"}
    assert norm.on_message(raw(pong), RECV) == ([], Reply("ping", True, "pong", ""))
    assert norm.on_message(LEGACY[0], RECV) == ([], Reply("subscribe", True, "", None))


def test_option_and_private_pong_is_a_reply():
    pong = {"req_id": "test", "op": "pong", "args": ["1675418560633"], "conn_id": "cfcb4ocsvfriu23r3er0-1b"}
    frames, event = BybitNormalizer().on_message(raw(pong), RECV)
    assert frames == [] and isinstance(event, Reply) and event.op == "pong" and event.success


def test_liquidations_make_no_frame_and_no_error():
    norm = BybitNormalizer()
    for topic in ("liquidation.GALAUSDT", "liquidation.XRPUSD", "allLiquidation.PIPPINUSDT"):
        assert norm.on_message(real(DERIV, topic), RECV) == ([], None)
    assert norm.ignored == 3


# --- errors ----------------------------------------------------------------------------------------------------

TRADE = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1680652847526,
         "data": [{"i": "2290000000050703789", "T": 1680652847524, "p": "28165.38", "v": "0.041732", "S": "Sell",
                   "s": "BTCUSDT", "BT": False}]}  # the first trade of the recorded spot message


def trade_with(**changes) -> dict:
    return {**TRADE, "data": [{**TRADE["data"][0], **changes}]}


def without(msg: dict, key: str, in_data: bool = False) -> dict:
    if not in_data:
        return {k: v for k, v in msg.items() if k != key}
    data = msg["data"]
    if isinstance(data, list):
        return {**msg, "data": [{k: v for k, v in data[0].items() if k != key}]}
    return {**msg, "data": {k: v for k, v in data.items() if k != key}}


BOOK = orjson.loads(real(DERIV, "orderbook.1.BTCUSDT", 1))
TICKER = orjson.loads(real(DERIV, "tickers.BTCUSDT"))
KLINE = orjson.loads((WS / "nautilus_py_ws_kline.json").read_bytes())


@pytest.mark.parametrize("message, why", [
    (b"{not json", "not JSON"),
    (b"", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'"pong"', "not a JSON object"),
    (b"{}", "unknown message"),
    (raw({"topic": 5, "data": []}), "topic is 5"),
    (raw({**TRADE, "topic": "candles.BTCUSDT"}), "unknown topic 'candles.BTCUSDT'"),
], ids=["garbage", "empty", "array", "string", "empty-object", "topic-not-string", "unknown-topic"])
def test_refused_messages_name_why(message, why):
    with pytest.raises(ValueError, match=why.replace("[", r"\[")):
        BybitNormalizer().on_message(message, RECV)


@pytest.mark.parametrize("line", LEGACY[1:], ids=[f"legacy-{n}" for n in range(2, len(LEGACY) + 1)])
def test_legacy_2019_messages_are_unknown_topics(line):
    topic = orjson.loads(line)["topic"]
    with pytest.raises(ValueError, match="unknown topic"):
        BybitNormalizer().on_message(line, RECV)
    assert not topic.startswith(("publicTrade.", "orderbook.", "tickers.", "kline."))


@pytest.mark.parametrize("message, topic", [
    (without(TRADE, "data"), "publicTrade.BTCUSDT"),
    (without(TRADE, "ts"), "publicTrade.BTCUSDT"),
    (without(TRADE, "p", in_data=True), "publicTrade.BTCUSDT"),
    (without(TRADE, "T", in_data=True), "publicTrade.BTCUSDT"),
    (without(TRADE, "S", in_data=True), "publicTrade.BTCUSDT"),
    (without(BOOK, "u", in_data=True), "orderbook.1.BTCUSDT"),
    (without(BOOK, "b", in_data=True), "orderbook.1.BTCUSDT"),
    (without(BOOK, "type"), "orderbook.1.BTCUSDT"),
    (without(TICKER, "data"), "tickers.BTCUSDT"),
    (without(TICKER, "type"), "tickers.BTCUSDT"),
    (without(KLINE, "start", in_data=True), "kline.5.BTCUSDT"),
    (without(KLINE, "confirm", in_data=True), "kline.5.BTCUSDT"),
], ids=["trade-data", "trade-ts", "trade-p", "trade-T", "trade-S", "book-u", "book-b", "book-type",
        "ticker-data", "ticker-type", "kline-start", "kline-confirm"])
def test_missing_fields_refused_naming_the_topic(message, topic):
    norm = BybitNormalizer()
    feed(norm, real(DERIV, "orderbook.1.BTCUSDT", 0))  # the book delta has a book to apply to
    with pytest.raises(ValueError, match=f"malformed {topic} message"):
        norm.on_message(raw(message), RECV)


@pytest.mark.parametrize("message, why", [
    (trade_with(p="NaN"), "trades.0.price"),
    (trade_with(p="-28165.38"), "trades.0.price"),
    (trade_with(p="0"), "trades.0.price"),
    (trade_with(p=28165.38), "trades.0.price"),  # a number, not Bybit's decimal string
    (trade_with(v="-0.041732"), "trades.0.qty"),
    (trade_with(S="Hold"), "side 'Hold'"),
    (trade_with(T=1680652847524.0), "not a whole number"),
    ({**TRADE, "ts": "soon"}, "not a whole number"),
    ({**BOOK, "data": {**BOOK["data"], "u": 7003306.0}}, "not a whole number"),
    ({**BOOK, "type": "partial"}, "type 'partial'"),
    ({**BOOK, "data": {**BOOK["data"], "s": "ETHUSDT"}}, "data for 'ETHUSDT'"),
    (book_msg("orderbook.50.BTCUSDT", "snapshot", 1, 1, [["NaN", "1"]], []), "bids"),
    (book_msg("orderbook.50.BTCUSDT", "snapshot", 1, 1, [], [["-5", "1"]]), "asks"),
    ({**TICKER, "data": {**TICKER["data"], "markPrice": "NaN"}}, "ticker.mark"),
    ({**TICKER, "data": {**TICKER["data"], "lastPrice": "-1"}}, "ticker.last"),
    ({**KLINE, "data": [{**KLINE["data"][0], "high": "-16677"}]}, "bar.high"),
], ids=["nan-price", "negative-price", "zero-price", "number-price", "negative-qty", "side-hold", "T-float",
        "ts-string", "u-float", "book-type", "book-symbol", "nan-level", "negative-level", "nan-mark",
        "negative-last", "negative-high"])
def test_bad_values_refused_with_a_reason(message, why):
    norm = BybitNormalizer()
    feed(norm, real(DERIV, "orderbook.1.BTCUSDT", 0))
    with pytest.raises(ValueError, match=why):
        norm.on_message(raw(message), RECV)


@pytest.mark.parametrize("message", [
    pytest.param({**TRADE, "data": ["2290000000050703789"]}, id="trade-item-not-object"),
    pytest.param({**TRADE, "data": TRADE["data"][0]}, id="trade-data-object"),
    pytest.param({**TICKER, "data": [TICKER["data"]]}, id="ticker-data-list"),
    pytest.param({"success": True, "ret_msg": "", "request": "subscribe"}, id="reply-request-string"),
    pytest.param({**BOOK, "data": [BOOK["data"]]}, id="book-data-list"),
    pytest.param({**KLINE, "data": KLINE["data"][0]}, id="kline-data-object"),
    pytest.param({**BOOK, "data": {**BOOK["data"], "b": [["28552.00"]]}}, id="book-level-not-a-pair"),
])
def test_wrong_shapes_are_value_errors(message):
    norm = BybitNormalizer()
    feed(norm, real(DERIV, "orderbook.1.BTCUSDT", 0))
    with pytest.raises(ValueError):
        norm.on_message(raw(message), RECV)


def test_a_refused_ticker_delta_does_not_poison_later_ones():
    norm = BybitNormalizer()
    feed(norm, real(DERIV, "tickers.BTCUSDT"))
    with pytest.raises(ValueError):
        norm.on_message(raw({"topic": "tickers.BTCUSDT", "type": "delta", "cs": 2, "ts": 1680673821870,
                             "data": {"markPrice": "-5"}}), RECV)
    (f,), _ = feed(norm, {"topic": "tickers.BTCUSDT", "type": "delta", "cs": 3, "ts": 1680673821970,
                          "data": {"lastPrice": "28551.00"}})
    assert (f.ticker.last, f.ticker.mark) == ("28551.00", "28552.81")  # the refused delta changed nothing


def test_a_refused_book_delta_does_not_poison_later_ones():
    norm = BybitNormalizer()
    feed(norm, real(DERIV, "orderbook.1.BTCUSDT", 0))  # u 7003305: 28552.00 x 0.047 / 28552.10 x 25.433
    with pytest.raises(ValueError):
        norm.on_message(raw(book_msg("orderbook.1.BTCUSDT", "delta", 1680673821000, 7003306, [], [["-1", "1"]])),
                        RECV)
    frames, event = feed(norm, book_msg("orderbook.1.BTCUSDT", "delta", 1680673821137, 7003307,
                                        [["28552.00", "0.012"]], []))
    # either a gap (the refused update counted as lost) or the book without the refused level
    live = [f for f in frames if f.status == "live"]
    assert isinstance(event, Gap) or [(f.bid, f.ask) for f in live] == [("28552.00", "28552.10")]


# --- stale frames ----------------------------------------------------------------------------------------------

def test_stale_frame():
    wire = stale_frame("SOLUSDT", 1680673840000, 42)
    f = check(wire)
    assert (f.symbol, f.ts, f.recv_ts, f.status, wire.live) == ("SOLUSDT", 1680673840000, 42, "stale", False)
    assert check(stale_frame("SOLUSDT", 1680673840000, 42, "unavailable")).status == "unavailable"


# --- subscription plan -----------------------------------------------------------------------------------------

# 700 load-only symbol names (not real instruments): about Bybit's linear universe.
LOAD_SYMBOLS = [f"LOAD{i:04d}USDT" for i in range(700)]
LOAD_DEEP = LOAD_SYMBOLS[::14]


def expected_topics(symbol: str, deep: bool, depth: int = 50) -> list[str]:
    base = [f"tickers.{symbol}", f"publicTrade.{symbol}", f"orderbook.1.{symbol}"]
    return base + ([f"orderbook.{depth}.{symbol}"] if deep else [])


def json_list_chars(args: list[str]) -> int:
    """'[' + '"a","b",...' + ']': two quotes per arg, commas between."""
    return 2 + sum(len(a) + 2 for a in args) + max(len(args) - 1, 0)


def check_plan(connections: list[Connection], symbols: list[str], deep: set[str], depth: int = 50) -> None:
    for conn in connections:
        assert args_chars(conn.args) == len(json.dumps(conn.args, separators=(",", ":"))) \
            == json_list_chars(conn.args)
        assert args_chars(conn.args) < 21_000
        for request in conn.requests:
            assert isinstance(request, Request) and 1 <= len(request.args) <= 10
        assert sorted(conn.args) == sorted(t for s in conn.symbols for t in expected_topics(s, s in deep, depth))
    homes = Counter(s for conn in connections for s in conn.symbols)
    assert set(homes) == set(symbols) and set(homes.values()) == {1}
    topics = Counter(t for conn in connections for t in conn.args)
    assert set(topics.values()) == {1}
    assert set(topics) == {t for s in symbols for t in expected_topics(s, s in deep, depth)}


def test_plan_700_symbols_50_deep():
    assert len(LOAD_DEEP) == 50 and MAX_ARGS_PER_REQUEST == 10
    connections = plan(LOAD_SYMBOLS, deep=LOAD_DEEP, depth=50)
    check_plan(connections, LOAD_SYMBOLS, set(LOAD_DEEP))
    assert len(connections) >= 7  # at most 100 symbols each by default
    for conn in connections:
        for s in conn.symbols:
            assert (f"orderbook.50.{s}" in conn.args) == (s in LOAD_DEEP)


def test_plan_with_long_names_is_split_by_characters():
    """Load-only 38-character names and no cap on symbols: the 21,000-character budget splits them."""
    symbols = [f"LOADLONGNAME{i:04d}" + "X" * 22 for i in range(700)]
    deep = symbols[::3]
    connections = plan(symbols, deep=deep, depth=500, max_symbols=10_000)
    check_plan(connections, symbols, set(deep), depth=500)
    total = sum(json_list_chars(c.args) for c in connections)
    assert len(connections) >= total // 21_000 + 1 >= 3


def test_plan_deduplicates_and_refuses_other_depths():
    connections = plan(["ETHUSDT", "BTCUSDT", "ETHUSDT"], deep=["ETHUSDT"], depth=200)
    (conn,) = connections
    assert conn.symbols == ("BTCUSDT", "ETHUSDT")
    assert sorted(conn.args) == sorted(["tickers.BTCUSDT", "tickers.ETHUSDT", "publicTrade.BTCUSDT",
                                        "publicTrade.ETHUSDT", "orderbook.1.BTCUSDT", "orderbook.1.ETHUSDT",
                                        "orderbook.200.ETHUSDT"])
    for depth in (1, 25, 100, 1000):
        with pytest.raises(ValueError, match="depth"):
            plan(["BTCUSDT"], deep=["BTCUSDT"], depth=depth)


def test_args_chars_by_hand():
    args = ["tickers.BTCUSDT", "orderbook.1.BTCUSDT"]
    assert args_chars(args) == len('["tickers.BTCUSDT","orderbook.1.BTCUSDT"]') == 41
    assert args_chars([]) == 2


# --- StaleWatch ------------------------------------------------------------------------------------------------

def test_stale_watch_in_event_time():
    watch = StaleWatch(after_ms=15_000)
    watch.expect(["AUSDT", "BUSDT"], now=1_000)
    watch.seen("AUSDT", 5_000)
    assert watch.check(15_999) == []  # B silent 14,999 ms
    assert watch.check(16_000) == ["BUSDT"]  # 15,000 ms
    assert watch.check(17_000) == []  # reported once
    assert watch.check(20_000) == ["AUSDT"]
    assert watch.check(60_000) == []
    watch.seen("BUSDT", 21_000)  # seen again: may be reported again
    assert watch.check(35_999) == []
    assert watch.check(36_000) == ["BUSDT"]
    watch.expect(["AUSDT"], now=50_000)  # already known: its silence counts from its last frame
    watch.seen("CUSDT", 30_000)
    watch.seen("CUSDT", 25_000)  # an older frame does not move its time back
    assert watch.check(44_999) == []
    assert watch.check(45_000) == ["CUSDT"]
    with pytest.raises(ValueError):
        StaleWatch(after_ms=0)


# --- EventOrder ------------------------------------------------------------------------------------------------

def trade_wire(ts: int, tid: str, recv_ns: int = RECV) -> WireFrame:
    """A hand-made one-trade message's frame at event time `ts`."""
    msg = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": ts,
           "data": [{"T": ts, "s": "BTCUSDT", "S": "Buy", "v": "0.001", "p": "28000.00", "i": tid, "BT": False}]}
    (wire,), _ = BybitNormalizer().on_message(raw(msg), recv_ns)
    return wire


def test_event_order_sorts_restamps_late_frames_and_drains():
    order = EventOrder(lateness_ms=1_000)
    for ts, tid in ((1_000, "a"), (3_000, "b"), (2_000, "c"), (1_500, "d")):
        order.push(trade_wire(ts, tid))
    out = order.release()  # up to 3,000 - 1,000
    assert [(w.ts, check(w).id) for w in out] == [(1_000, "bybit:BTCUSDT:trade:a"), (1_500, "bybit:BTCUSDT:trade:d"),
                                                  (2_000, "bybit:BTCUSDT:trade:c")]
    assert order.released_to == 2_000 and len(order) == 1
    late = trade_wire(1_200, "e")
    order.push(late)  # after frames up to 2,000 went out: stamped 2,000, content kept
    order.push(trade_wire(2_000, "f"))  # at the release point: in order, not late
    order.push(trade_wire(2_500, "g"))
    assert order.late == 1
    out = order.release()
    assert [w.ts for w in out] == [2_000, 2_000]
    restamped = next(w for w in out if check(w).id == "bybit:BTCUSDT:trade:e")
    f = check(restamped)
    assert (f.ts, f.id, f.trades[0].ts, restamped.recv_ts) == (2_000, "bybit:BTCUSDT:trade:e", 1_200, RECV)
    assert [w.ts for w in order.drain()] == [2_500, 3_000]
    assert len(order) == 0 and order.drain() == []


def test_restamp_changes_only_the_time():
    wire = trade_wire(1_680_673_823_566, "x", recv_ns=7)
    moved = restamp(wire, 1_680_673_824_000)
    before, after = check(wire), check(moved)
    assert (moved.ts, moved.recv_ts, moved.symbol, moved.trades, moved.live) == (1_680_673_824_000, 7, "BTCUSDT", 1,
                                                                                  True)
    assert after.ts == 1_680_673_824_000 and after.model_copy(update={"ts": before.ts}) == before


# --- tapes -----------------------------------------------------------------------------------------------------

def one_recording() -> list[bytes]:
    """The derivatives messages of one recording session (2023-04-05 05:50:20-24 UTC), in file order."""
    return [line for line in DERIV if 1680673820000 <= orjson.loads(line)["ts"] <= 1680673824000]


def write_tape(path: Path, messages: list[tuple[int, bytes]], lateness_ms: int = 2_000) -> dict:
    header = {"source": "bybit", "category": "linear", "instruments": [], "start": 1680673820000,
              "lateness_ms": lateness_ms, "stale_after_ms": 15_000}
    writer = TapeWriter(path, header)
    for recv_ns, message in messages:
        writer.write(recv_ns, message)
    writer.close()
    return header


def test_tape_round_trip_gives_the_normalizer_frames(tmp_path):
    messages = sorted(one_recording(), key=lambda line: orjson.loads(line)["ts"])
    assert len(messages) == 10
    received = [(orjson.loads(m)["ts"] * 1_000_000 + 3_000_000 + i, m) for i, m in enumerate(messages)]
    path = tmp_path / "bybit-linear.tape.gz"
    header = write_tape(path, received)
    assert header_of(path) == header
    assert TAPE_FORMAT.looks_like(gzip.decompress(path.read_bytes()).split(b"\n", 1)[0], path.name)

    norm = BybitNormalizer()
    direct = [w for recv_ns, m in received for w in norm.on_message(m, recv_ns)[0]]
    tape = Tape([path])
    replayed = list(tape.wire_frames())
    assert tape.bad_lines == 0, tape.bad_examples
    assert [w.json for w in replayed] == [w.json for w in direct]
    # every message gives one frame but the BTCUSDU23 ticker delta (no field papertape uses)
    assert len(replayed) == 9
    frames = [check(w) for w in replayed]
    assert [f.ts for f in frames] == sorted(f.ts for f in frames)
    assert Counter(f.symbol for f in frames) == {"BTCUSDT": 3, "BTCUSD": 3, "BTCPERP": 2, "BTCUSDU23": 1}
    assert {f.recv_ts for f in frames} == {r for r, m in received} - {received[messages.index(
        real(DERIV, "tickers.BTCUSDU23", 1))][0]}


def test_tape_in_receive_order_uses_the_header_lateness(tmp_path):
    """Written in file order, the tape's messages are up to 2,849 ms out of event-time order (the trade at
    ...823566 comes before the book snapshot at ...820717)."""
    messages = one_recording()
    received = [(RECV + i, m) for i, m in enumerate(messages)]
    norm = BybitNormalizer()
    in_event_order = sorted((w for r, m in received for w in norm.on_message(m, r)[0]),
                            key=lambda w: (w.ts, w.recv_ts))

    path = tmp_path / "lenient.tape.gz"
    write_tape(path, received, lateness_ms=5_000)
    assert [w.json for w in Tape([path]).wire_frames()] == [w.json for w in in_event_order]

    path = tmp_path / "strict.tape.gz"
    write_tape(path, received, lateness_ms=2_000)
    frames = [check(w) for w in Tape([path]).wire_frames()]
    # the first message (the trade at 1680673823566) lets frames up to 2,000 ms before it go: the orderbook.1
    # snapshot (1680673820717) and delta (1680673821137) come after it and are stamped 1680673821566
    ob1 = [f for f in frames if f.id.startswith("bybit:BTCUSDT:ob1:")]
    assert [f.ts for f in ob1] == [1680673821566, 1680673821566]
    assert [(f.bid_qty, f.ask_qty) for f in ob1] == [("0.047", "25.433"), ("0.012", "25.433")]
    assert [f.ts for f in frames] == sorted(f.ts for f in frames)


def test_bybit_orderbook_dump_replays(tmp_path):
    """A Bybit order book history dump: raw v5 messages, one a line, no receive time. The first two lines are
    the recorded spot orderbook.50 snapshot and delta, the rest hand-made: a delta that follows (u 59438062),
    one after a lost update (u 59438064) and a snapshot that resumes."""
    topic = "orderbook.50.BTCUSDT"
    lines = [real(SPOT, topic, 0), real(SPOT, topic, 1),
             raw(book_msg(topic, "delta", 1680652808105, 59438062, [["28162.57", "0.1"]], [])),
             raw(book_msg(topic, "delta", 1680652808145, 59438064, [["28162.57", "0.2"]], [])),
             raw(book_msg(topic, "snapshot", 1680652808205, 59438100, [["28162.50", "1.5"]], [["28162.58", "0.5"]]))]
    path = tmp_path / "2023-04-05_BTCUSDT_ob50.data"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert BYBIT_V5_FORMAT.looks_like(lines[0], path.name) and not TAPE_FORMAT.looks_like(lines[0], path.name)

    tape = Tape([path])
    frames = list(tape)
    assert tape.bad_lines == 1 and "gap" in tape.bad_examples[0]
    assert [(f.ts, f.status, f.snapshot, f.bids, f.asks) for f in frames] == [
        (1680652808065, "live", True, [("28162.57", "0.07562")], [("28162.58", "0.506829")]),
        (1680652808085, "live", False, [("28161.04", "0.177474"), ("28145.71", "0")], [("28184.33", "0")]),
        (1680652808105, "live", False, [("28162.57", "0.1")], []),
        (1680652808145, "stale", False, [], []),
        (1680652808205, "live", True, [("28162.50", "1.5")], [("28162.58", "0.5")])]
    assert [f.recv_ts for f in frames] == [f.ts * 1_000_000 for f in frames]  # the message time stands in
    assert {f.symbol for f in frames} == {"BTCUSDT"}


def test_dump_book_contradicting_a_later_snapshot_is_a_bad_line(tmp_path):
    """Recorded snapshot and delta, then a hand-made snapshot that still shows the bid level 28145.71 the delta
    deleted: the replay reports the mismatch and keeps the frames."""
    topic = "orderbook.50.BTCUSDT"
    lines = [real(SPOT, topic, 0), real(SPOT, topic, 1),
             raw(book_msg(topic, "snapshot", 1680652808205, 59438100,
                          [["28162.57", "0.07562"], ["28161.04", "0.177474"], ["28145.71", "0.3"]],
                          [["28162.58", "0.506829"]]))]
    path = tmp_path / "mismatch.data"
    path.write_bytes(b"\n".join(lines))
    tape = Tape([path])
    assert len(list(tape.wire_frames())) == 3
    assert tape.bad_lines == 1 and topic in tape.bad_examples[0]
