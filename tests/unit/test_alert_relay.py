"""What the alert relay sends each channel, without a broker: filters, storms aggregated, repeats held back, fills
as trading alerts, the channels' settings (secret URLs, another API base) and how a channel's answers are read."""
from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest

import schemas as s
from papertape.config import AlertsSettings, ChannelSettings, Settings
from streams.sinks.alert_batching import AlertBatcher, AlertFilter, Digest, subject
from streams.sinks.alert_channels import (
    AppriseChannel,
    ConsoleChannel,
    WebhookChannel,
    delivery_channels,
    verdict_of_status,
)
from streams.sinks.alerts import fill_alert

AGG, REPEAT = 2.0, 60.0


def alert(n: int = 0, severity="warning", type="system", title="stale feed", text=None, source="market",
          session=None) -> s.Alert:
    return s.Alert(id=f"a{n}", ts=1000 + n, severity=severity, type=type, source=source, title=title,
                   text=f"SYM{n}USDT: silent for 15 s" if text is None else text, session=session)


def test_filter_by_severity_and_type():
    cases = [  # (min_severity, types, alert severity, alert type, accepted)
        ("info", (), "info", "trading", True),
        ("warning", (), "info", "system", False),
        ("warning", (), "critical", "system", True),
        ("error", ("price",), "critical", "price", True),
        ("error", ("price",), "critical", "system", False),
        ("info", ("trading", "error"), "warning", "error", True),
        ("info", ("trading", "error"), "warning", "performance", False),
    ]
    for min_severity, types, severity, type_, accepted in cases:
        got = AlertFilter(min_severity, types).accepts(alert(severity=severity, type=type_))
        assert got is accepted, (min_severity, types, severity, type_)


def test_a_storm_of_one_title_goes_out_as_one_message_when_its_window_ends():
    b = AlertBatcher(AGG, REPEAT)
    for n in range(500):
        assert b.add(alert(n), now=10.0 + n * 0.001)
    b.add(alert(900, title="price above", type="price", text="BTCUSDT: 60001 > 60000"), now=10.5)
    assert b.due(11.99) == []
    assert b.next_due() == 12.0
    first = b.due(12.0)
    assert [len(d.alerts) for d in first] == [500]
    d = first[0]
    assert d.title == "stale feed: 500 alerts"
    body = d.text.splitlines()[0]
    assert body == ", ".join(f"SYM{n}USDT" for n in range(10)) + ", ... and 490 more"
    assert [a.id for a in d.alerts] == [f"a{n}" for n in range(500)]
    rest = b.due(12.5)
    assert [[a.id for a in x.alerts] for x in rest] == [["a900"]] and b.next_due() is None


def test_without_an_aggregation_window_every_alert_goes_out_alone():
    b = AlertBatcher(0.0, 0.0)
    for n in range(3):
        assert b.add(alert(n, type="price", title="BTCUSDT crossed above 61805"), now=5.0)
    assert [[a.id for a in d.alerts] for d in b.due(5.0)] == [["a0"], ["a1"], ["a2"]]


def test_a_lone_alert_is_sent_as_itself():
    d = Digest((alert(1, severity="error", text="BTCUSDT: 60001 > 60000", type="price", title="BTCUSDT above"),))
    assert d.title == "BTCUSDT above" and d.severity == "error" and d.type == "price"
    assert d.text.splitlines() == ["BTCUSDT: 60001 > 60000", "error price alert from market, id a1"]
    assert Digest((alert(1, severity="info"), alert(2, severity="critical"))).severity == "critical"


def test_repeats_are_held_back_for_repeat_s_and_counted_in_the_next_message():
    b = AlertBatcher(0.0, REPEAT)
    assert b.add(alert(1, text="BTCUSDT: stale"), now=0.0)
    assert len(b.due(0.0)) == 1
    # the same key (type, source, title, session, subject) again: held back, whatever the rest of its text or id
    assert not b.add(alert(2, text="BTCUSDT: stale again"), now=10.0)
    assert not b.add(alert(3, text="BTCUSDT: still stale"), now=59.9)
    assert b.add(alert(4, text="ETHUSDT: stale"), now=20.0)  # another subject (symbol): another condition
    assert b.add(alert(5, text="BTCUSDT: stale", session="s1"), now=20.0)  # another session: another key
    [other, fifth] = b.due(20.0)
    assert other.suppressed == 2 and "2 repeated alerts held back" in other.text and fifth.suppressed == 0
    assert b.add(alert(6, text="BTCUSDT: stale"), now=60.0)  # repeat_s after the first went out
    [again] = b.due(60.0)
    assert again.suppressed == 0 and [a.id for a in again.alerts] == ["a6"]


def test_everything_flushes_open_groups_and_repeats_are_keyed_from_when_they_went_out():
    b = AlertBatcher(AGG, REPEAT)
    b.add(alert(1, text="BTCUSDT: stale"), now=0.0)
    assert [len(d.alerts) for d in b.due(0.5, everything=True)] == [1]
    assert not b.add(alert(2, text="BTCUSDT: stale"), now=0.5 + REPEAT - 0.01)
    assert b.add(alert(3, text="BTCUSDT: stale"), now=0.5 + REPEAT)


def test_subject_is_the_texts_prefix_else_the_session():
    assert subject(alert(text="BTCUSDT: silent")) == "BTCUSDT"
    assert subject(alert(text="no prefix here", session="s1")) == "s1"
    assert subject(alert(text="x" * 50 + ": too long a prefix")) == "x" * 40


def test_fills_become_info_trading_alerts_titled_by_order():
    fill = s.Fill(id="f-1", ts=5, session="trend", order_id="o-7", symbol="BTCUSDT", side="buy",
                  price=Decimal("61234.5"), qty=Decimal("0.003"), liquidity="taker", fee_rate=Decimal("0.00055"),
                  fee=Decimal("0.10103693"), realized_pnl=Decimal("0"))
    a = fill_alert(fill)
    assert (a.id, a.ts, a.severity, a.type, a.session) == ("fill:f-1", 5, "info", "trading", "trend")
    assert a.title == "filled buy BTCUSDT (o-7)"
    assert a.text.startswith("trend: buy 0.003 BTCUSDT @ 61234.5 (taker), fee 0.10103693 USDT")
    assert AlertFilter("info", ("trading",)).accepts(a) and not AlertFilter("warning").accepts(a)
    long = fill_alert(fill.model_copy(update={"id": "x" * 160}))
    assert len(long.id) <= 160 and long.id != fill_alert(fill.model_copy(update={"id": "y" * 160})).id


def test_status_codes_read_as_sent_refused_or_retried():
    assert [verdict_of_status(c) for c in (200, 204, 400, 401, 403, 404, 408, 429, 500, 503)] == [
        "sent", "sent", "refused", "refused", "refused", "refused", "retry", "retry", "retry", "retry"]


def test_webhook_body_is_the_alert_with_its_count_and_ids():
    one = json.loads(WebhookChannel.body(Digest((alert(1),), suppressed=3)))
    assert one == alert(1).model_dump(mode="json") | {"count": 1, "suppressed": 3, "alert_ids": ["a1"]}
    many = json.loads(WebhookChannel.body(Digest((alert(1, severity="info"), alert(2, severity="error")))))
    assert (many["title"], many["severity"], many["count"], many["alert_ids"]) == (
        "stale feed: 2 alerts", "error", 2, ["a1", "a2"])


def test_channel_urls_come_from_the_settings_the_environment_or_a_file(tmp_path, monkeypatch):
    secret = tmp_path / "hook-url"
    secret.write_text("https://hooks.example/secret-key\n")
    monkeypatch.setenv("PT_TEST_TG", "tgram://123456789:AAHsecretsecretsecretsecret/42")
    settings = Settings(webhook_url="https://hooks.example/other", alerts=AlertsSettings(channels=[
        ChannelSettings(name="file", url_file=secret, min_severity="info", types=["trading"]),
        ChannelSettings(name="tg", url_env="PT_TEST_TG", api_url="http://127.0.0.1:9/"),
    ]))
    chans = delivery_channels(settings.alerts, settings.webhook_url)
    assert [(c.name, type(c).__name__) for c in chans] == [
        ("file", "WebhookChannel"), ("tg", "AppriseChannel"), ("webhook", "WebhookChannel")]
    assert chans[0].filter == AlertFilter("info", ("trading",)) and chans[2].filter.min_severity == "warning"
    assert chans[0]._url == "https://hooks.example/secret-key"
    assert chans[1].service.notify_url == "http://127.0.0.1:9/bot"  # Telegram's path kept under the new base
    assert "secret" not in repr(settings.alerts.channels[0]) + repr(ChannelSettings(name="x", url="https://secret"))


@pytest.mark.parametrize("config, why", [
    ({"name": "a", "url": "https://x/secret", "url_env": "E"}, "exactly one of url, url_env, url_file"),
    ({"name": "a", "url_env": "PT_TEST_UNSET_VARIABLE"}, "PT_TEST_UNSET_VARIABLE is not set"),
    ({"name": "a", "url_file": "/nonexistent/secret"}, "cannot read /nonexistent/secret"),
    ({"name": "a", "url": "nosuchscheme://secret"}, "apprise does not accept its URL"),
    ({"name": "a", "url": "json://localhost/secret", "api_url": "http://x"}, "api_url is not supported"),
])
def test_a_bad_channel_is_refused_without_quoting_its_url(config, why):
    with pytest.raises(ValueError) as exc:
        delivery_channels(AlertsSettings(channels=[ChannelSettings(**config)]))
    assert why in str(exc.value) and "secret" not in str(exc.value).replace("/nonexistent/secret", "")


def test_channel_names_are_unique_and_webhook_url_is_the_channel_named_webhook():
    with pytest.raises(ValueError, match="named more than once"):
        AlertsSettings(channels=[ChannelSettings(name="a", url="https://x"), ChannelSettings(name="a", url="https://y")])
    with pytest.raises(ValueError, match="webhook_url is the channel named 'webhook'"):
        delivery_channels(AlertsSettings(channels=[ChannelSettings(name="webhook", url="https://x")]), "https://y")


async def test_console_line():
    out = io.StringIO()
    await ConsoleChannel("info", out).send(alert(1, session="s1", text="bad"))
    assert out.getvalue() == "ALERT WARNING market [s1]: stale feed bad\n"


def test_apprise_channel_takes_an_apprise_url():
    ch = AppriseChannel("dc", "discord://1187654321/tok-en", AlertFilter(), api_url="http://127.0.0.1:9")
    assert ch.service.notify_url == "http://127.0.0.1:9/api/webhooks"
