"""The dashboard and the API against a running pipeline: `papertape run` replaying the bundled tape in real time
and `papertape api` beside it, as a user starts them. Debian's headless Chromium, driven by Playwright (never a
browser of Playwright's own), loads the dashboard; an order sent through the API fills and its fill appears in the
page from the live stream, with the price and quantity the archive holds; a click on "pause" pauses the session
in the engine (its status message comes back, and the archive records it). The API runs with a bearer token (the
dashboard keeps it in the browser's storage). Then schemathesis checks every operation of the API's OpenAPI
against the running API, its token checks included."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from playwright.sync_api import sync_playwright

from browser import CHROMIUM
from builders import HERE, free_port, papertape_cmd, query_rows, run_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CONFIG = """
md_partitions = 2
session_partitions = 2
speed = 0.5

[[sessions]]
id = "desk"
strategy = "scripted"
params = { orders = [] }

[[sessions]]
id = "trend"
params = { fast = 3, slow = 8, bar_ms = 5000, full_confidence_bps = 1.0 }
"""


TOKEN = "dashboard-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}



def _wait(what: str, check, timeout: float = 120.0, procs=()):
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            assert p.poll() is None, f"{p.args[3]} exited with {p.returncode} while waiting for {what}"
        try:
            found = check()
        except (httpx.TransportError, KeyError, IndexError, ValueError):
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("live_api")
    config = root / "papertape.toml"
    config.write_text(CONFIG)
    data_dir = root / "data"
    run = subprocess.Popen(papertape_cmd("run", "--config", str(config), "--data-dir", str(data_dir)),
                           env=run_env(), stdout=open(root / "run.log", "wb"), stderr=subprocess.STDOUT)
    port = free_port()
    (root / "token").write_text(TOKEN)
    api = subprocess.Popen(papertape_cmd("api", "--data-dir", str(data_dir), "--port", str(port), "--token-file",
                                         str(root / "token")),
                           stdout=open(root / "api.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def sessions() -> set[str]:
            r = httpx.get(f"{url}/api/v1/sessions", timeout=10, headers=AUTH)
            return {s["session"] for s in r.json()} if r.status_code == 200 else set()  # 503: starting

        _wait("sessions in the API", lambda: sessions() >= {"desk", "trend"}, procs=(run, api))
        yield SimpleNamespace(url=url, data_dir=data_dir, run=run, api=api, root=root)
    finally:
        for p in (api, run):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in (api, run):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


def test_a_fill_appears_and_a_click_pauses_the_session(live):
    assert CHROMIUM.exists(), "Debian's chromium is needed (make install installs it)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.add_init_script(f"localStorage.setItem('papertape-token', {TOKEN!r})")
        page.goto(live.url + "/")
        page.wait_for_selector('#sessions tr[data-session="desk"].selected')
        page.wait_for_function("document.querySelector('#conn').textContent === 'live'")

        order = {"id": "ui-order-1", "ts": 0, "symbol": "BTCUSDT", "side": "buy", "qty": "0.002"}
        sent = httpx.post(f"{live.url}/api/v1/sessions/desk/orders", json=order, timeout=30, headers=AUTH)
        assert sent.status_code == 202, sent.text
        # an external order's id is the session's own, "<session>-x-<client id>"; its fills are "<order id>:f<n>"
        row = page.wait_for_selector('#fills tr[data-fill-id^="desk-x-ui-order-1:"]', timeout=60_000)
        cells = [c.inner_text() for c in row.query_selector_all("td")]
        fill_id = row.get_attribute("data-fill-id")
        recorded = _wait("the fill in the archive", lambda: query_rows(live.data_dir, {
            "f": f"SELECT symbol, side, toString(qty), toString(price), toString(fee) FROM fills "
                 f"WHERE id = '{fill_id}'"})["f"])
        symbol, side, qty, price, fee = recorded[0]
        assert cells[1:4] == [symbol, side, cells[3]] and Decimal(cells[3]) == Decimal(qty) == Decimal("0.002")
        assert Decimal(cells[4]) == Decimal(price) and Decimal(cells[5]) == Decimal(fee)

        page.click('#sessions tr[data-session="desk"] button[data-action="pause"]')
        page.wait_for_selector('#sessions tr[data-session="desk"] td.status[data-status="paused"]', timeout=30_000)
        page.screenshot(path=str(live.root / "dashboard.png"), full_page=True)
        browser.close()
    assert errors == []
    status = _wait("the paused status in the archive", lambda: query_rows(live.data_dir, {
        "s": "SELECT status, event FROM sessions WHERE session = 'desk' ORDER BY ts DESC, id DESC LIMIT 1"})["s"])
    assert status[0][0] == "paused", status
    trend = httpx.get(f"{live.url}/api/v1/sessions/trend", timeout=30, headers=AUTH).json()
    assert trend["status"] == "running"  # the click paused only its own session


def test_controls_answer_with_the_engine_s_status_or_its_refusal(live):
    post = httpx.Client(base_url=f"{live.url}/api/v1", timeout=60, headers=AUTH).post
    resumed = post("/sessions/desk/resume")
    assert resumed.status_code == 200 and resumed.json()["status"]["status"] == "running", resumed.text
    refused = post("/sessions/nobody/pause")
    assert refused.status_code == 409 and "no session 'nobody'" in refused.json()["reason"]
    bad = post("/sessions/x2/start", json={"strategy": "no_such_strategy"})
    assert bad.status_code == 422
    started = post("/sessions/late/start",
                   json={"strategy": "mean_reversion", "params": {"window": 10, "bar_ms": 2000}})
    assert started.status_code == 200 and started.json()["status"]["event"] == "started", started.text
    changed = post("/sessions/late/config", json={"intel": 7, "risk": {"max_daily_trades": 3}})
    assert changed.status_code == 200 and changed.json()["status"]["intel"] == 7, changed.text
    assert changed.json()["status"]["config"]["risk"]["max_daily_trades"] == 3
    stopped = post("/sessions/late/stop")
    assert stopped.status_code == 200 and stopped.json()["status"]["status"] == "stopped", stopped.text
    assert post("/sessions/late/config", json={"id": "other"}).status_code == 422  # not a key that may change
    orders = httpx.get(f"{live.url}/api/v1/sessions/desk/orders", params={"state": "closed"}, headers=AUTH,
                       timeout=60)  # through the run's SQL endpoint: an array parameter crosses it
    assert orders.status_code == 200 and "desk-x-ui-order-1" in {o["order_id"] for o in orders.json()}
    version = httpx.get(f"{live.url}/api/v1/version", timeout=30).json()
    assert version["api"] == "v1" and version["version"]


def test_a_signal_is_decided_on(live):
    get = httpx.Client(base_url=f"{live.url}/api/v1", timeout=60, headers=AUTH).get
    before = {d["id"] for d in get("/sessions/desk/decisions", params={"limit": 10_000}).json()}
    sent = httpx.post(f"{live.url}/api/v1/sessions/desk/signals", headers=AUTH, timeout=60,
                      json={"id": "api-view-1", "ts": 0, "symbol": "BTCUSDT", "target": "long", "confidence": 0.9,
                            "reasoning": "a test's view"})
    assert sent.status_code == 202 and sent.json()["topic"] == "signals", sent.text
    new = _wait("the signal's decision", lambda: [d for d in get("/sessions/desk/decisions", params={
        "limit": 10_000}).json() if d["id"] not in before])
    assert new[0]["symbol"] == "BTCUSDT" and new[0]["action"] in ("buy", "blocked", "hold", "reject")


def test_alerts_are_acknowledged_through_the_api_and_the_command_line(live):
    client = httpx.Client(base_url=f"{live.url}/api/v1", timeout=60, headers=AUTH)
    for who in ("nobody-a", "nobody-b"):  # each refusal is a dead letter, and an alert of type error
        assert client.post(f"/sessions/{who}/resume").status_code == 409
    def refusals() -> list[str] | None:
        found = {a["text"].split("no session ")[-1]: a["id"] for a in client.get("/alerts", params={
            "type": "error", "acknowledged": False, "limit": 1000}).json() if "resume: no session" in a["text"]}
        return [found["'nobody-a' on this engine"], found["'nobody-b' on this engine"]] if len(found) == 2 else None

    ids = _wait("the two alerts", refusals)
    assert client.post(f"/alerts/{ids[0]}/ack", json={"by": "api-test"}).status_code == 200
    r = subprocess.run(papertape_cmd("alerts", "ack", ids[1], "--by", "cli-test", "--data-dir", str(live.data_dir)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    def acknowledged() -> dict[str, str] | None:
        found = {a["id"]: a["acknowledged_by"] for a in client.get("/alerts", params={
            "acknowledged": True, "limit": 1000}).json()}
        return found if len(found) >= 2 else None

    acked = _wait("both acknowledged", acknowledged)
    assert acked == {ids[0]: "api-test", ids[1]: "cli-test"}
    assert client.post("/alerts/no-such-alert/ack").status_code == 404
    listed = subprocess.run(papertape_cmd("alerts", "list", "--json", "--type", "error", "--data-dir",
                                          str(live.data_dir)), capture_output=True, text=True, timeout=120)
    assert {a["id"] for a in json.loads(listed.stdout) if a["acknowledged_by"]} >= set(ids)


def test_the_stream_carries_a_session_s_events(live):
    seen: list[tuple[str, dict]] = []
    with httpx.stream("GET", f"{live.url}/api/v1/stream", params={"session": "desk"}, timeout=60, headers=AUTH) as r:
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                if event == "ready":
                    sent = httpx.post(f"{live.url}/api/v1/sessions/desk/orders", timeout=30, headers=AUTH,
                                      json={"id": "stream-order", "ts": 0, "symbol": "ETHUSDT", "side": "sell",
                                            "qty": "0.01"})
                    assert sent.status_code == 202
            elif line.startswith("data:") and event not in (None, "ready"):
                seen.append((event, json.loads(line.split(":", 1)[1])))
                if {"fill", "order"} <= {e for e, _ in seen}:  # topics interleave as the consumer fetches them
                    break
    assert {m["session"] for _, m in seen} == {"desk"}
    fill = next(m for e, m in seen if e == "fill")
    assert fill["order_id"] == "desk-x-stream-order" and Decimal(fill["qty"]) == Decimal("0.01")
    assert {m["order_id"] for e, m in seen if e == "order"} == {"desk-x-stream-order"}


def test_the_api_keeps_its_openapi(live):
    """schemathesis (its command line, as its docs run it) with its checks (all of them by default; the few turned
    off for an operation are in tests/schemathesis.toml, with why): server errors, status codes, content types and
    bodies against the schema, invalid input refused, methods and Allow headers, the token (missing or wrong: 401)."""
    r = subprocess.run([str(Path(sys.executable).parent / "schemathesis"), "--config-file",
                        str(HERE / "schemathesis.toml"), "run", f"{live.url}/openapi.json",
                        "--max-examples", "8", "--request-timeout", "60", "--header", f"Authorization: Bearer {TOKEN}",
                        "--seed", "17", "--no-color"],
                       capture_output=True, text=True, timeout=600, cwd=live.root)  # its cache: not in the repo
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert live.run.poll() is None, "the run ended during the check: the writes were not tested against it"


def test_the_dashboard_needs_no_network(live):
    html = httpx.get(live.url + "/", timeout=30).text  # the page itself carries no data: no token needed
    assert "http://" not in html and "https://" not in html
    assert Path(live.root / "dashboard.png").exists()
