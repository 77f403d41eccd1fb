"""Sessions on real data (Bybit BTCUSDT minute bars of 2022-12-13, Lean, Apache-2.0) through the pure core: isolation,
run-time control (start, pause, resume, config, stop) and restarts; the intel levels' sizing; the strategies."""
import math
import statistics
from decimal import Decimal as D

import orjson
import pytest

import schemas as s
from builders import tick
from papertape.core.engine import Engine
from papertape.core.instruments import Instrument
from papertape.core.market.bars import Bar
from papertape.core.session.config import SessionConfig
from papertape.core.strategies.mean_reversion import MeanReversion
from papertape.core.strategy import Strategy
from tape_engine import play, tick_batches

TREND = SessionConfig(id="trend", strategy="trend_following", intel=7, params={"fast": 5, "slow": 20})
REVERT = SessionConfig(id="revert", strategy="mean_reversion", intel=8)
MIN = 60_000


@pytest.fixture(scope="module")
def tape():
    return tick_batches()


def of(out, session, kind=None):
    return [m for m in out if getattr(m, "session", None) == session and (kind is None or m.kind == kind)]


def dumps(msgs):
    return [m.model_dump_json() for m in msgs]


def test_two_sessions_on_the_same_symbol_never_see_each_other(tape):
    instruments, batches = tape
    both = play(Engine(0, 1, instruments, [TREND, REVERT]), batches)
    for cfg in (TREND, REVERT):
        alone = play(Engine(0, 1, instruments, [cfg]), batches)
        assert dumps(of(both, cfg.id)) == dumps(of(alone, cfg.id))  # the other session changes nothing
        fills = of(both, cfg.id, "fill")
        assert len(fills) >= 4 and {f.symbol for f in fills} == {"BTCUSDT"}
        # its money is its own fills and funding only: deposit + realized - fees + funding
        funding = sum((f.amount for f in of(both, cfg.id, "funding")), D(0))
        cash = cfg.balance + sum(f.realized_pnl - f.fee for f in fills) + funding
        assert of(both, cfg.id, "equity")[-1].cash == cash


def control(session, command, ts=0, **config):
    return s.Control(id=f"c:{session}:{command}:{ts}", ts=ts, session=session, command=command, config=config)


LIFECYCLE = {  # batch index (about a minute each) -> controls applied before it
    100: [control("late", "start", strategy="mean_reversion", intel=8, params={"window": 15}, balance="5000")],
    300: [control("late", "pause")],
    400: [control("late", "start")],  # start on a paused session resumes it
    450: [control("late", "config", intel=9, risk={"max_daily_trades": 40})],
    600: [control("late", "stop")],
}


def test_a_session_started_paused_resumed_reconfigured_and_stopped_at_run_time(tape):
    instruments, batches = tape
    out = play(Engine(0, 1, instruments, [TREND]), batches, LIFECYCLE)
    assert dumps(of(out, "trend")) == dumps(of(play(Engine(0, 1, instruments, [TREND]), batches), "trend"))
    status = of(out, "late", "session")
    assert [m.event for m in status] == ["started", "paused: no new entries", "resumed",
                                         "reconfigured: intel, risk", "stopped"]
    assert [m.status for m in status] == ["running", "paused", "running", "running", "stopped"]
    started, paused, resumed, changed, stopped = (m.ts for m in status)
    assert status[3].config["risk"]["max_daily_trades"] == 40 and status[3].config["risk"]["min_balance"] == "100"
    decisions = of(out, "late", "decision")
    assert decisions and all(d.ts >= started for d in decisions)
    # a control applies at the event time of the last tick read: that tick's decisions came before it
    assert not [d for d in decisions if paused < d.ts <= resumed]  # paused: its strategy is not asked
    assert {d.intel for d in decisions if d.ts <= changed} == {8}
    assert {d.intel for d in decisions if changed < d.ts <= stopped} == {9}
    assert all(d.action in ("cancel", "buy", "sell") and "session stopped" in d.reasoning
               for d in decisions if d.ts > stopped)
    assert len(of(out, "late", "fill")) >= 2
    pos = D(0)
    for f in of(out, "late", "fill"):
        pos += f.qty if f.side == "buy" else -f.qty
    assert pos == 0  # stop closed what it held
    assert not [e for e in of(out, "late", "order_event") if e.ts > stopped + 1000]  # and nothing after
    assert of(out, "late", "equity")[-1].cash == D(5000) + sum(f.realized_pnl - f.fee for f in of(out, "late", "fill"))


def test_a_restarted_engine_keeps_sessions_started_and_changed_at_run_time(tape):
    instruments, batches = tape
    full = play(Engine(0, 1, instruments, [TREND]), batches, LIFECYCLE)
    cut = 470  # after the start, pause, resume and config
    first = Engine(0, 1, instruments, [TREND])
    head = play(first, batches[:cut], LIFECYCLE)
    restored = Engine(0, 1, instruments, [TREND])  # as a new worker builds it: from the settings' sessions
    restored.load(orjson.loads(orjson.dumps(first.to_dict(), default=list)))  # as agents/checkpoint.py does
    assert restored.sessions["late"].cfg.intel == 9 and restored.sessions["late"].status == "running"
    tail = play(restored, batches[cut:], {i - cut: c for i, c in LIFECYCLE.items() if i >= cut})
    assert dumps(head + tail) == dumps(full)


@pytest.mark.parametrize("ctrl, why", [
    (control("ghost", "pause"), "no session 'ghost'"),
    (control("trend", "config", balance="1"), "cannot change balance"),
    (control("trend", "config", intel=11), "intel"),
    (control("trend", "config", strategy="no_such"), "unknown strategy"),
    (control("new", "start", strategy="nosuchpackage.Strategy"), "cannot load strategy"),
    (control("new", "start", risk={"max_daily_trades": -1}), "max_daily_trades"),
    (control("new", "start", id="other"), "not the session"),
])
def test_a_control_that_cannot_apply_is_refused_and_changes_nothing(tape, ctrl, why):
    instruments, batches = tape
    eng = Engine(0, 1, instruments, [TREND])
    play(eng, batches[:50])
    before = orjson.dumps(eng.to_dict(), default=list)
    with pytest.raises(s.InvalidMessage, match=why):
        eng.on_control(ctrl)
    assert orjson.dumps(eng.to_dict(), default=list) == before


def test_a_session_stopped_after_the_tape_closes_at_the_last_book(tape):
    instruments, batches = tape
    holder = SessionConfig(id="holder", strategy="user_strategies:EnterAt", params={"at": batches[10].ts},
                           auto_close={"stop_loss": False, "take_profit": False, "max_hold_ms": False})
    eng = Engine(0, 1, instruments, [holder])
    play(eng, batches)
    held = eng.sessions["holder"].account.position("BTCUSDT").qty
    assert eng.finished and held > 0
    out = eng.on_control(control("holder", "stop"))
    (fill,) = of(out, "holder", "fill")
    assert (fill.side, fill.qty, fill.price) == ("sell", held, eng.books["BTCUSDT"].best_bid())
    assert of(out, "holder", "equity")[-1].open_positions == 0


def test_a_stopped_session_cannot_start_again(tape):
    instruments, batches = tape
    eng = Engine(0, 1, instruments, [TREND])
    play(eng, batches[:50])
    eng.on_control(control("trend", "stop"))
    with pytest.raises(s.InvalidMessage, match="was stopped"):
        eng.on_control(control("trend", "start"))


# --- the intel slider ---------------------------------------------------------------------------------------------
X = Instrument("XUSDT", D("0.1"), D("0.1"), D("0.1"), D("1"))  # tick 0.1, lot 0.1, max leverage 100
# The README's table, written out again here: level -> (position size, min confidence, leverage, risk tolerance)
TABLE = {1: ("0.05", 0.80, 1, 0.05), 2: ("0.10", 0.70, 2, 0.10), 3: ("0.15", 0.60, 3, 0.15),
         4: ("0.20", 0.50, 5, 0.20), 5: ("0.25", 0.40, 10, 0.30), 6: ("0.30", 0.35, 15, 0.40),
         7: ("0.40", 0.30, 20, 0.50), 8: ("0.50", 0.25, 25, 0.65), 9: ("0.75", 0.20, 50, 0.80),
         10: ("1.00", 0.10, 100, 1.00)}


def zigzag_engine(level: int, hold_bars: int = 30) -> Engine:
    """A session at `level` after six one-minute bars alternating 100 / 101 (mid), ending at 100."""
    cfg = SessionConfig(id="s", strategy="scripted", params={"orders": []}, intel=level, latency_ms=0,
                        auto_close={"max_hold_ms": hold_bars * MIN})
    eng = Engine(0, 1, {"XUSDT": X}, [cfg])
    for i in range(7):
        mid = 100 if i % 2 == 0 else 101
        t = tick("XUSDT", i * MIN, f"{mid - 0.1:.1f}", f"{mid + 0.1:.1f}", "1000", "1000", pos=i + 1)
        eng.on_ticks(s.TickBatch(id=str(i), ts=i * MIN, origin=0, seq=i, wm=i * MIN + 1, ticks=[t]))
    return eng


def signal(confidence: float) -> s.Signal:
    return s.Signal(id=f"sig{confidence}", ts=6 * MIN, session="s", symbol="XUSDT", target="long",
                    confidence=confidence)


@pytest.mark.parametrize("level", range(1, 11))
def test_each_intel_level_sizes_scores_and_caps_as_documented(level):
    fraction, confidence, leverage, tolerance = TABLE[level]
    # the chance a 5% stop is hit within 30 bars, bars' log returns being +-ln(1.01): 2 (1 - Phi(d / (sigma sqrt(30))))
    z = -math.log(0.95) / (math.log(1.01) * math.sqrt(30))
    risk = 2 * (1 - statistics.NormalDist().cdf(z))
    eng = zigzag_engine(level)
    assert eng.sessions["s"].margin.leverage("XUSDT") == leverage
    (below,) = eng.on_signal(signal(round(confidence - 0.01, 2)))
    assert below.action == "hold" and "below threshold" in below.reasoning
    (decision,) = eng.on_signal(signal(confidence))
    assert decision.intel == level and decision.risk_score == pytest.approx(risk, abs=1e-6)
    if risk > tolerance:
        assert decision.action == "hold" and "above the tolerance" in decision.reasoning
        return
    assert decision.action == "buy"
    (order,) = eng.sessions["s"].venue.open_orders()
    assert order.qty == (D(10_000) * D(fraction) / 100).quantize(D("0.1"), rounding="ROUND_DOWN")  # mid 100
    assert (order.stop_loss, order.take_profit) == (D(95), D(110))  # -5% / +10% of 100: real child orders


def test_levels_below_the_zigzags_risk_hold_and_above_trade():
    actions = {lv: zigzag_engine(lv).on_signal(signal(1.0))[0].action for lv in TABLE}
    assert actions == {lv: "hold" if lv <= 5 else "buy" for lv in TABLE}  # risk about 0.347


# --- strategies -------------------------------------------------------------------------------------------------
def test_mean_reversion_matches_an_independent_z_score():
    closes = [100, 101, 99, 100, 102, 98, 100, 101, 95, 100, 100.2, 106, 100]
    strat = MeanReversion(window=5, entry_z=1.5, exit_z=0.3, allow_short=True)
    got = []
    for i, c in enumerate(closes):
        got += [(i, t.target, round(t.confidence, 9)) for t in strat.on_bar(Bar("X", i, i + 1, c, c, c, c, 0, 0))]
    expected = []
    for i in range(4, len(closes)):
        window = closes[i - 4:i + 1]
        z = (closes[i] - statistics.fmean(window)) / statistics.pstdev(window)
        target = "long" if z <= -1.5 else "short" if z >= 1.5 else "flat" if abs(z) <= 0.3 else None
        if target:
            expected.append((i, target, round(min(1.0, abs(z) / 3), 9)))
    assert got == expected and {t for _, t, _ in got} == {"long", "short", "flat"}




class Buggy(Strategy):
    """A user's strategy with a bug: it raises on its fifth bar."""

    def __init__(self):
        self.bars = 0

    def on_bar(self, bar):
        self.bars += 1
        if self.bars == 5:
            raise ZeroDivisionError("division by zero")
        return []


def test_a_strategy_that_raises_pauses_its_own_session_only(tape):
    instruments, batches = tape
    buggy = SessionConfig(id="buggy", strategy="test_sessions:Buggy")  # by dotted path, as a user's
    out = play(Engine(0, 1, instruments, [TREND, buggy]), batches)
    assert dumps(of(out, "trend")) == dumps(of(play(Engine(0, 1, instruments, [TREND]), batches), "trend"))
    (alert,) = [a for a in out if a.kind == "alert" and a.session == "buggy"]
    assert alert.severity == "error" and "ZeroDivisionError: division by zero" in alert.text
    assert [m.status for m in of(out, "buggy", "session")] == ["running", "paused"]
    assert of(out, "buggy", "equity")  # its account goes on being marked
