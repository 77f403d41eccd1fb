"""The paper venue's rules, one case each, with the expected numbers worked out here from the exchange's rules
(Bybit VIP0: taker 0.055%, maker 0.02%; fees rounded half-up to 1e-8 of the settle coin)."""
from decimal import Decimal as D
from functools import partial

import orjson
import pytest

import schemas as s
from builders import tick
from papertape.config import Settings
from papertape.core.engine import Engine
from papertape.core.instruments import Instrument
from papertape.core.session.config import SessionConfig
from papertape.core.session.margin_rules import MarginRules
from papertape.core.session.risk import RiskSettings
from papertape.core.venue.margin import maintenance_margin

X = Instrument("XUSDT", D("0.1"), D("0.1"), D("0.1"), D("1"))  # tick 0.1, lot 0.1, max leverage 100
SPOT = Instrument("XSPOT", D("0.1"), D("0.1"), D("0.1"), D("1"), category="spot", funding_interval_min=0,
                  base_coin="X", quote_coin="USDT")
TOKEN = Instrument("WETH", D("0.00000001"), D("0.00000001"), D("0.00000001"), D("0"), settle_coin="USD",
                   category="dex", funding_interval_min=0)
INSTRUMENTS = {i.symbol: i for i in (X, SPOT, TOKEN)}
TAKER, MAKER = D("0.00055"), D("0.0002")


def fee(price, qty, rate):
    return (D(price) * D(qty) * rate).quantize(D("0.00000001"), rounding="ROUND_HALF_UP")


x = partial(tick, "XUSDT")  # a tick of the perpetual most cases trade


class Run:
    """One session on an engine, fed tick by tick; collects every output."""

    def __init__(self, orders=(), **cfg):
        cfg.setdefault("latency_ms", 0)
        cfg.setdefault("risk", RiskSettings.off())  # the venue's rules alone (breakers: test_risk.py)
        self.cfg = SessionConfig(id="t", strategy="scripted", params={"orders": list(orders)}, **cfg)
        self.eng = Engine(0, 1, INSTRUMENTS, [self.cfg])
        self.out: list = []
        self.n = 0

    def feed(self, *ticks):
        for t in ticks:
            self.n += 1
            t = t._replace(pos=self.n)
            self.out += self.eng.on_ticks(s.TickBatch(id=str(self.n), ts=t.ts, origin=0, seq=self.n, wm=t.ts + 1,
                                                      ticks=[t]))
        return self

    def of(self, kind):
        return [m for m in self.out if m.kind == kind]

    def fills(self, order_id=None):
        return [(f.price, f.qty, f.liquidity) for f in self.of("fill")
                if order_id is None or f.order_id.endswith(order_id)]

    def statuses(self, order_id):
        return [(e.status, e.filled_qty) for e in self.of("order_event") if e.order_id.endswith(order_id)]

    @property
    def session(self):
        return self.eng.sessions["t"]


def order(at, id, side, qty, **kw):
    return {"at": at, "id": id, "symbol": kw.pop("symbol", "XUSDT"), "side": side, "qty": qty, **kw}


DEPTH = ([["99.9", "1"], ["99.5", "2"]], [["100.0", "1"], ["100.5", "2"], ["101.0", "5"]], True)


# --- takers ------------------------------------------------------------------------------------------------
def test_a_market_order_walks_the_book_and_a_second_one_gets_only_what_is_left():
    r = Run([order(1000, "a", "buy", "2.5"), order(1000, "b", "buy", "1")])
    r.feed(x(1000, "99.9", "100.0", "1", "1", depth=DEPTH), x(1001, "99.9", "100.0", "1", "1"))
    assert r.fills("-a") == [(D("100.0"), D("1"), "taker"), (D("100.5"), D("1.5"), "taker")]
    assert r.fills("-b") == [(D("100.5"), D("0.5"), "taker"), (D("101.0"), D("0.5"), "taker")]
    fees = [f.fee for f in r.of("fill")]
    assert fees == [fee("100", "1", TAKER), fee("100.5", "1.5", TAKER), fee("100.5", "0.5", TAKER),
                    fee("101", "0.5", TAKER)]
    assert r.statuses("-a")[-1] == ("filled", D("2.5"))


def test_liquidity_a_session_took_is_whole_again_once_the_market_changes_the_level():
    r = Run([order(1000, "a", "buy", "1"), order(1002, "b", "buy", "1")])
    changed = ([], [["100.0", "3"]], False)  # the level at 100.0 now shows 3
    r.feed(x(1000, "99.9", "100.0", "1", "1", depth=DEPTH), x(1001, "99.9", "100.0", "1", "3", depth=changed),
           x(1002, "99.9", "100.0", "1", "3"), x(1003, "99.9", "100.0", "1", "3"))
    assert r.fills("-b") == [(D("100.0"), D("1"), "taker")]


def test_without_depth_the_touch_repeats_one_spread_further_each_step():
    r = Run([order(1000, "a", "buy", "2.5")])
    r.feed(x(1000, "99", "100", "4", "1"), x(1001, "99", "100", "4", "1"))
    assert r.fills() == [(D(100), D(1), "taker"), (D(101), D(1), "taker"), (D(102), D("0.5"), "taker")]


def test_the_slippage_cap_cancels_what_lies_beyond_it():
    r = Run([order(1000, "a", "buy", "2.5")], fill={"max_slippage_bps": "150"})  # cap 100 x 1.015 = 101.5
    r.feed(x(1000, "99", "100", "4", "1"), x(1001, "99", "100", "4", "1"))
    assert r.fills() == [(D(100), D(1), "taker"), (D(101), D(1), "taker")]
    assert r.statuses("-a") == [("new", 0), ("partially_filled", D(2)), ("cancelled", D(2))]
    assert "slippage cap" in r.of("order_event")[-1].reason


def test_with_book_walk_off_the_whole_order_fills_at_the_touch():
    r = Run([order(1000, "a", "buy", "2.5")], fill={"book_walk": False})
    r.feed(x(1000, "99", "100", "4", "1"), x(1001, "99", "100", "4", "1"))
    assert r.fills() == [(D(100), D("2.5"), "taker")]


def test_ioc_keeps_what_crosses_fok_needs_all_post_only_never_takes():
    r = Run([order(1000, "ioc", "buy", "2", type="limit", price="100.5", tif="IOC"),
             order(1000, "fok", "buy", "9", type="limit", price="100.5", tif="FOK"),
             order(1000, "po", "buy", "1", type="limit", price="100.0", tif="PostOnly")])
    r.feed(x(1000, "99.9", "100.0", "1", "1", depth=DEPTH), x(1001, "99.9", "100.0", "1", "1"))
    assert r.fills("-ioc") == [(D("100.0"), D(1), "taker"), (D("100.5"), D(1), "taker")]
    assert r.statuses("-ioc")[-1] == ("filled", D(2))
    assert r.fills("-fok") == [] and r.statuses("-fok")[-1] == ("cancelled", 0)
    assert r.statuses("-po") == [("rejected", 0)]


def test_latency_delays_the_arrival_in_event_time():
    r = Run([order(1000, "a", "buy", "1")], latency_ms=120)
    r.feed(x(1000, "99", "100", "5", "5"), x(1100, "100", "101", "5", "5"), x(1121, "101", "102", "5", "5"),
           x(1200, "101", "102", "5", "5"))
    (f,) = r.of("fill")
    assert (f.ts, f.price) == (1120, D(101))  # arrives at 1120 and meets the book of 1100


# --- makers --------------------------------------------------------------------------------------------
def test_a_resting_limit_fills_only_after_the_queue_ahead_has_traded_then_through():
    r = Run([order(1000, "a", "buy", "2", type="limit", price="99")])
    r.feed(x(1000, "99", "100", "3", "1"),  # rests at the bid behind 3
           x(1001, trades=[("99", "2", "sell")]),  # queue 3 -> 1
           x(1002, trades=[("99", "2", "sell")]),  # 1 eats the queue, 1 fills us
           x(1003, trades=[("98.5", "5", "sell")]))  # through: the rest
    assert r.fills() == [(D(99), D(1), "maker"), (D(99), D(1), "maker")]
    assert [f.fee for f in r.of("fill")] == [fee("99", "1", MAKER)] * 2
    assert r.statuses("-a") == [("new", 0), ("partially_filled", D(1)), ("filled", D(2))]


def test_a_buyer_aggressor_never_fills_a_resting_buy():
    r = Run([order(1000, "a", "buy", "1", type="limit", price="99")])
    r.feed(x(1000, "99", "100", "0.5", "1"), x(1001, trades=[("98", "5", "buy")]))
    assert r.fills() == []


def test_without_queue_position_a_print_at_the_price_fills():
    r = Run([order(1000, "a", "buy", "2", type="limit", price="99")], fill={"queue_position": False})
    r.feed(x(1000, "99", "100", "3", "1"), x(1001, trades=[("99", "0.5", "sell")]))
    assert r.fills() == [(D(99), D("0.5"), "maker")]


def test_without_partial_fills_the_first_fill_is_whole():
    r = Run([order(1000, "a", "buy", "2", type="limit", price="99")], fill={"partial_fills": False})
    r.feed(x(1000, "99", "100", "3", "1"), x(1001, trades=[("98", "0.5", "sell")]))
    assert r.fills() == [(D(99), D(2), "maker")]


def test_two_resting_orders_never_share_one_trade():
    r = Run([order(1000, "a", "buy", "1", type="limit", price="99.5"),
             order(1000, "b", "buy", "1", type="limit", price="99.5")])
    r.feed(x(1000, "99", "100", "3", "1"), x(1001, trades=[("99", "1.5", "sell")]))
    assert r.fills("-a") == [(D("99.5"), D(1), "maker")]  # first in time priority
    assert r.fills("-b") == [(D("99.5"), D("0.5"), "maker")]


def test_an_opposite_quote_reaching_a_resting_price_fills_it_up_to_its_size():
    r = Run([order(1000, "a", "buy", "1", type="limit", price="99")])
    r.feed(x(1000, "98", "100", "3", "1"), x(1001, "98", "99", "3", "0.4"), x(1002, "98", "99", "3", "0.4"))
    assert r.fills() == [(D(99), D("0.4"), "maker")]  # the same 0.4 is not given twice


def test_a_limit_crossing_on_arrival_takes_then_rests_the_rest():
    r = Run([order(1000, "a", "buy", "3", type="limit", price="100.5")])
    r.feed(x(1000, "99.9", "100.0", "1", "1", depth=DEPTH), x(1001, trades=[("100.4", "9", "sell")]))
    assert r.fills() == [(D("100.0"), D(1), "taker"), (D("100.5"), D(2), "taker")]
    r2 = Run([order(1000, "a", "buy", "3", type="limit", price="100.0")])
    r2.feed(x(1000, "99.9", "100.0", "1", "1", depth=DEPTH), x(1001, trades=[("99.9", "9", "sell")]))
    assert r2.fills() == [(D("100.0"), D(1), "taker"), (D("100.0"), D(2), "maker")]


# --- conditional orders -------------------------------------------------------------------------------------
def long_then(*more):
    return [order(1000, "entry", "buy", "1"), *more]


def test_a_stop_market_sell_triggers_when_the_last_price_falls_to_it():
    r = Run(long_then(order(1001, "sl", "sell", "1", type="stop_market", trigger_price="95", reduce_only=True)))
    r.feed(x(1000, "99", "100", "5", "5"), x(1001, "99", "100", "5", "5"), x(1002, trades=[("96", "1", "sell")]),
           x(1003, "94", "95", "5", "5", trades=[("95", "1", "sell"), ("94.5", "1", "sell")]))
    assert r.statuses("-sl") == [("new", 0), ("triggered", 0), ("filled", D(1))]
    assert r.fills("-sl") == [(D(94), D(1), "taker")]
    trig = [e for e in r.of("order_event") if e.status == "triggered"][0]
    assert trig.ts == 1003 and "95" in trig.reason


def test_a_stop_limit_rests_at_its_limit_after_the_trigger():
    r = Run(long_then(order(1001, "sl", "sell", "1", type="stop_limit", trigger_price="95", price="94.5",
                            reduce_only=True)))
    r.feed(x(1000, "99", "100", "5", "5"), x(1001, "99", "100", "5", "5"),
           x(1002, "94", "94.2", "5", "5", trades=[("94.9", "1", "sell")]),
           x(1003, trades=[("94.6", "2", "buy")]))
    assert r.statuses("-sl") == [("new", 0), ("triggered", 0), ("filled", D(1))]
    assert r.fills("-sl") == [(D("94.5"), D(1), "maker")]


def test_take_profit_on_a_short_triggers_on_a_fall_and_trigger_by_mark_uses_the_mark():
    r = Run([order(1000, "entry", "sell", "1"),
             order(1001, "tp", "buy", "1", type="take_profit_market", trigger_price="90", trigger_by="mark",
                   reduce_only=True)])
    r.feed(x(1000, "99", "100", "5", "5"), x(1001, "99", "100", "5", "5", mark="99.5"),
           x(1002, trades=[("89", "1", "sell")], mark="91"),  # the last traded below, the mark did not
           x(1003, "89", "89.5", "5", "5", mark="90"))
    assert r.statuses("-tp") == [("new", 0), ("triggered", 0), ("filled", D(1))]
    assert r.fills("-tp") == [(D("89.5"), D(1), "taker")]
    pos = r.session.account.position("XUSDT")
    assert pos.qty == 0 and pos.realized == D(99) - D("89.5")


def test_a_trailing_stop_follows_the_peak_by_amount_and_by_percent():
    prices = [("100", "1", "buy"), ("105", "1", "buy"), ("103", "1", "sell"), ("102.1", "1", "sell")]
    r = Run(long_then(order(1001, "tr", "sell", "1", type="trailing_stop", trail_amount="3", reduce_only=True)))
    r.feed(x(1000, "99", "100", "5", "5"), x(1001, "99", "100", "5", "5"),
           *[x(1002 + i, "101.9", "102.1", "5", "5", trades=[p]) for i, p in enumerate(prices)],
           x(1010, "101.9", "102.1", "5", "5", trades=[("102", "1", "sell")]))
    assert r.statuses("-tr")[-2:] == [("triggered", 0), ("filled", D(1))]
    assert [e.ts for e in r.of("order_event") if e.status == "triggered"] == [1010]  # 105 - 3 = 102
    assert r.fills("-tr") == [(D("101.9"), D(1), "taker")]

    r = Run(long_then(order(1001, "tr", "sell", "1", type="trailing_stop", trail_percent="2", reduce_only=True,
                            activation_price="104")))
    r.feed(x(1000, "99", "100", "5", "5"), x(1001, "99", "100", "5", "5"),
           x(1002, trades=[("98", "1", "sell")]),  # not active yet: 98 is no trigger
           x(1003, trades=[("110", "1", "buy")]), x(1004, trades=[("107.9", "1", "sell")]),
           x(1005, "107.7", "107.9", "5", "5", trades=[("107.8", "1", "sell")]))  # 110 x 0.98 = 107.8
    assert [e.ts for e in r.of("order_event") if e.status == "triggered"] == [1005]


def test_oco_one_fills_the_other_is_cancelled():
    r = Run(long_then(order(1001, "tp", "sell", "1", type="limit", price="105", oco="exit", reduce_only=True),
                      order(1001, "sl", "sell", "1", type="stop_market", trigger_price="95", oco="exit",
                            reduce_only=True)))
    r.feed(x(1000, "99", "100", "5", "5"), x(1001, "99", "100", "5", "5"),
           x(1002, trades=[("105.5", "2", "buy")]))
    assert r.statuses("-tp")[-1] == ("filled", D(1))
    assert r.statuses("-sl")[-1] == ("cancelled", 0)
    assert "OCO" in [e for e in r.of("order_event") if e.order_id.endswith("-sl")][-1].reason


def test_a_bracket_places_its_children_once_the_entry_fills_and_the_first_to_fire_cancels_the_other():
    r = Run([order(1000, "e", "buy", "2", stop_loss="95", take_profit="110")])
    r.feed(x(1000, "99", "100", "5", "5"), x(1001, "99", "100", "5", "5"),
           x(1002, "110", "110.5", "5", "5", trades=[("110", "1", "buy")]))
    assert r.statuses("-e-sl") == [("new", 0), ("cancelled", 0)]
    assert r.statuses("-e-tp") == [("new", 0), ("triggered", 0), ("filled", D(2))]
    assert r.fills("-e-tp") == [(D(110), D(2), "taker")]
    assert r.session.account.position("XUSDT").qty == 0


def test_closing_a_position_cancels_its_reduce_only_orders():
    r = Run(long_then(order(1001, "sl", "sell", "1", type="stop_market", trigger_price="90", reduce_only=True),
                      order(1002, "out", "sell", "1")))
    r.feed(x(1000, "99", "100", "5", "5"), x(1001, "99", "100", "5", "5"), x(1002, "99", "100", "5", "5"),
           x(1003, "99", "100", "5", "5"))
    assert r.statuses("-sl")[-1] == ("cancelled", 0)


def test_amend_smaller_keeps_the_queue_a_new_price_loses_it_and_cancel_removes():
    r = Run([order(1000, "a", "buy", "2", type="limit", price="99"),
             {"at": 1001, "amend": "a", "qty": "1.5"},
             order(1000, "b", "buy", "1", type="limit", price="98"),
             {"at": 1001, "amend": "b", "price": "99"},
             order(1000, "c", "buy", "1", type="limit", price="97"),
             {"at": 1001, "cancel": "c"}])
    r.feed(x(1000, "99", "100", "3", "1"), x(1001, "99", "100", "3", "1"),
           x(1002, trades=[("99", "4", "sell")]))  # 3 ahead of a, then a takes 1 (of 1.5); b sits behind a
    assert r.statuses("-a") == [("new", 0), ("amended", 0), ("partially_filled", D(1))]
    assert r.fills("-b") == []
    assert r.statuses("-c") == [("new", 0), ("cancelled", 0)]
    r.feed(x(1003, trades=[("98.5", "4", "sell")]))
    assert r.fills("-a")[-1] == (D(99), D("0.5"), "maker") and r.fills("-b") == [(D(99), D(1), "maker")]


def test_a_cancel_for_an_order_that_is_not_open_is_refused_with_an_alert():
    r = Run([{"at": 1000, "cancel": "nope"}]).feed(x(1000, "99", "100", "5", "5"), x(1001, "99", "100", "5", "5"))
    (alert,) = r.of("alert")
    assert alert.title == "request refused" and "nope" in alert.text


def test_an_order_expires_at_its_expiry_time():
    r = Run([order(1000, "a", "buy", "1", type="limit", price="90", expire_ts=1500)])
    r.feed(x(1000, "99", "100", "5", "5"), x(1499, "99", "100", "5", "5"), x(1600, "99", "100", "5", "5"))
    assert r.statuses("-a") == [("new", 0), ("expired", 0)]
    assert [e.ts for e in r.of("order_event")] == [1000, 1500]


def test_reduce_only_never_trades_more_than_the_position():
    r = Run(long_then(order(1001, "out", "sell", "3", reduce_only=True)))
    r.feed(x(1000, "99", "100", "5", "5"), x(1001, "99", "100", "5", "5"), x(1002, "99", "100", "5", "5"))
    assert r.fills("-out") == [(D(99), D(1), "taker")]
    assert r.session.account.position("XUSDT").qty == 0


# --- perpetuals: margin, funding, liquidation -----------------------------------------------------------------
def test_an_order_beyond_the_available_margin_is_rejected():
    # 10x: 2 at 100 needs 20 of margin + 0.11 of fee; the account has 20
    r = Run([order(1000, "a", "buy", "2")], balance="20")
    r.feed(x(1000, "99", "100", "5", "5"), x(1001, "99", "100", "5", "5"))
    assert r.statuses("-a") == [("rejected", 0)]
    assert "insufficient available balance" in r.of("order_event")[0].reason
    ok = Run([order(1000, "a", "buy", "2")], balance="20.11")
    ok.feed(x(1000, "99", "100", "5", "5"), x(1001, "99", "100", "5", "5"))
    assert ok.statuses("-a")[-1] == ("filled", D(2))


def test_funding_is_paid_by_longs_on_a_positive_rate_at_the_funding_time_from_the_mark():
    t_fund = 8 * 3600 * 1000
    r = Run([order(1000, "a", "buy", "1.5")])
    r.feed(x(1000, "99", "100", "5", "5", funding=("0.0001", t_fund)),
           x(1001, "99", "100", "5", "5", mark="100.2"),
           x(t_fund - 1, "99", "100", "5", "5", mark="101.3"),
           x(t_fund, "99", "100", "5", "5", mark="150"),  # after the instant: not used
           x(t_fund + 1, "99", "100", "5", "5", funding=("-0.0003", 2 * t_fund), mark="150"))
    (f,) = r.of("funding")
    expected = -(D("1.5") * D("101.3") * D("0.0001"))  # = -0.015195
    assert (f.ts, f.amount, f.mark, f.qty) == (t_fund, expected, D("101.3"), D("1.5"))
    acc = r.session.account
    assert acc.funding == expected and acc.cash == D(10_000) - fee("100", "1.5", TAKER) + expected


def test_a_short_receives_positive_funding():
    t_fund = 3600 * 1000
    r = Run([order(1000, "a", "sell", "2")])
    r.feed(x(1000, "99", "100", "5", "5", funding=("0.0005", t_fund), mark="99.5"),
           x(1001, "99", "100", "5", "5"), x(t_fund + 5, "99", "100", "5", "5"))
    (f,) = r.of("funding")
    assert f.amount == D(2) * D("99.5") * D("0.0005")


def test_isolated_long_is_liquidated_at_the_liquidation_price_and_closed_at_the_bankruptcy_price():
    # 50x long 1 at 20,000: IM 400, MM 20,000 x 0.5% = 100 -> liquidation price 20,000 - (400 - 100) = 19,700;
    # bankruptcy price 20,000 x (1 - 1/50) = 19,600; liquidation fee 19,600 x 0.055% = 10.78
    r = Run([order(1000, "a", "buy", "1")], balance="1000", leverage="50", margin_mode="isolated")
    r.feed(x(1000, "19999.9", "20000", "5", "5"), x(1001, "19999.9", "20000", "5", "5", mark="19700.1"))
    assert not [f for f in r.of("fill") if f.exec_type == "liquidation"]
    r.feed(x(1002, "19699", "19700", "5", "5", mark="19700"))
    (liq,) = [f for f in r.of("fill") if f.exec_type == "liquidation"]
    assert (liq.price, liq.qty, liq.side, liq.fee) == (D(19600), D(1), "sell", D("10.78"))
    assert liq.realized_pnl == D(-400)
    acc = r.session.account
    assert acc.cash == D(1000) - fee("20000", "1", TAKER) - 400 - D("10.78")
    assert any(a.severity == "critical" and "liquidated" in a.title for a in r.of("alert"))


def test_cross_margin_liquidates_when_equity_falls_to_maintenance():
    # 100x cross, long 10 at 100 (value 1000, MM 0.5% of value at the mark); balance 20:
    # equity = 20 - 0.55 fee + 10 x (mark - 100); at mark 98.1: 19.45 - 19 = 0.45 <= MM 4.905 -> liquidated
    r = Run([order(1000, "a", "buy", "10")], balance="20", leverage="100")
    r.feed(x(1000, "99.9", "100", "50", "50"), x(1001, "99", "99.1", "50", "50", mark="98.6"))
    assert not [f for f in r.of("fill") if f.exec_type == "liquidation"]  # 19.45 - 14 = 5.45 > MM 4.93
    r.feed(x(1002, "98", "98.2", "50", "50", mark="98.1"))
    (liq,) = [f for f in r.of("fill") if f.exec_type == "liquidation"]
    assert (liq.price, liq.fee) == (D("98.1"), fee("98.1", "10", TAKER))


def test_leverage_is_capped_by_the_instrument():
    r = Run([order(1000, "a", "buy", "1")], leverage="500")
    assert r.session.margin.leverage("XUSDT") == D(100)


# --- spot and DEX --------------------------------------------------------------------------------------------
def test_spot_has_no_short_and_no_leverage_and_its_own_fees():
    r = Run([order(1000, "short", "sell", "1", symbol="XSPOT"), order(1000, "big", "buy", "200", symbol="XSPOT"),
             order(1000, "b", "buy", "10", symbol="XSPOT"), order(1001, "s", "sell", "4", symbol="XSPOT")],
            balance="1002")
    r.feed(tick("XSPOT", 1000, "99", "100", "500", "500"), tick("XSPOT", 1001, "99", "100", "500", "500"),
           tick("XSPOT", 1002, "99", "100", "500", "500"))
    assert r.statuses("-short") == [("rejected", 0)] and "not enough X" in r.of("order_event")[0].reason
    assert r.statuses("-big") == [("rejected", 0)]
    assert [f.fee for f in r.of("fill")] == [fee("100", "10", D("0.001")), fee("99", "4", D("0.001"))]
    assert r.session.account.position("XSPOT").qty == 6


def test_a_dex_swap_pays_pool_impact_and_gas():
    # pool 1,000,000 USD a side at oracle 2,000: x = 500 WETH. Buying 5: USD in = y*5 / ((500 - 5) * 0.997)
    r = Run([order(1000, "a", "buy", "5", symbol="WETH"), order(1000, "b", "buy", "5", symbol="WETH")], venue="dex",
            settle_coin="USD", balance="15000")  # the second no longer fits in the balance
    r.feed(tick("WETH", 1000, mark="2000"), tick("WETH", 1001, mark="2000"))
    (f,) = r.of("fill")
    usd_in = D(1_000_000) * 5 / ((D(500) - 5) * D("0.997"))  # 10131.4...
    assert f.price == (usd_in / 5).quantize(D("0.00000001"), rounding="ROUND_UP")
    assert f.fee == D("1.50") and f.fee_rate == 0  # Ethereum gas by default
    assert r.statuses("-b") == [("rejected", 0)] and "insufficient USD" in r.of("order_event")[-1].reason


# --- restart and determinism -------------------------------------------------------------------------------
SCRIPT = [order(1000, "e", "buy", "2", stop_loss="95", take_profit="112"),
          order(1000, "lim", "sell", "1", type="limit", price="108", oco="g"),
          order(1000, "stp", "sell", "1", type="stop_market", trigger_price="90", oco="g"),
          order(1000, "tr", "sell", "0.5", type="trailing_stop", trail_percent="3"),
          order(1000, "gtd", "buy", "1", type="limit", price="95", expire_ts=1500),
          order(1000, "q", "buy", "3", type="limit", price="99")]
TAPE = [x(1000, "99", "100", "3", "5"), x(1001, "99", "100", "3", "5"),
        x(1002, trades=[("99", "2", "sell")]), x(1003, trades=[("104", "1", "buy")]),
        x(1004, trades=[("108", "0.3", "buy")]), x(1005, "104", "104.5", "3", "5", trades=[("100.8", "1", "sell")]),
        x(1006, trades=[("99", "3", "sell")]), x(1600, "109", "109.5", "3", "5", trades=[("108.5", "4", "buy")]),
        x(1700, "111.9", "112", "3", "5", trades=[("112", "1", "buy")])]


def test_a_restored_venue_continues_exactly_as_an_uninterrupted_one():
    whole = Run(SCRIPT).feed(*TAPE)
    assert {e.status for e in whole.of("order_event")} >= {"new", "partially_filled", "filled", "cancelled",
                                                          "triggered", "expired"}
    for cut in range(2, len(TAPE)):
        first = Run(SCRIPT).feed(*TAPE[:cut])
        state = orjson.loads(orjson.dumps(first.eng.to_dict(), default=list))
        second = Run(SCRIPT)
        second.eng.load(state)
        second.n = first.n
        second.feed(*TAPE[cut:])
        assert [m.model_dump_json() for m in first.out + second.out] == [m.model_dump_json() for m in whole.out], cut


def test_the_same_tape_and_orders_give_byte_identical_outputs():
    a, b = Run(SCRIPT).feed(*TAPE), Run(SCRIPT).feed(*TAPE)
    assert [m.model_dump_json() for m in a.out] == [m.model_dump_json() for m in b.out]
    assert a.of("fill")


@pytest.mark.parametrize("bad", [{"type": "limit"}, {"type": "stop_market"}, {"type": "trailing_stop"},
                                 {"type": "market", "price": "1"}, {"type": "market", "tif": "PostOnly"}])
def test_an_order_whose_fields_do_not_fit_its_type_is_refused(bad):
    with pytest.raises(ValueError):
        s.Order(id="o", ts=1, session="t", symbol="XUSDT", side="buy", qty=D(1), **bad)
    r = Run([order(1000, "a", "buy", "1", **bad)]).feed(x(1000, "99", "100", "5", "5"))
    (d,) = r.of("decision")
    assert d.action == "reject"


def test_a_position_opened_after_a_funding_time_owes_nothing_for_it_and_one_arriving_before_it_does():
    t_fund = 3600 * 1000
    late = Run([order(t_fund + 10, "a", "buy", "1")])  # the book still announces the past funding time
    late.feed(x(1000, "99", "100", "5", "5", funding=("0.001", t_fund)), x(t_fund + 10, "99", "100", "5", "5"),
              x(t_fund + 20, "99", "100", "5", "5"), x(t_fund + 30, "99", "100", "5", "5"))
    assert late.of("fill") and late.of("funding") == []
    # an order decided at 1000 with 1 h - 1 s of latency arrives before the funding time, processed at the first
    # tick after it: it fills first, then pays funding
    early = Run([order(1000, "a", "buy", "1")], latency_ms=t_fund - 2000)
    early.feed(x(1000, "99", "100", "5", "5", funding=("0.001", t_fund)), x(t_fund + 5, "99", "100", "5", "5"),
               x(t_fund + 6, "99", "100", "5", "5"))
    (f,) = early.of("funding")
    assert f.amount == -(D("99.5") * D("0.001")) and early.of("fill")[0].ts == t_fund - 1000


def test_an_instruments_risk_tiers_set_its_maintenance_margin():
    # tier 1 up to 1,000 of value at 1%, then 2% less a 10 deduction: a 1,500 position needs 1,500 x 2% - 10 = 20
    tiers = ({"limit": "1000", "mmr": "0.01", "mm_deduction": "0", "max_leverage": "50"},
             {"limit": "5000", "mmr": "0.02", "mm_deduction": "10", "max_leverage": "25"})
    inst = Settings(instruments=[{"symbol": "XUSDT", "tick_size": "0.1", "lot_step": "0.1", "min_qty": "0.1",
                                  "min_notional": "1", "risk_tiers": tiers}]).instruments[0]
    rules = MarginRules(SessionConfig(id="t"), {"XUSDT": inst})
    assert maintenance_margin(D(1500), rules.tiers("XUSDT")) == D(20)
    assert maintenance_margin(D(10_000), rules.tiers("XUSDT")) == D(10_000) * D("0.02") - 10  # beyond the table
