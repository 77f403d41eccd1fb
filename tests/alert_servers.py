"""Local stand-ins for the alert channels' HTTP APIs: Telegram's Bot API (sendMessage), a Discord webhook and a
plain JSON webhook. Each records every request it received, and can be taken down (connection refused, or an
HTTP status such as 503) and brought back on the same port.

Point apprise at them with a channel's `api_url` (Telegram's and Discord's plugins keep their paths under it):
    ChannelSettings(name="tg", url=f"tgram://{TELEGRAM_TOKEN}/{chat}", api_url=telegram.url, min_severity="info")
    ChannelSettings(name="dc", url=f"discord://{DISCORD_WEBHOOK_ID}/{DISCORD_WEBHOOK_TOKEN}", api_url=discord.url)
    ChannelSettings(name="hook", url=webhook.url + "/alerts")
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiokafka import AIOKafkaConsumer

import schemas as s

TELEGRAM_TOKEN = "123456789:AAHstandInTokenForTheAlertRelayTests"  # Telegram's <bot id>:<secret> form
DISCORD_WEBHOOK_ID, DISCORD_WEBHOOK_TOKEN = "1187654321098765432", "standInWebhookTokenForTheRelay_Tests-1"


@dataclass(frozen=True)
class Received:
    path: str
    query: dict[str, list[str]]
    body: Any  # the JSON body, parsed (None if it was not JSON)
    at: float  # time.monotonic() when it arrived


Answer = tuple[int, bytes]  # status, JSON body (b"" for none)


class StandIn:
    """A threaded HTTP server on 127.0.0.1 answering POSTs with `answer(path, query, body)`."""

    def __init__(self, answer: Callable[[str, dict[str, list[str]], Any], Answer]) -> None:
        self.answer = answer
        self.requests: list[Received] = []
        self.failing_with: int | None = None  # down with this HTTP status (e.g. 503)
        self._lock = threading.Lock()
        self._port = 0
        self._server: ThreadingHTTPServer | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def up(self) -> None:
        """Answer normally again (listening again on the same port if the server was stopped)."""
        self.failing_with = None
        if self._server is not None:
            return
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                status = stand_in.failing_with
                if status is None:
                    with stand_in._lock:
                        stand_in.requests.append(Received(parts.path, query, body, time.monotonic()))
                    status, out = stand_in.answer(parts.path, query, body)
                else:
                    out = b'{"message": "service unavailable"}'
                self.send_response(status)
                if out:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self, status: int | None = None) -> None:
        """Refuse connections (the server stops listening), or, with `status`, answer every request with it
        without recording it."""
        if status is not None:
            self.failing_with = status
        elif self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        self.down()

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Received]:
        """The requests once there are at least `n` (AssertionError after `timeout`: something is lost)."""
        deadline = time.monotonic() + timeout
        while len(got := self.received()) < n:
            assert time.monotonic() < deadline, f"{len(got)} requests, waited for {n}"
            time.sleep(0.02)
        return got


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def telegram(unknown_chats: tuple[str, ...] = ()) -> StandIn:
    """Telegram's Bot API, sendMessage only: POST /bot<token>/sendMessage with a JSON body (chat_id, text, ...).
    Shapes from the Bot API docs (core.telegram.org/bots/api, "Making requests" and "sendMessage"): every answer is
    {"ok": ..., "result": ...} on success, {"ok": false, "error_code": N, "description": ...} on failure; sendMessage
    returns the sent Message (message_id, date, chat, text). A chat in `unknown_chats` gets Telegram's 400
    "Bad Request: chat not found"; another token, 401 "Unauthorized"."""
    sent = iter(range(1, 1 << 30))

    def answer(path: str, query: dict, body: Any) -> Answer:
        token, _, method = path.removeprefix("/bot").partition("/")
        if token != TELEGRAM_TOKEN:
            return 401, _json({"ok": False, "error_code": 401, "description": "Unauthorized"})
        if method != "sendMessage" or not isinstance(body, dict) or "text" not in body:
            return 404, _json({"ok": False, "error_code": 404, "description": "Not Found"})
        if str(body.get("chat_id")) in unknown_chats:
            return 400, _json({"ok": False, "error_code": 400, "description": "Bad Request: chat not found"})
        chat = {"id": int(body["chat_id"]) if str(body["chat_id"]).lstrip("-").isdigit() else body["chat_id"],
                "type": "private"}
        return 200, _json({"ok": True, "result": {"message_id": next(sent), "date": int(time.time()), "chat": chat,
                                                  "text": body["text"]}})

    return StandIn(answer)


def discord() -> StandIn:
    """A Discord webhook: POST /api/webhooks/<id>/<token> with a JSON body (content, embeds, username...). Shapes
    from Discord's "Execute Webhook" docs (discord.com/developers/docs/resources/webhook#execute-webhook, as typed
    by discord-api-types: RESTPostAPIWebhookWithTokenResult is `never`, i.e. 204 No Content, unless the `wait`
    query parameter is true, when the created message is returned); an unknown webhook is 404 with Discord's
    error body {"message": "Unknown Webhook", "code": 10015}."""
    sent = iter(range(1, 1 << 30))

    def answer(path: str, query: dict, body: Any) -> Answer:
        if path.rstrip("/") != f"/api/webhooks/{DISCORD_WEBHOOK_ID}/{DISCORD_WEBHOOK_TOKEN}":
            return 404, _json({"message": "Unknown Webhook", "code": 10015})
        if not isinstance(body, dict) or not (body.get("content") or body.get("embeds")):
            return 400, _json({"message": "Cannot send an empty message", "code": 50006})
        if query.get("wait", ["false"])[0].lower() == "true":
            return 200, _json({"id": str(next(sent)), "type": 0, "content": body.get("content", ""),
                               "channel_id": "1", "webhook_id": DISCORD_WEBHOOK_ID})
        return 204, b""

    return StandIn(answer)


def webhook() -> StandIn:
    """A plain JSON webhook (papertape's own shape, streams/sinks/alert_channels.py): 200 to any JSON POST."""
    return StandIn(lambda path, query, body: (200, b"{}") if isinstance(body, dict) else (400, b"{}"))


# --- what reached them, and what the relay recorded -----------------------------------------------------------

ID_LINE = re.compile(r"id (\S+)$", re.M)  # the last line of a lone alert's message: "... id <alert id>"


def ids_in(stand_in: StandIn) -> Counter[str]:
    """Alert ids per request: the JSON webhook lists them, Telegram and Discord carry them in the message."""
    out: Counter[str] = Counter()
    for r in stand_in.received():
        if "alert_ids" in r.body:
            out.update(r.body["alert_ids"])
        else:
            out.update(ID_LINE.findall(r.body.get("text") or r.body.get("content")))
    return out


async def deliveries(bootstrap: str, names: s.Namespace, n: int, timeout: float = 60.0) -> list[s.AlertDelivery]:
    """The first `n` AlertDelivery messages of alerts.status, once there are that many."""
    consumer = AIOKafkaConsumer(names.topic("alerts.status"), bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got: list[s.AlertDelivery] = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < n:
            assert time.monotonic() < deadline, f"{len(got)} deliveries recorded, waited for {n}: {got}"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got += [m for r in records if (m := s.decode("alerts.status", r.value)).kind == "alert_delivery"]
    finally:
        await consumer.stop()
    return got
