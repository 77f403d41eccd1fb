"""A local stand-in for Bybit's v5 private REST API: it checks every request as Bybit does (the API key, the
HMAC-SHA256 signature of timestamp + key + recv window + query string or JSON body, the timestamp within the recv
window) and answers with the shapes of Bybit's responses: wallet-balance from a recorded response
(tests/data/bybit/http/nautilus_rust, see tests/data/PROVENANCE.md) with the stand-in's balance in it, and
demo-apply-money. Bybit's error codes: 10003 invalid key, 10004 wrong signature, 10002 timestamp outside the recv
window (Bybit's v5 docs, "Authentication" and "Error Codes")."""
from __future__ import annotations

import copy
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from builders import DATA

WALLET = json.loads((DATA / "bybit" / "http" / "nautilus_rust" / "http_get_wallet_balance.json").read_text())


@dataclass(frozen=True)
class Signed:
    method: str
    path: str
    query: str
    body: Any
    ret_code: int  # of the answer: 0, a key or signature refusal, or what the request itself met


class BybitPrivate:
    def __init__(self, key: str, secret: str) -> None:
        self.key, self.secret = key, secret
        self.balances: dict[str, Decimal] = {"USDT": Decimal("1000.50")}
        self.requests: list[Signed] = []
        self.orders: dict[str, dict[str, Any]] = {}  # by orderLinkId
        self.lose_answers = 0  # the next N answers are lost: the request is done, the connection closes unanswered
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                stand_in._answer(self, "GET")

            def do_POST(self):  # noqa: N802
                stand_in._answer(self, "POST")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _check(self, headers: Any, payload: str) -> int:
        if headers.get("X-BAPI-API-KEY") != self.key:
            return 10003
        ts, window = headers.get("X-BAPI-TIMESTAMP", ""), headers.get("X-BAPI-RECV-WINDOW", "5000")
        if not ts.isdigit() or abs(int(time.time() * 1000) - int(ts)) > int(window):
            return 10002
        want = hmac.new(self.secret.encode(), f"{ts}{self.key}{window}{payload}".encode(), hashlib.sha256).hexdigest()
        return 0 if hmac.compare_digest(want, headers.get("X-BAPI-SIGN", "")) else 10004

    def _answer(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0)).decode() if method == "POST" else ""
        code = self._check(handler.headers, url.query if method == "GET" else raw)
        body = json.loads(raw) if raw else None
        with self._lock:
            self._last_query = url.query
            answer = self._result(url.path, body) if code == 0 else {
                "retCode": code, "retMsg": {10003: "API key is invalid.", 10004: "error sign!",
                                            10002: "invalid request, please check your server timestamp or "
                                                   "recv_window param"}[code], "result": {}, "retExtInfo": {}}
            self.requests.append(Signed(method, url.path, url.query, body, answer["retCode"]))
            if self.lose_answers:
                self.lose_answers -= 1
                handler.close_connection = True
                return
        answer["time"] = int(time.time() * 1000)
        data = json.dumps(answer).encode()
        handler.send_response(200)  # Bybit answers refusals with HTTP 200 and a retCode
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _result(self, path: str, body: Any) -> dict[str, Any]:
        if path == "/v5/account/wallet-balance":
            wallet = copy.deepcopy(WALLET)
            for coin in wallet["result"]["list"][0]["coin"]:
                coin["walletBalance"] = str(self.balances.get(coin["coin"], Decimal(0)))
            return wallet
        if path == "/v5/account/demo-apply-money":
            for item in body["utaDemoApplyMoney"]:
                self.balances[item["coin"]] = self.balances.get(item["coin"], Decimal(0)) + Decimal(item["amountStr"])
            return {"retCode": 0, "retMsg": "success", "result": {}, "retExtInfo": {}}
        if path == "/v5/order/create":
            link = body["orderLinkId"]
            if link in self.orders:
                return {"retCode": 110072, "retMsg": "OrderLinkedID is duplicate", "result": {}, "retExtInfo": {}}
            self.orders[link] = {**body, "orderId": f"bybit-{len(self.orders) + 1}", "orderStatus": "New"}
            return {"retCode": 0, "retMsg": "OK", "result": {"orderId": self.orders[link]["orderId"],
                                                             "orderLinkId": link}, "retExtInfo": {}}
        if path == "/v5/order/realtime":
            query = dict(q.split("=", 1) for q in self._last_query.split("&") if q)
            found = [o for link, o in self.orders.items() if link == query.get("orderLinkId")]
            return {"retCode": 0, "retMsg": "OK", "result": {"list": found, "category": "linear",
                                                             "nextPageCursor": ""}, "retExtInfo": {}}
        return {"retCode": 10001, "retMsg": f"unknown path {path}", "result": {}, "retExtInfo": {}}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
