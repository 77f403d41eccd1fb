"""A local stand-in for Bybit's v5 private API: a small exchange (tests/bybit_exchange.py matches its orders against
the public frames it is given) behind signed REST and a private WebSocket.

REST: every request is checked as Bybit does (the API key, the HMAC-SHA256 signature of timestamp + key + recv
window + query string or JSON body, the timestamp within the recv window); answers have the shapes of Bybit's
recorded responses (tests/data/bybit/http/nautilus_rust, see tests/data/PROVENANCE.md) with the stand-in's values.
Bybit's error codes (v5 docs, "Error Codes"; messages as Bybit's live servers word them in public reports): 10003
invalid key, 10004 wrong signature, 10002 timestamp outside the recv window, 10001 a bad parameter, 10006 rate limit
(`rate_limit` requests a second per path; the X-Bapi-Limit-* headers pybit waits on), 110001 no such open order,
110007 not enough margin, 110017 reduce-only with no position, 110043 leverage not modified, 110072 duplicate
orderLinkId; all with HTTP 200, as Bybit.

Private WebSocket at `ws_url`: {"op":"auth","args":[key, expires_ms, hex HMAC-SHA256(secret, "GET/realtime" +
expires)]} answered as tests/data/bybit/ws/nautilus_rust/ws_auth_*.json (10003 wrong key, 10004 wrong signature,
10001 "Params Error" when expired); subscribe to order/execution/position/wallet after auth; {"op":"ping"} answered
{"op":"pong","args":[ms],...} as Bybit's private stream does. Every change is pushed to the authenticated
subscribers at that moment only: what happens while a client is cut off is found through REST, never pushed later.

    bybit = BybitPrivate(KEY, SECRET)
    with BybitWsServer(recorded_feed(), on_frame=bybit.on_public_frame) as public: ...
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bybit_exchange import OPEN, BybitExchange, Event, Execution, Instrument, Order, Position, Refused
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from builders import DATA

HTTP_DIR, WS_DIR = DATA / "bybit" / "http" / "nautilus_rust", DATA / "bybit" / "ws" / "nautilus_rust"


def _load(path: Any) -> Any:
    return json.loads(path.read_text())


WALLET = _load(HTTP_DIR / "http_get_wallet_balance.json")
REST_ORDER = _load(HTTP_DIR / "http_get_orders_realtime.json")["result"]["list"][0]
REST_EXECUTION = _load(HTTP_DIR / "http_get_executions.json")["result"]["list"][0]
REST_POSITION = _load(HTTP_DIR / "http_get_positions.json")["result"]["list"][0]
WS = {topic: _load(WS_DIR / f"ws_account_{topic}.json")["data"][0]
      for topic in ("order", "execution", "position", "wallet")}
AUTH_FAILURE = _load(WS_DIR / "ws_auth_failure.json")
INSTRUMENTS = {i["symbol"]: Instrument(Decimal(i["priceFilter"]["tickSize"]), Decimal(i["lotSizeFilter"]["qtyStep"]),
                                       Decimal(i["lotSizeFilter"]["minOrderQty"]))
               for i in _load(HTTP_DIR / "http_get_instruments_linear.json")["result"]["list"]}
PRIVATE_TOPICS = ("order", "execution", "position", "wallet")
MESSAGES = {10002: "invalid request, please check your server timestamp or recv_window param",
            10003: "API key is invalid.", 10004: "error sign!", 10006: "Too many visits!",
            110001: "order not exists or too late to cancel", 110007: "ab not enough for new order"}


@dataclass(frozen=True)
class Signed:
    method: str
    path: str
    query: str
    body: Any
    ret_code: int  # of the answer: 0, a key or signature refusal, or what the request itself met


def _s(value: Decimal) -> str:
    return format(value, "f")


def _shape(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The recorded row `template` with the stand-in's values for the fields it has."""
    return {key: values.get(key, default) for key, default in template.items()}


def _ok(result: dict[str, Any], message: str = "OK") -> dict[str, Any]:
    return {"retCode": 0, "retMsg": message, "result": result, "retExtInfo": {}}


@dataclass(eq=False)
class _Private:
    ws: ServerConnection
    conn_id: str = field(default_factory=lambda: f"{uuid.uuid4().hex[:20]}-{uuid.uuid4().hex[:3]}")
    authed: bool = False
    topics: set[str] = field(default_factory=set)
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)


class BybitPrivate:
    def __init__(self, key: str, secret: str, instruments: dict[str, Instrument] | None = None,
                 balance: Decimal = Decimal("1000.50"), market_time: bool = False) -> None:
        """`market_time`: the exchange's clock is the last public frame's time (a replayed tape's), so its
        executions and updates are stamped as a live exchange's would be; else the wall clock."""
        self.key, self.secret = key, secret
        self.market_time = market_time
        self._market_ts = 0
        self.exchange = BybitExchange(instruments or INSTRUMENTS, {"USDT": balance})
        self.balances = self.exchange.wallet  # by coin; demo-apply-money adds to it
        self.requests: list[Signed] = []
        self.lose_answers = 0  # the next N answers are lost: the request is done, the connection closes unanswered
        self.rate_limit: int | None = None  # requests a second per path, then 10006
        self.clock: Callable[[], float] = time.monotonic  # of the rate limit's window
        # the private WebSocket's successful auths, accepted subscribe requests and accepted connections
        self.auths = self.subscriptions = self.connections = 0
        self._fail: list[int] = []
        self._hits: dict[str, deque[float]] = {}
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
        self._conns: set[_Private] = set()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="bybit-private-ws", daemon=True).start()
        self._ws_server = self._call(self._serve())
        self.ws_url = f"ws://127.0.0.1:{self._ws_server.sockets[0].getsockname()[1]}/v5/private"

    # -- controls ----------------------------------------------------------------------------------------------
    @property
    def orders(self) -> dict[str, dict[str, Any]]:
        """Every order by orderLinkId (orderId when it has none), as /v5/order/realtime shows it."""
        with self._lock:
            return {o.link_id or o.order_id: self._order(o, REST_ORDER) for o in self.exchange.orders.values()}

    def on_public_frame(self, topic: str, frame: dict[str, Any]) -> None:
        """Market data in: BybitWsServer(on_frame=...) calls it with each public frame it sends."""
        with self._lock:
            if self.market_time and isinstance(frame.get("ts"), int):
                self._market_ts = max(self._market_ts, frame["ts"])
            self._publish(self.exchange.on_public_frame(topic, frame, self._exchange_now()))

    def _exchange_now(self) -> int:
        return self._market_ts if self.market_time and self._market_ts else _now()

    def fail_next(self, code: int, n: int = 1) -> None:
        """The next n order requests (create, amend, cancel) are refused with `code`."""
        with self._lock:
            self._fail += [code] * n

    def drop_private(self, hold: bool = False) -> int:
        """Cut every private WebSocket without a close frame; with `hold`, new ones wait in their opening handshake
        until resume_private() (so a test knows what happens during the cut). Returns how many were cut."""
        return self._call(self._drop(hold))

    def resume_private(self) -> None:
        self._loop.call_soon_threadsafe(self._admit.set)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)

    # -- REST --------------------------------------------------------------------------------------------------
    def _check(self, headers: Any, payload: str) -> int:
        if headers.get("X-BAPI-API-KEY") != self.key:
            return 10003
        ts, window = headers.get("X-BAPI-TIMESTAMP", ""), headers.get("X-BAPI-RECV-WINDOW", "5000")
        if not ts.isdigit() or abs(_now() - int(ts)) > int(window):
            return 10002
        want = hmac.new(self.secret.encode(), f"{ts}{self.key}{window}{payload}".encode(), hashlib.sha256).hexdigest()
        return 0 if hmac.compare_digest(want, headers.get("X-BAPI-SIGN", "")) else 10004

    def _answer(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0)).decode() if method == "POST" else ""
        code = self._check(handler.headers, url.query if method == "GET" else raw)
        body = json.loads(raw) if raw else {}
        headers: dict[str, str] = {}
        with self._lock:
            try:
                if code:
                    raise Refused(code, MESSAGES[code])
                self._limit(url.path, headers)
                if self._fail and method == "POST" and url.path.startswith("/v5/order/"):
                    code = self._fail.pop(0)
                    headers.setdefault("X-Bapi-Limit-Reset-Timestamp", str(_now() + 200))
                    raise Refused(code, MESSAGES.get(code, "forced by the test"))
                answer = self._result(url.path, dict(parse_qsl(url.query)) if method == "GET" else body)
            except Refused as refused:
                answer = {"retCode": refused.code, "retMsg": refused.message, "result": {}, "retExtInfo": {}}
            self.requests.append(Signed(method, url.path, url.query, body or None, answer["retCode"]))
            if self.lose_answers:
                self.lose_answers -= 1
                handler.close_connection = True
                return
        answer["time"] = _now()
        data = json.dumps(answer).encode()
        handler.send_response(200)  # Bybit answers refusals with HTTP 200 and a retCode
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _limit(self, path: str, headers: dict[str, str]) -> None:
        if self.rate_limit is None:
            return
        now, hits = self.clock(), self._hits.setdefault(path, deque())
        while hits and hits[0] <= now - 1:
            hits.popleft()
        reset = _now() + int(((hits[0] + 1 - now) if hits else 1) * 1000)
        headers.update({"X-Bapi-Limit": str(self.rate_limit), "X-Bapi-Limit-Reset-Timestamp": str(reset),
                        "X-Bapi-Limit-Status": str(max(0, self.rate_limit - len(hits) - 1))})
        if len(hits) >= self.rate_limit:
            raise Refused(10006, MESSAGES[10006])
        hits.append(now)

    def _result(self, path: str, q: dict[str, Any]) -> dict[str, Any]:
        ex, now = self.exchange, self._exchange_now()
        if path in ("/v5/order/create", "/v5/order/amend", "/v5/order/cancel"):
            order, events = getattr(ex, path.rsplit("/", 1)[1])(q, now)
            self._publish(events)
            return _ok({"orderId": order.order_id, "orderLinkId": order.link_id})
        if path in ("/v5/order/realtime", "/v5/order/history"):
            by_id = q.get("orderId") or q.get("orderLinkId")  # Bybit finds a recently closed order by its id too
            realtime = path.endswith("realtime")
            rows = [self._order(o, REST_ORDER) for o in reversed(ex.orders.values())
                    if ((by_id or o.status in OPEN) if realtime else o.status not in OPEN)
                    and all(q.get(k) in (None, v) for k, v in
                            (("symbol", o.symbol), ("orderId", o.order_id), ("orderLinkId", o.link_id)))]
            return _ok({"category": "linear", "list": rows, "nextPageCursor": ""})
        if path == "/v5/execution/list":
            found = [e for e in reversed(ex.executions)
                     if int(q.get("startTime", 0)) <= e.time <= int(q.get("endTime", 1 << 62))
                     and all(q.get(k) in (None, v) for k, v in (("symbol", e.order.symbol),
                                                                ("orderId", e.order.order_id),
                                                                ("orderLinkId", e.order.link_id)))]
            start, limit = int(q.get("cursor") or 0), min(100, int(q.get("limit", 50)))
            rows = [self._execution(e, REST_EXECUTION) for e in found[start:start + limit]]
            more = start + limit < len(found)
            return _ok({"category": "linear", "list": rows, "nextPageCursor": str(start + limit) if more else ""})
        if path == "/v5/position/list":
            positions = [ex.position(q["symbol"])] if q.get("symbol") else [
                p for p in ex.positions.values() if p.size]
            return _ok({"category": "linear", "list": [self._position(p, REST_POSITION) for p in positions],
                        "nextPageCursor": ""})
        if path == "/v5/position/set-leverage":
            ex.set_leverage(q.get("symbol", ""), q.get("buyLeverage"), q.get("sellLeverage"))
            return _ok({})
        if path == "/v5/account/set-margin-mode":
            if q.get("setMarginMode") not in ("ISOLATED_MARGIN", "REGULAR_MARGIN", "PORTFOLIO_MARGIN"):
                raise Refused(10001, "params error: setMarginMode invalid")
            ex.margin_mode = q["setMarginMode"]
            return _ok({"reasons": []}, "Request accepted")
        if path == "/v5/account/wallet-balance":
            wallet = copy.deepcopy(WALLET)
            wallet["result"]["list"] = [self._wallet(wallet["result"]["list"][0])]
            return wallet
        if path == "/v5/account/demo-apply-money":
            for item in q["utaDemoApplyMoney"]:
                self.balances[item["coin"]] = self.balances.get(item["coin"], Decimal(0)) + Decimal(item["amountStr"])
            return _ok({}, "success")
        raise Refused(10001, f"unknown path {path}")

    # -- Bybit's shapes ----------------------------------------------------------------------------------------
    def _order(self, o: Order, template: dict[str, Any]) -> dict[str, Any]:
        return _shape(template, {
            "orderId": o.order_id, "orderLinkId": o.link_id, "symbol": o.symbol, "price": _s(o.price),
            "qty": _s(o.qty), "side": o.side, "positionIdx": 0, "orderStatus": o.status, "cancelType": o.cancel_type,
            "rejectReason": o.reject_reason, "avgPrice": _s(o.avg_price) if o.cum_qty else template["avgPrice"],
            "leavesQty": _s(o.leaves), "leavesValue": _s(o.leaves * o.price), "cumExecQty": _s(o.cum_qty),
            "cumExecValue": _s(o.cum_value), "cumExecFee": _s(o.cum_fee), "timeInForce": o.tif,
            "orderType": o.order_type, "stopOrderType": o.stop_order_type, "triggerPrice": _s(o.trigger_price),
            "takeProfit": _s(o.take_profit), "stopLoss": _s(o.stop_loss), "triggerDirection": o.trigger_direction,
            "triggerBy": o.trigger_by, "lastPriceOnCreated": _s(o.last_price_on_created),
            "reduceOnly": o.reduce_only, "closeOnTrigger": False, "isLeverage": "0", "blockTradeId": "",
            "createdTime": str(o.created), "updatedTime": str(o.updated), "category": "linear"})

    def _execution(self, e: Execution, template: dict[str, Any]) -> dict[str, Any]:
        o = e.order
        return _shape(template, {
            "category": "linear", "symbol": o.symbol, "orderId": o.order_id, "orderLinkId": o.link_id,
            "side": o.side, "orderPrice": _s(o.price), "orderQty": _s(o.qty), "leavesQty": _s(o.leaves),
            "createType": "CreateByUser", "orderType": o.order_type, "stopOrderType": o.stop_order_type,
            "execFee": _s(e.fee), "execId": e.exec_id, "execPrice": _s(e.price), "execQty": _s(e.qty),
            "execType": "Trade", "execValue": _s(e.value), "execTime": str(e.time), "feeCurrency": "USDT",
            "isMaker": e.is_maker, "feeRate": _s(e.fee_rate), "markPrice": _s(e.mark_price), "indexPrice": "",
            "blockTradeId": "", "closedSize": _s(e.closed_size), "seq": e.seq, "isLeverage": "0"})

    def _position(self, p: Position, template: dict[str, Any]) -> dict[str, Any]:
        market = self.exchange.markets.get(p.symbol)
        im, value = _s(p.im), abs(p.size) * p.entry
        return _shape(template, {
            "positionIdx": 0, "symbol": p.symbol, "side": p.side, "size": _s(abs(p.size)), "avgPrice": _s(p.entry),
            "entryPrice": _s(p.entry), "positionValue": _s(value), "tradeMode": 0, "positionStatus": "Normal",
            "autoAddMargin": 0, "adlRankIndicator": 2 if p.size else 0, "leverage": _s(p.leverage),
            "positionBalance": im, "markPrice": (market.ticker.get("markPrice") if market else None) or _s(p.entry),
            "liqPrice": "", "bustPrice": "", "positionIM": im, "positionMM": _s(value * Decimal("0.005")),
            "positionIMByMp": im, "positionMMByMp": _s(value * Decimal("0.005")), "takeProfit": "0",
            "stopLoss": "0", "trailingStop": "0", "unrealisedPnl": _s(self.exchange.unrealised(p)),
            "curRealisedPnl": _s(p.cur_realised), "cumRealisedPnl": _s(p.cum_realised), "seq": p.seq,
            "isReduceOnly": False, "createdTime": str(p.created), "updatedTime": str(p.updated),
            "category": "linear", "sessionAvgPrice": ""})

    def _wallet(self, template: dict[str, Any]) -> dict[str, Any]:
        ex = self.exchange
        upl = sum((ex.unrealised(p) for p in ex.positions.values()), Decimal(0))
        position_im, order_im = ex.position_im(), ex.order_im()
        mm = sum((abs(p.size) * p.entry * Decimal("0.005") for p in ex.positions.values()), Decimal(0))
        usdt = self.balances.get("USDT", Decimal(0))
        coins = []
        for coin in template["coin"]:
            balance = self.balances.get(coin["coin"], Decimal(0))
            values = {"walletBalance": _s(balance), "equity": _s(balance)}
            if coin["coin"] == "USDT":
                values |= {"equity": _s(usdt + upl), "usdValue": _s(usdt + upl), "unrealisedPnl": _s(upl),
                           "cumRealisedPnl": _s(sum((p.cum_realised for p in ex.positions.values()), Decimal(0))),
                           "totalOrderIM": _s(order_im), "totalPositionIM": _s(position_im),
                           "totalPositionMM": _s(mm), "availableToWithdraw": _s(ex.available())}
            coins.append(_shape(coin, values))
        return _shape(template, {
            "totalEquity": _s(usdt + upl), "totalWalletBalance": _s(usdt), "totalMarginBalance": _s(usdt + upl),
            "totalAvailableBalance": _s(ex.available()), "totalPerpUPL": _s(upl),
            "totalInitialMargin": _s(position_im + order_im), "totalMaintenanceMargin": _s(mm), "coin": coins})

    def _render(self, event: Event) -> dict[str, Any]:
        topic, item = event
        if topic == "order":
            data = self._order(item, WS["order"])
        elif topic == "execution":
            data = self._execution(item, WS["execution"])
        elif topic == "position":
            data = self._position(item, WS["position"])
        else:
            data = self._wallet(WS["wallet"])
        return {"id": uuid.uuid4().hex, "topic": topic, "creationTime": self._exchange_now(), "data": [data]}

    # -- private WebSocket -------------------------------------------------------------------------------------
    def _publish(self, events: list[Event]) -> None:
        """Rendered now (the objects change later), sent in this order by the WebSocket loop."""
        if events:
            texts = [(event[0], json.dumps(self._render(event))) for event in events]
            self._loop.call_soon_threadsafe(self._fan_out, texts)

    def _fan_out(self, texts: list[tuple[str, str]]) -> None:
        for conn in self._conns:
            for topic, text in texts:
                if conn.authed and topic in conn.topics:
                    conn.queue.put_nowait(text)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _serve(self) -> Any:
        self._admit = asyncio.Event()
        self._admit.set()
        return await serve(self._handle, "127.0.0.1", 0, process_request=self._handshake, ping_interval=None,
                           open_timeout=None)

    async def _handshake(self, ws: ServerConnection, request: Any) -> Any:
        if request.path.split("?")[0] != "/v5/private":
            return ws.respond(HTTPStatus.NOT_FOUND, "not found\n")
        await self._admit.wait()
        return None

    async def _shutdown(self) -> None:
        await self._drop(False)
        self._ws_server.close()
        await self._ws_server.wait_closed()

    async def _drop(self, hold: bool) -> int:
        if hold:
            self._admit.clear()
        cut = list(self._conns)
        for conn in cut:
            self._conns.discard(conn)
            conn.ws.transport.abort()
        return len(cut)

    async def _handle(self, ws: ServerConnection) -> None:
        conn = _Private(ws)
        self._conns.add(conn)
        with self._lock:
            self.connections += 1
        writer = asyncio.create_task(self._write(conn))
        try:
            async for raw in ws:
                conn.queue.put_nowait(json.dumps(self._reply(conn, raw)))
        except ConnectionClosed:
            pass
        finally:
            self._conns.discard(conn)
            writer.cancel()

    @staticmethod
    async def _write(conn: _Private) -> None:
        while True:
            text = await conn.queue.get()
            try:
                await conn.ws.send(text)
            except ConnectionClosed:
                return

    def _reply(self, conn: _Private, raw: str | bytes) -> dict[str, Any]:
        try:
            request = json.loads(raw)
            op, args, req_id = request.get("op"), request.get("args") or [], request.get("req_id")
        except (ValueError, AttributeError):
            return {"success": False, "ret_msg": "Failed to decode incoming data", "conn_id": conn.conn_id}
        ids = {"req_id": req_id} if req_id else {}
        if op == "auth":
            code = self._ws_auth(args)
            if code:
                failure = {10003: "Invalid apikey", 10004: "Invalid sign", 10001: "Params Error"}[code]
                return {**AUTH_FAILURE, "retCode": code, "retMsg": failure, "connId": conn.conn_id, **ids}
            conn.authed = True
            with self._lock:
                self.auths += 1
            return {"op": "auth", "success": True, "retCode": 0, "retMsg": "", "connId": conn.conn_id, **ids}
        if op == "ping":
            return {**ids, "op": "pong", "args": [str(_now())], "conn_id": conn.conn_id}
        if op in ("subscribe", "unsubscribe"):
            error = "Request not authorized" if not conn.authed else next(
                (f"error:handler not found,topic:{t}" for t in args if t not in PRIVATE_TOPICS), "")
            if not error:
                (conn.topics.update if op == "subscribe" else conn.topics.difference_update)(args)
                with self._lock:
                    self.subscriptions += op == "subscribe"
            return {"success": not error, "ret_msg": error, "op": op, "conn_id": conn.conn_id, **ids}
        return {"success": False, "ret_msg": "error:invalid op", "op": op, "conn_id": conn.conn_id, **ids}

    def _ws_auth(self, args: list[Any]) -> int:
        if len(args) != 3 or args[0] != self.key:
            return 10003
        expires = str(args[1])
        want = hmac.new(self.secret.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, str(args[2])):
            return 10004
        return 10001 if not expires.isdigit() or int(expires) < _now() else 0


def _now() -> int:
    return int(time.time() * 1000)
