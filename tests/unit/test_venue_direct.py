"""PaperVenue on its own (papertape/core/venue/paper.py), built with fake callbacks instead of a session: a dict of
positions for `position_qty`, a list collecting the Executions for `book_fill` (which also moves the positions, as
the account would), and an `admit` that refuses when told to. Covered: arrival latency, a market order at the touch
with the taker fee, resting limits filled as makers by trades and quotes, partial fills, cancel, amend, a stop on
the last price, OCO, expiry, admit refusing, reduce-only against the position, the venue-only FillSettings switches
(queue_position, partial_fills, quote_through) and a to_dict/load round trip.

The venue is driven the way the engine drives it (core/engine.py, core/session/): at each tick's time the
requests due (`on_time`) meet the book as it stood before the tick, then the tick moves the book (`apply_tick`),
then resting orders and triggers see the tick (`on_tick`). Every expected number is worked out by hand here from
Bybit VIP0 fees: taker 0.055%, maker 0.02%, fees rounded half-up to 1e-8."""
import json
from decimal import Decimal as D
from functools import partial

import pytest

from builders import tick
from papertape.core.instruments import Instrument
from papertape.core.market.book import Book
from papertape.core.venue.fill_settings import FillSettings
from papertape.core.venue.paper import Execution, PaperVenue, Refusal, StatusChange, VenueOrder, VenueRules

SYM = "XUSDT"
X = Instrument(SYM, D("0.01"), D("0.01"), D("0.01"), D("1"))  # tick 0.01, lot 0.01


tk = partial(tick, SYM)  # a tick of the one symbol; trades are (price, qty, aggressor side)


class Desk:
    """A venue, its book and the fake callbacks."""

    def __init__(self, positions=None, **fill):
        self.positions = {SYM: D(0), **(positions or {})}
        self.fills: list[Execution] = []
        self.refuse = ""  # what admit answers: '' admits
        self.admitted: list[tuple[str, D]] = []
        self.book = Book()
        self.venue = PaperVenue(VenueRules(fill=FillSettings(**fill)), {SYM: X}, self.positions.__getitem__,
                                self.book_fill, self.admit)
        self.seq = 0

    def book_fill(self, ex: Execution) -> None:
        self.fills.append(ex)
        self.positions[ex.order.symbol] += ex.qty if ex.order.side == "buy" else -ex.qty

    def admit(self, order: VenueOrder, price: D) -> str:
        self.admitted.append((order.id, price))
        return self.refuse

    def order(self, id, side, qty, at=1000, type="market", price=None, tif="GTC", reduce_only=False, **kw):
        self.seq += 1
        o = VenueOrder(id, "t", SYM, side, type, D(qty), None if price is None else D(price), tif, reduce_only, at,
                       self.seq, **kw)
        self.venue.submit(o)
        return o

    def cancel(self, id, at):
        self.seq += 1
        self.venue.cancel(id, at, self.seq)

    def amend(self, id, at, qty=None, price=None, trigger_price=None):
        self.seq += 1
        self.venue.amend(id, {"qty": qty, "price": price, "trigger_price": trigger_price}, at, self.seq)

    def until(self, now):
        return self.venue.on_time(now, {SYM: self.book})

    def tick(self, t):
        out = self.until(t.ts)
        self.book.apply_tick(t)
        return out + self.venue.on_tick(t, self.book)


def quoted(**kw) -> Desk:
    """A desk whose book shows bid 99.00 x 3 / ask 100.00 x 1 (no depth) from t=999."""
    d = Desk(**kw)
    d.tick(tk(999, "99.00", "100.00", "3", "1"))
    return d


def events(out):
    return [(o.status, o.filled) for o in out if isinstance(o, StatusChange)]


def fills(out):
    return [(e.price, e.qty, e.liquidity, e.fee) for e in out if isinstance(e, Execution)]


# --- arrival ------------------------------------------------------------------------------------------------
def test_an_order_is_not_at_the_venue_before_its_arrival_time():
    d = quoted()
    a = d.order("a", "buy", "1", at=1120)  # decided at 1000, 120 ms of latency
    d.cancel("a", at=1110)  # a cancel arriving before the order finds nothing open
    assert d.tick(tk(1100, "100.00", "101.00", "3", "5")) == []
    assert d.until(1119) == [Refusal("a", 1110, "cancel: order a is not open")]
    assert (a.status, d.fills) == ("pending", [])
    out = d.tick(tk(1121, "101.00", "102.00", "3", "5"))
    # arrives at 1120 and meets the book of 1100 (ask 101.00), not that of 1121
    assert [(e.ts, e.price, e.qty) for e in out if isinstance(e, Execution)] == [(1120, D("101.00"), D(1))]


def test_a_market_order_fills_at_the_touch_and_pays_the_taker_fee_rounded_half_up():
    d = Desk()
    d.tick(tk(999, "123.40", "123.47", "5", "5"))
    d.order("a", "buy", "0.01")
    out = d.until(1000)
    # 123.47 x 0.01 = 1.2347; x 0.00055 = 0.000679085 -> half-up to 1e-8: 0.00067909 (half-even would give ...08)
    assert fills(out) == [(D("123.47"), D("0.01"), "taker", D("0.00067909"))]
    assert d.fills[0].fee_rate == D("0.00055")
    assert events(out) == [("new", 0), ("filled", D("0.01"))]
    assert d.admitted == [("a", D("123.47"))]  # the margin check saw the touch it meets
    assert d.positions[SYM] == D("0.01")


# --- makers ---------------------------------------------------------------------------------------------------
def test_a_resting_limit_fills_as_maker_at_its_price_when_a_trade_prints_through_it():
    d = quoted()
    d.order("a", "buy", "2", type="limit", price="99.50")  # betters the bid 99.00, below the ask: rests
    assert events(d.until(1000)) == [("new", 0)]
    out = d.tick(tk(1001, trades=[("99.40", "5", "sell")]))
    # at its own price 99.50, not the trade's; 99.50 x 2 = 199.00; x 0.0002 = 0.0398
    assert fills(out) == [(D("99.50"), D("2"), "maker", D("0.0398"))]
    assert events(out) == [("filled", D("2"))]


def test_a_resting_limit_fills_in_part_after_its_queue_then_the_rest():
    d = quoted()
    a = d.order("a", "buy", "2", type="limit", price="99.00")  # at the bid: 3 ahead of it
    d.until(1000)
    assert a.queue == 3
    out = d.tick(tk(1001, trades=[("99.00", "4", "sell")]))  # 3 of the 4 clear the queue, 1 fills us
    assert fills(out) == [(D("99.00"), D("1"), "maker", D("0.0198"))]  # 99 x 1 x 0.0002
    assert events(out) == [("partially_filled", D(1))]
    out = d.tick(tk(1002, trades=[("98.90", "5", "sell")]))  # through: the 2 - 1 = 1 left
    assert fills(out) == [(D("99.00"), D("1"), "maker", D("0.0198"))]
    assert events(out) == [("filled", D(2))] and a.avg_price == D("99")


@pytest.mark.parametrize("queue_position, expected", [(True, []), (False, [(D("99.00"), D("1"), "maker")])])
def test_queue_position_makes_a_maker_wait_for_the_volume_ahead(queue_position, expected):
    d = quoted(queue_position=queue_position)
    d.order("a", "buy", "2", type="limit", price="99.00")  # at the bid behind 3
    d.until(1000)
    out = d.tick(tk(1001, trades=[("99.00", "1", "sell")]))  # on: 1 of the 3 ahead trades; off: it is ours
    assert [f[:3] for f in fills(out)] == expected


@pytest.mark.parametrize("partial_fills, qty", [(True, "0.5"), (False, "2")])
def test_partial_fills_limit_a_maker_to_the_traded_volume(partial_fills, qty):
    d = quoted(partial_fills=partial_fills)
    d.order("a", "buy", "2", type="limit", price="99.50")  # betters the bid: nothing ahead
    d.until(1000)
    out = d.tick(tk(1001, trades=[("99.40", "0.5", "sell")]))  # on: 0.5 traded, 0.5 filled; off: all 2
    assert [f[:3] for f in fills(out)] == [(D("99.50"), D(qty), "maker")]


@pytest.mark.parametrize("quote_through, expected", [(True, [(D("99.50"), D("1.5"), "maker", D("0.02985"))]),
                                                     (False, [])])
def test_quote_through_fills_a_maker_when_the_opposite_quote_reaches_its_price(quote_through, expected):
    d = quoted(quote_through=quote_through)
    d.order("a", "buy", "2", type="limit", price="99.50")
    d.until(1000)
    out = d.tick(tk(1001, "99.30", "99.40", "2", "1.5"))  # the ask drops to 99.40 x 1.5, at/through 99.50
    # on: 1.5 shown -> 1.5 of 2 at our 99.50; 99.50 x 1.5 = 149.25; x 0.0002 = 0.02985
    assert fills(out) == expected


def test_a_crossing_limit_takes_then_rests_and_does_not_take_the_same_quote_again():
    d = quoted()
    d.order("a", "buy", "3", type="limit", price="100.00")
    out = d.until(1000)
    # 1 shown at 100.00 (100 x 1 x 0.00055 = 0.055); the next step, 101.00, is beyond the limit: 2 rest
    assert fills(out) == [(D("100.00"), D("1"), "taker", D("0.055"))]
    assert events(out) == [("new", 0), ("partially_filled", D(1))]
    assert d.tick(tk(1001, "99.00", "100.00", "3", "1")) == []  # the same 100.00 x 1: already ours
    out = d.tick(tk(1002, "99.00", "100.00", "3", "4"))  # the level changed: 4 shown, 2 for us as maker
    assert fills(out) == [(D("100.00"), D("2"), "maker", D("0.04"))]  # 100 x 2 x 0.0002


# --- cancel, amend ------------------------------------------------------------------------------------------
def test_cancel_closes_a_resting_order_and_a_second_cancel_is_refused():
    d = quoted()
    d.order("a", "buy", "2", type="limit", price="99.50")
    d.cancel("a", at=1050)
    d.cancel("a", at=1070)
    d.until(1000)
    out = d.tick(tk(1060, trades=[("98.00", "9", "sell")]))  # through its price, but it is gone
    assert [(o.status, o.ts, o.reason) for o in out] == [("cancelled", 1050, "cancelled on request")]
    assert d.fills == [] and d.venue.open_orders() == []
    assert d.until(1070) == [Refusal("a", 1070, "cancel: order a is not open")]


def test_amend_moves_price_and_qty_and_the_order_queues_at_its_new_price():
    d = quoted()
    a = d.order("a", "buy", "1", type="limit", price="99.00")  # at the bid behind 3
    d.until(1000)
    d.amend("a", at=1050, qty="3", price="99.50")
    out = d.until(1050)
    assert [(o.status, o.qty, o.price) for o in out] == [("amended", D(3), D("99.50"))]
    assert a.queue == 0  # 99.50 betters the bid: nothing ahead any more
    out = d.tick(tk(1060, trades=[("99.50", "3", "sell")]))  # at its price, all 3 for us
    assert fills(out) == [(D("99.50"), D("3"), "maker", D("0.0597"))]  # 99.5 x 3 = 298.5; x 0.0002


def test_amend_to_a_qty_not_above_the_filled_is_refused():
    d = quoted()
    d.order("a", "buy", "2", type="limit", price="99.50")
    d.until(1000)
    d.tick(tk(1001, trades=[("99.40", "1", "sell")]))  # 1 of 2 filled
    d.amend("a", at=1050, qty="1")
    assert d.until(1050) == [Refusal("a", 1050, "amend refused: new quantity 1 is not above the filled 1")]


def test_an_amend_the_account_cannot_carry_is_refused_and_the_order_stays_as_it_was():
    d = quoted()
    a = d.order("a", "buy", "1", type="limit", price="99.00")
    d.until(1000)
    d.refuse = "insufficient margin"  # the account cannot carry 3 at 99.50
    d.amend("a", at=1050, qty="3", price="99.50")
    assert d.until(1050) == [Refusal("a", 1050, "amend refused: insufficient margin")]
    assert (a.status, a.qty, a.price) == ("new", D(1), D("99.00"))  # as on Bybit: the order is untouched
    assert d.admitted[-1] == ("a", D("99.50"))  # asked at the new price
    d.refuse = ""
    out = d.tick(tk(1060, trades=[("98.90", "4", "sell")]))  # through 99.00: the queue of 3 ahead, then ours
    assert fills(out) == [(D("99.00"), D("1"), "maker", D("0.0198"))]  # 99 x 1 x 0.0002


# --- triggers, links, expiry ----------------------------------------------------------------------------------
def test_a_stop_triggers_on_the_last_price_then_sells_at_the_bid():
    d = quoted(positions={SYM: D(1)})
    d.order("sl", "sell", "1", type="stop_market", reduce_only=True, trigger_price=D("95.00"))
    assert events(d.until(1000)) == [("new", 0)]
    assert d.admitted == [("sl", D("95.00"))]
    assert d.tick(tk(1001, trades=[("95.10", "1", "sell")])) == []  # above 95.00: not yet
    out = d.tick(tk(1002, "94.80", "94.90", "5", "5", trades=[("95.50", "1", "buy"), ("94.90", "1", "sell")]))
    assert [(o.status, o.reason) for o in out if isinstance(o, StatusChange)] == [
        ("triggered", "last price 94.90"), ("filled", "")]
    assert fills(out) == [(D("94.80"), D("1"), "taker", D("0.05214"))]  # 94.8 x 1 x 0.00055
    assert d.positions[SYM] == 0


def test_in_an_oco_pair_the_fill_of_one_cancels_the_other():
    d = quoted(positions={SYM: D(1)})
    d.order("tp", "sell", "1", type="limit", price="105.00", reduce_only=True, oco="g")
    d.order("sl", "sell", "1", type="stop_market", reduce_only=True, trigger_price=D("95.00"), oco="g")
    assert events(d.until(1000)) == [("new", 0), ("new", 0)]
    out = d.tick(tk(1001, trades=[("105.50", "1", "buy")]))  # a buyer prints through the take-profit
    assert fills(out) == [(D("105.00"), D("1"), "maker", D("0.021"))]  # 105 x 1 x 0.0002
    assert [(o.order.id, o.status, o.reason) for o in out if isinstance(o, StatusChange)] == [
        ("tp", "filled", ""), ("sl", "cancelled", "OCO: tp was filled")]
    assert d.tick(tk(1002, trades=[("90.00", "1", "sell")])) == []  # the stop is gone
    assert d.venue.open_orders() == []


def test_an_order_expires_at_its_expire_ts():
    d = quoted()
    d.order("a", "buy", "1", type="limit", price="99.50", expire_ts=1500)
    d.until(1000)
    assert d.venue.next_due() == 1500
    assert d.until(1499) == []
    out = d.until(2000)  # noticed late, expired at its own time
    assert [(o.status, o.ts, o.reason) for o in out] == [("expired", 1500, "good till its expiry time")]
    assert d.venue.open_orders() == []


def test_an_order_arriving_at_or_after_its_expiry_is_rejected():
    d = quoted()
    d.order("a", "buy", "1", type="limit", price="99.50", expire_ts=1000)
    assert [(o.status, o.reason) for o in d.until(1000)] == [
        ("rejected", "expiry time already passed when the order arrived")]


# --- the account's callbacks -------------------------------------------------------------------------------------
def test_admit_refusing_rejects_the_order_and_nothing_fills():
    d = quoted()
    d.refuse = "insufficient margin"
    d.order("a", "buy", "1")
    d.order("b", "buy", "1", type="limit", price="99.50")
    out = d.until(1000)
    assert [(o.order.id, o.status, o.reason) for o in out] == [("a", "rejected", "insufficient margin"),
                                                               ("b", "rejected", "insufficient margin")]
    assert d.admitted == [("a", D("100.00")), ("b", D("99.50"))]  # market: the ask it meets; limit: its price
    assert d.fills == [] and d.venue.open_orders() == [] and d.positions[SYM] == 0


def test_a_reduce_only_taker_shrinks_to_the_position():
    d = quoted(positions={SYM: D("0.5")})
    a = d.order("a", "sell", "2", reduce_only=True)
    out = d.until(1000)
    assert fills(out) == [(D("99.00"), D("0.5"), "taker", D("0.027225"))]  # 99 x 0.5 = 49.5; x 0.00055
    assert events(out) == [("new", 0), ("filled", D("0.5"))] and a.qty == D("0.5")
    assert d.positions[SYM] == 0


def test_a_reduce_only_order_that_would_open_or_increase_a_position_is_rejected():
    d = quoted(positions={SYM: D("0.5")})
    d.order("more", "buy", "1", reduce_only=True)  # long 0.5: a buy increases it
    out = d.until(1000)
    d.positions[SYM] = D(0)
    d.order("flat", "sell", "1", at=1001, reduce_only=True)  # flat: nothing to reduce
    out += d.until(1001)
    reason = "reduce-only order would open or increase a position"
    assert [(o.order.id, o.status, o.reason) for o in out] == [("more", "rejected", reason),
                                                               ("flat", "rejected", reason)]
    assert d.fills == []


# --- checkpoint -------------------------------------------------------------------------------------------------
def test_a_venue_restored_from_to_dict_continues_exactly_as_the_original():
    d = quoted()
    d.order("m", "buy", "0.5")  # takes 0.5 of the ask 100.00 x 1: 0.5 remembered
    d.order("a", "buy", "2", type="limit", price="99.00")  # rests at the bid behind 3
    d.order("late", "buy", "1", at=1100)  # still on its way at the checkpoint
    d.until(1000)
    d.tick(tk(1001, trades=[("99.00", "4", "sell")]))  # clears the queue of 3, fills 1 of "a"
    saved = json.loads(json.dumps(d.venue.to_dict()))

    twin = Desk(positions=dict(d.positions))
    twin.book = Book.from_dict(d.book.to_dict())
    twin.venue.load(saved)
    got = []
    for desk in (d, twin):
        out = desk.tick(tk(1100)) + desk.tick(tk(1200, trades=[("99.00", "1", "sell")]))
        got.append([(o.order.id, o.ts, o.status, o.filled) if isinstance(o, StatusChange) else
                    (o.order.id, o.ts, o.price, o.qty, o.liquidity, o.fee) for o in out])
    assert got[0] == got[1]
    assert fills(twin.fills) == [
        (D("100.00"), D("0.5"), "taker", D("0.0275")),  # the 1 - 0.5 left at 100.00; 50 x 0.00055
        (D("101.00"), D("0.5"), "taker", D("0.027775")),  # one spread (1) further; 50.5 x 0.00055
        (D("99.00"), D("1"), "maker", D("0.0198")),  # queue already 0: the print at 99.00 is ours; 99 x 0.0002
    ]
