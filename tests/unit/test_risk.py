"""Circuit breakers: each one trips, blocks new entries (never reductions), alerts, and resets at the session's day
boundary in event time. Numbers worked out here (Bybit VIP0 taker 0.055%)."""
from decimal import Decimal as D

import schemas as s
from builders import tick
from papertape.core.engine import Engine
from papertape.core.instruments import Instrument
from papertape.core.session.config import SessionConfig
from papertape.core.session.risk import RiskSettings

X = Instrument("XUSDT", D("0.1"), D("0.1"), D("0.1"), D("1"))
Y = Instrument("YUSDT", D("0.1"), D("0.1"), D("0.1"), D("1"))
MIDNIGHT = 2 * 86_400_000  # a UTC day boundary
T0 = MIDNIGHT - 600_000  # ten minutes before it


def buy(at, qty="1", symbol="XUSDT", **kw):
    return {"at": at, "symbol": symbol, "side": "buy", "qty": qty, **kw}


def sell(at, qty="1", symbol="XUSDT", **kw):
    return {"at": at, "symbol": symbol, "side": "sell", "qty": qty, **kw}


class Run:
    def __init__(self, orders, balance="10000", session=None, **risk):
        self.cfg = SessionConfig(id="t", strategy="scripted", params={"orders": orders}, balance=balance, latency_ms=0,
                                 risk=RiskSettings.model_validate({**RiskSettings.off().model_dump(), **risk}),
                                 auto_close={"stop_loss": None, "take_profit": None, "max_hold_ms": None},
                                 **(session or {}))
        self.eng = Engine(0, 1, {"XUSDT": X, "YUSDT": Y}, [self.cfg])
        self.out: list = []
        self.n = 0

    def at(self, ts, mid="100", symbol="XUSDT"):
        self.n += 1
        m = D(mid)
        t = tick(symbol, ts, str(m - D("0.1")), str(m + D("0.1")), "1000", "1000", pos=self.n)
        self.out += self.eng.on_ticks(s.TickBatch(id=str(self.n), ts=ts, origin=0, seq=self.n, wm=ts + 1, ticks=[t]))
        return self

    def of(self, kind):
        return [m for m in self.out if m.kind == kind]

    def actions(self):
        return [d.action for d in self.of("decision")]

    def trips(self):
        return [(a.ts, a.title) for a in self.of("alert") if a.source == "risk"]


def test_daily_trades_trips_on_the_last_allowed_order_blocks_entries_not_exits_and_resets_at_midnight():
    r = Run([buy(T0 + 1000), buy(T0 + 2000), buy(T0 + 3000), buy(T0 + 4000), sell(T0 + 5000, reduce_only=True),
             sell(T0 + 6000, "0.5"), buy(MIDNIGHT + 1000)], max_daily_trades=3)
    for ts in (T0, T0 + 1000, T0 + 2000, T0 + 3000, T0 + 4000, T0 + 5000, T0 + 6000, MIDNIGHT + 1000, MIDNIGHT + 2000):
        r.at(ts)
    assert r.actions() == ["buy", "buy", "buy", "blocked", "sell", "sell", "buy"]
    blocked = r.of("decision")[3]
    assert "circuit breaker daily_trades tripped: 3 orders today, the most a day is 3" in blocked.reasoning
    assert r.trips() == [(T0 + 3000, "circuit breaker tripped: daily_trades"),
                         (MIDNIGHT, "circuit breakers reset")]
    events = [(m.ts, m.event, m.breakers) for m in r.of("session")]
    assert events[1:] == [(T0 + 3000, "circuit breaker tripped: daily_trades",
                           {"daily_trades": "3 orders today, the most a day is 3"}),
                          (MIDNIGHT, "circuit breakers reset at the day's start", {})]
    assert len(r.of("fill")) == 6


def test_the_day_boundary_is_the_sessions_own():
    r = Run([buy(T0 + 1000), buy(T0 + 2000), buy(MIDNIGHT + 1000), buy(MIDNIGHT + 3_600_000)], max_daily_trades=1,
            day_starts_at="01:00")
    for ts in (T0, T0 + 1000, T0 + 2000, MIDNIGHT + 1000, MIDNIGHT + 3_600_000, MIDNIGHT + 3_601_000):
        r.at(ts)
    assert r.actions() == ["buy", "blocked", "blocked", "buy"]  # 00:00 UTC is not this session's day boundary
    assert r.trips()[1:] == [(MIDNIGHT + 3_600_000, "circuit breakers reset"),  # then the day's one order trips it
                             (MIDNIGHT + 3_600_000, "circuit breaker tripped: daily_trades")]


def test_daily_loss_trips_at_the_next_check_and_a_new_day_starts_from_the_equity_then():
    # 10 bought at 100.1 (fee 0.55055); mid 94: equity = 1000 - 0.55055 + 10 x (94 - 100.1) = 938.44945: 6.16% lost
    r = Run([buy(T0 + 1000, "10"), buy(T0 + 3000), buy(MIDNIGHT + 1000)], balance="1000", daily_loss_limit="0.05")
    r.at(T0).at(T0 + 1000).at(T0 + 2000, "94").at(T0 + 3000, "94").at(MIDNIGHT + 1000, "94").at(MIDNIGHT + 2000, "94")
    assert r.actions() == ["buy", "blocked", "buy"]
    assert "equity 938.45 is 6.16% below the day's start 1000.00 (limit 5.00%)" in r.of("decision")[1].reasoning
    assert r.trips() == [(T0 + 3000, "circuit breaker tripped: daily_loss"), (MIDNIGHT, "circuit breakers reset")]


def test_portfolio_loss_trips_again_the_next_day_while_the_loss_remains():
    r = Run([buy(T0 + 1000, "10"), buy(T0 + 3000), buy(MIDNIGHT + 1000)], balance="1000", portfolio_loss_limit="0.2")
    r.at(T0).at(T0 + 1000).at(T0 + 2000, "75").at(T0 + 3000, "75").at(MIDNIGHT + 1000, "75")
    assert r.actions() == ["buy", "blocked", "blocked"]
    assert r.trips() == [(T0 + 3000, "circuit breaker tripped: portfolio_loss"), (MIDNIGHT, "circuit breakers reset"),
                         (MIDNIGHT + 1000, "circuit breaker tripped: portfolio_loss")]
    assert "below the starting balance 1000.00 (limit 20.00%)" in r.of("decision")[-1].reasoning


def test_min_balance_trips_when_equity_falls_below_it():
    # 150 - 0.55055 + 10 x (94 - 100.1) = 88.44945 < 100
    r = Run([buy(T0 + 1000, "10"), buy(T0 + 3000)], balance="150", min_balance="100")
    r.at(T0).at(T0 + 1000).at(T0 + 2000, "94").at(T0 + 3000, "94")
    assert r.actions() == ["buy", "blocked"]
    assert "equity 88.45 is below the minimum 100.00" in r.of("decision")[1].reasoning


def test_consecutive_failures_count_rejections_in_a_row_and_a_fill_starts_again():
    bad = "0.05"  # not on the lot step 0.1: rejected
    r = Run([buy(T0 + 1000, bad), buy(T0 + 2000, bad), buy(T0 + 3000), buy(T0 + 4000, bad), buy(T0 + 5000, bad),
             buy(T0 + 6000, bad), buy(T0 + 7000), sell(T0 + 8000, "1", reduce_only=True)],
            max_consecutive_failures=3)
    for i in range(10):
        r.at(T0 + i * 1000)
    assert r.actions() == ["reject", "reject", "buy", "reject", "reject", "reject", "blocked", "sell"]
    assert r.trips() == [(T0 + 6000, "circuit breaker tripped: consecutive_failures")]
    assert "3 orders failed in a row" in r.of("decision")[6].reasoning


def test_venue_rejections_count_as_failures():
    # 10x: 200 at 100 needs 2000 of margin; the account has 1000: the venue rejects it on arrival
    r = Run([buy(T0 + 1000, "200"), buy(T0 + 2000, "200"), buy(T0 + 3000)], balance="1000",
            max_consecutive_failures=2)
    for i in range(5):
        r.at(T0 + i * 1000)
    assert [e.status for e in r.of("order_event")] == ["rejected", "rejected"]
    assert r.actions() == ["buy", "buy", "blocked"]


def test_max_open_positions_and_max_order_notional_block_new_entries_only():
    r = Run([buy(T0 + 1000), buy(T0 + 2000, symbol="YUSDT"), buy(T0 + 3000), buy(T0 + 4000, "6")],
            max_open_positions=1, max_order_notional="500")
    r.at(T0).at(T0, symbol="YUSDT")
    for i in range(1, 6):
        r.at(T0 + i * 1000)
    assert r.actions() == ["buy", "blocked", "buy", "blocked"]
    assert "1 positions open, the most is 1" in r.of("decision")[1].reasoning
    assert "order value 600.00 is above the maximum 500.00 per order" in r.of("decision")[3].reasoning  # 6 x mid


def test_an_external_entry_is_rejected_while_a_breaker_is_tripped_and_an_exit_passes():
    r = Run([buy(T0 + 1000)], max_daily_trades=1)
    r.at(T0).at(T0 + 1000).at(T0 + 2000)
    entry = s.Order(id="e1", ts=T0 + 2000, session="t", symbol="XUSDT", side="buy", qty=D(1))
    exit_ = s.Order(id="e2", ts=T0 + 2000, session="t", symbol="XUSDT", side="sell", qty=D(1))
    (event,) = r.eng.on_order(entry)
    assert event.status == "rejected" and "circuit breaker daily_trades tripped" in event.reason
    assert r.eng.on_order(exit_) == []  # on its way to the venue
    r.at(T0 + 3000)
    assert [f.order_id for f in r.of("fill")] == ["t-1", "t-x-e2"]


def test_an_account_in_the_red_may_still_close_what_it_holds():
    # 10 bought at 100.1, 6 sold at 79.9: realized 6 x -20.2 = -121.2, so cash is below 0 with 4 still held
    r = Run([buy(T0 + 1000, "10"), sell(T0 + 2000, "6"), buy(T0 + 3000), sell(T0 + 4000, "4", reduce_only=True)],
            balance="100", session={"liquidation": False, "leverage": "20"})
    for i, mid in enumerate(("100", "100", "80", "80", "80", "80")):
        r.at(T0 + i * 1000, mid)
    assert r.eng.sessions["t"].account.cash < 0
    assert r.actions() == ["buy", "sell", "reject", "sell"]
    assert "no cash left" in r.of("decision")[2].reasoning
    assert [f.qty for f in r.of("fill")] == [D(10), D(6), D(4)]
