"""Price rules worked by hand: which marks fire, with which ids, and that a checkpoint resumes them exactly."""
import json
from decimal import Decimal as D

import pytest
from pydantic import ValidationError

from papertape.core.alert_rules import PriceRule, PriceWatch
from papertape.core.instruments import DEFAULT_INSTRUMENTS
from papertape.core.market.partition import MarketPartition
from schemas import MarketBatch, MarketFrame


def fired(watch: PriceWatch, marks: list[tuple[int, str]], symbol: str = "BTCUSDT") -> list[str]:
    """The ids of the alerts the marks (ts, price) fire, in order."""
    return [a.id for ts, p in marks for a in watch.on_mark(symbol, ts, D(p))]


def test_a_rule_has_exactly_one_trigger():
    for bad in ({}, {"above": "100", "below": "90"}, {"above": "100", "move_pct": "1"}):
        with pytest.raises(ValidationError, match="exactly one of above, below, move_pct"):
            PriceRule(id="r", symbol="BTCUSDT", **bad)
    with pytest.raises(ValidationError):
        PriceRule(id="r", symbol="BTCUSDT", above="-1")
    with pytest.raises(ValidationError):
        PriceRule(id="bad id", symbol="BTCUSDT", above="1")
    assert PriceRule(id="r", symbol="BTCUSDT", move_pct="0.5", window_s=60).move_pct == D("0.5")


def test_above_fires_once_per_crossing_from_below():
    watch = PriceWatch([PriceRule(id="up", symbol="BTCUSDT", above=D("100"))])
    marks = [(1, "101"),  # the first mark: no crossing (nothing before it)
             (2, "99"), (3, "99.5"),
             (4, "100"),  # 99.5 -> 100: at the level counts as crossing
             (5, "102"), (6, "100"),  # stays at/above: nothing
             (7, "99.99"),  # back below: re-armed
             (8, "100.01"),  # crossing again
             (9, "99"), (10, "98")]
    assert fired(watch, marks) == ["price:up:4", "price:up:8"]


def test_below_fires_once_per_crossing_from_above_and_other_symbols_are_ignored():
    watch = PriceWatch([PriceRule(id="dn", symbol="ETHUSDT", below=D("2000"), severity="critical")])
    assert fired(watch, [(1, "1900"), (2, "1800")], symbol="BTCUSDT") == []
    alerts = [a for ts, p in [(1, "2001"), (2, "2000"), (3, "1999"), (4, "2000.5"), (5, "1500")]
              for a in watch.on_mark("ETHUSDT", ts, D(p))]
    assert [a.id for a in alerts] == ["price:dn:2", "price:dn:5"]
    first = alerts[0]
    assert (first.type, first.severity, first.ts, first.title) == ("price", "critical", 2,
                                                                  "ETHUSDT crossed below 2000")
    assert "mark 2000 (was 2001)" in first.text


def test_move_pct_either_way_within_the_window_then_rearmed_from_the_firing_mark():
    # 1% within 10 s
    watch = PriceWatch([PriceRule(id="mv", symbol="BTCUSDT", move_pct=D("1"), window_s=10)])
    marks = [(0, "100"),
             (5_000, "100.5"),
             (9_000, "100.99"),  # +0.99% from 100: not yet
             (10_000, "101"),  # +1% from 100, which is exactly 10 s old: fires; the window restarts at 101
             (12_000, "101.9"),  # from 101: +0.89%
             (13_000, "100.3"),  # from 101.9 (the high): -1.57%: fires; restarts at 100.3
             (20_000, "99.4"),  # -0.897%
             (23_001, "100.3"),  # 13_000 left the window (older than 10 s); from 99.4: +0.905%
             (30_000, "100.39")]  # from 99.4 (20_000, still in): +0.996%: not yet
    assert fired(watch, marks) == ["price:mv:10000", "price:mv:13000"]


def test_a_move_older_than_the_window_does_not_count():
    watch = PriceWatch([PriceRule(id="mv", symbol="BTCUSDT", move_pct=D("2"), window_s=1)])
    assert fired(watch, [(0, "100"), (1_001, "103"), (1_500, "103.5")]) == []
    assert fired(watch, [(2_000, "100.9")]) == ["price:mv:2000"]  # -2.51% from 103.5, 500 ms before


def test_a_rule_changed_since_the_checkpoint_starts_afresh():
    """Same id, another kind or level: the saved state is not its own (a crossing rule's last mark is no window)."""
    old = PriceWatch([PriceRule(id="r", symbol="BTCUSDT", above=D("100"))])
    old.on_mark("BTCUSDT", 1, D("99"))
    changed = PriceWatch([PriceRule(id="r", symbol="BTCUSDT", move_pct=D("1"), window_s=10)])
    changed.load(json.loads(json.dumps(old.to_json())))  # a market actor restored with the new settings
    assert changed.on_mark("BTCUSDT", 2, D("99")) == []
    moved = PriceWatch([PriceRule(id="r", symbol="BTCUSDT", above=D("99.5"))])
    moved.load(old.to_json())
    assert moved.on_mark("BTCUSDT", 3, D("100")) == []  # no last mark carried over from the old level's rule


def test_a_watch_restored_from_its_json_goes_on_as_if_never_stopped():
    rules = [PriceRule(id="up", symbol="BTCUSDT", above=D("100")),
             PriceRule(id="mv", symbol="BTCUSDT", move_pct=D("1"), window_s=5)]
    prices = ["99", "99.5", "100.2", "99.1", "98.9", "99.8", "100", "101", "99.6", "100.1", "98", "99", "100.3"]
    marks = [(i * 1_000, p) for i, p in enumerate(prices)]
    whole = fired(PriceWatch(rules), marks)
    # above 100: 99.5 -> 100.2, 99.8 -> 100, 99.6 -> 100.1, 99 -> 100.3. 1% in 5 s: 99 -> 100.2 (+1.21%), then
    # from 100.2 -> 99.1 (-1.10%), from 99.1: 98.9 (the low) -> 100 (+1.11%), from 100: 101 (+1% exactly), from
    # 101: 99.6 (-1.39%), from 99.6: 100.1 (the high) -> 98 (-2.10%), from 98: 99 (+1.02%), from 99: 100.3 (+1.31%)
    assert whole == ["price:up:2000", "price:mv:2000", "price:mv:3000", "price:up:6000", "price:mv:6000",
                     "price:mv:7000", "price:mv:8000", "price:up:9000", "price:mv:10000", "price:mv:11000",
                     "price:up:12000", "price:mv:12000"]
    for cut in range(len(marks)):
        head = PriceWatch(rules)
        before = fired(head, marks[:cut])
        restored = PriceWatch(rules)
        restored.load(json.loads(json.dumps(head.to_json())))
        assert before + fired(restored, marks[cut:]) == whole, cut


def test_a_rule_added_since_the_checkpoint_starts_afresh():
    old = PriceWatch([PriceRule(id="up", symbol="BTCUSDT", above=D("100"))])
    fired(old, [(0, "99")])
    new = PriceWatch([PriceRule(id="up", symbol="BTCUSDT", above=D("100")),
                      PriceRule(id="dn", symbol="BTCUSDT", below=D("99.5"))])
    new.load(old.to_json())
    assert fired(new, [(1, "98"), (2, "100")]) == ["price:up:2"]  # "dn" had no mark before 98


def test_the_market_actor_runs_the_rules_over_every_frame_and_checkpoints_them():
    rules = [PriceRule(id="up", symbol="BTCUSDT", above=D("100.6"))]
    mp = MarketPartition(0, DEFAULT_INSTRUMENTS, 1, rules)
    quotes = [("100", "101"), ("100.1", "101.1"), ("100", "101"), ("100.2", "101.2")]  # mids 100.5, 100.6, ...
    frames = [MarketFrame(id=f"f{i}", ts=i, venue="t", symbol="BTCUSDT", recv_ts=0, bid=b, ask=a)
              for i, (b, a) in enumerate(quotes)]
    # the rule sees every frame; md.marks gets one mark when the second is over (the restored partition's)
    mp.on_message(MarketBatch(id="b", ts=2, origin="t", wm=2, frames=frames[:3]), 0)
    assert [m.id for m in mp.flush()[1]] == ["price:up:1"]
    again = MarketPartition(0, DEFAULT_INSTRUMENTS, 1, rules)
    again.load(json.loads(json.dumps(mp.to_dict())))
    again.on_message(MarketBatch(id="c", ts=3, origin="t", wm=1000, frames=frames[3:]), 1)
    assert [m.id for m in again.flush()[1]] == ["price:up:3", "mark:BTCUSDT:3"]


def frame(symbol: str, ts: int, status: str = "live") -> MarketFrame:
    return MarketFrame(id=f"f{ts}", ts=ts, venue="test", symbol=symbol, recv_ts=0, bid="100", ask="101",
                       status=status)


def test_the_market_actor_alerts_once_per_symbol_going_stale():
    mp = MarketPartition(0, DEFAULT_INSTRUMENTS, 1)
    frames = [frame("BTCUSDT", 1), frame("BTCUSDT", 2, "stale"), frame("ETHUSDT", 2, "stale"),
              frame("BTCUSDT", 3, "stale"), frame("BTCUSDT", 4), frame("BTCUSDT", 5, "stale")]
    mp.on_message(MarketBatch(id="b", ts=5, origin="t", wm=5, frames=frames), 0)
    _, out = mp.flush()
    alerts = [m for m in out if m.kind == "alert"]
    assert [a.id for a in alerts] == ["stale:BTCUSDT:2", "stale:ETHUSDT:2", "stale:BTCUSDT:5"]
    assert {(a.type, a.title) for a in alerts} == {("system", "stale feed")}
    assert "ETHUSDT" in alerts[1].text
    # the stale symbols are in the checkpoint: a restarted actor does not alert again for a feed still stale
    again = MarketPartition(0, DEFAULT_INSTRUMENTS, 1)
    again.load(mp.to_dict())
    again.on_message(MarketBatch(id="c", ts=6, origin="t", wm=6, frames=[frame("ETHUSDT", 6, "stale")]), 1)
    assert [m for m in again.flush()[1] if m.kind == "alert"] == []
