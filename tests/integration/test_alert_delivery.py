"""The alert relay on the real broker, delivering to local stand-ins of Telegram's Bot API, a Discord webhook and a
JSON webhook (tests/alert_servers.py): each channel gets what its filters ask for, exactly once; a refusal and a
channel that stays down are recorded as such; `papertape relay` killed with deliveries under way and started
again sends the rest and nothing twice; the outcomes land in ClickHouse's alert_deliveries."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaProducer

import alert_servers as srv
import schemas as s
from builders import papertape_cmd
from infra.broker import ensure_topics
from papertape.config import AlertsSettings, ChannelSettings
from streams.sinks.alert_channels import delivery_channels
from streams.sinks.alerts import AlertRelay
from streams.sinks.recorder import Recorder

TS = 1_723_161_600_000


def alert(aid: str, severity: str, type_: str, title: str) -> s.Alert:
    return s.Alert(id=aid, ts=TS, severity=severity, type=type_, source="test", title=title, text=f"{aid}: {title}")


async def produce(bootstrap: str, names: s.Namespace, messages: list[tuple[str, s.Message]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for topic, m in messages:
            await producer.send_and_wait(names.topic(topic), s.encode(m), key=m.id.encode())
    finally:
        await producer.stop()


async def record_deliveries(bootstrap: str, names: s.Namespace, ch, n: int) -> list[tuple]:
    """alert_deliveries as the recorder writes it, once it has `n` rows."""
    recorder = Recorder(bootstrap, ch, topics=["alerts.status"], names=names, min_write_interval_s=0.05)
    await recorder.start()
    try:
        deadline = time.monotonic() + 60
        while len(rows := ch.query("SELECT alert_id, channel, outcome, attempts, detail FROM alert_deliveries "
                                   "ORDER BY channel, alert_id").result_rows) < n:
            assert time.monotonic() < deadline, rows
            await asyncio.sleep(0.1)
    finally:
        await recorder.stop()
    return [tuple(r) for r in rows]


@pytest.fixture
def servers():
    stand_ins = srv.telegram(unknown_chats=("666",)), srv.discord(), srv.webhook(), srv.webhook()
    yield stand_ins
    for x in stand_ins:
        x.close()


async def test_each_channel_gets_what_its_filters_ask_for_once_and_every_outcome_is_recorded(broker, ch, servers):
    telegram, discord, hook, gone = servers
    gone.down()  # connection refused for the whole test: "failed" once retry_for_s is over
    settings = AlertsSettings(aggregate_s=0.1, repeat_s=60, retry_for_s=1.0, channels=[
        ChannelSettings(name="tg", url=f"tgram://{srv.TELEGRAM_TOKEN}/4242", api_url=telegram.url,
                        min_severity="info", types=["price", "trading"]),
        ChannelSettings(name="tg-nochat", url=f"tgram://{srv.TELEGRAM_TOKEN}/666", api_url=telegram.url,
                        types=["price"]),
        ChannelSettings(name="dc", url=f"discord://{srv.DISCORD_WEBHOOK_ID}/{srv.DISCORD_WEBHOOK_TOKEN}",
                        api_url=discord.url, min_severity="error"),
        ChannelSettings(name="hook", url=hook.url + "/alerts"),  # warning and above, every type
        ChannelSettings(name="gone", url=gone.url + "/alerts", min_severity="critical"),
    ])
    fill = s.Fill(id="f1", ts=TS, session="trend", order_id="o1", symbol="BTCUSDT", side="buy",
                  price=Decimal("61234.5"), qty=Decimal("0.003"), liquidity="taker", fee_rate=Decimal("0.00055"),
                  fee=Decimal("0.1"), realized_pnl=Decimal("0"))
    price = alert("p1", "warning", "price", "BTCUSDT above 60000")
    messages = [("alerts", price), ("alerts", alert("e1", "critical", "error", "rejected a message on orders")),
                ("alerts", alert("i1", "info", "system", "broker node restarted")), ("fills", fill),
                ("alerts", price)]  # the same alert twice (a producer's retry): delivered once
    await ensure_topics(broker.bootstrap, s.partition_counts(1, 1, broker.names))
    await produce(broker.bootstrap, broker.names, messages)
    relay = AlertRelay(broker.bootstrap, delivery_channels(settings), settings, names=broker.names,
                       backoff=(0.05, 0.2))
    await relay.start()
    try:
        # what each channel asks for, by hand: tg price + trading from info; tg-nochat price from warning;
        # dc error and above; hook warning and above; gone critical only
        expected = {("tg", "p1", "sent"), ("tg", "fill:f1", "sent"), ("tg-nochat", "p1", "refused"),
                    ("dc", "e1", "sent"), ("hook", "p1", "sent"), ("hook", "e1", "sent"), ("gone", "e1", "failed")}
        got = await srv.deliveries(broker.bootstrap, broker.names, len(expected))
        assert {(d.channel, d.alert_id, d.outcome) for d in got} == expected
        assert {d.channel: d.attempts for d in got if d.outcome != "sent"}["tg-nochat"] == 1  # a 400: not retried
        assert [d.detail for d in got if d.channel == "gone"] == ["ConnectError"]
        assert srv.ids_in(telegram) == Counter({"p1": 2, "fill:f1": 1})  # p1: once to each of the two chats
        assert sorted(r.body["chat_id"] for r in telegram.received() if "p1" in r.body["text"]) == [666, 4242]
        assert srv.ids_in(discord) == Counter({"e1": 1}) and srv.ids_in(hook) == Counter({"p1": 1, "e1": 1})
    finally:
        await relay.stop()
    rows = await record_deliveries(broker.bootstrap, broker.names, ch, len(expected))
    assert {(c, a, o) for a, c, o, _, _ in rows} == expected and len(rows) == len(expected)
    assert all(srv.TELEGRAM_TOKEN not in str(r) and gone.url not in str(r) for r in rows)  # no secret recorded


@pytest.mark.slow
async def test_relay_killed_and_restarted_sends_the_rest_and_nothing_twice(broker, ch, servers, tmp_path):
    telegram, discord, hook, _ = servers
    config = tmp_path / "relay.toml"
    config.write_text(f"""
[alerts]
relay = "external"
aggregate_s = 0
[[alerts.channels]]
name = "tg"
url_env = "PT_TEST_TELEGRAM_URL"
api_url = "{telegram.url}"
min_severity = "info"
[[alerts.channels]]
name = "dc"
url_file = "{tmp_path / 'discord-url'}"
api_url = "{discord.url}"
min_severity = "info"
[[alerts.channels]]
name = "hook"
url = "{hook.url}/alerts"
min_severity = "info"
""")
    (tmp_path / "discord-url").write_text(f"discord://{srv.DISCORD_WEBHOOK_ID}/{srv.DISCORD_WEBHOOK_TOKEN}\n")
    env = {**os.environ, "KAFKA_BOOTSTRAP": broker.bootstrap, "PAPERTAPE_NAMESPACE": broker.names.prefix,
           "PT_TEST_TELEGRAM_URL": f"tgram://{srv.TELEGRAM_TOKEN}/4242"}
    env.pop("PAPERTAPE_WEBHOOK_URL", None)

    def relay() -> subprocess.Popen:
        return subprocess.Popen(papertape_cmd("relay", "--config", str(config), "--data-dir", str(tmp_path / "d")),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    await ensure_topics(broker.bootstrap, s.partition_counts(1, 1, broker.names))
    first = [alert(f"a{n}", "warning", "price", f"rule {n} crossed") for n in range(10)]
    rest = [alert(f"b{n}", "error", "system", f"component {n} down") for n in range(10)]
    discord.down(503)  # Discord fails while the first relay lives: it can commit nothing
    proc = relay()
    try:
        await produce(broker.bootstrap, broker.names, [("alerts", a) for a in first])
        # Telegram and the webhook took every alert and their outcomes are on the broker: a kill now finds no
        # message between a channel and its record (the window that would send one twice)
        await srv.deliveries(broker.bootstrap, broker.names, 2 * len(first))
    finally:
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate()[0]
    assert srv.ids_in(discord) == Counter() and len(srv.ids_in(telegram)) == len(first), out
    await produce(broker.bootstrap, broker.names, [("alerts", a) for a in rest])  # while no relay runs
    discord.up()
    proc = relay()
    try:
        got = await srv.deliveries(broker.bootstrap, broker.names, 3 * (len(first) + len(rest)))
    finally:
        proc.send_signal(signal.SIGTERM)
        out += proc.communicate(timeout=30)[0]
    every = Counter({a.id: 1 for a in first + rest})
    for stand_in in (telegram, discord, hook):
        assert srv.ids_in(stand_in) == every, out
    assert Counter((d.alert_id, d.channel) for d in got) == Counter(
        {(a.id, c): 1 for a in first + rest for c in ("tg", "dc", "hook")})
    assert {d.outcome for d in got} == {"sent"}
    rows = await record_deliveries(broker.bootstrap, broker.names, ch, len(got))
    assert len(rows) == len(got) and all(o == "sent" for _, _, o, _, _ in rows)
    assert "SECRET" not in out and srv.TELEGRAM_TOKEN not in out and srv.DISCORD_WEBHOOK_TOKEN not in out
