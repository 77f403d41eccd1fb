"""Feed storms in the Bybit normalizer (streams/bybit/v5.py), message by message: duplicated and reordered deltas,
a snapshot in the middle of deltas, and what the other frames of a symbol say while its book is out of sync.
Messages are hand-made in Bybit v5's documented shape (`u` the update id, a "0" size deleting a level); expected
tops of book are worked out by hand. The same cases through the live feed and the core: tests/integration/
test_feed_storms.py."""
from __future__ import annotations

import orjson

from schemas.market import MarketFrame
from streams.bybit.v5 import BybitNormalizer, Gap

OB1 = "orderbook.1.BTCUSDT"
OB50 = "orderbook.50.BTCUSDT"


def book(kind: str, ts: int, u: int, bids=(), asks=(), topic: str = OB1) -> bytes:
    symbol = topic.rsplit(".", 1)[1]
    return orjson.dumps({"topic": topic, "type": kind, "ts": ts,
                         "data": {"s": symbol, "b": list(bids), "a": list(asks), "u": u, "seq": 1000 + u}})


def trade(symbol: str, ts: int, i: str) -> bytes:
    return orjson.dumps({"topic": f"publicTrade.{symbol}", "type": "snapshot", "ts": ts,
                         "data": [{"T": ts, "s": symbol, "S": "Buy", "v": "0.001", "p": "100.5", "i": i, "BT": False}]})


def ticker(symbol: str, ts: int) -> bytes:
    return orjson.dumps({"topic": f"tickers.{symbol}", "type": "snapshot", "ts": ts, "cs": ts,
                         "data": {"symbol": symbol, "lastPrice": "100.5", "markPrice": "100.4"}})


def on(norm: BybitNormalizer, message: bytes) -> tuple[list[MarketFrame], object]:
    wires, event = norm.on_message(message, 1)
    return [MarketFrame.model_validate_json(w.json) for w in wires], event


def top(frames: list[MarketFrame]) -> tuple:
    (f,) = frames
    return f.status, f.bid, f.bid_qty, f.ask, f.ask_qty


def test_a_duplicated_delta_is_dropped_and_the_book_stays_in_sync():
    """The same `u` twice: the second is already in the book. No frame (its id would repeat the first's), no gap,
    no resubscription; the next update applies."""
    norm = BybitNormalizer()
    on(norm, book("snapshot", 1000, 10, [["100.0", "1"]], [["101.0", "1"]]))
    delta = book("delta", 1100, 11, [["100.0", "2"]], [])
    frames, event = on(norm, delta)
    assert event is None and top(frames) == ("live", "100.0", "2", "101.0", "1")
    assert on(norm, delta) == ([], None)
    frames, event = on(norm, book("delta", 1200, 12, [], [["101.0", "3"]]))
    assert event is None and top(frames) == ("live", "100.0", "2", "101.0", "3")


def test_reordered_deltas_are_a_gap_and_the_late_one_is_never_applied():
    """u 12 before u 11: 12 is a gap (stale, resubscribe for a snapshot); 11, arriving late, is dropped with every
    delta until the snapshot, which the book resumes from."""
    norm = BybitNormalizer()
    on(norm, book("snapshot", 1000, 10, [["100.0", "1"]], [["101.0", "1"]]))
    (stale,), event = on(norm, book("delta", 1100, 12, [["100.5", "1"]], []))
    assert event == Gap(OB1, "BTCUSDT", 11, 12)
    assert (stale.status, stale.bid, stale.ask) == ("stale", None, None)
    assert on(norm, book("delta", 1110, 11, [["100.2", "1"]], [])) == ([], None)
    assert on(norm, book("delta", 1120, 13, [["100.3", "1"]], [])) == ([], None)
    frames, event = on(norm, book("snapshot", 1200, 13, [["100.3", "1"]], [["101.0", "1"]]))
    assert event is None and top(frames) == ("live", "100.3", "1", "101.0", "1")
    frames, event = on(norm, book("delta", 1300, 14, [["100.3", "0"], ["100.1", "4"]], []))
    assert event is None and top(frames) == ("live", "100.1", "4", "101.0", "1")


def test_a_snapshot_in_the_middle_of_deltas_resets_the_book_and_continues_from_its_u():
    norm = BybitNormalizer()
    on(norm, book("snapshot", 1000, 10, [["100.0", "1"]], [["101.0", "1"]]))
    on(norm, book("delta", 1100, 11, [["100.5", "2"]], []))  # a better bid, absent from the next snapshot
    frames, event = on(norm, book("snapshot", 1200, 50, [["99.0", "5"]], [["102.0", "6"]]))
    assert event is None and top(frames) == ("live", "99.0", "5", "102.0", "6")  # 100.5 and 100.0 are gone
    frames, event = on(norm, book("delta", 1300, 51, [], [["101.5", "1"]]))
    assert event is None and top(frames) == ("live", "99.0", "5", "101.5", "1")
    # the old sequence's next id is no longer the next
    (stale,), event = on(norm, book("delta", 1400, 12, [["100.6", "1"]], []))
    assert event == Gap(OB1, "BTCUSDT", 52, 12) and stale.status == "stale"


def test_while_a_book_is_out_of_sync_every_frame_of_its_symbol_is_stale():
    """After a gap the book is frozen until its snapshot; a live trade or ticker of the symbol meanwhile would make
    its (old) top of book tradable again. Other symbols stay live."""
    norm = BybitNormalizer()
    on(norm, book("snapshot", 1000, 10, [["100.0", "1"]], [["101.0", "1"]]))
    assert on(norm, trade("BTCUSDT", 1050, "t1"))[0][0].status == "live"
    on(norm, book("delta", 1100, 12, [["100.5", "1"]], []))  # gap
    assert [f.status for f in on(norm, trade("BTCUSDT", 1150, "t2"))[0]] == ["stale"]
    assert [f.status for f in on(norm, ticker("BTCUSDT", 1160))[0]] == ["stale"]
    assert [f.status for f in on(norm, trade("ETHUSDT", 1170, "e1"))[0]] == ["live"]
    on(norm, book("snapshot", 1200, 20, [["100.4", "1"]], [["101.0", "1"]]))
    assert [f.status for f in on(norm, trade("BTCUSDT", 1250, "t3"))[0]] == ["live"]


def test_a_deep_book_out_of_sync_makes_the_top_feed_stale_until_its_own_snapshot():
    norm = BybitNormalizer()
    on(norm, book("snapshot", 1000, 10, [["100.0", "1"]], [["101.0", "1"]]))
    on(norm, book("snapshot", 1000, 500, [["100.0", "1"]], [["101.0", "1"]], topic=OB50))
    (stale,), event = on(norm, book("delta", 1100, 502, [["100.0", "3"]], [], topic=OB50))
    assert event == Gap(OB50, "BTCUSDT", 501, 502)
    frames, event = on(norm, book("delta", 1150, 11, [["100.0", "2"]], []))
    assert event is None and top(frames) == ("stale", "100.0", "2", "101.0", "1")  # in sync itself, the depth not
    (deep,), _ = on(norm, book("snapshot", 1200, 510, [["100.0", "2"]], [["101.0", "1"]], topic=OB50))
    assert (deep.status, deep.snapshot) == ("live", True)
    frames, _ = on(norm, book("delta", 1250, 12, [], [["101.0", "4"]]))
    assert top(frames) == ("live", "100.0", "2", "101.0", "4")
