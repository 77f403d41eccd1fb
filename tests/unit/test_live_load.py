"""bench/live_load.py, the live-like Bybit load of bench_scale: it follows the recorded Bybit frames' message mix,
its messages are ones the live feed's normalizer takes, depth goes only to the traded symbols, and a seed
decides it all."""
from __future__ import annotations

import importlib.util
import math
import sys
from collections import Counter, defaultdict
from decimal import Decimal
from statistics import fmean

import orjson
import pytest

from builders import ROOT
from papertape.core.instruments import Instrument
from streams.bybit.v5 import BybitNormalizer

# bench/ is not a package: loaded by its file
_spec = importlib.util.spec_from_file_location("bench_live_load", ROOT / "bench" / "live_load.py")
assert _spec and _spec.loader
live_load = importlib.util.module_from_spec(_spec)
sys.modules["bench_live_load"] = live_load  # the dataclasses of the module look themselves up there
_spec.loader.exec_module(live_load)

RECORDING = ROOT / "tests" / "data" / "bybit" / "ws" / "bybit_derivatives_v5_messages.jsonl"
BURST = 3.0


def recorded_mix() -> dict[str, float]:
    """The recording's rates, read here on their own: per topic the pushes of one recording (the same topic
    within 5 s of each other); the trade rate of the busiest USDT perpetual from its turnover."""
    msgs = [orjson.loads(line) for line in RECORDING.read_bytes().splitlines() if line.strip()]
    by_topic = defaultdict(list)
    for m in msgs:
        by_topic[m["topic"]].append(m["ts"])
    gaps: dict[str, list[int]] = defaultdict(list)
    for topic, ts in by_topic.items():
        ts.sort()
        gaps[topic.split(".")[0] + (".1" if topic.startswith("orderbook.1.") else "")] += [
            b - a for a, b in zip(ts, ts[1:]) if b - a < 5000]
    trades = [m["data"] for m in msgs if m["topic"].startswith("publicTrade.")]
    usd = [float(t["v"]) if t["s"].endswith("USD") else float(t["v"]) * float(t["p"]) for ts in trades for t in ts]
    turnover = max(float(m["data"]["turnover24h"]) for m in msgs
                   if m["topic"].startswith("tickers.") and m["topic"].endswith("USDT") and m["type"] == "snapshot")
    per_message = sum(map(len, trades)) / len(trades)
    return {"tickers": 1000 / fmean(gaps["tickers"]), "orderbook.1": 1000 / fmean(gaps["orderbook.1"]),
            "orderbook.50": 1000 / fmean(gaps["orderbook"]),
            "publicTrade": turnover / 86_400 / fmean(usd) / per_message, "trades_per_message": per_message}


def universe(n: int) -> list[Instrument]:
    return [Instrument(f"X{i:03d}USDT", Decimal("0.10") if i % 2 else Decimal("0.01"), Decimal("0.001"),
                       Decimal("0.001"), Decimal(5)) for i in range(1, n + 1)]


def count_tolerance(expected: float) -> float:
    """Four standard deviations of a count of bursts (Poisson starts, geometric sizes of mean BURST): the
    variance of such a count is its mean times E[K^2]/E[K] = 2 BURST - 1."""
    return 4 * math.sqrt(expected * (2 * BURST - 1))


def test_the_hottest_symbol_gets_the_recorded_rates():
    want = recorded_mix()
    seconds = 300
    load = live_load.LiveLoad(universe(1), {"X001USDT"}, live_load.load_recorded(), seed=3, burst=BURST)
    msgs = [orjson.loads(raw) for _, raw in load.messages(seconds)]
    deltas = [m for m in msgs if m["type"] == "delta" or m["topic"].startswith("publicTrade.")]
    got = Counter(m["topic"].rsplit(".", 1)[0] for m in deltas)
    for topic in ("tickers", "orderbook.1", "orderbook.50", "publicTrade"):
        expected = want[topic] * seconds
        assert abs(got[topic] - expected) < count_tolerance(expected), (topic, got[topic], expected)
    per_message = [len(m["data"]) for m in deltas if m["topic"].startswith("publicTrade.")]
    assert abs(fmean(per_message) - want["trades_per_message"]) < 0.15


def test_every_message_normalizes_in_order_with_depth_only_for_traded_symbols():
    instruments = universe(40)
    deep = {i.symbol for i in instruments[::4]}
    load = live_load.LiveLoad(instruments, deep, live_load.load_recorded(), seed=7, zipf=1.0)
    msgs = list(load.messages(20))
    norm = BybitNormalizer()
    topics: dict[str, set[str]] = defaultdict(set)
    last = 0
    for ts, raw in msgs:
        assert ts >= last
        last = ts
        frames, note = norm.on_message(raw, ts * 1_000_000)  # raises on a refused message
        assert note is None and len(frames) == 1
        frame = orjson.loads(frames[0].json)
        assert frame["status"] == "live"
        kind, _, symbol = orjson.loads(raw)["topic"].rpartition(".")
        topics[kind].add(symbol)
        tick = Decimal("0.10") if int(symbol[1:4]) % 2 else Decimal("0.01")
        prices = [frame[k] for k in ("bid", "ask") if frame[k]] + [p for p, _ in frame["bids"] + frame["asks"]]
        prices += [t["price"] for t in frame["trades"]]
        assert all(Decimal(p) > 0 and Decimal(p) % tick == 0 for p in prices), prices
    names = {i.symbol for i in instruments}
    assert topics["tickers"] == topics["orderbook.1"] == names  # a snapshot each at least
    assert topics["publicTrade"] <= names and len(topics["publicTrade"]) > len(names) / 2  # quiet ones may not trade
    assert topics["orderbook.50"] == deep
    assert norm.ignored == 0
    assert sorted(load.by_symbol().values(), reverse=True) == pytest.approx([1 / r for r in range(1, 41)])


def test_a_seed_decides_the_load():
    def run(seed: int) -> list[tuple[int, bytes]]:
        return list(live_load.LiveLoad(universe(10), {"X001USDT"}, live_load.load_recorded(), seed=seed).messages(5))

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_frames_refuse_a_gap():
    """The generated books keep their update ids consecutive; a lost message is a gap that frames() reports."""
    load = live_load.LiveLoad(universe(1), set(), live_load.load_recorded(), seed=1)
    msgs = list(load.messages(30))
    ob1 = [i for i, (_, raw) in enumerate(msgs) if b'"orderbook.1.' in raw and b'"delta"' in raw]
    del msgs[ob1[1]]
    with pytest.raises(ValueError, match="Gap"):
        list(live_load.frames(msgs))
