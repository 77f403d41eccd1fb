"""Issue 6 as a user tries it: sessions with different strategies and intel levels side by side in one
`papertape run` on real Bybit BTCUSDT minute bars (2022-12-13 00:00-12:00 UTC, Lean, Apache-2.0). One trips a
circuit breaker and is blocked while the other trades on; stop-loss, take-profit and max hold close positions; a
user's strategy is loaded by dotted path; every decision is in ClickHouse with its reasoning. Trigger times are
worked out here from the raw files."""
import json
import zipfile
from decimal import ROUND_CEILING, ROUND_FLOOR
from decimal import Decimal as D

import pytest

from builders import papertape
from tape_engine import LEAN_DAY, LEAN_START

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
MIN = 60_000
ENTER = LEAN_START + 10 * MIN
LATENCY = 50
EVENT_NO = "toUInt32(splitByChar(':', id)[-1])"  # an order event's id ends in the order's event number


def session(sid, auto_close, **extra):
    lines = [f'[[sessions]]\nid = "{sid}"', 'strategy = "user_strategies:EnterAt"', "intel = 10",
             f"params = {{ at = {ENTER} }}",
             "auto_close = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in auto_close.items()) + " }"]
    return "\n".join(lines + [f"{k} = {json.dumps(v)}" for k, v in extra.items()])


CONFIG = "\n\n".join([
    f"md_partitions = 2\nsession_partitions = 2\nreplay = {json.dumps([str(p) for p in LEAN_DAY])}",
    '[[sessions]]\nid = "trend"\nstrategy = "trend_following"\nintel = 7\nparams = { fast = 5, slow = 20 }\n'
    "risk = { max_daily_trades = 4 }",
    '[[sessions]]\nid = "revert"\nstrategy = "mean_reversion"\nintel = 8\nparams = { window = 20 }',
    session("sl", {"stop_loss": "0.004", "take_profit": False, "max_hold_ms": False}),
    session("tp", {"stop_loss": False, "take_profit": "0.01", "max_hold_ms": False}),
    session("hold", {"stop_loss": False, "take_profit": False, "max_hold_ms": 2 * 3_600_000}),
])


def sql(data_dir, query):
    r = papertape("sql", "--json", "--data-dir", str(data_dir), query)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    return [dict(zip(out["columns"], row)) for row in out["rows"]]


def ms(column):
    return f"toUnixTimestamp64Milli({column})"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sessions")
    (tmp / "papertape.toml").write_text(CONFIG)
    data = tmp / "data"
    r = papertape("run", "--config", str(tmp / "papertape.toml"), "--data-dir", str(data))
    assert r.returncode == 0, r.stdout + r.stderr
    return data


def trade_closes():
    """(close time, close price) of every trade bar, from the raw Lean file."""
    with zipfile.ZipFile(LEAN_DAY[0]) as z:
        rows = [line.split(",") for line in z.read(z.namelist()[0]).decode().splitlines()]
    return [(LEAN_START + int(r[0]) + MIN, D(r[4])) for r in rows]


def quote_mids():
    with zipfile.ZipFile(LEAN_DAY[1]) as z:
        rows = [line.split(",") for line in z.read(z.namelist()[0]).decode().splitlines()]
    return [(LEAN_START + int(r[0]) + MIN, (D(r[4]) + D(r[9])) / 2) for r in rows]


def entry(data, sid):
    (d,) = sql(data, f"SELECT {ms('ts')} AS t, order_id, features FROM decisions WHERE session = '{sid}' "
                     "AND action = 'buy'")
    (f,) = sql(data, f"SELECT {ms('ts')} AS t, price, qty FROM fills WHERE order_id = '{d['order_id']}'")
    return d, f


def test_one_session_trips_a_breaker_and_is_blocked_while_the_other_trades_on(run):
    (trip,) = sql(run, f"SELECT {ms('ts')} AS t, text FROM alerts WHERE session = 'trend' "
                       "AND title = 'circuit breaker tripped: daily_trades'")
    assert "4 orders today, the most a day is 4" in trip["text"]
    orders = sql(run, f"SELECT {ms('ts')} AS t FROM decisions WHERE session = 'trend' AND action IN ('buy', 'sell')")
    assert len(orders) == 4 and max(int(o["t"]) for o in orders) == int(trip["t"])
    blocked = sql(run, f"SELECT {ms('ts')} AS t, reasoning FROM decisions WHERE session = 'trend' "
                       "AND action = 'blocked'")
    assert blocked and all(int(b["t"]) > int(trip["t"]) for b in blocked)
    assert all("circuit breaker daily_trades tripped" in b["reasoning"] for b in blocked)
    later = sql(run, f"SELECT count() AS n FROM fills WHERE session = 'revert' AND {ms('ts')} > {trip['t']}")
    assert int(later[0]["n"]) >= 4  # the other session trades on
    (status,) = sql(run, "SELECT status, breakers FROM sessions WHERE session = 'trend' "
                         "ORDER BY ts DESC, id DESC LIMIT 1")
    assert status["status"] == "running" and "daily_trades" in json.loads(status["breakers"])


def test_every_decision_is_in_clickhouse_with_its_reasoning_and_scores(run):
    rows = sql(run, "SELECT session, action, count() AS n, countIf(reasoning = '') AS empty, "
                    "countIf(risk_score IS NULL) AS no_risk, min(intel) AS lo, max(intel) AS hi "
                    "FROM decisions GROUP BY session, action ORDER BY session, action")
    seen = {(r["session"], r["action"]): r for r in rows}
    assert {("trend", "buy"), ("trend", "hold"), ("trend", "blocked"), ("revert", "buy"),
            ("revert", "hold")} <= set(seen)
    assert all(int(r["empty"]) == 0 for r in rows)
    assert (seen[("trend", "buy")]["lo"], seen[("revert", "buy")]["hi"]) == (7, 8)
    assert int(seen[("revert", "buy")]["no_risk"]) == 0  # every entry was scored
    features = sql(run, "SELECT features FROM decisions WHERE session = 'revert' AND action = 'buy' LIMIT 1")
    assert {"z", "mean", "mark"} <= set(json.loads(features[0]["features"]))


def test_session_list_shows_every_session_with_its_equity(run):
    r = papertape("session", "list", "--json", "--data-dir", str(run))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    listed = {row[out["columns"].index("session")]: dict(zip(out["columns"], row)) for row in out["rows"]}
    assert set(listed) == {"trend", "revert", "sl", "tp", "hold"}
    for sid, row in listed.items():
        (eq,) = sql(run, f"SELECT equity FROM equity WHERE session = '{sid}' ORDER BY ts DESC LIMIT 1")
        assert D(str(row["equity"])) == D(str(eq["equity"]))
    assert "daily_trades" in str(listed["trend"]["breakers"])


@pytest.mark.parametrize("sid, move, rounding, crossed", [
    ("sl", D("0.996"), ROUND_FLOOR, lambda close, trigger: close <= trigger),  # -0.4%: the first trade below it
    ("tp", D("1.01"), ROUND_CEILING, lambda close, trigger: close >= trigger),  # +1%: the first trade above it
])
def test_stop_loss_and_take_profit_are_real_child_orders_triggered_by_the_first_trade_through(run, sid, move,
                                                                                           rounding, crossed):
    d, f = entry(run, sid)
    mark = D(json.loads(d["features"])["mark"])
    # the mid the session decided at: the bar closed at the minute's first frame (its trade bar, before its quote bar)
    assert mark == [m for t, m in quote_mids() if t < int(d["t"])][-1]
    assert int(f["t"]) == int(d["t"]) + LATENCY
    trigger = (mark * move / D("0.1")).to_integral_value(rounding) * D("0.1")  # the tick is 0.1
    first = next(t for t, c in trade_closes() if t > int(f["t"]) and crossed(c, trigger))
    events = sql(run, f"SELECT {ms('ts')} AS t, status, trigger_price FROM order_events "
                      f"WHERE session = '{sid}' AND order_id = '{d['order_id']}-{sid}' ORDER BY t, {EVENT_NO}")
    assert [e["status"] for e in events] == ["new", "triggered", "filled"]
    assert D(events[0]["trigger_price"]) == trigger and int(events[1]["t"]) == first
    assert position_after(run, sid) == 0


def test_max_hold_closes_the_position_two_hours_of_event_time_after_it_opened(run):
    _, f = entry(run, "hold")
    (close,) = sql(run, f"SELECT {ms('ts')} AS t, reasoning, order_id FROM decisions WHERE session = 'hold' "
                        "AND action = 'sell'")
    assert int(close["t"]) == int(f["t"]) + 2 * 3_600_000 and "max hold time 2 h reached" in close["reasoning"]
    (fill,) = sql(run, f"SELECT {ms('ts')} AS t, qty FROM fills WHERE order_id = '{close['order_id']}'")
    assert int(fill["t"]) == int(close["t"]) + LATENCY and D(fill["qty"]) == D(f["qty"])
    assert position_after(run, "hold") == 0


def position_after(data, sid):
    fills = sql(data, f"SELECT side, qty FROM fills WHERE session = '{sid}'")
    return sum(D(x["qty"]) * (1 if x["side"] == "buy" else -1) for x in fills)
