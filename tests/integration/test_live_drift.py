"""A paper session run live, then the replay of the tape it recorded, compared: `papertape compare` explains the
live-vs-replay difference term by term, and the terms add up to it exactly.

The live feed is the local Bybit v5 WebSocket stand-in (tests/bybit_ws_server.py) serving the first 30 s of the
bundled real BTCUSDT recording (streams/recordings, Binance USD-M) as Bybit would send them: each change of the top
of book as an `orderbook.1` snapshot, each millisecond's trades as one `publicTrade` message, in event-time order,
a few ms apart. The live session assumes 50 ms of latency; the replay, a backtest's 2 s.
"""
from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from builders import papertape, query_rows
from bybit_rest_server import BybitRest
from bybit_ws_server import BybitWsServer
from papertape.config import BUNDLED_TAPE

SECONDS = 30
ORDERS = """[
  { at = 1723161260000, symbol = "BTCUSDT", side = "buy", qty = "0.010" },
  { at = 1723161266000, symbol = "BTCUSDT", side = "sell", qty = "0.010" },
  { at = 1723161270000, symbol = "BTCUSDT", side = "sell", qty = "0.020" },
  { at = 1723161277000, symbol = "BTCUSDT", side = "buy", qty = "0.020" },
  { at = 1723161280000, symbol = "BTCUSDT", side = "buy", qty = "0.005" },
]"""
CONFIG = """
md_partitions = 1
session_partitions = 1

[[sessions]]
id = "script"
strategy = "scripted"
latency_ms = {latency}
params = {{ orders = {orders} }}
"""


def bybit_messages(seconds: float) -> list[dict]:
    """The BTCUSDT recording's first `seconds` as Bybit v5 public messages, in event-time order."""
    out: list[dict] = []
    top = None
    first = None
    with gzip.open(BUNDLED_TAPE[0], "rb") as f:
        for line in f:
            d = orjson.loads(line.split(b" ", 1)[1]).get("data")
            if not isinstance(d, dict) or "e" not in d:  # the REST depth snapshot
                continue
            t = d.get("T") or d.get("E")
            first = first or t
            if t - first > seconds * 1000:
                break
            if d["e"] == "bookTicker" and (d["b"], d["B"], d["a"], d["A"]) != top:
                top = (d["b"], d["B"], d["a"], d["A"])
                out.append({"topic": "orderbook.1.BTCUSDT", "type": "snapshot", "ts": t, "cts": t,
                            "data": {"s": "BTCUSDT", "b": [[d["b"], d["B"]]], "a": [[d["a"], d["A"]]],
                                     "u": d["u"], "seq": d["u"]}})
            elif d["e"] == "trade":
                trade = {"T": d["T"], "s": "BTCUSDT", "S": "Sell" if d["m"] else "Buy", "v": d["q"], "p": d["p"],
                         "L": "ZeroPlusTick", "i": str(d["t"]), "BT": False}
                if out and out[-1]["topic"].startswith("publicTrade") and out[-1]["ts"] == t:
                    out[-1]["data"].append(trade)
                else:
                    out.append({"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": t, "data": [trade]})
    return out


def run(root: Path, name: str, latency: int, *args: str) -> Path:
    config = root / f"{name}.toml"
    config.write_text(CONFIG.format(latency=latency, orders=ORDERS))
    data = root / name
    r = papertape("run", "--config", str(config), "--data-dir", str(data), *args, timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    return data


@pytest.mark.slow  # a live run of ~15 s and a replay through the real pipeline
@pytest.mark.timeout(600)
def test_compare_explains_live_against_the_replay_of_its_tape(tmp_path):
    messages = bybit_messages(SECONDS)
    rest = BybitRest()
    try:
        # every message under the book's topic: the stand-in sends one topic's frames in order, one pace apart
        with BybitWsServer({"orderbook.1.BTCUSDT": messages}, pace_s=0.004) as ws:
            live = run(tmp_path, "live", 50, "--live", "--for", str(len(messages) * 0.004 + 4), "--symbols",
                       "BTCUSDT", "--rest-url", rest.url, "--ws-url", ws.url, "--record", str(tmp_path / "tape.gz"))
    finally:
        rest.close()
    replay = run(tmp_path, "replay", 2000, "--replay", str(tmp_path / "tape.gz"))

    r = papertape("compare", "--json", f"script@{live}", f"script@{replay}")
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(r.stdout)
    pnl = {}
    for data in (live, replay):
        q = query_rows(data, {
            "end": "SELECT toString(argMax(equity, ts)) FROM equity WHERE session = 'script'",
            "fills": "SELECT count() FROM fills WHERE session = 'script'"})
        assert q["fills"][0][0] >= 5, "both runs must trade"
        pnl[data] = Decimal(q["end"][0][0]) - 10_000
    terms = {k: Decimal(v) for k, v in d["terms"].items()}
    assert Decimal(d["difference"]) == pnl[live] - pnl[replay] != 0
    assert sum(terms.values()) == Decimal(d["explained"]) == Decimal(d["difference"])  # exactly
    assert sum(1 for p in d["pairs"] if p["a"] and p["b"]) >= 2
    # 1.95 s more latency in the replay: the market moved between the two runs' arrivals
    assert terms["entry_timing"] != 0 or terms["exit_timing"] != 0
