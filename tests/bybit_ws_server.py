"""A local stand-in for Bybit's v5 public WebSocket, for tests of ingestion clients.

The server runs on 127.0.0.1 in a background thread with its own asyncio loop, so sync tests and
async tests (whose loop is another one) can both drive it:

    with BybitWsServer(recorded_feed()) as server:
        ws = MyPybitSubclass(server.url)   # ws://127.0.0.1:PORT/v5/public/linear
        ...
        server.drop_connections()          # network cut: no close frame
        server.wait_until(lambda s: s.connections_accepted == 2)

Protocol, as Bybit's v5 docs describe it and as public probes of the live server recorded it:

* ``{"op":"subscribe","req_id":..,"args":[topics]}`` is answered
  ``{"success":true,"ret_msg":"","conn_id":..,"req_id":..,"op":"subscribe"}``. The whole request
  fails when one topic is unknown (``error:handler not found,topic:X``: one bad topic kills the
  batch, as on the live server) or already subscribed on this connection
  (``error:already subscribed,topic:X``), or when it has more than 10 args (``args size >10``).
  Public reports tie that limit to spot; a linear client is reported sending 200 topics a frame,
  so raise ``max_args_per_request`` to model a linear server that allows it.
  Bybit documents a 21,000-character budget for args; here it is counted over the topics
  subscribed on one connection, and its error text (``args length >21000``) is invented: the real
  one was not found.
* ``unsubscribe`` is acknowledged the same way (op ``unsubscribe``) and stops that topic.
* ``{"op":"ping"}`` is answered ``{"success":true,"ret_msg":"pong",..,"op":"ping"}``; WebSocket
  protocol pings are answered by the ``websockets`` library. Like Bybit, the server sends no pings.
* An unknown op is answered ``error:invalid op``, a non-JSON text
  ``Failed to decode incoming data:...``; both with success false, and the connection stays open.
* Replies are encoded the way Bybit's Go server encodes them (``<``, ``>``, ``&`` escaped as
  ``\\u003c``...), so ``args size >10`` arrives as ``args size \\u003e10`` on the wire.

Delivery: ``feed`` maps a topic to frames (dicts, or raw strings sent as they are); once a
connection subscribes to a topic, its frames are sent to that connection in order, ``pace_s``
apart. ``push`` sends a frame now to every subscribed connection.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from http import HTTPStatus
from pathlib import Path
from typing import Self

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from builders import DATA

DATA_DIR = DATA / "bybit" / "ws"
DERIVATIVES_FILE = DATA_DIR / "bybit_derivatives_v5_messages.jsonl"
SPOT_FILE = DATA_DIR / "bybit_spot_v5_messages.jsonl"

MAX_ARGS_PER_REQUEST = 10
MAX_ARGS_CHARS = 21_000
_SYMBOL = r"(?P<symbol>[A-Za-z0-9_-]+)"
_TOPIC_PATTERNS = [
    re.compile(rf"(?:tickers|publicTrade|liquidation|allLiquidation)\.{_SYMBOL}"),
    re.compile(rf"orderbook\.(?:1|50|200|500)\.{_SYMBOL}"),
    re.compile(rf"kline\.(?:1|3|5|15|30|60|120|240|360|720|D|W|M)\.{_SYMBOL}"),
]

Frame = dict | str


def load_frames(path: Path = DERIVATIVES_FILE) -> list[dict]:
    """The recorded frames of one JSONL file, in file order."""
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def recorded_feed(*paths: Path) -> dict[str, list[dict]]:
    """Recorded frames grouped by topic, in file order (default: the derivatives file).

    In the derivatives file the third ``orderbook.1.BTCUSDT`` frame comes from another recording:
    its ``u`` does not follow the first two (a ready-made gap; take ``[:2]`` for a clean book).
    """
    feed: dict[str, list[dict]] = {}
    for path in paths or (DERIVATIVES_FILE,):
        for frame in load_frames(path):
            feed.setdefault(frame["topic"], []).append(frame)
    return feed


def relabel(frame: dict, symbol: str) -> dict:
    """A copy of a recorded frame moved onto ``symbol`` (topic suffix, data ``s`` and ``symbol``).

    For load tests with many symbols only: prices, sizes, ids and times stay the recorded ones of
    the original symbol, so the result is not market data for ``symbol``.
    """
    moved = copy.deepcopy(frame)
    moved["topic"] = moved["topic"].rsplit(".", 1)[0] + "." + symbol
    data = moved.get("data")
    for item in data if isinstance(data, list) else [data]:
        if isinstance(item, dict):
            for key in ("s", "symbol"):
                if key in item:
                    item[key] = symbol
    return moved


def default_topic_check(symbols: Iterable[str] | None = None) -> Callable[[str], bool]:
    """Accepts tickers/publicTrade/orderbook.{1,50,200,500}/kline.I/liquidation/allLiquidation
    topics for a symbol in ``symbols`` (any symbol when None)."""
    allowed = None if symbols is None else frozenset(symbols)

    def known(topic: str) -> bool:
        for pattern in _TOPIC_PATTERNS:
            match = pattern.fullmatch(topic)
            if match:
                return allowed is None or match["symbol"] in allowed
        return False

    return known


def _topic_check(known_topics, symbols) -> Callable[[str], bool]:
    if known_topics is None:
        return default_topic_check(symbols)
    if callable(known_topics):
        return known_topics
    return frozenset(known_topics).__contains__


def _go_json(payload: dict) -> str:
    # Bybit's server is written in Go, whose encoder escapes these three inside strings.
    text = json.dumps(payload, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _decode(text: str) -> dict | str:
    """The request, or why it is not one."""
    try:
        request = json.loads(text)
    except ValueError as error:
        return str(error)
    return request if isinstance(request, dict) else f"expect {{ but found {text[:20]!r}"


def _encode_frame(frame: Frame) -> str:
    return frame if isinstance(frame, str) else json.dumps(frame, separators=(",", ":"))


class ServerStats:
    """Counters shared between the server loop and the test thread, behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accepted = 0
        self._open = 0
        self._subscribes: list[list[list[str]]] = []
        self._pings = 0
        self._messages: list[tuple[int, str]] = []
        self._refused = 0

    def handshake_refused(self) -> None:
        with self._lock:
            self._refused += 1

    def connection_opened(self) -> int:
        with self._lock:
            self._accepted += 1
            self._open += 1
            self._subscribes.append([])
            return self._accepted - 1

    def connection_closed(self) -> None:
        with self._lock:
            self._open -= 1

    def message(self, index: int, raw: str) -> None:
        with self._lock:
            self._messages.append((index, raw))

    def subscribe(self, index: int, args: list) -> None:
        with self._lock:
            self._subscribes[index].append(list(args))

    def ping(self) -> None:
        with self._lock:
            self._pings += 1

    def read(self, name: str):
        with self._lock:
            return copy.deepcopy(getattr(self, name))


class _Silence:
    """Which topics are held back. Touched only on the server loop."""

    def __init__(self) -> None:
        self.everything = False
        self.topics: set[str] = set()
        self._changed = asyncio.Event()

    def covers(self, topic: str) -> bool:
        return self.everything or topic in self.topics

    def set(self, topic: str | None, on: bool) -> None:
        if topic is None:
            self.everything = on
            if not on:
                self.topics.clear()
        elif on:
            self.topics.add(topic)
        else:
            self.topics.discard(topic)
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_open(self, topic: str) -> None:
        while self.covers(topic):
            await self._changed.wait()


class _Connection:
    """One client connection: its subscriptions and the tasks feeding them."""

    def __init__(self, ws: ServerConnection, index: int) -> None:
        self.ws = ws
        self.index = index
        self.conn_id = str(uuid.uuid4())
        self.topics: set[str] = set()
        self.feeders: dict[str, asyncio.Task] = {}

    def args_chars(self) -> int:
        return sum(len(topic) for topic in self.topics)

    async def reply(self, op: str | None, req_id, success: bool, ret_msg: str) -> None:
        payload = {"success": success, "ret_msg": ret_msg, "conn_id": self.conn_id}
        if req_id is not None:
            payload["req_id"] = req_id
        if op is not None:
            payload["op"] = op
        await self.send(_go_json(payload))

    async def send(self, text: str) -> bool:
        try:
            await self.ws.send(text)
            return True
        except ConnectionClosed:
            return False

    def stop_feed(self, topic: str) -> None:
        task = self.feeders.pop(topic, None)
        if task:
            task.cancel()

    def stop_all(self) -> None:
        for topic in list(self.feeders):
            self.stop_feed(topic)


class BybitWsServer:
    """Bybit v5 public WebSocket on 127.0.0.1, a free port, its own thread and loop.

    Args:
        feed: topic -> frames (dict, or str sent verbatim) sent in order after a subscribe.
        path: the URL path served (others get HTTP 404); None serves every path.
        known_topics: a collection of topics, or a predicate; default: ``default_topic_check``.
        symbols: the symbols the default topic check accepts (None: any).
        pace_s: pause between two feed frames on one connection.
        max_args_per_request, max_args_chars: the subscribe limits.
        on_frame: called (on the server's loop) with (topic, frame) just before a dict frame is sent (once per
            client for feed frames, once per ``push``), so an exchange stand-in has seen what a client will see.

    Stats, safe to read from any thread: ``connections_accepted``, ``open_connections``,
    ``subscribe_requests`` (per connection in accept order, the args of each accepted or
    refused subscribe), ``pings_received`` (``op: ping`` requests) and ``messages_received``
    ((connection index, raw text) of every message) and ``handshakes_refused`` (while ``refuse``).
    """

    def __init__(
        self,
        feed: dict[str, list[Frame]] | None = None,
        *,
        path: str | None = "/v5/public/linear",
        known_topics: Iterable[str] | Callable[[str], bool] | None = None,
        symbols: Iterable[str] | None = None,
        pace_s: float = 0.0,
        max_args_per_request: int = MAX_ARGS_PER_REQUEST,
        max_args_chars: int = MAX_ARGS_CHARS,
        on_frame: Callable[[str, dict], None] | None = None,
    ) -> None:
        self.on_frame = on_frame
        self.feed = {topic: list(frames) for topic, frames in (feed or {}).items()}
        self.path = path
        self.pace_s = pace_s
        self.max_args_per_request = max_args_per_request
        self.max_args_chars = max_args_chars
        self.refuse = False
        self.stats = ServerStats()
        self._known = _topic_check(known_topics, symbols)
        self._connections: dict[int, _Connection] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self._silence: _Silence | None = None
        self.port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="bybit-ws-server", daemon=True
        )
        self._thread.start()
        self._server = self._call(self._serve())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path or '/v5/public/linear'}"

    # -- controls, callable from any thread but the server's ----------------------------------

    def push(self, topic: str, frame: Frame) -> int:
        """Send ``frame`` now to every connection subscribed to ``topic``; returns how many."""
        return self._call(self._push(topic, frame))

    def silence(self, topic: str | None = None, on: bool = True) -> None:
        """Hold back a topic's frames (every topic when None), as a stale upstream would.

        Feeds pause and resume where they were once the silence is lifted; pushed frames are
        dropped. Replies (acks, pongs) still flow. ``silence(None, on=False)`` lifts all.
        """
        self._call(self._in_loop(lambda: self._silence.set(topic, on)))

    def drop_connections(self) -> int:
        """Abort every connection without a close frame (a network cut); returns how many."""
        return self._call(self._in_loop(self._abort_all))

    def close_connections(self, code: int = 1000, reason: str = "") -> int:
        """Close every connection cleanly with ``code``; returns how many."""
        return self._call(self._close_all(code, reason))

    def wait_until(self, predicate: Callable[[BybitWsServer], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate(self)`` until true or ``timeout`` (sync tests; blocks the caller)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    @property
    def connections_accepted(self) -> int:
        return self.stats.read("_accepted")

    @property
    def open_connections(self) -> int:
        return self.stats.read("_open")

    @property
    def subscribe_requests(self) -> list[list[list[str]]]:
        return self.stats.read("_subscribes")

    @property
    def pings_received(self) -> int:
        return self.stats.read("_pings")

    @property
    def messages_received(self) -> list[tuple[int, str]]:
        return self.stats.read("_messages")

    @property
    def handshakes_refused(self) -> int:
        return self.stats.read("_refused")

    # -- server loop ---------------------------------------------------------------------------

    def _call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @staticmethod
    async def _in_loop(function):
        return function()

    async def _serve(self):
        self._silence = _Silence()
        return await serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            ping_interval=None,
        )

    async def _shutdown(self) -> None:
        for connection in self._connections.values():
            connection.stop_all()
        self._server.close()
        await self._server.wait_closed()

    def _process_request(self, ws: ServerConnection, request):
        if self.refuse:
            self.stats.handshake_refused()
            return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "refused by test\n")
        if self.path is not None and request.path.split("?")[0] != self.path:
            return ws.respond(HTTPStatus.NOT_FOUND, "not found\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        connection = _Connection(ws, self.stats.connection_opened())
        self._connections[connection.index] = connection
        try:
            async for raw in ws:
                text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
                self.stats.message(connection.index, text)
                await self._on_text(connection, text)
        except ConnectionClosed:
            pass
        finally:
            connection.stop_all()
            del self._connections[connection.index]
            self.stats.connection_closed()

    async def _on_text(self, connection: _Connection, text: str) -> None:
        request = _decode(text)
        if isinstance(request, str):
            await connection.reply(None, None, False, f"Failed to decode incoming data:{request}")
            return
        op, req_id = request.get("op"), request.get("req_id")
        if op == "subscribe":
            await self._subscribe(connection, req_id, request.get("args"))
        elif op == "unsubscribe":
            await self._unsubscribe(connection, req_id, request.get("args"))
        elif op == "ping":
            self.stats.ping()
            await connection.reply("ping", req_id, True, "pong")
        else:
            await connection.reply(op, req_id, False, "error:invalid op")

    async def _subscribe(self, connection: _Connection, req_id, args) -> None:
        args = args if isinstance(args, list) else []
        self.stats.subscribe(connection.index, args)
        error = self._subscribe_error(connection, args)
        await connection.reply("subscribe", req_id, error is None, error or "")
        if error is None:
            for topic in args:
                connection.topics.add(topic)
                self._start_feed(connection, topic)

    def _subscribe_error(self, connection: _Connection, args: list) -> str | None:
        if len(args) > self.max_args_per_request:
            return f"args size >{self.max_args_per_request}"
        for topic in args:
            if not isinstance(topic, str) or not self._known(topic):
                return f"error:handler not found,topic:{topic}"
            if topic in connection.topics:
                return f"error:already subscribed,topic:{topic}"
        if connection.args_chars() + sum(len(t) for t in args) > self.max_args_chars:
            return f"args length >{self.max_args_chars}"
        return None

    async def _unsubscribe(self, connection: _Connection, req_id, args) -> None:
        for topic in args if isinstance(args, list) else []:
            connection.topics.discard(topic)
            connection.stop_feed(topic)
        await connection.reply("unsubscribe", req_id, True, "")

    def _start_feed(self, connection: _Connection, topic: str) -> None:
        frames = self.feed.get(topic)
        if frames:
            task = asyncio.create_task(self._run_feed(connection, topic, frames))
            connection.feeders[topic] = task

    async def _run_feed(self, connection: _Connection, topic: str, frames: list[Frame]) -> None:
        for position, frame in enumerate(frames):
            if position and self.pace_s:
                await asyncio.sleep(self.pace_s)
            await self._silence.wait_open(topic)
            self._seen(topic, frame)
            if not await connection.send(_encode_frame(frame)):
                return

    async def _push(self, topic: str, frame: Frame) -> int:
        if self._silence.covers(topic):
            return 0
        text = _encode_frame(frame)
        targets = [c for c in self._connections.values() if topic in c.topics]
        if targets:
            self._seen(topic, frame)
        sent = await asyncio.gather(*(c.send(text) for c in targets))
        return sum(sent)

    def _seen(self, topic: str, frame: Frame) -> None:
        if self.on_frame is not None and isinstance(frame, dict):
            self.on_frame(topic, frame)

    def _abort_all(self) -> int:
        connections = list(self._connections.values())
        for connection in connections:
            connection.ws.transport.abort()
        return len(connections)

    async def _close_all(self, code: int, reason: str) -> int:
        connections = list(self._connections.values())
        await asyncio.gather(*(c.ws.close(code, reason) for c in connections))
        return len(connections)
