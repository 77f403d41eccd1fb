"""A worker killed with SIGKILL at a random moment mid-replay (broker still up) is replaced and the run ends with
exactly the fills, orders, positions, equity and decisions of an uninterrupted run. The uninterrupted run goes as
fast as possible, the killed one is paced, so this also shows pacing does not change the fills."""
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from builders import papertape, papertape_cmd, run_env
from infra.sql_endpoint import query_remote

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CONFIG = """
md_partitions = 2
session_partitions = 2
replay_seconds = 90
checkpoint_every_s = 0.5

[[sessions]]
id = "fast"
params = { fast = 2, slow = 5, bar_ms = 2000, full_confidence_bps = 0.5 }

[[sessions]]
id = "slow"
balance = 50000
params = { fast = 3, slow = 8, bar_ms = 3000, full_confidence_bps = 0.5 }
latency_ms = 120

[[sessions]]
id = "script"
strategy = "scripted"
params = { orders = [
  { at = 1723161258000, id = "rest-buy", symbol = "BTCUSDT", side = "buy", qty = "0.002", type = "limit", price = "61790.0" },
  { at = 1723161258000, id = "stop", symbol = "BTCUSDT", side = "sell", qty = "0.001", type = "stop_market", trigger_price = "61800.0" },
  { at = 1723161258000, id = "trail", symbol = "BTCUSDT", side = "sell", qty = "0.001", type = "trailing_stop", trail_amount = "15" },
  { at = 1723161258000, id = "oco-a", symbol = "BTCUSDT", side = "sell", qty = "0.001", type = "limit", price = "61900.0", oco = "x" },
  { at = 1723161258000, id = "oco-b", symbol = "BTCUSDT", side = "sell", qty = "0.001", type = "stop_market", trigger_price = "61795.0", oco = "x" },
  { at = 1723161258000, id = "br", symbol = "BTCUSDT", side = "buy", qty = "0.001", stop_loss = "61790.0", take_profit = "61840.0" },
  { at = 1723161258000, id = "gtd", symbol = "BTCUSDT", side = "buy", qty = "0.001", type = "limit", price = "61700.0", expire_ts = 1723161300000 },
  { at = 1723161266299, symbol = "BTCUSDT", side = "buy", qty = "0.003" },
  { at = 1723161300000, symbol = "ETHUSDT", side = "sell", qty = "0.2", type = "limit", price = "2660.00" },
  { at = 1723161320000, symbol = "BTCUSDT", side = "sell", qty = "0.003", reduce_only = true },
] }
"""

QUERIES = {
    "fills": "SELECT id, session, symbol, side, price, qty, liquidity, fee, realized_pnl, ts FROM fills ORDER BY id",
    "order_events": "SELECT id, status, filled_qty, reason, ts FROM order_events ORDER BY id",
    "positions": "SELECT id, qty, avg_price, realized_pnl, unrealized_pnl FROM positions ORDER BY id",
    "equity": "SELECT id, cash, equity, fees FROM equity ORDER BY id",
    "decisions": "SELECT id, action, confidence, reasoning FROM decisions ORDER BY id",
}


def results(data_dir: Path) -> dict:
    out = {}
    for name, sql in QUERIES.items():
        r = papertape("sql", "--json", "--data-dir", str(data_dir), sql)
        assert r.returncode == 0, r.stderr
        out[name] = json.loads(r.stdout)["rows"]
    return out


def test_sigkilled_worker_ends_with_the_results_of_an_uninterrupted_run(tmp_path):
    cfg = tmp_path / "papertape.toml"
    cfg.write_text(CONFIG)

    base = tmp_path / "base"
    r = papertape("run", "--config", str(cfg), "--data-dir", str(base), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    expected = results(base)
    assert len(expected["fills"]) >= 6, "the scenario must trade"
    events = sorted((int(r[0].rsplit(":", 1)[1]), r[0].split(":")[0], r[1]) for r in expected["order_events"])
    ends = {oid: status for _, oid, status in events}  # an event id is order:status:n, n counting per order
    # orders that rest from the tape's first seconds and end later, across the kill below
    assert {k: ends[f"script-c-{k}"] for k in ("rest-buy", "stop", "trail", "oco-a", "oco-b", "gtd")} == {
        "rest-buy": "filled", "stop": "filled", "trail": "filled", "oco-a": "cancelled", "oco-b": "filled",
        "gtd": "expired"}, ends

    killed = tmp_path / "killed"
    proc = subprocess.Popen(papertape_cmd("run", "--config", str(cfg), "--data-dir", str(killed), "--speed", "4"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=run_env())
    # a random moment of the paced tape (~22 s), from the first decision on: any point of the agents' work
    delay = random.uniform(0.0, 10.0)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                port = json.loads((killed / "run.json").read_text())["sql_port"]
                if query_remote(port, "SELECT count() FROM decisions")["rows"][0][0] >= 1:
                    break
            except (OSError, ValueError, KeyError, RuntimeError):
                pass
            time.sleep(0.1)
        else:
            pytest.fail("no decisions before the deadline")
        time.sleep(delay)
        finished = query_remote(port, "SELECT count() FROM alerts WHERE title = 'tape finished'")["rows"][0][0]
        assert finished == 0, f"the kill must land while the worker is mid-tape ({delay:.2f} s after the first decision)"
        status = papertape("status", "--data-dir", str(killed))
        assert status.returncode == 0 and "run in progress" in status.stdout, status.stdout + status.stderr
        os.kill(int((killed / "worker.pid").read_text()), signal.SIGKILL)
        output, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()  # the supervisor; its broker and worker die with it
    assert proc.returncode == 0, output
    assert "worker exited with code -9; starting a new one" in output
    got = results(killed)
    for name in QUERIES:
        assert got[name] == expected[name], f"{name} (killed {delay:.2f} s after the first decision)"
