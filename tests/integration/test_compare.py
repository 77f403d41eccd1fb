"""`papertape compare` on real runs: two configs of one scripted strategy on the bundled tape (latency and fees
differ), and one config replayed into two data directories. The terms are checked against the archive with SQL,
and they add up to the P&L difference exactly."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from browser import dom, drawn
from builders import papertape, query_rows
from papertape.core.metrics.drift import TERMS

ORDERS = """[
  { at = 1723161260000, symbol = "BTCUSDT", side = "buy", qty = "0.010" },
  { at = 1723161275000, symbol = "BTCUSDT", side = "sell", qty = "0.010" },
  { at = 1723161280000, symbol = "ETHUSDT", side = "sell", qty = "0.5" },
  { at = 1723161300000, symbol = "ETHUSDT", side = "buy", qty = "0.5" },
  { at = 1723161310000, symbol = "BTCUSDT", side = "buy", qty = "0.020" },
  { at = 1723161330000, symbol = "BTCUSDT", side = "sell", qty = "0.030" },
  { at = 1723161345000, symbol = "BTCUSDT", side = "buy", qty = "0.010" },
  { at = 1723161350000, symbol = "ETHUSDT", side = "buy", qty = "0.3" },
]"""

CONFIG = f"""
md_partitions = 2
session_partitions = 2
replay_seconds = 100

[[sessions]]
id = "quick"
strategy = "scripted"
latency_ms = 20
params = {{ orders = {ORDERS} }}

[[sessions]]
id = "slow"
strategy = "scripted"
latency_ms = 900
taker_fee = 0.0007
params = {{ orders = {ORDERS} }}
"""


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    config = root / "papertape.toml"
    config.write_text(CONFIG)
    for name in ("first", "second"):
        r = papertape("run", "--config", str(config), "--data-dir", str(root / name), timeout=400)
        assert r.returncode == 0, r.stdout + r.stderr
    return root / "first", root / "second"


def compare(*args: str) -> dict:
    r = papertape("compare", "--json", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def pnl_and_fees(data_dir, session: str) -> tuple[Decimal, Decimal]:
    q = query_rows(data_dir, {
        "end": f"SELECT toString(argMax(equity, ts)) FROM equity WHERE session = '{session}'",
        "deposit": f"SELECT argMin(config, ts) FROM sessions WHERE session = '{session}'",
        "fees": f"SELECT toString(sum(fee)) FROM fills WHERE session = '{session}'"})
    deposit = Decimal(str(json.loads(q["deposit"][0][0])["balance"]))
    return Decimal(q["end"][0][0]) - deposit, Decimal(q["fees"][0][0])


@pytest.mark.slow  # two 100 s replays through the real pipeline (~40 s)
def test_two_configs_on_one_tape_are_explained_term_by_term(two_runs):
    first, _ = two_runs
    d = compare("quick", "slow", "--data-dir", str(first))
    pnl_a, fees_a = pnl_and_fees(first, "quick")
    pnl_b, fees_b = pnl_and_fees(first, "slow")
    assert Decimal(d["difference"]) == pnl_a - pnl_b != 0
    terms = {k: Decimal(v) for k, v in d["terms"].items()}
    assert sum(terms.values()) == Decimal(d["explained"]) == pnl_a - pnl_b  # exactly
    assert terms["fees"] == -(fees_a - fees_b) > 0  # the slow one pays the higher taker fee
    assert terms["only_a"] == terms["only_b"] == 0  # the same orders: every trade matched
    assert all(p["a"] and p["b"] for p in d["pairs"]) and len(d["pairs"]) >= 4
    # 880 ms more latency: the market moved between the arrivals of some entries or exits
    assert terms["entry_timing"] != 0 or terms["exit_timing"] != 0
    for p in d["pairs"]:
        net_a, net_b = Decimal(p["a"]["net"]), Decimal(p["b"]["net"])
        assert sum(map(Decimal, p["terms"].values())) == net_a - net_b


@pytest.mark.slow
def test_one_config_replayed_twice_does_not_drift(two_runs):
    first, second = two_runs
    d = compare(f"slow@{first}", f"slow@{second}")
    assert Decimal(d["difference"]) == 0 and all(Decimal(v) == 0 for v in d["terms"].values())
    assert len(d["pairs"]) >= 4 and all(p["a"] and p["b"] for p in d["pairs"])


def test_compare_refuses_an_unknown_session(archived_run):
    r = papertape("compare", "fast", "nosuch", "--data-dir", str(archived_run.data_dir))
    assert r.returncode == 1 and "no session 'nosuch'" in r.stderr


@pytest.mark.slow
def test_the_report_draws_the_comparison(two_runs, tmp_path):
    """`papertape report --compare`: the drift section's waterfall is drawn in Chromium, its table holds the terms."""
    first, _ = two_runs
    d = compare("quick", "slow", "--data-dir", str(first))
    page = tmp_path / "report.html"
    r = papertape("report", "--data-dir", str(first), "--out", str(page), "--compare", "quick", "slow")
    assert r.returncode == 0, r.stderr
    (section,) = [n for n in dom(page).find_all("section") if n.attrs.get("id") == "drift-1"]
    (chart,) = section.find_all("div", cls="chart")
    assert drawn(chart)["svg"] >= 1 and drawn(chart)["bars"] == len(TERMS) + 2  # B, every term, A
    rows = {row.find_all("td")[0].text(): row.find_all("td")[1].text() for row in section.find_all("tr")
            if row.find_all("td")}
    assert {k: Decimal(v) for k, v in rows.items() if k in TERMS} == {k: Decimal(v) for k, v in d["terms"].items()}
    assert Decimal(rows["total"]) == Decimal(d["difference"])
