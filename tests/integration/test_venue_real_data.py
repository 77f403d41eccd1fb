"""Every order type through `papertape run` on real Bybit BTCUSDT data (Lean minute trade and quote bars of
2022-12-13 00:00-12:00 UTC and that day's real funding rates), with fees, funding and the liquidation worked out
here from the raw files and Bybit's published rules, without any papertape code."""
import json
import zipfile
from decimal import ROUND_HALF_UP
from decimal import Decimal as D

import pytest

from builders import DATA, papertape

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
DATA = DATA / "replay"
QUOTES = DATA / "cryptofuture_bybit_minute_btcusdt_20221213_quote.zip"
FUNDING = DATA / "cryptofuture_bybit_margin_interest_btcusdt.csv"
TAPE = [DATA / "cryptofuture_bybit_minute_btcusdt_20221213_trade.zip", QUOTES, FUNDING]
DAY = 1670889600000  # 2022-12-13 00:00 UTC
MIN = 60_000
TAKER, MAKER = D("0.00055"), D("0.0002")


def at(minutes):
    return DAY + minutes * MIN


VENUE_ORDERS = [
    dict(at=at(10), id="entry", side="buy", qty="0.2", stop_loss="16900", take_profit="17400"),
    dict(at=at(20), id="gtd", side="buy", qty="0.1", type="limit", price="17000", expire_ts=at(360)),
    dict(at=at(60), amend="gtd", price="17010"),
    dict(at=at(60), id="oco-lim", side="sell", qty="0.1", type="limit", price="17300", tif="PostOnly", oco="g1"),
    dict(at=at(60), id="oco-stop", side="sell", qty="0.1", type="stop_market", trigger_price="17000", oco="g1"),
    dict(at=at(120), id="trail", side="sell", qty="0.05", type="trailing_stop", trail_percent="0.5",
         reduce_only=True),
    dict(at=at(180), id="stop-limit", side="buy", qty="0.05", type="stop_limit", trigger_price="17170",
         price="17180"),
    dict(at=at(240), id="tp-market", side="sell", qty="0.05", type="take_profit_market", trigger_price="17175",
         reduce_only=True),
    dict(at=at(300), id="ioc", side="buy", qty="0.05", type="limit", price="17200", tif="IOC"),
    dict(at=at(300), id="fok", side="buy", qty="0.05", type="limit", price="17000", tif="FOK"),
    dict(at=at(330), id="gtc", side="buy", qty="0.05", type="limit", price="17100"),
    dict(at=at(340), cancel="gtc"),
    dict(at=at(660), id="close", side="buy", qty="1", reduce_only=True),  # the OCO limit left a short of 0.1
]
for o in VENUE_ORDERS:
    if "id" in o:
        o["symbol"] = "BTCUSDT"

def inline_tables(items: list[dict]) -> str:
    """A TOML array of inline tables (JSON strings and numbers are TOML too)."""
    return "[" + ", ".join("{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in d.items()) + " }"
                           for d in items) + "]"


CONFIG = f"""
md_partitions = 2
session_partitions = 2
replay = {json.dumps([str(p) for p in TAPE])}

[[sessions]]
id = "venue"
strategy = "scripted"
params = {{ orders = {inline_tables(VENUE_ORDERS)} }}

[[sessions]]
id = "iso"
strategy = "scripted"
balance = 1000
leverage = 100
margin_mode = "isolated"
params = {{ orders = {inline_tables([dict(at=at(402), symbol="BTCUSDT", side="buy", qty="0.5")])} }}
"""


def sql(data_dir, query):
    r = papertape("sql", "--json", "--data-dir", str(data_dir), query)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    return [dict(zip(out["columns"], row)) for row in out["rows"]]


def quote_bars():
    """(close time, bid, ask) of every quote bar, from the raw Lean file."""
    with zipfile.ZipFile(QUOTES) as z:
        rows = [line.split(",") for line in z.read(z.namelist()[0]).decode().splitlines()]
    return [(DAY + int(r[0]) + MIN, D(r[4]), D(r[9])) for r in rows]


def mid_before(t):
    _, bid, ask = [q for q in quote_bars() if q[0] < t][-1]
    return (bid + ask) / 2


def cents(x):
    return x.quantize(D("0.00000001"), rounding=ROUND_HALF_UP)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("venue")
    cfg = tmp / "papertape.toml"
    cfg.write_text(CONFIG)
    data = tmp / "data"
    r = papertape("run", "--config", str(cfg), "--data-dir", str(data))
    assert r.returncode == 0, r.stdout + r.stderr
    return data


def statuses(data, session):
    """Each order's statuses in order (an event id ends in the order's event number)."""
    rows = sql(data, f"SELECT order_id, status, id FROM order_events WHERE session = '{session}'")
    out: dict[str, list[str]] = {}
    for r in sorted(rows, key=lambda r: (r["order_id"], int(r["id"].rsplit(":", 1)[1]))):
        out.setdefault(r["order_id"].removeprefix(f"{session}-c-"), []).append(r["status"])
    return out


def test_every_order_type_runs_through_the_pipeline_to_its_expected_end(run):
    st = statuses(run, "venue")
    assert st["entry"] == ["new", "filled"]
    assert st["entry-tp"][-2:] == ["triggered", "filled"] and st["entry-sl"][-1] == "cancelled"  # bracket + OCO
    assert st["gtd"] == ["new", "amended", "expired"]
    assert st["oco-lim"][-1] == "filled" and st["oco-stop"] == ["new", "cancelled"]
    assert st["trail"][-2:] == ["triggered", "filled"]
    assert st["stop-limit"][:2] == ["new", "triggered"] and st["stop-limit"][-1] == "filled"
    assert st["tp-market"][-2:] == ["triggered", "filled"]
    assert st["ioc"] == ["new", "filled"] and st["fok"] == ["new", "cancelled"]
    assert st["gtc"] == ["new", "cancelled"]
    assert st["close"] == ["new", "filled"]
    fills = sql(run, "SELECT side, qty FROM fills WHERE session = 'venue'")
    assert sum(D(f["qty"]) * (1 if f["side"] == "buy" else -1) for f in fills) == 0
    assert int(sql(run, "SELECT count() AS n FROM dead_letters")[0]["n"]) == 0


def test_fees_are_price_times_qty_times_the_maker_or_taker_rate(run):
    fills = sql(run, "SELECT price, qty, liquidity, fee, exec_type FROM fills")
    assert {f["liquidity"] for f in fills} == {"maker", "taker"}
    for f in fills:
        rate = TAKER if f["liquidity"] == "taker" else MAKER
        assert D(f["fee"]) == cents(D(f["price"]) * D(f["qty"]) * rate), f


def test_funding_at_0800_is_the_position_times_the_mark_times_the_real_rate(run):
    t = DAY + 8 * 3600 * 1000
    rate = D("-0.00022398")  # the file's 08:00 row
    fills = sql(run, f"SELECT side, qty FROM fills WHERE session = 'venue' AND ts < fromUnixTimestamp64Milli({t})")
    qty = sum(D(f["qty"]) * (1 if f["side"] == "buy" else -1) for f in fills)
    (row,) = sql(run, "SELECT ts, qty, mark, rate, amount FROM funding WHERE session = 'venue'")
    mark = mid_before(t)  # the mid of the last quote bar closed before 08:00 (the tape has no mark price)
    assert (D(row["qty"]), D(row["mark"]), D(row["rate"])) == (qty, mark, rate)
    assert D(row["amount"]) == cents(-qty * mark * rate) and D(row["amount"]) > 0  # negative rate: longs receive


def test_an_isolated_100x_long_is_liquidated_at_the_first_mark_past_its_liquidation_price(run):
    entry, liq = sql(run, "SELECT price, qty, fee, exec_type, realized_pnl, ts FROM fills WHERE session = 'iso' "
                          "ORDER BY ts, id")
    p, q = D(entry["price"]), D(entry["qty"])
    # 100x: IM = 1% of the value, MM = 0.5% (tier 1) -> liquidation price = p - (0.01 p - 0.005 p) = 0.995 p;
    # closed at the bankruptcy price p x (1 - 1/100), with the taker fee
    lp = p * D("0.995")
    first = next(c for c, b, a in quote_bars() if c > DAY + 403 * MIN and (b + a) / 2 <= lp)
    assert liq["exec_type"] == "liquidation"
    assert D(liq["price"]) == p * D("0.99") and D(liq["qty"]) == q
    assert D(liq["fee"]) == cents(p * D("0.99") * q * TAKER)
    assert D(liq["realized_pnl"]) == cents(-p * q / 100)  # the whole initial margin
    (eq,) = sql(run, "SELECT cash FROM equity WHERE session = 'iso' ORDER BY ts DESC LIMIT 1")
    assert D(eq["cash"]) == 1000 - D(entry["fee"]) - cents(p * q / 100) - D(liq["fee"])
    ts = sql(run, "SELECT toUnixTimestamp64Milli(ts) AS t FROM fills WHERE session = 'iso' AND "
                  "exec_type = 'liquidation'")
    assert int(ts[0]["t"]) == first
