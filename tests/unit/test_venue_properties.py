"""Property tests of the paper venue: random but valid markets (an L2 book on a 0.1 tick that trades, changes
levels and moves, with marks and funding announcements) and random scripted orders of every type, checked for
the venue's invariants: order bookkeeping, fills inside the displayed book, liquidity given once, exact
accounting, fees, determinism and checkpoint/restore."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP
from decimal import Decimal as D
from fractions import Fraction

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import schemas as s
from builders import tick
from papertape.core.engine import Engine
from papertape.core.instruments import Instrument
from papertape.core.market.book import Book, price_text
from papertape.core.session import Session
from papertape.core.session.config import SessionConfig
from papertape.core.session.risk import RiskSettings

TICK = D("0.1")
LOT = D("0.001")  # finer than the book's sizes, so fees and realized P&L need their rounding
X = Instrument("XUSDT", TICK, LOT, LOT, D(1))
Y = Instrument("YUSDT", TICK, LOT, LOT, D(1))
Z = Instrument("ZUSDT", TICK, LOT, LOT, D(1))  # never quoted on any tape
INSTRUMENTS = {i.symbol: i for i in (X, Y, Z)}
TAKER, MAKER = D("0.00055"), D("0.0002")
UNIT = D("0.00000001")
FINAL = {"filled", "cancelled", "rejected", "expired"}
LIMIT_TYPES = {"limit", "stop_limit", "take_profit_limit"}


def rhu(x) -> D:
    if isinstance(x, Fraction):
        x = D(x.numerator) / D(x.denominator)
    return D(x).quantize(UNIT, rounding=ROUND_HALF_UP)


def px(i: int) -> str:
    return format(D(i) * TICK, "f")


def qs(n: int) -> str:
    return format(D(n) * TICK, "f")


def lots(n: int) -> str:
    return format(D(n) * LOT, "f")


# --- markets ---------------------------------------------------------------------------------------------------
@dataclass
class Market:
    ticks: list
    with_depth: bool
    first_quote: dict  # symbol -> ts of its first quote
    mids: list  # XUSDT's mid price index after each tick


@st.composite
def markets(draw) -> Market:
    """A consistent L2 book of XUSDT (price indices in ticks of 0.1, sizes in lots of 0.1), evolved by trades that
    eat the touch, level changes and whole-book moves; every tick carries the resulting top of book and, with
    depth, the level changes. A few quotes of YUSDT come first and in between."""
    with_depth = draw(st.booleans())
    size = st.integers(1, 40)
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    b = draw(st.integers(990, 1000))
    a = b + draw(st.integers(1, 3))
    for _ in range(draw(st.integers(1, 4))):
        bids[b] = draw(size)
        b -= draw(st.integers(1, 3))
    for _ in range(draw(st.integers(1, 4))):
        asks[a] = draw(size)
        a += draw(st.integers(1, 3))

    def top():
        bb, ba = max(bids), min(asks)
        return px(bb), px(ba), qs(bids[bb]), qs(asks[ba])

    def levels(side):
        return [[px(i), qs(q)] for i, q in sorted(side.items())]

    ticks: list = []
    mids: list = []
    first_quote: dict = {}
    ts = 1000
    for _ in range(draw(st.integers(0, 2))):
        ticks.append(tick("YUSDT", ts, "49.9", "50.0", "5", "5"))
        mids.append((max(bids) + min(asks)) // 2)
        first_quote.setdefault("YUSDT", ts)
        ts += draw(st.integers(1, 50))
    first_quote["XUSDT"] = ts
    ticks.append(tick("XUSDT", ts, *top(), depth=(levels(bids), levels(asks), True) if with_depth else None,
                    mark=None, funding=None))
    mids.append((max(bids) + min(asks)) // 2)
    for _ in range(draw(st.integers(5, 35))):
        ts += draw(st.integers(1, 300))
        kind = draw(st.sampled_from(["trade", "trade", "print", "level", "level", "shift", "quiet", "y"]))
        if kind == "y":
            trades = [("50.0", "1", "buy")] if draw(st.booleans()) else []
            ticks.append(tick("YUSDT", ts, "49.9", "50.0", "5", "5", trades=trades))
            mids.append(mids[-1])
            first_quote.setdefault("YUSDT", ts)
            continue
        before = top()
        bid_ch: dict[int, int] = {}
        ask_ch: dict[int, int] = {}
        trades = []
        snapshot = False
        if kind == "trade":
            side = draw(st.sampled_from(["buy", "sell"]))
            book, ch, far = (asks, ask_ch, 1) if side == "buy" else (bids, bid_ch, -1)
            for _ in range(draw(st.integers(1, 3))):
                lvl = min(book) if side == "buy" else max(book)
                q = draw(st.integers(1, book[lvl] + (book[lvl] if draw(st.booleans()) else 0)))
                while q:  # a sweep prints at each level it eats
                    lvl = min(book) if side == "buy" else max(book)
                    got = min(q, book[lvl])
                    trades.append((px(lvl), qs(got), side))
                    book[lvl] -= got
                    q -= got
                    ch[lvl] = book[lvl]
                    if not book[lvl]:
                        del book[lvl]
                    if not book:
                        new = lvl + far * draw(st.integers(1, 3))
                        book[new] = ch[new] = draw(size)
        elif kind == "print":  # hidden liquidity: a print between the touches that leaves the book as it is
            bb, ba = max(bids), min(asks)
            trades.append((px(draw(st.integers(bb, ba))), qs(draw(size)), draw(st.sampled_from(["buy", "sell"]))))
        elif kind == "level":
            side = draw(st.sampled_from(["bid", "ask"]))
            book, ch = (bids, bid_ch) if side == "bid" else (asks, ask_ch)
            action = draw(st.sampled_from(["add", "change", "remove"]))
            if action == "remove" and len(book) > 1:
                lvl = draw(st.sampled_from(sorted(book)))
                del book[lvl]
                ch[lvl] = 0
            elif action == "change":
                lvl = draw(st.sampled_from(sorted(book)))
                book[lvl] = ch[lvl] = draw(size)
            else:
                lvl = (min(asks) - 1 - draw(st.integers(0, 6)) if side == "bid"
                       else max(bids) + 1 + draw(st.integers(0, 6)))
                book[lvl] = ch[lvl] = draw(size)
        elif kind == "shift":
            k = draw(st.sampled_from([-3, -2, -1, 1, 2, 3]))
            bids = {i + k: q for i, q in bids.items()}
            asks = {i + k: q for i, q in asks.items()}
            snapshot = True
        after = top()
        depth = None
        if with_depth and (snapshot or bid_ch or ask_ch):
            depth = ((levels(bids), levels(asks), True) if snapshot else
                     ([[px(i), qs(q)] for i, q in sorted(bid_ch.items())],
                      [[px(i), qs(q)] for i, q in sorted(ask_ch.items())], False))
        show_top = after != before or draw(st.booleans())
        mid = (max(bids) + min(asks)) // 2
        mark = px(mid + draw(st.integers(-5, 5))) if draw(st.integers(0, 2)) == 0 else None
        funding = None
        if draw(st.integers(0, 7)) == 0:
            funding = (draw(st.sampled_from(["0.0001", "-0.0002", "0.0005", "-0.001", "0"])),
                       ts + draw(st.integers(1, 3000)))
        ticks.append(tick("XUSDT", ts, *(after if show_top else (None,) * 4), trades=trades, depth=depth, mark=mark,
                        funding=funding))
        mids.append(mid)
    return Market(ticks, with_depth, first_quote, mids)


# --- orders ---------------------------------------------------------------------------------------------------
@st.composite
def scripts(draw, times: list[int], mids: list[int]) -> list[dict]:
    """Orders at random times (mostly at a tick's time, some before any quote), cancels and amends shortly after
    the order they name."""
    items: list[dict] = []
    ids: list[str] = []
    placed: dict[str, tuple[int, int]] = {}  # order -> (time, mid index then)
    for n in range(draw(st.integers(1, 14))):
        i = draw(st.integers(0, len(times) - 1))
        at = times[i] + draw(st.sampled_from([0, 0, 0, 1, -1, -30]))
        kind = draw(st.sampled_from(["market", "market", "limit", "limit", "limit", "stop", "stop_limit",
                                     "trailing", "cancel", "amend", "amend"]))
        if kind in ("cancel", "amend"):
            target = draw(st.sampled_from(ids * 4 + [f"{x}-sl" for x in ids] + [f"{x}-tp" for x in ids] + ["nope"]))
            at0, ref = placed.get(target.removesuffix("-sl").removesuffix("-tp"), (at, mids[i]))
            at = at0 + draw(st.integers(0, 600))
            if kind == "cancel":
                items.append({"at": at, "cancel": target})
            else:
                ch = draw(st.fixed_dictionaries({}, optional={
                    "qty": st.integers(1, 3000).map(lots), "price": st.integers(ref - 12, ref + 12).map(px),
                    "trigger_price": st.integers(ref - 12, ref + 12).map(px)}))
                items.append({"at": at, "amend": target, **(ch or {"qty": lots(draw(st.integers(1, 3000)))})})
            continue
        oid = f"o{n}"
        ids.append(oid)
        symbol = draw(st.sampled_from(["XUSDT"] * 10 + ["YUSDT", "ZUSDT"]))
        ref = {"XUSDT": mids[i], "YUSDT": 500, "ZUSDT": 1000}[symbol]  # the mid when the order is placed
        placed[oid] = (at, ref)
        side = draw(st.sampled_from(["buy", "sell"]))
        o = {"at": at, "id": oid, "symbol": symbol, "side": side, "qty": lots(draw(st.integers(1, 3000)))}
        price = st.integers(ref - 12, ref + 12).map(px)
        if draw(st.integers(0, 5)) == 0:
            o["reduce_only"] = True
        if kind == "market":
            o["tif"] = draw(st.sampled_from(["GTC", "GTC", "IOC", "FOK"]))
        elif kind == "limit":
            o.update(type="limit", price=draw(price), tif=draw(st.sampled_from(["GTC", "GTC", "IOC", "FOK",
                                                                                 "PostOnly"])))
        elif kind == "stop":
            o.update(type=draw(st.sampled_from(["stop_market", "take_profit_market"])), trigger_price=draw(price))
        elif kind == "stop_limit":
            o.update(type=draw(st.sampled_from(["stop_limit", "take_profit_limit"])), trigger_price=draw(price),
                     price=draw(price))
        else:
            o["type"] = "trailing_stop"
            if draw(st.booleans()):
                o["trail_amount"] = qs(draw(st.integers(1, 20)))
            else:
                o["trail_percent"] = draw(st.sampled_from(["0.1", "0.5", "1", "2.5"]))
            if draw(st.booleans()):
                o["activation_price"] = draw(price)
        if draw(st.booleans()):
            o["trigger_by"] = draw(st.sampled_from(["last", "mark"]))  # a bracket's children inherit it
        if kind in ("market", "limit") and not o.get("reduce_only") and draw(st.integers(0, 2)) == 0:
            if draw(st.booleans()):
                o["stop_loss"] = px(ref - draw(st.integers(1, 15)) if side == "buy" else ref + draw(st.integers(1, 15)))
            if draw(st.booleans()):
                away = draw(st.integers(1, 15))
                o["take_profit"] = px(ref + away if side == "buy" else ref - away)
        if draw(st.integers(0, 3)) == 0:
            o["oco"] = draw(st.sampled_from(["g1", "g2"]))
        if draw(st.integers(0, 4)) == 0:
            o["expire_ts"] = at + draw(st.integers(0, 2000))
        items.append(o)
    return items


configs = st.fixed_dictionaries({
    "balance": st.sampled_from([D(10_000), D(10_000), D(50), D(5)]),
    "leverage": st.sampled_from([D(10), D(100)]),
    "margin_mode": st.sampled_from(["cross", "isolated"]),
    "latency_ms": st.sampled_from([0, 0, 1, 50, 250]),
    "fill": st.sampled_from([{}, {"max_slippage_bps": "20"}, {"max_slippage_bps": "0"}]),
})


@st.composite
def cases(draw):
    m = draw(markets())
    script = draw(scripts([t.ts for t in m.ticks], m.mids))
    return m, script, draw(configs)


# --- running ---------------------------------------------------------------------------------------------------
class Sim:
    """One scripted session on an engine; records each before_tick/on_tick call with the books it met."""

    def __init__(self, script, cfg: dict, record: bool = False):
        cfg.setdefault("risk", RiskSettings.off())  # the venue's rules alone (breakers: test_risk.py)
        self.cfg = SessionConfig(id="t", strategy="scripted", params={"orders": list(script)}, **cfg)
        self.eng = Engine(0, 1, INSTRUMENTS, [self.cfg])
        self.out: list = []
        self.n = 0
        self.phases: list = []  # (phase, {symbol: Book copy}, outputs)
        if record:  # the session's two phases per tick, each with the books as it saw them
            phases = self.phases

            class Recording(Session):
                def before_tick(self, now: int) -> list:
                    return self._phase("pre", super().before_tick, now)

                def on_tick(self, tick: s.Tick) -> list:
                    return self._phase("post", super().on_tick, tick)

                def _phase(self, phase, f, x):
                    snap = {k: Book.from_dict(b.to_dict()) for k, b in self.books.items()}
                    got = f(x)
                    phases.append((phase, snap, got))
                    return got

            self.eng.sessions["t"] = Recording(self.cfg, INSTRUMENTS, self.eng.books)
            self.eng._refresh()

    def feed(self, ticks, end: bool = False):
        for t in ticks:
            self.n += 1
            t = t._replace(pos=self.n)
            self.out += self.eng.on_ticks(s.TickBatch(id=str(self.n), ts=t.ts, origin=0, seq=self.n, wm=t.ts + 1,
                                                      ticks=[t]))
        if end:
            self.n += 1
            self.out += self.eng.on_ticks(s.TickBatch(id=str(self.n), ts=self.eng.now, origin=0, seq=self.n,
                                                      wm=self.eng.now + 1, end=True, ticks=[]))
        return self

    def of(self, kind):
        return [m for m in self.out if m.kind == kind]

    @property
    def session(self):
        return self.eng.sessions["t"]


def dumps(msgs):
    return [m.model_dump_json() for m in msgs]


# --- the checks ----------------------------------------------------------------------------------------------
def shown_at(book: Book, side: str, price: D) -> str | None:
    """The displayed size a taker of `side` meets at `price` in `book` (as the fill model reads it)."""
    depth = book.asks if side == "buy" else book.bids
    touch, touch_qty = (book.ask, book.ask_qty) if side == "buy" else (book.bid, book.bid_qty)
    if book.synced and depth:
        if float(price) in depth:
            return depth[float(price)]
        return touch_qty if touch is not None and D(touch) == price else None
    return touch_qty


def sim_realized(fills, symbol) -> D:
    return sum((f.realized_pnl for f in fills if f.symbol == symbol), D(0))


def check_run(sim: Sim, market: Market, cfg: dict) -> None:
    slip = D(cfg["fill"].get("max_slippage_bps", "500"))
    filled: dict[str, D] = {}  # order id -> sum of its fills so far
    last_event: dict[str, s.OrderEvent] = {}
    closed: dict[str, s.OrderEvent] = {}
    pos: dict[str, list[Fraction]] = {}  # symbol -> [qty, cost], average cost
    taken: dict[tuple, list] = {}  # (symbol, side, price) -> [shown, qty the takers got since it last changed]
    fills, fundings = [], []
    recorded = []
    for phase, books, msgs in sim.phases:
        recorded += msgs
        for key in list(taken):  # a level the market changed is whole again
            sym, side, price = key
            if sym not in books or shown_at(books[sym], side, price) != taken[key][0]:
                del taken[key]
        for m in msgs:
            if m.kind == "order_event":
                oid = m.order_id
                assert oid not in closed, (closed[oid], m)  # a final state is the order's last event
                prev = last_event.get(oid)
                got = filled.get(oid, D(0))
                assert m.filled_qty == got, (m, got)
                assert prev is None or m.filled_qty >= prev.filled_qty
                assert got <= m.qty, m
                last_event[oid] = m
                if m.status in FINAL:
                    closed[oid] = m
            elif m.kind == "fill":
                fills.append(m)
                oid, price, q = m.order_id, m.price, m.qty
                assert oid not in closed, ("a fill after the order's final state", m)
                assert m.ts >= market.first_quote.get(m.symbol, 1 << 62), ("a fill before the first quote", m)
                filled[oid] = filled.get(oid, D(0)) + q
                ev = last_event.get(oid)
                if ev is not None:
                    assert filled[oid] <= ev.qty, (m, ev)
                # fees (5)
                if m.exec_type == "liquidation" or m.liquidity == "taker":
                    assert m.fee_rate == TAKER
                else:
                    assert m.fee_rate == MAKER
                assert m.fee == rhu(price * q * m.fee_rate), m
                # realized P&L from the fills alone, average cost (4)
                p = pos.setdefault(m.symbol, [Fraction(0), Fraction(0)])
                signed = Fraction(q) if m.side == "buy" else -Fraction(q)
                realized = Fraction(0)
                if p[0] and (p[0] > 0) != (signed > 0):
                    closing = min(abs(signed), abs(p[0]))
                    direction = 1 if p[0] > 0 else -1
                    avg = p[1] / p[0]
                    realized = direction * closing * (Fraction(price) - avg)
                    p[1] -= avg * direction * closing
                    p[0] -= direction * closing
                    signed += direction * closing
                if signed:
                    p[0] += signed
                    p[1] += signed * Fraction(price)
                if not p[0]:
                    p[1] = Fraction(0)
                assert abs(m.realized_pnl - rhu(realized)) <= UNIT, (m, realized)
                if m.exec_type == "liquidation":
                    continue
                # fills inside the book (2), liquidity given once (3)
                assert ev is not None, m
                if m.liquidity == "maker":
                    assert ev.price is not None and price == ev.price, (m, ev)
                    continue
                assert phase == "pre" or ev.status == "triggered", (phase, m, ev)
                book = books[m.symbol]
                buy = m.side == "buy"
                touch, other = (book.ask, book.bid) if buy else (book.bid, book.ask)
                assert touch is not None, m
                touch = D(touch)
                depth = book.asks if buy else book.bids
                if book.synced and depth:
                    allowed = {touch} | {D(price_text(k)) for k in depth if (k >= float(touch) if buy
                                                                             else k <= float(touch))}
                    assert price in allowed, (m, sorted(allowed))
                else:
                    step = max(abs(touch - D(other)) if other is not None else TICK, TICK)
                    assert (price - touch) % step == 0 and (price >= touch if buy else price <= touch), (m, touch)
                if ev.type in LIMIT_TYPES:
                    assert (price <= ev.price) if buy else (price >= ev.price), (m, ev)
                elif slip:
                    cap = touch * (1 + slip / 10_000) if buy else touch * (1 - slip / 10_000)
                    assert (price <= cap) if buy else (price >= cap), (m, cap)
                key = (m.symbol, m.side, price)
                shown = shown_at(book, m.side, price)
                assert shown is not None, m
                rec = taken.setdefault(key, [shown, D(0)])
                rec[1] += q
                assert rec[1] <= D(shown), ("liquidity given twice", m, rec)
            elif m.kind == "funding":
                fundings.append(m)
                p = pos.get(m.symbol, [Fraction(0)])
                assert m.qty == D(p[0].numerator) / D(p[0].denominator), (m, p)
                assert m.amount == rhu(-m.qty * m.mark * m.rate) + 0, m
            elif m.kind == "position":  # the position right after the fill before it
                p = pos[m.symbol]
                assert m.qty == D(p[0].numerator) / D(p[0].denominator), (m, p)
                assert m.realized_pnl == sim_realized(fills, m.symbol), m
    finish = sim.out[len(recorded):]
    assert sim.out[:len(recorded)] == recorded
    # accounting identity (4)
    acc = sim.session.account
    assert acc.cash == (cfg["balance"] + sum((f.realized_pnl for f in fills), D(0)) - sum((f.fee for f in fills), D(0))
                        + sum((f.amount for f in fundings), D(0)))
    assert acc.realized == sum((f.realized_pnl for f in fills), D(0))
    (eq,) = [m for m in finish if m.kind == "equity"]
    unreal = D(0)
    for sym, p in pos.items():
        st_ = acc.position(sym)
        assert st_.qty == D(p[0].numerator) / D(p[0].denominator)
        assert abs(st_.cost - D(p[1].numerator) / D(p[1].denominator)) <= UNIT
        if st_.qty:
            mark = sim.eng.books[sym].mark()
            unreal += rhu(st_.qty * mark - st_.cost)
            assert abs(rhu(st_.qty * mark - st_.cost) - rhu(p[0] * Fraction(mark) - p[1])) <= UNIT
    assert eq.cash == acc.cash and eq.equity == acc.cash + unreal, (eq, acc.cash, unreal)
    for oid, ev in last_event.items():
        assert filled.get(oid, D(0)) == ev.filled_qty
    for what in sorted({f"fill {f.liquidity} {f.exec_type}" for f in fills} | {f"event {e.status}" for e in
                        sim.of("order_event")} | {"funding"} & {m.kind for m in sim.out} | {"alert"} &
                       {m.kind for m in sim.out}):
        event(what)


FAST = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.data_too_large])


def run(script, cfg, ticks, record=False, end=True) -> Sim:
    sim = Sim(script, cfg, record=record)
    return sim.feed(ticks, end=end)


@pytest.mark.slow  # thousands of generated markets
@FAST
@given(cases())
def test_orders_fills_liquidity_fees_and_accounting_hold_on_random_markets(case):
    market, script, cfg = case
    sim = run(script, cfg, market.ticks, record=True)
    check_run(sim, market, cfg)


@pytest.mark.slow  # thousands of generated markets
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases(), st.data())
def test_the_same_tape_is_byte_identical_and_a_restored_engine_continues_exactly(case, data):
    market, script, cfg = case
    whole = run(script, cfg, market.ticks)
    again = Sim(script, cfg).feed(market.ticks, end=True)
    assert dumps(whole.out) == dumps(again.out)
    cut = data.draw(st.integers(1, len(market.ticks)), label="cut")
    first = Sim(script, cfg).feed(market.ticks[:cut])
    state = orjson.loads(orjson.dumps(first.eng.to_dict(), default=list))
    second = Sim(script, cfg)
    second.eng.load(state)
    second.n = first.n
    second.feed(market.ticks[cut:], end=True)
    assert dumps(first.out + second.out) == dumps(whole.out)


# --- bugs found by the properties, as minimal cases --------------------------------------------------------------
def order(at, id, side, qty, **kw):
    return {"at": at, "id": id, "symbol": "XUSDT", "side": side, "qty": qty, **kw}


def quote(ts, **kw):
    return tick("XUSDT", ts, "99", "100", "5", "5", **kw)


def events(sim, suffix):
    return [(e.status, e.reason) for e in sim.of("order_event") if e.order_id.endswith(suffix)]


def test_an_oco_group_of_three_cancels_each_member_once():
    sim = Sim([order(1000, "a", "buy", "1", type="limit", price="95", oco="g"),
               order(1000, "b", "buy", "1", type="limit", price="96", oco="g"),
               order(1001, "c", "buy", "1", oco="g")], {"latency_ms": 0})
    sim.feed([quote(1000), quote(1001), quote(1002)])
    assert [s_ for s_, _ in events(sim, "-b")] == ["new", "cancelled"]


def test_closing_a_position_cancels_each_reduce_only_order_once():
    sim = Sim([order(1000, "e", "buy", "1", stop_loss="90", take_profit="110"), order(1001, "out", "sell", "1")],
              {"latency_ms": 0})
    sim.feed([quote(1000), quote(1001), quote(1002), quote(1003)])
    assert events(sim, "-e-tp") == [("new", "bracket of t-c-e"), ("cancelled", "OCO: t-c-e-sl was cancelled")]


def test_a_liquidation_cancels_each_open_order_once():
    sim = Sim([order(1000, "a", "buy", "1"),
               order(1000, "l1", "buy", "0.1", type="limit", price="90", oco="g"),
               order(1000, "l2", "buy", "0.1", type="limit", price="91", oco="g")],
              {"latency_ms": 0, "balance": "1000", "leverage": "50", "margin_mode": "isolated"})
    sim.feed([quote(1000), quote(1001), tick("XUSDT", 1002, "98", "98.1", "5", "5", mark="98")])
    assert [f.exec_type for f in sim.of("fill")] == ["trade", "liquidation"]
    assert [s_ for s_, _ in events(sim, "-l2")] == ["new", "cancelled"]


def test_a_trailing_stop_with_an_activation_price_never_fires_before_it_is_reached():
    # a sell trailing 1 behind, active only once the last price reaches 110: at 98 it must not fire
    sim = Sim([order(1000, "e", "buy", "1"),
               order(1001, "tr", "sell", "1", type="trailing_stop", trail_amount="1", activation_price="110",
                     reduce_only=True)], {"latency_ms": 0})
    sim.feed([quote(1000), quote(1001), tick("XUSDT", 1002, trades=[("98", "1", "sell")]), quote(1003)])
    assert [s_ for s_, _ in events(sim, "-tr")] == ["new"]


def test_an_oco_partner_that_has_not_arrived_yet_does_not_crash():
    sim = Sim([order(1000, "a", "buy", "1", oco="g"), order(1000, "b", "buy", "1", oco="g")], {"latency_ms": 0})
    sim.feed([quote(1000), quote(1001)])
    assert [s_ for s_, _ in events(sim, "-a")] == ["new", "filled"]


def test_each_fill_position_message_is_the_position_after_that_fill():
    sim = Sim([order(1000, "a", "buy", "1"), order(1000, "b", "sell", "0.3"), order(1000, "c", "sell", "0.3")],
              {"latency_ms": 0})
    sim.feed([quote(1000), quote(1001)])
    assert [m.qty for m in sim.of("position")] == [D(1), D("0.7"), D("0.4")]
