"""`papertape api` over a real archived run: every read endpoint against what plain SQL on the archive says
(computed here, not by the API's queries), prices that are never invented (404 unknown, 503 not fresh), alerts
filtered, and the bearer token: required when set, and required to listen beyond loopback."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from datetime import datetime, timezone
from decimal import Decimal

import httpx
import pytest
from fastapi.testclient import TestClient

from builders import free_port, papertape_cmd, query_rows
from infra.clickhouse import connect, migrate
from papertape.app.api.reads import OPEN_STATUSES
from papertape.app.api.server import LOOPBACK_NAMES, create_app
from papertape.config import Settings
from papertape.core.instruments import DEFAULT_INSTRUMENTS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
NUM = r"toUInt64OrZero(extract(id, '(\\d+)\\D*$'))"  # the engine's message number (the last number of an id)


@pytest.fixture(scope="module")
def client(archived_run):
    with TestClient(create_app(Settings(data_dir=archived_run.data_dir))) as c:
        yield c


@pytest.fixture(scope="module")
def facts(archived_run):
    return query_rows(archived_run.data_dir, {
        "sessions": "SELECT DISTINCT session FROM equity ORDER BY session",
        "equity": f"SELECT session, toString(equity), toString(cash), {NUM} AS n, id FROM equity ORDER BY ts, n, id",
        "fills": "SELECT session, id, toString(price), toString(qty), toString(fee), side, symbol FROM fills",
        "events": f"SELECT session, order_id, status, {NUM} AS n, id FROM order_events ORDER BY ts, n, id",
        "decisions": f"SELECT session, id FROM decisions ORDER BY ts, {NUM}, id",
        "marks": "SELECT symbol, toString(mark), toUnixTimestamp64Milli(ts) FROM md_marks ORDER BY ts, id",
        "alerts": "SELECT type, id FROM alerts",
        "metrics": "SELECT session, symbol, period_ms FROM metrics"})


def get(client, path, status=200, **params):
    r = client.get(f"/api/v1{path}", params=params)
    assert r.status_code == status, (path, r.status_code, r.text)
    return r.json()


def test_sessions_and_portfolio_are_the_archive_s_last_snapshots(client, facts):
    sessions = [s for (s,) in facts["sessions"]]
    assert [s["session"] for s in get(client, "/sessions")] == sessions
    last = {}
    for session, equity, cash, *_ in facts["equity"]:  # in event-time order: the last one stays
        last[session] = (Decimal(equity), Decimal(cash))
    portfolio = get(client, "/portfolio")
    assert {a["session"]: (Decimal(a["equity"]), Decimal(a["cash"])) for a in portfolio} == last
    for session in sessions:
        detail = get(client, f"/sessions/{session}")
        assert detail["account"]["equity"] == portfolio[sessions.index(session)]["equity"]
        assert detail["config"]["id"] == session and detail["status"] == "running"
    get(client, "/sessions/no-such-session", 404)


def test_fills_and_positions_follow_the_fills(client, facts):
    for (session,) in facts["sessions"]:
        want = sorted((i, Decimal(p), Decimal(q), Decimal(f)) for s, i, p, q, f, _, _ in facts["fills"] if s == session)
        got = get(client, f"/sessions/{session}/fills", limit=10_000)
        assert sorted((f["id"], Decimal(f["price"]), Decimal(f["qty"]), Decimal(f["fee"])) for f in got) == want
        net: dict[str, Decimal] = {}
        for s, _, _, qty, _, side, symbol in facts["fills"]:
            if s == session:
                net[symbol] = net.get(symbol, Decimal(0)) + (Decimal(qty) if side == "buy" else -Decimal(qty))
        positions = get(client, f"/sessions/{session}/positions")
        assert {p["symbol"]: Decimal(p["qty"]) for p in positions} == {k: v for k, v in net.items() if v}
    fills = get(client, "/sessions/script/fills", limit=10_000)
    assert len(fills) >= 8
    later = get(client, "/sessions/script/fills", since=fills[3]["ts"])
    assert [f["id"] for f in later] == [f["id"] for f in fills if f["ts"] > fills[3]["ts"]]


def test_orders_open_and_closed_by_their_last_event(client, facts):
    for (session,) in facts["sessions"]:
        last: dict[str, str] = {}
        for s, order_id, status, *_ in facts["events"]:
            if s == session:
                last[order_id] = status
        open_ = {o for o, st in last.items() if st in OPEN_STATUSES}
        assert {o["order_id"] for o in get(client, f"/sessions/{session}/orders", state="open")} == open_
        closed = {o["order_id"]: o["status"] for o in get(client, f"/sessions/{session}/orders", state="closed",
                                                          limit=10_000)}
        assert closed == {o: st for o, st in last.items() if o not in open_}


def test_decisions_equity_and_metrics(client, facts, archived_run):
    for (session,) in facts["sessions"]:
        ids = [i for s, i in facts["decisions"] if s == session]
        assert [d["id"] for d in get(client, f"/sessions/{session}/decisions", limit=5)] == ids[-5:]
        series = get(client, f"/sessions/{session}/equity", points=3)
        rows = [Decimal(e) for s, e, *_ in facts["equity"] if s == session]
        assert 2 <= len(series) <= 3 and Decimal(series[-1]["equity"]) == rows[-1]
        assert Decimal(series[0]["equity"]) in rows
    holds = get(client, "/sessions/fast/decisions", action="hold", limit=10_000)
    assert holds and {d["action"] for d in holds} == {"hold"}
    metrics = get(client, "/metrics")
    assert sorted((m["session"], m["symbol"], m["period_ms"]) for m in metrics) == sorted(
        (s, y, int(p)) for s, y, p in facts["metrics"])
    assert {m["session"] for m in get(client, "/metrics", session="revert")} == {"revert"}


def test_prices_are_the_latest_marks(client, facts):
    latest: dict[str, tuple[str, int]] = {}
    for symbol, mark, ts in facts["marks"]:
        latest[symbol] = (mark, int(ts))
    clock = max(ts for _, ts in latest.values())
    assert set(latest) == {"BTCUSDT", "ETHUSDT"}
    for symbol, (mark, ts) in latest.items():
        price = get(client, f"/prices/{symbol}", max_age_s=3600)
        assert (Decimal(price["mark"]), price["ts"], price["age_ms"]) == (Decimal(mark), ts, clock - ts)
    assert client.get("/api/v1/prices/NOSUCHUSDT").status_code == 404


def test_a_price_is_never_invented(tmp_path):
    """An archive whose ETHUSDT mark is two minutes behind BTCUSDT's, and a known SOLUSDT never priced: 503 for a
    price older than max_age_s behind the run's newest mark and for one never seen, 404 for a symbol nobody knows."""
    t = 1_723_161_600_000
    ch = connect(None, tmp_path)
    migrate(ch)
    ch.insert("md_marks_log", [("m1", datetime.fromtimestamp(t / 1000, timezone.utc), "BTCUSDT", None, None, None,
                                Decimal("61000.5")),
                               ("m2", datetime.fromtimestamp((t - 120_000) / 1000, timezone.utc), "ETHUSDT", None,
                                None, None, Decimal("2650.25"))],
              column_names=["id", "ts", "symbol", "bid", "ask", "last", "mark"])
    ch.close()
    instruments = [*DEFAULT_INSTRUMENTS.values(),
                   dataclasses.replace(DEFAULT_INSTRUMENTS["BTCUSDT"], symbol="SOLUSDT")]
    with TestClient(create_app(Settings(data_dir=tmp_path, instruments=instruments))) as c:
        assert c.get("/api/v1/prices/BTCUSDT").json()["mark"] == "61000.5"
        stale = c.get("/api/v1/prices/ETHUSDT", params={"max_age_s": 60})
        assert stale.status_code == 503 and "120.0 s older" in stale.json()["detail"]
        fresh = c.get("/api/v1/prices/ETHUSDT", params={"max_age_s": 121}).json()
        assert (fresh["mark"], fresh["age_ms"]) == ("2650.25", 120_000)
        never = c.get("/api/v1/prices/SOLUSDT")
        assert never.status_code == 503 and "no price of SOLUSDT" in never.json()["detail"]
        assert c.get("/api/v1/prices/DOGEUSDT").status_code == 404


def test_alerts_filtered_by_type(client, facts):
    system = {i for t, i in facts["alerts"] if t == "system"}
    got = get(client, "/alerts", type="system", limit=10_000)
    assert {a["id"] for a in got} == system and system
    assert get(client, "/alerts", type="price") == [] or all(a["type"] == "price" for a in
                                                             get(client, "/alerts", type="price"))
    assert all(a["acknowledged_ts"] is None for a in got)
    assert {a["id"] for a in get(client, "/alerts", acknowledged=False, limit=10_000)} == {i for _, i in
                                                                                        facts["alerts"]}


def test_a_token_is_required_when_set(archived_run):
    with TestClient(create_app(Settings(data_dir=archived_run.data_dir), token="s3cret-token")) as c:
        assert c.get("/api/v1/sessions").status_code == 401
        assert c.get("/api/v1/sessions", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/v1/sessions", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert c.get("/metrics").status_code == 401
        scraped = c.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
        assert scraped.status_code == 200  # the API's own process: its requests, the 401s above among them
        assert 'papertape_api_requests_total{method="GET",route="/api/v1/sessions",status="401"} 2.0' in scraped.text
        assert c.get("/api/v1/health").status_code == 200  # liveness needs no secret
        assert "s3cret-token" not in c.get("/openapi.json").text



def test_a_token_less_api_on_loopback_answers_only_to_itself(archived_run):
    """No token (loopback): another site's page may make the user's browser send a request, but a write with a
    foreign Origin is refused, and a name of that site rebound to 127.0.0.1 gets nothing (the Host is checked)."""
    app = create_app(Settings(data_dir=archived_run.data_dir), allowed_hosts=LOOPBACK_NAMES)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/api/v1/sessions").status_code == 200
        assert c.get("/api/v1/sessions", headers={"host": "attacker.example"}).status_code == 400
        cross = c.post("/api/v1/sessions/fast/stop", headers={"origin": "http://attacker.example"})
        assert cross.status_code == 403 and "another origin" in cross.json()["detail"]
        # the dashboard's own writes carry its origin: they pass the check (and meet no broker here: 503)
        assert c.post("/api/v1/sessions/fast/stop", headers={"origin": "http://127.0.0.1:8000"}).status_code == 503


def test_it_refuses_to_listen_beyond_loopback_without_a_token(archived_run, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PAPERTAPE_API_TOKEN", "PAPERTAPE_API_TOKEN_FILE")}
    r = subprocess.run(papertape_cmd("api", "--host", "0.0.0.0", "--data-dir", str(archived_run.data_dir)),
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "without a token" in r.stderr
    token = tmp_path / "token"
    token.write_text("file-token-123\n")
    port = free_port()
    proc = subprocess.Popen(papertape_cmd("api", "--host", "0.0.0.0", "--port", str(port), "--token-file",
                                          str(token), "--data-dir", str(archived_run.data_dir)), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/v1/sessions", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
        assert r.status_code == 401
        ok = httpx.get(f"http://127.0.0.1:{port}/api/v1/sessions", timeout=30,
                       headers={"Authorization": "Bearer file-token-123"})
        assert ok.status_code == 200 and ok.json()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert "file-token-123" not in (proc.stdout.read() if proc.stdout else "")
