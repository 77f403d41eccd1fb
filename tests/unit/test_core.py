"""The pure core alone: accounting, fees, venue rules, event-time merge, checkpoints. Values by hand."""
import random
from decimal import Decimal as D
from functools import partial

import orjson
import pytest

import schemas as s
from builders import tick
from papertape.core.account import Account
from papertape.core.engine import Engine, TickMerger
from papertape.core.instruments import DEFAULT_INSTRUMENTS
from papertape.core.market.bars import BarBuilder
from papertape.core.market.book import MAX_LEVELS, Book
from papertape.core.session.config import SessionConfig
from papertape.core.strategies.trend_following import TrendFollowing
from papertape.core.venue.fees import FeeSchedule

btc = partial(tick, "BTCUSDT")


def bought(prices):
    """Trades of 1 at each price, the buyer the aggressor."""
    return [(p, "1", "buy") for p in prices]


def run(orders, ticks, latency=0, **cfg):
    sess = SessionConfig(id="t", strategy="scripted", latency_ms=latency, params={"orders": orders}, **cfg)
    eng = Engine(0, 1, DEFAULT_INSTRUMENTS, [sess])
    out = []
    for i, t in enumerate(ticks):
        t = t._replace(pos=i)
        out += eng.on_ticks(s.TickBatch(id=str(i), ts=t.ts, origin=0, seq=i, wm=t.ts + 1, ticks=[t]))
    out += eng.on_ticks(s.TickBatch(id="end", ts=0, origin=0, seq=10**6, wm=0, end=True))
    return eng, out


def kinds(out, kind):
    return [m for m in out if m.kind == kind]


def test_fee_is_price_times_qty_times_rate_rounded_to_the_settle_unit():
    fees = FeeSchedule()
    assert fees.fee("BTCUSDT", "taker", D("61234.5"), D("0.003")) == (D("0.00055"), D("0.10103693"))  # 0.101036925
    assert fees.fee("BTCUSDT", "maker", D("61234.5"), D("0.003")) == (D("0.0002"), D("0.03674070"))


def test_account_long_partial_close_then_flip_short():
    acc = Account(D(1000))
    assert acc.apply_fill("X", "buy", D(100), D(3), D("0.1")) == 0
    assert acc.apply_fill("X", "buy", D(110), D(1), D("0.1")) == 0  # cost 410, qty 4
    # sell 2 at 120: removed cost 410 * 2/4 = 205, realized 240 - 205 = 35
    assert acc.apply_fill("X", "sell", D(120), D(2), D("0.2")) == D(35)
    # sell 3 at 90: closes 2 (cost 205, realized 180-205 = -25), opens 1 short at 90
    assert acc.apply_fill("X", "sell", D(90), D(3), D("0.3")) == D(-25)
    pos = acc.position("X")
    assert (pos.qty, pos.cost) == (D(-1), D(-90))
    assert acc.cash == D(1000) + 35 - 25 - D("0.7")
    assert acc.equity({"X": D(80)}) == acc.cash + 10  # short 1 from 90, mark 80


def test_market_order_takes_the_touch_as_it_stood_at_arrival():
    orders = [{"at": 1000, "symbol": "BTCUSDT", "side": "buy", "qty": "0.010"}]
    ticks = [btc(1000, "59999.9", "60000.0"), btc(1040, "60000.0", "60000.5"), btc(1060, "60000", "60009")]
    _, out = run(orders, ticks, latency=50)  # arrives at 1050: the book of the tick at 1040
    (fill,) = kinds(out, "fill")
    assert (fill.ts, fill.price, fill.liquidity) == (1050, D("60000.5"), "taker")
    assert fill.fee == D("0.33000275")  # 60000.5 * 0.010 * 0.00055


def test_limit_fills_only_when_a_trade_prints_through_it():
    orders = [{"at": 1000, "symbol": "BTCUSDT", "side": "buy", "qty": "0.002", "type": "limit", "price": "59990.0"}]
    ticks = [btc(1000, "59999.9", "60000.0"),
             btc(1100, "59990.0", "59991.0", trades=bought(["59990.0"])),  # at touch: no
             btc(1200, "59989.0", "59990.0", trades=bought(["59989.9"]))]  # through: fills at the limit, as maker
    _, out = run(orders, ticks)
    (fill,) = kinds(out, "fill")
    assert (fill.ts, fill.price, fill.liquidity, fill.fee) == (1200, D("59990.0"), "maker", D("0.02399600"))


def test_marketable_limit_takes_at_the_touch_and_postonly_ioc_rules():
    ticks = [btc(1000, "100.0", "60000.0"), btc(1100, "100.0", "60000.0"), btc(1200, "100.0", "60000.0")]
    def mk(tif, px):
        return {"at": 1000, "symbol": "BTCUSDT", "side": "buy", "qty": "0.001", "type": "limit", "price": px,
                "tif": tif}

    _, out = run([mk("GTC", "60100.0")], ticks)
    assert [(f.price, f.liquidity) for f in kinds(out, "fill")] == [(D("60000.0"), "taker")]
    _, out = run([mk("PostOnly", "60100.0")], ticks)
    assert [e.status for e in kinds(out, "order_event")] == ["rejected"] and not kinds(out, "fill")
    _, out = run([mk("IOC", "50000.0")], ticks)
    assert [e.status for e in kinds(out, "order_event")] == ["new", "cancelled"]


def test_reduce_only_cannot_open_and_bad_lot_is_rejected():
    ticks = [btc(1000, "100.0", "100.1"), btc(1100, "100.0", "100.1")]
    _, out = run([{"at": 1000, "symbol": "BTCUSDT", "side": "sell", "qty": "0.001", "reduce_only": True},
                  {"at": 1000, "symbol": "BTCUSDT", "side": "buy", "qty": "0.0015"}], ticks)
    assert [e.status for e in kinds(out, "order_event")] == ["rejected"]
    assert [d.action for d in kinds(out, "decision")] == ["sell", "reject"]


def test_round_trip_cash_equals_hand_computation():
    orders = [{"at": 1000, "symbol": "ETHUSDT", "side": "buy", "qty": "0.50"},
              {"at": 2000, "symbol": "ETHUSDT", "side": "sell", "qty": "0.50"}]
    ticks = [tick("ETHUSDT", 1000, "2500.00", "2500.01"), tick("ETHUSDT", 1500, "2510.00", "2510.05"),
             tick("ETHUSDT", 2500, "2490.10", "2490.20"), tick("ETHUSDT", 3000, "2400.00", "2400.01")]
    eng, out = run(orders, ticks)  # no latency: each order meets the book of the tick that triggered it
    buy, sell = kinds(out, "fill")
    assert (buy.price, sell.price) == (D("2500.01"), D("2490.10"))
    fee_buy, fee_sell = D("0.68750275"), D("0.68477750")  # 1250.005 * 0.00055, 1245.05 * 0.00055
    assert (buy.fee, sell.fee) == (fee_buy, fee_sell)
    assert sell.realized_pnl == D("-4.955")  # (2490.10 - 2500.01) * 0.5
    assert eng.sessions["t"].account.cash == D(10000) - D("4.955") - fee_buy - fee_sell
    final = kinds(out, "equity")[-1]
    assert final.cash == final.equity == eng.sessions["t"].account.cash


def test_merger_releases_the_same_order_whatever_the_delivery_order():
    batches = []
    for origin in range(3):
        for i in range(20):
            ts = 1000 + i * 7 + origin
            batches.append(s.TickBatch(id=f"{origin}:{i}", ts=ts, origin=origin, seq=i, wm=ts,
                                       ticks=[btc(ts, "1.0", "1.1", pos=i)]))
    for origin in range(3):
        batches.append(s.TickBatch(id=f"{origin}:end", ts=0, origin=origin, seq=99, wm=0, end=True))

    def released(order):
        m = TickMerger(3)
        out = []
        for b in order:
            m.add(b)
            out += [(t.ts, t.pos) for t in m.release()]
        assert m.ended
        return out

    baseline = released(sorted(batches, key=lambda b: (b.origin, b.seq)))
    assert baseline == sorted(baseline) and len(baseline) == 60
    rng = random.Random(7)
    for _ in range(5):
        per_origin = [[b for b in batches if b.origin == o] for o in range(3)]
        shuffled = []
        while any(per_origin):  # each origin keeps its own order, origins interleave at random
            o = rng.choice([i for i, q in enumerate(per_origin) if q])
            shuffled.append(per_origin[o].pop(0))
        assert released(shuffled) == baseline


def test_checkpoint_restore_mid_tape_gives_identical_outputs():
    strategy = {"fast": 2, "slow": 4, "bar_ms": 100, "full_confidence_bps": 0.1}
    cfg = SessionConfig(id="e", strategy="ema_cross", params=strategy, min_confidence=0, latency_ms=5)
    rng = random.Random(3)
    price, ticks = 60000.0, []
    for i in range(400):
        price += rng.choice([-5, -1, 1, 5]) * 0.1
        p = f"{price:.1f}"
        ticks.append(s.TickBatch(id=str(i), ts=1000 + 20 * i, origin=0, seq=i, wm=1000 + 20 * i + 1,
                                 ticks=[btc(1000 + 20 * i, p, f"{price + 0.1:.1f}", trades=bought([p]), pos=i)]))
        if i % 10 == 9:  # a second, idle origin promises less often: ticks wait in the merger meanwhile
            ticks.append(s.TickBatch(id=f"idle{i}", ts=1000 + 20 * i + 1, origin=1, seq=i, wm=1000 + 20 * i + 1))
    ticks.append(s.TickBatch(id="end", ts=0, origin=1, seq=10**6, wm=0, end=True))
    ticks.append(s.TickBatch(id="end", ts=0, origin=0, seq=10**6, wm=0, end=True))

    def play(batches, eng):
        return [m for b in batches for m in eng.on_ticks(b)]

    full = play(ticks, Engine(0, 2, DEFAULT_INSTRUMENTS, [cfg]))
    assert kinds(full, "fill"), "the scenario must trade"
    first = Engine(0, 2, DEFAULT_INSTRUMENTS, [cfg])
    head = play(ticks[:173], first)
    assert any(first.merger.queues), "the cut must leave ticks waiting in the merger"
    restored = Engine(0, 2, DEFAULT_INSTRUMENTS, [cfg])
    restored.load(orjson.loads(orjson.dumps(first.to_dict(), default=list)))  # as agents/checkpoint.py does
    tail = play(ticks[173:], restored)
    assert [m.model_dump_json() for m in head + tail] == [m.model_dump_json() for m in full]


def test_trend_following_matches_an_independent_ema():
    strat = TrendFollowing(fast=2, slow=3, bar_ms=10, full_confidence_bps=1)
    bars = BarBuilder(10)
    closes = [10.0, 11.0, 12.0, 11.0, 9.0, 8.0]
    intents = []
    for i, c in enumerate(closes + [0.0]):  # the last tick only closes the previous bar
        bar = bars.on_tick(btc(i * 10, f"{c or 1:.1f}", f"{(c or 1) + 1:.1f}", trades=bought([f"{c or 1:.1f}"])))
        intents += strat.on_bar(bar) if bar else []
    fast = slow = None
    expected = []
    for n, c in enumerate(closes, 1):
        fast = c if fast is None else fast + (2 / 3) * (c - fast)
        slow = c if slow is None else slow + 0.5 * (c - slow)
        if n >= 3:
            expected.append("long" if fast > slow else "flat")
    assert [i.target for i in intents] == expected


def test_schema_rejects_nan_negative_and_unknown_fields():
    bad = [b'{"kind":"frame","id":"a","ts":1,"venue":"x","symbol":"BTCUSDT","recv_ts":0,"bid":"NaN"}',
           b'{"kind":"order","id":"a","ts":1,"session":"s","symbol":"BTCUSDT","side":"buy","qty":"-1"}',
           b'{"kind":"order","id":"a","ts":1,"session":"s","symbol":"BTCUSDT","side":"buy","qty":"1","x":1}',
           b'{"kind":"order","id":"a","ts":1,"session":"s","symbol":"BTCUSDT","side":"buy","type":"limit","qty":"1"}',
           b"not json", b"x" * (2 << 20)]
    topics = ["md.events", "orders", "orders", "orders", "orders", "orders"]
    for topic, raw in zip(topics, bad):
        with pytest.raises(s.InvalidMessage):
            s.decode(topic, raw)


def test_book_keeps_the_best_levels_of_an_endless_diff_feed():
    book = Book()
    snap = s.MarketFrame(id="s", ts=1, venue="x", symbol="BTCUSDT", recv_ts=0, snapshot=True,
                         bids=[("100.0", "1")], asks=[("100.1", "1")])
    book.apply(snap)
    n = 2 * MAX_LEVELS
    for i in range(n):  # diffs adding levels ever further from the touch, on both sides
        book.apply(s.MarketFrame(id=f"d{i}", ts=2 + i, venue="x", symbol="BTCUSDT", recv_ts=0,
                                 bids=[(f"{99.99 - i * 0.01:.2f}", "2")], asks=[(f"{100.11 + i * 0.01:.2f}", "2")]))
    assert MAX_LEVELS <= len(book.bids) <= MAX_LEVELS * 5 // 4 and len(book.asks) == len(book.bids)
    assert max(book.bids) == 100.0 and min(book.asks) == 100.1  # the touch survives every trim
    assert (book.best_bid(), book.best_ask()) == (D("100"), D("100.1"))  # from the levels: no top feed
    nearest = sorted(book.bids, reverse=True)[:MAX_LEVELS]
    assert nearest == [round(100.0 - i * 0.01, 2) for i in range(MAX_LEVELS)]  # none of the nearest is lost


def test_nothing_trades_on_a_stale_symbol_until_it_is_live_again():
    orders = [{"at": 2000, "symbol": "BTCUSDT", "side": "buy", "qty": "0.010"},
              {"at": 4000, "symbol": "BTCUSDT", "side": "buy", "qty": "0.010"}]
    stale = tick("BTCUSDT", 2000, status="stale")
    ticks = [btc(1000, "59999.9", "60000.0"), stale, btc(3000, "60000.0", "60000.5"),
             btc(4000, "60001.0", "60001.5"), btc(5000, "60001.0", "60001.5")]
    eng, out = run(orders, ticks)
    first, second = kinds(out, "decision")
    assert first.action == "reject" and "BTCUSDT data is stale" in first.reasoning
    assert second.action == "buy"
    (fill,) = kinds(out, "fill")
    assert (fill.ts, fill.price) == (4000, D("60001.5"))  # the live book after the symbol came back

    # an external order meets the same rule
    eng.books["BTCUSDT"].apply_tick(stale._replace(ts=6000))
    order = s.Order(id="x1", ts=6000, session="t", symbol="BTCUSDT", side="buy", qty=D("0.010"))
    (event,) = eng.on_order(order)
    assert event.status == "rejected" and "stale" in event.reason
