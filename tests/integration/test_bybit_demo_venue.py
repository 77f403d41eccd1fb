"""Issue 18's done-when, on the local stand-ins: one session on Bybit's demo and one paper session, the same scripted
strategy, trading live on the bundled real BTCUSDT recording served as Bybit's public stream.

The demo session's orders reach the private API stand-in signed (it checks key, HMAC and timestamp), which matches
them against the very frames papertape's public feed receives; its fills come back through the private stream into
ClickHouse. Mid-run the private stream is cut, a sell fills on the exchange unseen, and the gateway and the worker are
SIGKILLed with an order open: after their restart, reconciliation books that fill once, and `papertape reconcile`
finds nothing left. The paper venue's shadow of each demo order sits beside it in `shadow_comparison`. The key and
the secret appear in no log, topic, table or output."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from decimal import Decimal

import pytest
from test_live_drift import bybit_messages

from builders import papertape, papertape_cmd, query_rows, run_env, scan_for_secrets
from bybit_private_server import BybitPrivate
from bybit_rest_server import BybitRest
from bybit_ws_server import BybitWsServer

KEY, SECRET = "pt-demo-key-5c1e9a77", "pt-demo-secret-0d4f62b8e3a1"
T = 1723161256313  # the recording's first event
PACE_S = 0.006
ORDERS = f"""[
  {{ at = {T + 6_000}, symbol = "BTCUSDT", side = "buy", qty = "0.010" }},
  {{ at = {T + 9_000}, id = "l1", symbol = "BTCUSDT", side = "buy", type = "limit", qty = "0.005", price = "55000" }},
  {{ at = {T + 14_000}, amend = "l1", price = "56000" }},
  {{ at = {T + 24_000}, symbol = "BTCUSDT", side = "sell", qty = "0.010" }},
  {{ at = {T + 33_000}, symbol = "BTCUSDT", side = "buy", qty = "0.003" }},
]"""
CONFIG = """
md_partitions = 1
session_partitions = 2

[bybit_trading]
environment = "demo"
rest_url = "{rest}"
ws_url = "{ws}"

[[sessions]]
id = "demo"
venue = "bybit_demo"
strategy = "scripted"
latency_ms = 0
params = {{ orders = {orders} }}

[[sessions]]
id = "paper"
strategy = "scripted"
latency_ms = 0
params = {{ orders = {orders} }}
"""


def wait_for(what: str, predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def paths(bybit: BybitPrivate, path: str) -> list:
    return [r for r in bybit.requests if r.path == path]


@pytest.mark.slow  # a live run of about a minute, with a gateway and a worker killed and restarted
@pytest.mark.timeout(600)
def test_a_demo_session_beside_a_paper_one_reconciles_to_zero_after_a_kill(tmp_path):
    messages = bybit_messages(40)
    rest = BybitRest()
    bybit = BybitPrivate(KEY, SECRET, balance=Decimal("20000"), market_time=True)
    data = tmp_path / "run"
    config = tmp_path / "papertape.toml"
    config.write_text(CONFIG.format(rest=bybit.url, ws=bybit.ws_url, orders=ORDERS))
    env = run_env(BYBIT_API_KEY=KEY, BYBIT_API_SECRET=SECRET)
    try:
        with BybitWsServer({"orderbook.1.BTCUSDT": messages}, pace_s=PACE_S, on_frame=bybit.on_public_frame) as ws:
            run = subprocess.Popen(
                papertape_cmd("run", "--config", str(config), "--data-dir", str(data), "--live",
                              "--for", str(len(messages) * PACE_S + 25), "--symbols", "BTCUSDT",
                              "--rest-url", rest.url, "--ws-url", ws.url),
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                wait_for("the amend of l1 at Bybit", lambda: paths(bybit, "/v5/order/amend"))
                bybit.drop_private(hold=True)  # the private stream is cut, and stays cut
                wait_for("the sell to fill on Bybit",
                         lambda: any(e.order.side == "Sell" for e in bybit.exchange.executions))
                for pid_file in ("gateway.pid", "worker.pid"):  # l1 is open on Bybit
                    os.kill(int((data / pid_file).read_text()), signal.SIGKILL)
                bybit.resume_private()
                wait_for("the last buy to fill on Bybit",
                         lambda: sum(e.order.side == "Buy" for e in bybit.exchange.executions) >= 2)
                checks = []
                for _ in range(3):  # the restarted worker's own check may be in flight: at most one adopts
                    r = papertape("reconcile", "--data-dir", str(data), "--json")
                    assert r.returncode in (0, 1), r.stdout + r.stderr
                    checks.append(json.loads(r.stdout))
                    if r.returncode == 0:
                        break
                out, err = run.communicate(timeout=300)
            finally:
                if run.poll() is None:
                    run.kill()
                    run.communicate()
        assert run.returncode == 0, out + err
    finally:
        rest.close()
        bybit.close()

    # zero differences after the kill and restart: the last check found nothing
    assert [r["difference"] for r in checks[-1]] == ["none"], checks

    # orders reached the stand-in signed (a request it refused for its key or signature would say 10003/10004)
    creates = paths(bybit, "/v5/order/create")
    placed = [r.body["orderLinkId"] for r in creates if r.ret_code == 0]
    assert placed == ["demo-1", "demo-c-l1", "demo-4", "demo-5"]
    # a placement the killed gateway had not committed is sent again by the next: Bybit refuses the double (110072)
    assert all(r.ret_code == 110072 and r.body["orderLinkId"] in placed for r in creates if r.ret_code != 0)
    assert len(paths(bybit, "/v5/order/amend")) == 1
    assert not [r for r in bybit.requests if r.ret_code in (10002, 10003, 10004)]

    q = query_rows(data, {
        "fills": "SELECT order_id, side, toString(price), toString(qty), toString(fee), liquidity, venue "
                 "FROM fills WHERE session = 'demo' ORDER BY ts, id",
        "paper": "SELECT count(), any(venue) FROM fills WHERE session = 'paper'",
        "missed": "SELECT count() FROM reconciliation WHERE session = 'demo' AND difference = 'missed_fill'",
        "shadow": "SELECT order_id, side, toString(exchange_price), toString(paper_price), price_error_bps "
                  "FROM shadow_comparison WHERE session = 'demo' ORDER BY exchange_ts",
        "cash": "SELECT toString(argMax(cash, ts)) FROM equity WHERE session = 'demo'",
        "open": "SELECT count() FROM order_events WHERE session = 'demo' AND order_id = 'demo-c-l1' "
                "AND status = 'amended'",
    })
    # every execution of the exchange booked exactly once, at its price and fee (the one missed during the cut too)
    executed = sorted((("Buy" if f[1] == "buy" else "Sell"), Decimal(f[2]), Decimal(f[3]), Decimal(f[4]))
                      for f in q["fills"])
    exchange = sorted((e.order.side, e.price, e.qty, e.fee) for e in bybit.exchange.executions)
    assert executed == exchange and len(exchange) == 3
    assert {f[6] for f in q["fills"]} == {"bybit_demo"}
    assert q["missed"][0][0] >= 1  # the sell came in through reconciliation, not the (cut) stream
    assert q["paper"][0] == [3, "paper"]  # the paper session traded the same script on the paper venue
    assert q["open"][0][0] == 1  # the amend came back from the exchange
    # the shadow comparison: each demo order beside the paper venue's fill of it, with the error in bps
    assert len(q["shadow"]) == 3 and all(row[3] is not None and row[4] is not None for row in q["shadow"])
    r = papertape("compare", "--shadow", f"demo@{data}", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)["summary"]
    assert [(x["type"], x["orders"], x["paper_filled"]) for x in summary] == [("market", 3, 3)]
    assert summary[0]["mean_ticks"] is not None  # the run's instruments give the tick size
    # papertape's cash moved as Bybit's wallet did: realized P&L minus fees, to the last unit
    assert Decimal(q["cash"][0][0]) - Decimal("10000") == bybit.balances["USDT"] - Decimal("20000")

    leaks = scan_for_secrets(data, out + err, [KEY, SECRET])
    assert leaks == [], leaks
