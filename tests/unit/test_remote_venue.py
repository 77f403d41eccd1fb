"""A session on an exchange (issue 18), in the pure core: its orders leave as venue requests, the exchange's
executions are booked once in papertape's own ledger, a paper venue shadows each order, and reconciliation books
what was missed and reports what differs. Expected figures are worked out by hand in the comments."""
from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal as D

import schemas as s
from builders import DATA, tick
from papertape.core.engine import Engine
from papertape.core.instruments import Instrument
from papertape.core.metrics.shadow import ShadowOrder, summarize
from papertape.core.session.config import SessionConfig
from streams.bybit.instruments import parse_linear, parse_spot

BTC = Instrument("BTCUSDT", D("0.1"), D("0.001"), D("0.001"), D("5"))
T0 = 1_723_161_260_000


def demo_engine(orders: list[dict]) -> Engine:
    cfg = SessionConfig(id="demo", venue="bybit_demo", strategy="scripted", params={"orders": orders},
                        latency_ms=0, balance=D("10000"), reconcile_every_s=3600)
    return Engine(0, 1, {"BTCUSDT": BTC}, [cfg])


def ticks(eng: Engine, *items: s.Tick) -> list:
    """The ticks in one batch, numbered after the engine's last (the merger drops a position seen before)."""
    last = eng.merger.last_pos[0]
    items = tuple(t._replace(pos=last + 1 + i) for i, t in enumerate(items))
    return eng.on_ticks(s.TickBatch(id=f"b{items[0].ts}", ts=items[0].ts, origin=0, seq=0, wm=items[-1].ts + 1,
                                    ticks=list(items)))


def kinds(out: list, kind: str) -> list:
    return [m for m in out if m.kind == kind]


def execution(exec_id: str, order_id: str, side: str, price: str, qty: str, fee: str, ts: int,
              maker: bool = False) -> s.ExchangeExecution:
    return s.ExchangeExecution(exec_id=exec_id, order_id=order_id, ts=ts, symbol="BTCUSDT", side=side,
                               price=D(price), qty=D(qty), fee=D(fee), fee_rate=D("0.0002" if maker else "0.00055"),
                               liquidity="maker" if maker else "taker")


def report(n: int, ts: int, **fields) -> s.VenueReport:
    return s.VenueReport(id=f"r{n}", ts=ts, session="demo", venue="bybit_demo", **fields)


def opened(ts: int = T0) -> tuple[Engine, list]:
    """A demo session that bought 0.010 BTCUSDT at market: its first check, and the order sent."""
    eng = demo_engine([{"at": T0 + 1000, "symbol": "BTCUSDT", "side": "buy", "qty": "0.010"}])
    out = ticks(eng, tick("BTCUSDT", ts, "60000.0", "60000.5", "1", "1"))
    out += ticks(eng, tick("BTCUSDT", T0 + 1000, "60001.0", "60001.5", "1", "1"))
    out += ticks(eng, tick("BTCUSDT", T0 + 1200, "60002.0", "60002.5", "1", "1"))
    return eng, out


def test_an_order_leaves_as_a_request_and_its_execution_is_booked_once_at_the_exchanges_price_and_fee():
    eng, out = opened()
    requests = kinds(out, "venue_request")
    assert [r.action for r in requests] == ["snapshot", "new"]  # the first check comes before any order
    new = requests[1]
    assert (new.order.id, new.order.side, new.order.qty, new.venue) == ("demo-1", "buy", D("0.010"), "bybit_demo")
    assert new.leverage is not None and new.margin_mode == "cross"
    assert not kinds(out, "fill")  # nothing is filled until the exchange says so
    # the shadow, papertape's paper venue, took the ask of the tick after the decision: 60001.5 (taker 0.055 %)
    shadow = kinds(out, "shadow_fill")
    assert [(f.order_id, f.price, f.qty, f.liquidity) for f in shadow] == [("demo-1", D("60001.5"), D("0.010"),
                                                                            "taker")]

    filled = report(1, T0 + 1300, executions=[execution("e1", "demo-1", "buy", "60003.1", "0.010", "0.33001705",
                                                        T0 + 1250)],
                    orders=[s.ExchangeOrder(order_id="demo-1", ts=T0 + 1250, symbol="BTCUSDT", side="buy",
                                            type="market", status="filled", qty=D("0.010"), filled_qty=D("0.010"),
                                            avg_price=D("60003.1"))])
    out = eng.on_report(filled)
    fills = kinds(out, "fill")
    assert [(f.price, f.qty, f.fee, f.venue, f.ts) for f in fills] == [
        (D("60003.1"), D("0.010"), D("0.33001705"), "bybit_demo", T0 + 1250)]
    assert [e.status for e in kinds(out, "order_event")] == ["filled"]
    assert kinds(out, "position")[0].qty == D("0.010")
    assert eng.on_report(filled) == []  # read again (a gateway restarted, a re-sent message): booked once
    sess = eng.sessions["demo"]
    assert sess.account.cash == D("10000") - D("0.33001705")


def test_realized_pnl_comes_from_papertapes_average_cost_ledger():
    eng, _ = opened()
    eng.on_report(report(1, T0 + 1300, executions=[
        execution("e1", "demo-1", "buy", "60000", "0.010", "0.33", T0 + 1250),
        execution("e2", "demo-1", "buy", "60100", "0.010", "0.33055", T0 + 1260)]))
    out = eng.on_report(report(2, T0 + 2000, executions=[
        execution("e3", "", "sell", "60200", "0.015", "0.1806", T0 + 1900, maker=True)]))  # an order not papertape's
    # average cost 60050; selling 0.015 at 60200 closes 0.015 x 150 = 2.25
    fill = kinds(out, "fill")[0]
    assert (fill.realized_pnl, fill.order_id) == (D("2.25"), "demo-exchange-e3")
    acc = eng.sessions["demo"].account
    assert acc.cash == D("10000") - D("0.33") - D("0.33055") - D("0.1806") + D("2.25")
    assert acc.position("BTCUSDT").qty == D("0.005")


def test_reconciliation_books_a_missed_execution_once_then_finds_nothing():
    eng, out = opened()
    check = kinds(out, "venue_request")[0]
    base = report(1, T0 + 1100, snapshot=True, request=check.id, wallet=D("10000"))
    assert [r.difference for r in kinds(eng.on_report(base), "reconciliation")] == ["none"]  # the wallet's base

    missed = execution("e1", "demo-1", "buy", "60003.1", "0.010", "0.33001705", T0 + 1250)
    before_start = execution("old", "", "buy", "59000", "1", "32.45", T0 - 60_000)  # the account's, not ours
    position = s.ExchangePosition(symbol="BTCUSDT", qty=D("0.010"), avg_price=D("60003.1"))
    snapshot = report(2, T0 + 5000, snapshot=True, request="c2", executions=[before_start, missed],
                      positions=[position], wallet=D("10000") - D("0.33001705"),
                      orders=[s.ExchangeOrder(order_id="demo-1", ts=T0 + 1250, symbol="BTCUSDT", side="buy",
                                              type="market", status="filled", qty=D("0.010"), filled_qty=D("0.010"),
                                              avg_price=D("60003.1"))])
    out = eng.on_report(snapshot)
    rows = kinds(out, "reconciliation")
    assert [(r.difference, r.order_id, r.adopted) for r in rows] == [
        ("missed_fill", "demo-1", "booked"), ("order_state", "demo-1", "filled"), ("none", None, "2 differences")]
    assert [(f.price, f.fee) for f in kinds(out, "fill")] == [(D("60003.1"), D("0.33001705"))]
    assert {a.title for a in kinds(out, "alert")} >= {"reconciliation: missed fill"}

    again = eng.on_report(snapshot.model_copy(update={"id": "r3", "request": "c3"}))
    assert [r.difference for r in kinds(again, "reconciliation")] == ["none"]  # nothing left to adopt
    assert not kinds(again, "fill")


def test_reconciliation_reports_a_position_and_a_balance_that_differ():
    eng, out = opened()
    eng.on_report(report(1, T0 + 1100, snapshot=True, request="c1", wallet=D("5000")))
    out = eng.on_report(report(2, T0 + 5000, snapshot=True, request="c2", wallet=D("5000.01"),
                               positions=[s.ExchangePosition(symbol="ETHUSDT", qty=D("-1"), avg_price=D("3000"))]))
    rows = {r.difference: r for r in kinds(out, "reconciliation")}
    assert rows["position"].symbol == "ETHUSDT" and rows["position"].exchange == "-1 @ 3000"
    assert "+0.01" in rows["balance"].exchange  # the wallet moved 0.01, papertape's cash not at all
    assert {a.severity for a in kinds(out, "alert")} == {"error"}


def test_the_exchange_state_survives_a_restart_and_a_restarted_session_checks_at_once():
    eng, _ = opened()
    filled = report(1, T0 + 1300, executions=[execution("e1", "demo-1", "buy", "60003.1", "0.010", "0.33", T0 + 1250)])
    eng.on_report(filled)
    again = Engine(0, 1, {"BTCUSDT": BTC}, [])
    again.load(eng.to_dict())
    assert again.on_report(filled) == []  # the booked execution ids were saved
    out = ticks(again, tick("BTCUSDT", T0 + 3000, "60010.0", "60010.5", "1", "1"))
    assert [r.action for r in kinds(out, "venue_request")] == ["snapshot"]


def test_an_order_bybit_has_no_type_for_is_rejected_before_it_is_sent():
    eng = demo_engine([{"at": T0 + 1000, "symbol": "BTCUSDT", "side": "sell", "qty": "0.010", "type": "trailing_stop",
                        "trail_amount": "50"}])
    out = ticks(eng, tick("BTCUSDT", T0, "60000.0", "60000.5", "1", "1"))
    out += ticks(eng, tick("BTCUSDT", T0 + 1000, "60001.0", "60001.5", "1", "1"))
    out += ticks(eng, tick("BTCUSDT", T0 + 1200, "60002.0", "60002.5", "1", "1"))
    assert [r.action for r in kinds(out, "venue_request")] == ["snapshot"]
    rejected = [e for e in kinds(out, "order_event") if e.status == "rejected"]
    assert len(rejected) == 1 and "trailing-stop" in rejected[0].reason


def test_a_refused_cancel_is_an_alert_and_funding_is_the_exchanges():
    eng, _ = opened()
    out = eng.on_report(report(1, T0 + 2000, request="demo-1", refused="order not exists or too late to cancel"))
    assert [a.title for a in kinds(out, "alert")] == ["request refused"]
    funding = s.ExchangeExecution(exec_id="f1", ts=T0 + 3000, symbol="BTCUSDT", side="buy", price=D("60000"),
                                  qty=D("0.010"), fee=D("0.06"), fee_rate=D("0.0001"), liquidity="taker",
                                  exec_type="funding")
    out = eng.on_report(report(2, T0 + 3000, executions=[funding]))
    # a long pays 0.010 x 60000 x 0.0001 = 0.06
    assert [(f.amount, f.qty, f.rate) for f in kinds(out, "funding")] == [(D("-0.06"), D("0.010"), D("0.0001"))]
    assert eng.sessions["demo"].account.funding == D("-0.06")


def test_a_limit_order_filled_in_two_parts_on_the_exchange():
    eng = demo_engine([{"at": T0 + 1000, "id": "l1", "symbol": "BTCUSDT", "side": "buy", "type": "limit",
                        "qty": "0.010", "price": "59990"}])
    ticks(eng, tick("BTCUSDT", T0, "60000.0", "60000.5", "1", "1"))
    ticks(eng, tick("BTCUSDT", T0 + 1000, "60001.0", "60001.5", "1", "1"))
    ticks(eng, tick("BTCUSDT", T0 + 1200, "60002.0", "60002.5", "1", "1"))

    def update(n: int, status: str, filled: str, ts: int, *executions: s.ExchangeExecution) -> list:
        order = s.ExchangeOrder(order_id="demo-c-l1", ts=ts, symbol="BTCUSDT", side="buy", type="limit",
                                status=status, qty=D("0.010"), price=D("59990"), filled_qty=D(filled),
                                avg_price=D("59990") if D(filled) else None)
        return eng.on_report(report(n, ts, orders=[order], executions=list(executions)))

    out = update(1, "new", "0", T0 + 1300)
    out += update(2, "partially_filled", "0.004", T0 + 5000,
                  execution("e1", "demo-c-l1", "buy", "59990", "0.004", "0.0479920", T0 + 5000, maker=True))
    out += update(3, "filled", "0.010", T0 + 9000,
                  execution("e2", "demo-c-l1", "buy", "59990", "0.006", "0.0719880", T0 + 9000, maker=True))
    assert [(e.status, e.filled_qty) for e in kinds(out, "order_event")] == [
        ("new", D("0")), ("partially_filled", D("0.004")), ("filled", D("0.010"))]
    assert [(f.qty, f.liquidity) for f in kinds(out, "fill")] == [(D("0.004"), "maker"), (D("0.006"), "maker")]
    assert [p.qty for p in kinds(out, "position")] == [D("0.004"), D("0.010")]


def test_a_session_on_every_usdt_perpetual_of_a_recorded_instruments_list_sends_each_its_orders():
    raw = json.loads((DATA / "bybit/http/nautilus_rust/http_get_instruments_linear.json").read_text())
    linear = [parse_linear(x) for x in raw["result"]["list"]
              if x.get("settleCoin") == "USDT" and x.get("contractType") == "LinearPerpetual"]
    spot = parse_spot(json.loads((DATA / "bybit/http/nautilus_rust/http_get_instruments_spot.json").read_text())
                      ["result"]["list"][0])
    instruments = {i.symbol: i for i in linear} | {"SPOTPAIR": replace(spot, symbol="SPOTPAIR")}
    assert len(linear) >= 2
    orders = [{"at": T0 + 1000, "symbol": sym, "side": "buy", "qty": str(i.min_qty)} for sym, i in instruments.items()]
    cfg = SessionConfig(id="demo", venue="bybit_demo", strategy="scripted", params={"orders": orders}, latency_ms=0)
    eng = Engine(0, 1, instruments, [cfg])
    out = []
    for ts in (T0, T0 + 1000, T0 + 1200):
        out += ticks(eng, *(tick(sym, ts, "100", "100.5", "1000", "1000") for sym in instruments))
    sent = sorted(r.order.symbol for r in kinds(out, "venue_request") if r.action == "new")
    assert sent == sorted(i.symbol for i in linear)  # every USDT perpetual, and not the spot pair


def test_the_shadow_summary_measures_the_paper_models_error_per_type_and_symbol():
    def order(oid, side, ex_price, paper_price, liquidity="taker", paper_liquidity="taker", kind="market"):
        return ShadowOrder(oid, "BTCUSDT", side, kind, D("0.010"), D(ex_price), D("0.33"), liquidity,
                           None if paper_price is None else D("0.010"), None if paper_price is None else D(paper_price),
                           None if paper_price is None else D("0.33"), paper_liquidity, 40)
    found = summarize([order("a", "buy", "60003.1", "60001.5"), order("b", "sell", "60000.0", "60000.5"),
                       order("c", "buy", "59990", None, "maker", None, "limit")], {"BTCUSDT": D("0.1")})
    limit, market = found
    # a buy paper filled 1.6 lower (16 ticks, 1.6 / 60003.1 = 0.2667 bps better); a sell 0.5 higher (5 ticks)
    assert (market.orders, market.paper_filled, market.mean_ticks) == (2, 2, 10.5)
    assert abs(market.mean_bps - (1.6 / 60003.1 + 0.5 / 60000.0) / 2 * 10_000) < 1e-9
    assert market.same_liquidity == 1.0 and market.mean_delay_ms == 40
    assert (limit.type, limit.paper_filled, limit.mean_bps, limit.qty_difference) == ("limit", 0, None, D("-0.010"))
