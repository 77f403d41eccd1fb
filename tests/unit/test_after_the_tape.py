"""Issue 19 (found by the hostile-input run): an order read after the tape finished got no answer at all; the
market stands still then, so it is rejected with the reason, and a cancel or amend is refused. An order beyond any
instrument's range is rejected with the reason (it used to end the engine worker, at every restart)."""
from __future__ import annotations

from decimal import Decimal as D

import schemas as s
from builders import tick
from papertape.core.engine import Engine
from papertape.core.instruments import Instrument
from papertape.core.session.config import SessionConfig

BTC = Instrument("BTCUSDT", D("0.1"), D("0.001"), D("0.001"), D("5"))
T0 = 1_723_161_260_000


def engine(end: bool) -> Engine:
    eng = Engine(0, 1, {"BTCUSDT": BTC}, [SessionConfig(id="ext", strategy="scripted", params={"orders": []},
                                                        latency_ms=0)])
    ticks = [tick("BTCUSDT", T0 + i * 1000, "60000.0", "60000.5", "1", "1", pos=i) for i in range(3)]
    eng.on_ticks(s.TickBatch(id="b", ts=T0, origin=0, seq=0, wm=T0 + 3000, end=end, ticks=ticks))
    return eng


def order(**fields) -> s.Order:
    return s.Order(**{"id": "o1", "ts": T0 + 5000, "session": "ext", "symbol": "BTCUSDT", "side": "buy",
                      "qty": D("0.001"), **fields})


def test_an_order_after_the_tape_is_rejected_with_the_reason_and_a_cancel_refused():
    eng = engine(end=True)
    out = eng.on_order(order())
    assert [(m.status, m.reason) for m in out if m.kind == "order_event"] == [
        ("rejected", "the tape has finished: no market left to trade on")]
    out = eng.on_order(s.CancelOrder(id="c1", ts=T0 + 6000, session="ext", order_id="o1"))
    assert [m.title for m in out if m.kind == "alert"] == ["request refused"]
    assert "tape has finished" in out[0].text


def test_an_order_beyond_any_instruments_range_is_rejected_not_a_crash():
    eng = engine(end=False)
    for fields in ({"qty": D("1e24")}, {"type": "limit", "price": D("1e30"), "tif": "IOC"},
                   {"type": "stop_market", "trigger_price": D("1e30")}):
        out = eng.on_order(order(**fields))
        (event,) = [m for m in out if m.kind == "order_event"]
        assert event.status == "rejected" and "beyond any" in event.reason, event
    out = eng.on_order(s.AmendOrder(id="a1", ts=T0 + 6000, session="ext", order_id="o1", qty=D("1e24")))
    assert "beyond any" in out[0].text
