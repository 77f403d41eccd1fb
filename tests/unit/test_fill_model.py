"""The fill model alone (papertape/core/venue/fill_model.py) on hand-built books: what a taker gets (`take`, `touch`),
what it leaves for the next order (`Liquidity`), how much a maker has ahead of it (`queue_ahead`), and one case for
each FillSettings switch the fill model reads (book_walk, max_slippage_bps, assumed_spread_bps; the venue-only
switches queue_position, partial_fills and quote_through are in test_venue_direct.py). Every expected price,
quantity and remaining size is worked out by hand in the test, from the book it builds."""
from decimal import Decimal as D

import pydantic
import pytest

import schemas as s
from papertape.core.market.book import Book
from papertape.core.venue.fill_model import Liquidity, queue_ahead, take, touch
from papertape.core.venue.fill_settings import FillSettings

SYM = "XUSDT"
TICK = D("0.1")
# bids 99.9 x 1, 99.5 x 2 | asks 100.0 x 1, 100.5 x 2, 101.0 x 5 (8 in all)
BIDS = [("99.9", "1"), ("99.5", "2")]
ASKS = [("100.0", "1"), ("100.5", "2"), ("101.0", "5")]


def frame(ts=1, **kw) -> s.MarketFrame:
    return s.MarketFrame(id=f"f{ts}", ts=ts, venue="test", symbol=SYM, recv_ts=0, **kw)


def depth_book() -> Book:
    """A level snapshot: the top (99.9 x 1 / 100.0 x 1) comes from the levels."""
    book = Book()
    book.apply(frame(bids=BIDS, asks=ASKS, snapshot=True))
    return book


def top_book(bid="99", bid_qty="4", ask="100", ask_qty="1") -> Book:
    """Only a top of book, no depth: the spread is 100 - 99 = 1."""
    book = Book()
    book.apply(frame(bid=bid, bid_qty=bid_qty, ask=ask, ask_qty=ask_qty))
    return book


def fill(book, side, qty, limit=None, liquidity=None, **settings):
    return take(book, SYM, side, D(qty), None if limit is None else D(limit), TICK, FillSettings(**settings),
                Liquidity() if liquidity is None else liquidity)


def total(levels) -> D:
    return sum((q for _, q in levels), D(0))


# --- takers walking the book --------------------------------------------------------------------------------
def test_a_market_buy_walks_the_asks_best_first_and_leaves_the_rest_of_the_last_level():
    liq = Liquidity()
    got = fill(depth_book(), "buy", "2.5", liquidity=liq)
    # 100.0 gives its 1, 100.5 gives the other 2.5 - 1 = 1.5 of its 2; the slippage cap 100 x 1.05 = 105 is far
    assert got == [(D("100.0"), D("1")), (D("100.5"), D("1.5"))]
    assert liq.available(SYM, "ask", 100.0, "1") == 0  # 1 - 1
    assert liq.available(SYM, "ask", 100.5, "2") == D("0.5")  # 2 - 1.5
    assert liq.available(SYM, "ask", 101.0, "5") == 5  # untouched


def test_a_market_sell_walks_the_bids_down():
    got = fill(depth_book(), "sell", "2")
    assert got == [(D("99.9"), D("1")), (D("99.5"), D("1"))]  # 1 at the bid, the other 1 of 99.5's 2


def test_a_limit_buy_stops_at_its_price():
    liq = Liquidity()
    got = fill(depth_book(), "buy", "4", limit="100.5", liquidity=liq)
    assert got == [(D("100.0"), D("1")), (D("100.5"), D("2"))]  # 1 + 2 = 3 of 4; 101.0 is beyond the limit
    assert liq.available(SYM, "ask", 101.0, "5") == 5


def test_a_limit_buy_below_the_ask_takes_nothing():
    assert fill(depth_book(), "buy", "1", limit="99.9") == []


def test_qty_beyond_the_visible_depth_gets_only_the_depth():
    got = fill(depth_book(), "buy", "10")
    # every level, all below the default cap 100 x (1 + 500 bps) = 105: 1 + 2 + 5 = 8; the other 2 find nothing
    assert got == [(D("100.0"), D("1")), (D("100.5"), D("2")), (D("101.0"), D("5"))]
    assert total(got) == 8


def test_without_depth_the_touch_repeats_one_spread_further_up_to_the_default_slippage_cap():
    got = fill(top_book(), "buy", "10")
    # step = spread 100 - 99 = 1, 1 shown at each step; default cap 100 x (1 + 500 x 0.0001) = 105, inclusive
    assert got == [(D(p), D(1)) for p in (100, 101, 102, 103, 104, 105)]


def test_max_slippage_bps_caps_how_far_a_market_order_walks():
    got = fill(depth_book(), "buy", "5", max_slippage_bps=D(60))
    # cap 100.0 x (1 + 60 x 0.0001) = 100.6: 100.0 and 100.5 qualify, 101.0 does not -> 1 + 2 = 3 of 5
    assert got == [(D("100.0"), D("1")), (D("100.5"), D("2"))]


def test_max_slippage_bps_zero_means_no_cap():
    got = fill(top_book(), "buy", "10", max_slippage_bps=D(0))
    assert got == [(D(100 + i), D(1)) for i in range(10)]  # 100, 101, ..., 109: ten steps of 1, nothing cut


def test_with_book_walk_off_the_whole_qty_fills_at_the_touch_and_nothing_is_remembered():
    liq = Liquidity()
    assert fill(depth_book(), "buy", "10", liquidity=liq, book_walk=False) == [(D("100.0"), D("10"))]
    assert liq.taken == {}
    assert fill(depth_book(), "buy", "10", limit="99.9", book_walk=False) == []  # the limit still holds


def test_assumed_spread_prices_a_taker_off_the_last_trade_when_there_is_no_quote():
    book = Book()
    book.apply(frame(trades=[s.Trade(ts=1, price="100", qty="7", side="buy")]))  # a last price, no quotes
    liq = Liquidity()
    # default 2 bps: half spread = 100 x 2 x 0.0001 / 2 = 0.01, then to the 0.1 tick against the taker: a buy
    # pays 100.1, a sell gets 99.9; size unknown, so all of it, nothing remembered
    assert fill(book, "buy", "3", liquidity=liq) == [(D("100.1"), D("3"))]
    assert fill(book, "sell", "3", liquidity=liq) == [(D("99.9"), D("3"))]
    assert liq.taken == {}
    # 10 bps: half spread = 100 x 10 x 0.0001 / 2 = 0.05 -> 100.1 on the grid
    assert fill(book, "buy", "3", assumed_spread_bps=D(10)) == [(D("100.1"), D("3"))]
    # 0 bps on a last price off the grid (an aggregator's, a CSV's): still a price the exchange could print
    off = Book()
    off.apply(frame(trades=[s.Trade(ts=1, price="65120.71142", qty="1", side="buy")]))
    assert fill(off, "buy", "1", assumed_spread_bps=D(0)) == [(D("65120.8"), D("1"))]
    assert fill(off, "sell", "1", assumed_spread_bps=D(0)) == [(D("65120.7"), D("1"))]


def test_a_fill_off_the_last_price_is_on_the_tick_grid_whatever_the_assumed_spread():
    """Issue 19: with no book, fills were priced off the instrument's tick (65120.71142 on a 0.10 tick)."""
    book = Book()
    book.apply(frame(trades=[s.Trade(ts=1, price="65120.7", qty="1", side="buy")]))
    for bps in ("1", "2", "3.3", "7"):
        for side in ("buy", "sell"):
            ((price, _),) = fill(book, side, "1", assumed_spread_bps=D(bps))
            assert price % TICK == 0, (bps, side, price)


def test_fill_settings_refuse_unknown_switches_and_negative_bps():
    with pytest.raises(pydantic.ValidationError):
        FillSettings(max_slippage_bps=D(-1))
    with pytest.raises(pydantic.ValidationError):
        FillSettings(assumed_spread_bps=D(-1))
    with pytest.raises(pydantic.ValidationError):
        FillSettings(book_walks=False)


# --- touch --------------------------------------------------------------------------------------------------
def test_touch_is_the_best_opposite_price_and_its_size():
    book = depth_book()
    assert touch(book, "buy") == (D("100.0"), "1")
    assert touch(book, "sell") == (D("99.9"), "1")


def test_touch_on_an_empty_side_is_none_and_a_taker_there_gets_nothing():
    book = Book()
    book.apply(frame(bid="99.9", bid_qty="1"))  # bids only, no last trade
    assert touch(book, "buy") == (None, None)
    assert touch(book, "sell") == (D("99.9"), "1")
    assert fill(book, "buy", "1") == []
    assert fill(Book(), "sell", "1") == []  # nothing at all


# --- liquidity a session already took -------------------------------------------------------------------------
def test_liquidity_taken_at_a_level_is_not_available_again_until_the_level_changes():
    book, liq = depth_book(), Liquidity()
    fill(book, "buy", "2.5", liquidity=liq)  # takes 100.0 x 1 and 100.5 x 1.5
    # the book has not changed: 100.0 is used up, 100.5 has 2 - 1.5 = 0.5 left, then 101.0
    assert fill(book, "buy", "1", liquidity=liq) == [(D("100.5"), D("0.5")), (D("101.0"), D("0.5"))]
    book.apply(frame(ts=2, asks=[("100.0", "3")]))  # the market changes the 100.0 level: it shows 3 now
    assert fill(book, "buy", "1", liquidity=liq) == [(D("100.0"), D("1"))]  # whole again: 1 of its 3
    assert liq.available(SYM, "ask", 100.0, "3") == 2  # 3 - 1
    assert liq.available(SYM, "ask", 100.5, "2") == 0  # 0.5 - 0.5: still the same "2" shown


def test_liquidity_records_survive_a_checkpoint():
    liq = Liquidity()
    fill(depth_book(), "buy", "2.5", liquidity=liq)
    again = Liquidity()
    again.load(liq.to_dict())
    assert again.available(SYM, "ask", 100.5, "2") == D("0.5")  # 2 - 1.5
    assert again.available(SYM, "ask", 100.5, "9") == 9  # a changed level is whole


def test_a_made_up_level_is_remembered_like_a_displayed_one():
    """Without depth the fill model repeats the touch one spread further away; what a taker took there counts as
    taken until the market shows something else at that price. A later quote of the same size at that price may
    be the very liquidity assumed, and liquidity is never given twice (test_venue_properties.py checks the same
    rule on random markets)."""
    book, liq = top_book(), Liquidity()
    # no depth: 100 x 1 shown, then 101 and 102 are the top repeated one spread (1) further; 1 + 1 + 0.5 = 2.5
    assert fill(book, "buy", "2.5", liquidity=liq) == [(D(100), D(1)), (D(101), D(1)), (D("102"), D("0.5"))]
    # the same book: 0.5 left at 102, 103 whole
    probe = Liquidity()
    probe.load(liq.to_dict())
    assert fill(book, "buy", "1", liquidity=probe) == [(D("102"), D("0.5")), (D("103"), D("0.5"))]
    book.apply(frame(ts=2, bid="100", bid_qty="4", ask="101", ask_qty="1"))  # 101 x 1 shown: the size assumed
    # 101 x 1 was taken, and so was 0.5 of the size 1 assumed at 102 (the new touch repeated shows the same)
    assert fill(book, "buy", "1", liquidity=liq) == [(D(102), D("0.5")), (D(103), D("0.5"))]
    book.apply(frame(ts=3, bid="100", bid_qty="4", ask="101", ask_qty="2"))  # 101 now shows 2: changed, whole
    assert fill(book, "buy", "1", liquidity=liq) == [(D(101), D(1))]


# --- queue ahead of a resting limit ---------------------------------------------------------------------------
def test_queue_ahead_of_a_resting_limit_is_the_displayed_size_at_its_price():
    book = depth_book()
    assert queue_ahead(book, "buy", D("99.9")) == 1  # at the bid: the bid's size
    assert queue_ahead(book, "buy", D("99.5")) == 2  # behind the bid, on a level: that level's size
    assert queue_ahead(book, "buy", D("99.7")) == 0  # behind the bid, between levels: nobody there
    assert queue_ahead(book, "buy", D("99.95")) == 0  # betters the bid: first in line
    assert queue_ahead(book, "sell", D("100.0")) == 1
    assert queue_ahead(book, "sell", D("100.5")) == 2


def test_queue_ahead_is_unknown_behind_the_touch_without_depth_and_zero_on_an_empty_side():
    assert queue_ahead(top_book(), "buy", D("99")) == 4  # at the bid: its size
    assert queue_ahead(top_book(), "buy", D("98")) is None  # behind it, no levels: unknown
    bids_only = Book()
    bids_only.apply(frame(bid="99.9", bid_qty="1"))
    assert queue_ahead(bids_only, "sell", D("105")) == 0  # no asks at all: any sell is first
