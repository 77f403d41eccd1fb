"""The Bybit gateway (issue 18): the sessions' `venue.requests` sent to Bybit through pybit, and what Bybit says
(its private stream, a refusal, a snapshot) written on `venue.reports`.

One process per deployment, for the account of `[bybit_trading]` (demo by default). A request's offset is committed
only after Bybit answered it and its report (if any) is on the broker: a gateway killed in between sends it again
after its restart, and the orderLinkId (papertape's order id) makes Bybit refuse the double, found by `place`. What
the private stream said while the gateway was down is not sent again by Bybit: the session's next reconciliation
(every `reconcile_every_s`, at a worker's restart, or `papertape reconcile`) books what was missed, once.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from decimal import Decimal
from typing import Any, Callable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pybit.unified_trading import HTTP, WebSocket

import schemas as s
from papertape.config import Settings
from papertape.core.venue.remote import link_id
from schemas.vocabulary import BYBIT_VENUES, BybitVenue, Severity
from streams.bybit import account, orders
from streams.bybit.private import BAD_KEY_CODES, BybitKeys, BybitPrivateError, trading_client, wallet_balance

log = logging.getLogger(__name__)

GROUP = "bybit-gateway"
PRIVATE_TOPICS = ["order", "execution"]  # positions and the wallet are read in snapshots


class PrivateSocket(WebSocket):
    """pybit's private socket (it signs the auth, pings, reconnects and resubscribes), handing each raw message on.
    `url`: a stand-in's (tests); None: the environment's stream host."""

    def __init__(self, url: str | None, environment: str, keys: BybitKeys, on_raw: Callable[[str], None]) -> None:
        self._url = url
        self._on_raw = on_raw
        super().__init__(channel_type="private", testnet=environment == "testnet", demo=environment == "demo",
                         api_key=keys.key, api_secret=keys.secret, ping_interval=20, ping_timeout=10, retries=0,
                         restart_on_error=True, private_auth_expire=10)

    def _connect(self, url: str) -> None:
        super()._connect(self._url or url)

    def _on_message(self, message: str) -> None:
        self._on_raw(message)

    def subscribe_private(self) -> None:
        """The private topics, sent again by pybit after each reconnect."""
        message = orjson.dumps({"op": "subscribe", "req_id": "papertape", "args": PRIVATE_TOPICS}).decode()
        self.subscriptions["papertape"] = message
        self.ws.send(message)


class BybitGateway:
    def __init__(self, bootstrap: str, settings: Settings, keys: BybitKeys, mainnet_flag: bool = False,
                 ws_url: str | None = None) -> None:
        trading = settings.bybit_trading
        self.bootstrap = bootstrap
        self.settings = settings
        self.names = settings.names
        self.venue: BybitVenue = f"bybit_{trading.environment}"  # type: ignore[assignment]
        self.http: HTTP = trading_client(trading, keys, mainnet_flag)  # mainnet: the setting and the flag, or refused
        self.keys = keys
        self.ws_url = ws_url
        # one session trades on the account (its reconciliation compares the whole account): the configured one,
        # else the last that sent a request
        self.session: str | None = next((c.id for c in settings.sessions if c.venue == self.venue), None)
        self.leverage_set: set[str] = set()
        self.margin_mode_set = False
        self.keys_refused = False
        self.socket: PrivateSocket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: asyncio.Queue[str] = asyncio.Queue()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True)
        self._consumer = AIOKafkaConsumer(self.names.topic("venue.requests"), bootstrap_servers=self.bootstrap,
                                          group_id=self.names.group(GROUP), enable_auto_commit=False,
                                          auto_offset_reset="earliest")
        await self._producer.start()
        await self._consumer.start()
        try:
            await asyncio.to_thread(self._open_socket)
            streamed = asyncio.create_task(self._relay_stream())
            try:
                while not stop.is_set():
                    if streamed.done():  # the stream's relay failed: let the process die, the supervisor restarts it
                        streamed.result()
                    batch = await self._consumer.getmany(timeout_ms=200)
                    for records in batch.values():
                        for record in records:
                            await self._handle(record.value)
                    if batch:
                        await self._consumer.commit()
            finally:
                streamed.cancel()
        finally:
            if self.socket is not None:
                self.socket.exit()
            await self._consumer.stop()
            await self._producer.stop()

    # --- the private stream ---------------------------------------------------------------------------------
    def _open_socket(self) -> None:
        self.socket = PrivateSocket(self.ws_url, self.settings.bybit_trading.environment, self.keys, self._on_raw)
        self.socket.subscribe_private()

    def _on_raw(self, raw: str) -> None:  # pybit's thread
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._stream.put_nowait, raw)

    async def _relay_stream(self) -> None:
        while True:
            raw = await self._stream.get()
            try:
                message = orjson.loads(raw)
            except orjson.JSONDecodeError:
                log.warning("Bybit's private stream sent a message that is not JSON: %.200s", raw)
                continue
            if message.get("op") == "auth" and not message.get("success", True):
                await self._alert("bybit-stream-auth", "critical", "Bybit refused the private stream's keys",
                                  f"{message.get('ret_msg') or message.get('retMsg') or 'auth refused'}: check the "
                                  f"key's permissions and environment ({self.venue})")
                continue
            if self.session is None:
                continue  # no session yet: its first reconciliation books what this said
            try:
                report = account.report_of(message, self.session, self.venue)
            except ValueError as exc:
                log.warning("a Bybit private message papertape cannot read: %s", exc)
                continue
            if report is not None:
                await self._send(report)

    # --- requests -------------------------------------------------------------------------------------------
    async def _handle(self, value: bytes | None) -> None:
        try:
            req = s.decode("venue.requests", value)
        except s.InvalidMessage as exc:
            log.warning("a venue request papertape cannot read: %s", exc)
            return
        if req.venue != self.venue:
            await self._send(self._refusal(req, f"this gateway trades on {self.venue} ([bybit_trading] environment), "
                                                f"not {req.venue}"))
            return
        self.session = req.session
        try:
            report = await asyncio.to_thread(self._call, req)
        except BybitPrivateError as exc:
            if exc.code in BAD_KEY_CODES and not self.keys_refused:
                self.keys_refused = True
                await self._alert("bybit-keys", "critical", "Bybit refused the keys", str(exc))
            report = self._refusal(req, str(exc))
        if report is not None:
            await self._send(report)

    def _call(self, req: s.VenueRequest) -> s.VenueReport | None:
        """Bybit's answer to `req`, in pybit's (blocking) calls, rate limits waited out."""
        if req.action == "snapshot":
            return account.with_backoff(lambda: account.snapshot(
                self.http, req.session, self.venue, req.id, now_ms(), self._settle_coin(req.session),
                req.since or 0))
        if req.action == "new":
            assert req.order is not None
            order = req.order
            self._prepare(order.symbol, req.leverage, req.margin_mode)
            account.with_backoff(lambda: orders.place(self.http, order))
        elif req.action == "cancel":
            account.with_backoff(lambda: account.cancel(self.http, req))
        else:
            account.with_backoff(lambda: account.amend(self.http, req))
        return None  # the private stream reports what became of it

    def _prepare(self, symbol: str, leverage: Decimal | None, margin_mode: str | None) -> None:
        if margin_mode is not None and not self.margin_mode_set:
            account.set_margin_mode(self.http, margin_mode)  # type: ignore[arg-type]
            self.margin_mode_set = True
        if leverage is not None and symbol not in self.leverage_set:
            account.set_leverage(self.http, symbol, leverage)
            self.leverage_set.add(symbol)

    def _settle_coin(self, session: str) -> str:
        return next((c.settle_coin for c in self.settings.sessions if c.id == session), "USDT")

    def _refusal(self, req: s.VenueRequest, why: str) -> s.VenueReport:
        """A placement refused: the order rejected with the reason; a cancel, amend or snapshot: a refusal."""
        ts = now_ms()
        if req.action == "new" and req.order is not None:
            o = req.order
            rejected = s.ExchangeOrder(order_id=link_id(o.id), ts=ts, symbol=o.symbol, side=o.side, type=o.type,
                                       status="rejected", qty=o.qty, price=o.price, trigger_price=o.trigger_price,
                                       reason=why[:500])
            return s.VenueReport(id=f"{req.id}:rejected", ts=ts, session=req.session, venue=self.venue,
                                 request=req.order_id or o.id, orders=[rejected])
        return s.VenueReport(id=f"{req.id}:refused", ts=ts, session=req.session, venue=self.venue,
                             request=req.order_id or req.id, refused=why[:500])

    # --- output ---------------------------------------------------------------------------------------------
    async def _send(self, msg: Any) -> None:
        assert self._producer is not None
        topic = "venue.reports" if isinstance(msg, s.VenueReport) else "alerts"
        key = msg.session.encode() if isinstance(msg, s.VenueReport) else None
        await (await self._producer.send(self.names.topic(topic), s.encode(msg), key=key))

    async def _alert(self, key: str, severity: Severity, title: str, text: str) -> None:
        ts = now_ms()
        await self._send(s.Alert(id=f"gateway:{key}:{ts}", ts=ts, severity=severity, type="system",
                                 source="bybit-gateway", session=self.session, title=title, text=text[:4000]))


def now_ms() -> int:
    """The exchange's clock as this machine reads it: requests and snapshots are stamped with it (the exchange
    stamps its own reports)."""
    return int(time.time() * 1000)


def check_exchange_sessions(settings: Settings, mainnet_flag: bool = False) -> str:
    """Before a run starts its sessions on Bybit: each on the environment of `[bybit_trading]`, one per account, the
    keys accepted, and the wallet holding at least the session's balance. What it checked, or BybitPrivateError."""
    trading = settings.bybit_trading
    venue = f"bybit_{trading.environment}"
    on_bybit = [c for c in settings.sessions if c.venue in BYBIT_VENUES]
    wrong = [c.id for c in on_bybit if c.venue != venue]
    if wrong:
        raise BybitPrivateError(f"sessions {', '.join(wrong)} are not on {venue}, the environment of "
                                f"[bybit_trading] (environment = \"{trading.environment}\")")
    if len(on_bybit) > 1:
        raise BybitPrivateError(f"sessions {', '.join(c.id for c in on_bybit)} would share one Bybit account, "
                                "which reconciliation compares whole: one session per account")
    http = trading_client(trading, BybitKeys.load(trading, dict(os.environ)), mainnet_flag)
    cfg = on_bybit[0]
    balance = wallet_balance(http, cfg.settle_coin)
    if balance < cfg.balance:
        raise BybitPrivateError(f"session {cfg.id} needs {cfg.balance} {cfg.settle_coin}; the Bybit "
                                f"{trading.environment} wallet holds {balance} (`papertape demo fund`)")
    return f"bybit: session {cfg.id} on {venue}, wallet {balance} {cfg.settle_coin}"
