"""The whole chain, as a user deploys it: `papertape run` on the bundled tape with price rules, and `papertape relay`
beside it delivering to stand-ins of Telegram's Bot API, a Discord webhook and a JSON webhook. Every price alert of
the run reaches each of the three exactly once, although Discord is down while the first relay runs and that
relay is SIGKILLed; the second relay sends Discord what it missed and repeats nothing to the others."""
from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import alert_servers as srv
from builders import papertape_cmd, query_rows, run_env
from infra.prometheus import endpoint_of
from schemas import Namespace

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def config(telegram: srv.StandIn, discord: srv.StandIn, hook: srv.StandIn) -> str:
    channels = "".join(f"""
[[alerts.channels]]
name = "{name}"
url = "{url}"
{api}
min_severity = "info"
types = ["price"]
""" for name, url, api in [
        ("tg", f"tgram://{srv.TELEGRAM_TOKEN}/4242", f'api_url = "{telegram.url}"'),
        ("dc", f"discord://{srv.DISCORD_WEBHOOK_ID}/{srv.DISCORD_WEBHOOK_TOKEN}", f'api_url = "{discord.url}"'),
        ("hook", f"{hook.url}/alerts", "")])
    # the bundled tape's first 30 s: BTCUSDT's mid rises from 61800.25 through 61805, ETHUSDT's dips under 2681.5
    return """
md_partitions = 2
session_partitions = 2
replay_seconds = 30

[alerts]
relay = "external"
aggregate_s = 0  # each alert its own message, so that each stand-in's requests name every alert id
repeat_s = 0     # and none held back: the same rule crosses its level again within seconds

[[alerts.rules]]
id = "btc-up"
symbol = "BTCUSDT"
above = "61805"

[[alerts.rules]]
id = "eth-down"
symbol = "ETHUSDT"
below = "2681.5"
severity = "critical"
""" + channels


async def test_a_price_alert_reaches_every_channel_once_across_a_killed_relay(tmp_path):
    telegram, discord, hook = srv.telegram(), srv.discord(), srv.webhook()
    cfg = tmp_path / "papertape.toml"
    cfg.write_text(config(telegram, discord, hook))
    env = run_env()  # the run's namespace on the suite's broker: the relay joins the same
    names = Namespace(env["PAPERTAPE_NAMESPACE"])
    data_dir = str(tmp_path / "data")

    def relay() -> subprocess.Popen:
        return subprocess.Popen(papertape_cmd("relay", "--config", str(cfg), "--data-dir", data_dir), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    try:
        discord.down(503)
        run = await asyncio.to_thread(subprocess.run, papertape_cmd("run", "--config", str(cfg), "--data-dir",
                                                                    data_dir),
                                      env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        price_ids = [i for (i,) in query_rows(tmp_path / "data", {
            "a": "SELECT id FROM alerts WHERE type = 'price' ORDER BY ts, id"})["a"]]
        assert {i.split(":")[1] for i in price_ids} == {"btc-up", "eth-down"}, price_ids

        first = relay()
        try:  # Telegram and the webhook took every alert, and their outcomes are on the broker: then the kill
            await srv.deliveries(env["KAFKA_BOOTSTRAP"], names, 2 * len(price_ids))
        finally:
            first.send_signal(signal.SIGKILL)
            out = first.communicate(timeout=30)[0]
        assert srv.ids_in(discord) == Counter(), out
        discord.up()
        second = relay()
        try:
            got = await srv.deliveries(env["KAFKA_BOOTSTRAP"], names, 3 * len(price_ids))
            scraped = httpx.get(endpoint_of(tmp_path / "data", "relay"), timeout=10).text  # its /metrics
        finally:
            second.send_signal(signal.SIGTERM)
            out += second.communicate(timeout=30)[0]
        once = Counter({i: 1 for i in price_ids})
        for stand_in in (telegram, discord, hook):
            assert srv.ids_in(stand_in) == once, out
        assert Counter((d.alert_id, d.channel, d.outcome) for d in got) == Counter(
            {(i, c, "sent"): 1 for i in price_ids for c in ("tg", "dc", "hook")})
        delivered = {(s.labels["channel"], s.labels["outcome"]): s.value
                     for f in text_string_to_metric_families(scraped) for s in f.samples
                     if s.name == "papertape_alerts_delivered_total"}
        assert delivered == {("dc", "sent"): len(price_ids)}  # this relay's: Discord's, what the first could not
        assert srv.TELEGRAM_TOKEN not in out + run.stdout and srv.DISCORD_WEBHOOK_TOKEN not in out + run.stdout
    finally:
        for stand_in in (telegram, discord, hook):
            stand_in.close()
