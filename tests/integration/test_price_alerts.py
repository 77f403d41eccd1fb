"""Price rules and system alerts on the real pipeline: the price alerts in the archive are exactly those a plain
computation over the raw recording says, and a worker killed at the start leaves a system alert.

The rules see every frame's mark (the mid of the venue's top of book), not md.marks, which is conflated by wall-clock
batches (a replay at full speed leaves a couple of marks per symbol for these 30 s)."""
import asyncio
import gzip
import json
from decimal import Decimal as D

import pytest

from builders import run_settings
from papertape.app.runtime import Pipeline
from papertape.config import BUNDLED_TAPE, AlertsSettings
from papertape.core.alert_rules import PriceRule

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
SECONDS = 30

# The bundled tape's first 30 s: BTCUSDT's mid starts at 61800.25 and rises to 61839.75; ETHUSDT's starts at
# 2681.625 and dips to 2681.175 within 20 s.
RULES = [
    PriceRule(id="btc-up", symbol="BTCUSDT", above=D("61805")),
    PriceRule(id="btc-move", symbol="BTCUSDT", move_pct=D("0.02"), window_s=5, severity="info"),
    PriceRule(id="eth-down", symbol="ETHUSDT", below=D("2681.5"), severity="critical"),
]


def tape_marks() -> dict[str, list[tuple[int, D]]]:
    """Per symbol, (event time, mid of the last bookTicker) at every frame of the first SECONDS of the recording,
    in the replay's order (event time, then receive time); frames before a symbol's first bookTicker have none."""
    lines = {}
    for path, symbol in zip(BUNDLED_TAPE, ("BTCUSDT", "ETHUSDT")):
        with gzip.open(path, "rt") as f:
            msgs = [(json.loads(payload), int(recv)) for recv, payload in (line.split(" ", 1) for line in f)]
        lines[symbol] = sorted((m["data"]["E"], recv, m["stream"].split("@")[1], m["data"])
                               for m, recv in msgs if "stream" in m)
    end = min(frames[0][0] for frames in lines.values()) + SECONDS * 1000
    marks: dict[str, list[tuple[int, D]]] = {}
    for symbol, frames in lines.items():
        mid = None
        for e, _, kind, d in frames:
            if e >= end:
                break
            if kind == "bookTicker":
                mid = (D(d["b"]) + D(d["a"])) / 2
            if mid is not None:
                marks.setdefault(symbol, []).append((e, mid))
    return marks


def crossings(marks: list[tuple[int, D]], rule: PriceRule) -> list[int]:
    """Event times at which the mark reached the level from the other side."""
    out = []
    for (_, before), (ts, now) in zip(marks, marks[1:]):
        if (rule.above is not None and before < rule.above <= now
                or rule.below is not None and before > rule.below >= now):
            out.append(ts)
    return out


def moves(marks: list[tuple[int, D]], rule: PriceRule) -> list[int]:
    """Event times at which the mark was move_pct or more away from any mark of the last window_s, counting only
    marks from the last firing on."""
    out, since = [], 0
    for i, (ts, now) in enumerate(marks):
        window = [p for t, p in marks[since:i] if t >= ts - rule.window_s * 1000]
        if any(abs(now - p) * 100 >= rule.move_pct * p for p in window):
            out.append(ts)
            since = i
    return out


async def run(settings) -> list:
    pipe = Pipeline(settings, console_alerts="critical")
    await pipe.start()
    try:
        pipe.kill_worker()  # the supervisor replaces it: a system alert
        await pipe.replay(progress=False)
        await pipe.wait_finished(timeout=240)
        await asyncio.sleep(0.5)  # the supervisor's own alert is sent in the background
        await pipe.recorder.wait_caught_up()
        return pipe.query("SELECT id, type, severity, source, title, text FROM alerts "
                          "WHERE type IN ('price', 'system') ORDER BY id")["rows"]
    finally:
        await pipe.stop()


def test_price_rules_fire_exactly_where_the_recorded_mids_cross_and_a_worker_restart_alerts(tmp_path):
    settings = run_settings(data_dir=tmp_path, md_partitions=2, session_partitions=2, sessions=[],
                            replay_seconds=SECONDS, alerts=AlertsSettings(rules=RULES))
    alerts = asyncio.run(run(settings))
    marks = tape_marks()

    expected = {}
    for rule in RULES:
        times = (moves if rule.move_pct is not None else crossings)(marks[rule.symbol], rule)
        assert times, f"{rule.id} must fire on this tape: choose another level"
        expected |= {f"price:{rule.id}:{ts}": rule for ts in times}
    price = {row[0]: row for row in alerts if row[1] == "price"}
    assert sorted(price) == sorted(expected)
    for alert_id, (_, _, severity, source, title, _) in price.items():
        rule = expected[alert_id]
        assert (severity, source) == (rule.severity, "price-rules")
        assert title.startswith(rule.symbol)

    system = [row for row in alerts if row[1] == "system" and row[3] == "supervisor"]
    assert [(sev, title) for _, _, sev, _, title, _ in system] == [("error", "worker restarted")], system
    assert "exited with code -9" in system[0][5]
