"""The alert channels: apprise's services (Telegram, Discord, Slack, email, ntfy, Matrix... by apprise URL), the
plain JSON webhook (httpx), and the console of the process (which watches, it does not deliver).

A channel makes one attempt per call and says what came of it: sent, refused for good (a 4xx), or retry (down,
timed out, a 5xx); the relay retries and records. A channel's URL is a secret: no detail, log line or exception
text of a channel carries it, only the channel's name and an HTTP status or an error's type.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import sys
from typing import Literal, Protocol, TextIO
from urllib.parse import urlsplit

import apprise
import httpx
import orjson

import schemas as s
from papertape.config import AlertsSettings, ChannelSettings
from schemas.vocabulary import Severity
from streams.sinks.alert_batching import AlertFilter, Digest

log = logging.getLogger(__name__)
Verdict = Literal["sent", "refused", "retry"]
WEBHOOK = "webhook"  # the channel of `webhook_url` / PAPERTAPE_WEBHOOK_URL


def verdict_of_status(status: int) -> Verdict:
    """2xx sent; a 4xx is refused for good, except timeouts and rate limits (408, 429), retried like a 5xx."""
    if 200 <= status < 300:
        return "sent"
    return "refused" if 400 <= status < 500 and status not in (408, 429) else "retry"


class DeliveryChannel(Protocol):
    name: str
    filter: AlertFilter

    async def send(self, digest: Digest) -> tuple[Verdict, str]: ...

    async def close(self) -> None: ...


class WebhookChannel:
    """POSTs one JSON object per message: the first alert's fields with the message's title and text, `count`,
    `suppressed` and every alert's id (`alert_ids`); for a lone alert, that alert's own JSON plus those three."""

    def __init__(self, name: str, url: str, filter: AlertFilter, timeout_s: float = 5.0) -> None:
        self.name, self.filter = name, filter
        self._url = url
        self.client = httpx.AsyncClient(timeout=timeout_s)

    @staticmethod
    def body(digest: Digest) -> bytes:
        first = digest.alerts[0].model_dump(mode="json")
        if len(digest.alerts) > 1:
            first |= {"title": digest.title, "text": digest.text, "severity": digest.severity}
        return orjson.dumps(first | {"count": len(digest.alerts), "suppressed": digest.suppressed,
                                     "alert_ids": [a.id for a in digest.alerts]})

    async def send(self, digest: Digest) -> tuple[Verdict, str]:
        try:
            r = await self.client.post(self._url, content=self.body(digest),
                                       headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:  # its text may quote the URL
            return "retry", type(exc).__name__
        return verdict_of_status(r.status_code), f"HTTP {r.status_code}"

    async def close(self) -> None:
        await self.client.aclose()


# apprise reports only True or False; the HTTP status of a failure is in its log lines ("..., error=403."). A
# handler on its logger takes the status codes of the send running in this context (asyncio.to_thread carries
# context variables into the thread), never the lines' text (a debug line holds the URL).
_statuses: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("apprise_statuses", default=None)
_STATUS = re.compile(r"error=(\d{3})\b")


class _StatusCodes(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        found = _statuses.get()
        if found is not None and (m := _STATUS.search(record.getMessage())):
            found.append(int(m.group(1)))


_status_handler = _StatusCodes(logging.WARNING)
logging.getLogger("apprise").addHandler(_status_handler)

NOTIFY_TYPES: dict[Severity, apprise.NotifyType] = {
    "info": apprise.NotifyType.INFO, "warning": apprise.NotifyType.WARNING,
    "error": apprise.NotifyType.FAILURE, "critical": apprise.NotifyType.FAILURE}


def apprise_service(name: str, url: str, api_url: str | None = None) -> apprise.plugins.NotifyBase:
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        raise ValueError(f"alert channel {name!r}: apprise does not accept its URL (see apprise's URL formats)")
    if api_url:
        # apprise has no setting for a service's API base (a self-hosted Telegram Bot API server, a proxy, the
        # tests' stand-ins); a plugin keeps it in its `notify_url`: the scheme and host are replaced, its path
        # (Telegram's /bot, Discord's /api/webhooks) kept. The one place that reaches into a plugin.
        base = getattr(type(plugin), "notify_url", None)
        if not isinstance(base, str):
            raise ValueError(f"alert channel {name!r}: api_url is not supported by apprise's {type(plugin).__name__}")
        setattr(plugin, "notify_url", api_url.rstrip("/") + urlsplit(base).path)
    return plugin


class AppriseChannel:
    """One apprise service; its blocking send runs in a thread, bounded by apprise's own timeouts (URL options
    cto= and rto=, 4 s each by default)."""

    def __init__(self, name: str, url: str, filter: AlertFilter, api_url: str | None = None) -> None:
        self.name, self.filter = name, filter
        self.service = apprise_service(name, url, api_url)

    def _notify(self, digest: Digest) -> tuple[bool, list[int]]:
        found: list[int] = []
        _statuses.set(found)
        ok = self.service.notify(body=digest.text, title=digest.title, notify_type=NOTIFY_TYPES[digest.severity])
        return bool(ok), found

    async def send(self, digest: Digest) -> tuple[Verdict, str]:
        ok, statuses = await asyncio.to_thread(self._notify, digest)
        if ok:
            return "sent", ""
        if statuses:
            return verdict_of_status(statuses[-1]), f"HTTP {statuses[-1]}"
        return "retry", "not sent (no answer, or apprise refused it before sending)"

    async def close(self) -> None:
        pass


def delivery_channels(alerts: AlertsSettings, webhook_url: str | None = None) -> list[DeliveryChannel]:
    """The configured channels, and `webhook_url` as the channel named "webhook" (warnings and above)."""
    configs = list(alerts.channels)
    if webhook_url:
        if any(c.name == WEBHOOK for c in configs):
            raise ValueError(f"webhook_url is the channel named {WEBHOOK!r}: another channel has that name")
        configs.append(ChannelSettings(name=WEBHOOK, url=webhook_url))
    return [channel(c) for c in configs]


def channel(c: ChannelSettings) -> DeliveryChannel:
    url = c.secret_url()
    flt = AlertFilter(c.min_severity, tuple(c.types))
    if urlsplit(url).scheme in ("http", "https"):
        return WebhookChannel(c.name, url, flt)
    return AppriseChannel(c.name, url, flt, c.api_url)


class ConsoleChannel:
    """The process's own output: one line per alert. A watcher of the relay (no delivery record)."""

    def __init__(self, min_severity: Severity = "info", stream: TextIO | None = None) -> None:
        self.min_severity = min_severity
        self.stream = stream or sys.stderr

    async def send(self, alert: s.Alert) -> None:
        who = f" [{alert.session}]" if alert.session else ""
        print(f"ALERT {alert.severity.upper()} {alert.source}{who}: {alert.title} {alert.text}".rstrip(),
              file=self.stream, flush=True)
