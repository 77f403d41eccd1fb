"""Bybit's public WebSocket streams for a whole universe, through pybit, as market frames in event-time order.

Always Bybit mainnet's public streams (also for demo sessions: demo has no public data of its own), unless
a URL is given (tests). The universe is split over connections (`bybit_subscriptions.plan`). pybit keeps each
connection alive: pings, reconnects at once after a cut and resends the subscriptions. On top of it this feed:
- replaces a socket pybit gave up on (refused reconnects) or one that went silent, with backoff;
- hands pybit's thread callbacks to asyncio through `call_soon_threadsafe`;
- resubscribes an order book whose update ids show a gap, for a new snapshot;
- marks symbols with no update for `stale_after_s` stale;
- passes every raw message on (`on_raw`) for recording, before anything else touches it.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable

import orjson
from pybit.unified_trading import WebSocket

from streams.bybit.subscriptions import Connection, plan
from streams.bybit.v5 import BybitNormalizer, Gap, Reply, stale_frame
from streams.frames.event_order import EventOrder
from streams.frames.stale import StaleWatch
from streams.frames.wire import WireFrame

log = logging.getLogger(__name__)

PUBLIC_URL = "wss://stream.bybit.com/v5/public/{category}"


class PublicSocket(WebSocket):
    """pybit's public socket at `url`, handing each raw message on with its receive time.

    pybit's own message handling keeps each book as a list searched per level and deep-copies it for every
    message (too slow for 700 symbols), hides the update ids a gap check needs, and closes the socket for good
    on one refused subscription. So messages are taken raw; connection, pings and resubscription stay pybit's.
    """

    def __init__(self, url: str, category: str, on_raw: Callable[[int, str], None], ping_interval: int = 20,
                 retries: int = 3) -> None:
        self._url = url
        self._on_raw = on_raw
        self.closed = False
        super().__init__(channel_type=category, testnet=False, ping_interval=ping_interval,
                         ping_timeout=min(10, ping_interval - 1), retries=retries, restart_on_error=True)

    def _connect(self, url: str) -> None:
        if self.closed:
            return
        super()._connect(self._url)
        if self.closed:  # closed while pybit reconnected it
            self.exit()

    def _on_message(self, message: str) -> None:
        if not self.closed:
            self._on_raw(time.time_ns(), message)

    def close(self) -> None:
        """For good. pybit's `exit` is not: a cut seen on pybit's thread reconnects the socket (with every
        subscription it holds) even when it was exited meanwhile."""
        self.closed = True
        self.handle_error = False
        self.exit()

    def send_raw(self, message: dict) -> None:
        self.ws.send(orjson.dumps(message).decode())

    def subscribe_topics(self, topics: list[str], req_id: str | None = None) -> None:
        """Subscribe `topics` in one request, once connected. The request is kept (pybit sends its subscriptions
        again after a reconnect) BEFORE it is sent: pybit's own subscribe keeps it after, so a refusal could be
        handled before its request was known, and the good topics of a refused request never split out."""
        while not self.is_connected():
            time.sleep(0.1)
        req_id = req_id or str(uuid.uuid4())
        message = orjson.dumps({"op": "subscribe", "req_id": req_id, "args": topics}).decode()
        self.subscriptions[req_id] = message
        self.ws.send(message)


@dataclass
class FeedStats:
    messages: int = 0
    frames: int = 0
    bad: int = 0
    connects: int = 0
    replaced: int = 0  # sockets this feed replaced (pybit gave up, or silence)
    gaps: int = 0
    refused: int = 0  # subscriptions Bybit refused
    stale: int = 0
    late: int = 0


Alert = Callable[[str, str, str], None]  # severity, title, text
FLUSH_EVERY_S = 0.05  # the feed releases what it received (in event-time order) this often


class BybitPublicFeed:
    def __init__(self, symbols: list[str], on_frames: Callable[[list[WireFrame]], Awaitable[object]], *,
                 deep: Iterable[str] = (), depth: int = 50, category: str = "linear", url: str | None = None,
                 on_raw: Callable[[int, bytes], object] | None = None, on_alert: Alert | None = None,
                 stale_after_s: float = 15.0, silence_s: float = 30.0, lateness_ms: int = 250,
                 flush_every_s: float = FLUSH_EVERY_S, max_symbols_per_connection: int = 100, ping_interval: int = 20,
                 backoff_max_s: float = 60.0) -> None:
        self.connections: list[Connection] = plan(symbols, deep, depth, max_symbols=max_symbols_per_connection)
        self.on_frames = on_frames
        self.on_raw = on_raw
        self.on_alert = on_alert or (lambda severity, title, text: log.warning("%s: %s", title, text))
        self.category = category
        self.url = url or PUBLIC_URL.format(category=category)
        self.stale_after_ms = int(stale_after_s * 1000)
        self.silence_s = silence_s
        self.flush_every_s = flush_every_s
        self.ping_interval = ping_interval
        self.backoff_max_s = backoff_max_s
        self.order = EventOrder(lateness_ms)
        self.watch = StaleWatch(self.stale_after_ms)
        self.stats = FeedStats()
        self._sockets: list[PublicSocket | None] = [None] * len(self.connections)
        self._normalizers = [BybitNormalizer() for _ in self.connections]
        self._last_message = [0.0] * len(self.connections)
        self._queue: asyncio.Queue = asyncio.Queue()
        self._clock_ts = -1  # the newest event time seen, and when (monotonic) it was seen
        self._clock_at = 0.0

    # --- the event-time clock ---------------------------------------------------------------------------------
    def now_ms(self) -> int:
        """The exchange's time, estimated: the newest event time seen, moved on by the wall clock since.
        Only for deciding when to release frames and call a quiet symbol stale; replays use event time alone."""
        if self._clock_ts < 0:
            return -1
        return self._clock_ts + int((time.monotonic() - self._clock_at) * 1000)

    def saw(self, ts: int) -> None:
        if ts > self._clock_ts:
            self._clock_ts, self._clock_at = ts, time.monotonic()

    # --- running -----------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> FeedStats:
        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(self._keep(i, loop, stop)) for i in range(len(self.connections))]
        tasks.append(asyncio.create_task(self._consume()))
        flusher = asyncio.create_task(self._flush_loop(stop))
        try:
            await stop.wait()
        finally:
            for task in tasks + [flusher]:
                task.cancel()
            await asyncio.gather(*tasks, flusher, return_exceptions=True)
            await asyncio.gather(*(asyncio.to_thread(self._close, i) for i in range(len(self.connections))))
            while not self._queue.empty():
                self._handle(*self._queue.get_nowait())
            await self._emit(self.order.drain())
        return self.stats

    async def _keep(self, i: int, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        """Connection i, open and subscribed; replaced with backoff when pybit gives up or it goes silent."""
        failures = 0
        while not stop.is_set():
            try:
                await asyncio.to_thread(self._open, i, loop)
                failures = 0
            except Exception as exc:  # pybit raises a bare timeout after its retries; anything else is logged too
                await asyncio.to_thread(self._close, i)  # a socket cut while subscribing: pybit would reconnect it
                failures += 1
                delay = min(self.backoff_max_s, 2 ** (failures - 1))
                self.on_alert("warning", "bybit connection failed",
                              f"connection {i}: {type(exc).__name__}: {exc}; retrying in {delay:g} s")
                await asyncio.sleep(delay)
                continue
            down = 0  # polls in a row that found the socket closed: pybit may be reconnecting it
            while not stop.is_set():
                await asyncio.sleep(0.2)
                sock = self._sockets[i]
                down = down + 1 if sock is None or sock.exited and not sock.is_connected() else 0
                silent = time.monotonic() - self._last_message[i] > self.silence_s
                if down >= 3 or silent:
                    why = "went silent" if silent else "was given up by pybit"
                    self.on_alert("warning", "bybit connection replaced", f"connection {i} {why}")
                    self.stats.replaced += 1
                    await asyncio.to_thread(self._close, i)
                    break

    def _open(self, i: int, loop: asyncio.AbstractEventLoop) -> None:
        conn = self.connections[i]
        self._normalizers[i] = BybitNormalizer()

        def on_raw(recv_ns: int, message: str) -> None:  # pybit's thread
            loop.call_soon_threadsafe(self._queue.put_nowait, (i, recv_ns, message))

        sock = PublicSocket(self.url, self.category, on_raw, ping_interval=self.ping_interval)
        self._sockets[i] = sock
        self._last_message[i] = time.monotonic()
        self.stats.connects += 1
        for request in conn.requests:
            sock.subscribe_topics(request.args)
        now = self.now_ms()
        if now >= 0:
            self.watch.expect(conn.symbols, now)

    def _close(self, i: int) -> None:
        sock, self._sockets[i] = self._sockets[i], None
        if sock is not None:
            sock.close()

    async def _consume(self) -> None:
        while True:
            i, recv_ns, message = await self._queue.get()
            try:
                todo = self._handle(i, recv_ns, message)
            except Exception as exc:  # noqa: BLE001 - one message never stops the feed
                self.stats.bad += 1
                self.on_alert("error", "bybit message not handled", f"{type(exc).__name__}: {exc}")
                continue
            if isinstance(todo, Gap):
                await asyncio.to_thread(self._resubscribe, i, todo.topic)
            elif todo:
                await asyncio.to_thread(self._subscribe_each, i, todo)

    def _refused(self, i: int, reply: Reply) -> list[str]:
        """Bybit refuses a whole request for one bad topic: the topics of a refused request of several are
        subscribed one by one (returned), so only the bad one stays out."""
        sock = self._sockets[i]
        request = None if sock is None or reply.req_id is None else sock.subscriptions.get(reply.req_id)
        args = orjson.loads(request)["args"] if request else []
        if len(args) > 1:
            return args
        self.stats.refused += 1
        self.on_alert("error", "bybit refused a subscription", reply.message)
        return []

    def _subscribe_each(self, i: int, topics: list[str]) -> None:
        sock = self._sockets[i]
        if sock is None or not sock.is_connected():
            return
        for topic in topics:
            sock.subscribe_topics([topic], req_id=f"one-{uuid.uuid4().hex[:12]}")

    def _handle(self, i: int, recv_ns: int, message: str) -> Gap | list[str] | None:
        self._last_message[i] = time.monotonic()
        self.stats.messages += 1
        raw = message.encode()
        if self.on_raw is not None:
            self.on_raw(recv_ns, raw)
        try:
            frames, event = self._normalizers[i].on_message(raw, recv_ns)
        except ValueError as exc:
            self.stats.bad += 1
            self.on_alert("warning", "bad bybit message", str(exc))
            return None
        if isinstance(event, Reply) and not event.success and event.op == "subscribe":
            return self._refused(i, event)
        for frame in frames:
            self.saw(frame.ts)
            self.order.push(frame)
        self.stats.frames += len(frames)
        if isinstance(event, Gap):
            self.stats.gaps += 1
            self.on_alert("warning", "order book gap", f"{event.topic}: update {event.got} after "
                                                       f"{event.expected - 1}; resubscribing")
            return event
        return None

    def _resubscribe(self, i: int, topic: str) -> None:
        """A new snapshot of one book: unsubscribe and subscribe the topic alone."""
        sock = self._sockets[i]
        if sock is None or not sock.is_connected():
            return  # a new connection subscribes afresh anyway
        for op in ("unsubscribe", "subscribe"):
            sock.send_raw({"op": op, "req_id": f"resync-{uuid.uuid4().hex[:12]}", "args": [topic]})

    async def _flush_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.flush_every_s)
            now = self.now_ms()
            if now < 0:
                continue
            frames = self.order.release(now - self.order.lateness_ms)
            await self._emit(frames, now)

    async def _emit(self, frames: list[WireFrame], now: int | None = None) -> None:
        out = []
        for frame in frames:
            if frame.live:
                self.watch.seen(frame.symbol, frame.ts)
            out.append(frame)
        if now is not None:
            for symbol in self.watch.check(now - self.order.lateness_ms):
                self.stats.stale += 1
                out.append(stale_frame(symbol, max(now - self.order.lateness_ms, self.order.released_to),
                                       time.time_ns()))
        self.stats.late = self.order.late
        if out:
            await self.on_frames(out)
