"""Edges without a broker: the Faust codec and the alert fan-out (console, webhook, severity, de-duplication)."""
import io
import json
from decimal import Decimal

import httpx
import pytest
from faust.serializers import codecs

import schemas as s
from agents import codec  # noqa: F401
from agents.checkpoint import join_snapshot, split_snapshot
from streams.sinks.alerts import AlertFanout, ConsoleChannel, WebhookChannel


def test_faust_codec_round_trips_every_kind_exactly():
    fill = s.Fill(id="f", ts=5, session="a", order_id="o", symbol="BTCUSDT", side="buy", price="61234.5",
                  qty="0.003", liquidity="taker", fee_rate="0.00055", fee="0.10103693", realized_pnl="0")
    alert = s.Alert(id="x", ts=1, severity="info", source="t", title="hello")
    c = codecs.get_codec("papertape")
    for msg in (fill, alert):
        back = c.loads(c.dumps(msg))
        assert back == msg and type(back) is type(msg)
    assert c.loads(c.dumps(fill)).fee == Decimal("0.10103693")
    with pytest.raises(TypeError):
        c.dumps({"not": "a model"})


async def test_alert_fanout_filters_by_severity_dedupes_and_survives_a_broken_channel():
    posted = []

    def handler(request):
        posted.append(json.loads(request.content))
        return httpx.Response(500 if len(posted) == 1 else 200)  # the first POST fails: retried

    console = io.StringIO()

    class Broken:
        min_severity = "info"

        async def send(self, alert):
            raise RuntimeError("down")

    fanout = AlertFanout([Broken(), ConsoleChannel("info", console),
                          WebhookChannel("http://hooks.invalid/x", "warning",
                                         httpx.AsyncClient(transport=httpx.MockTransport(handler)))])
    info = s.Alert(id="1", ts=1, severity="info", source="engine", title="tape finished")
    warn = s.Alert(id="2", ts=2, severity="warning", source="market", title="rejected a message", text="bad",
                   session="s1")
    assert await fanout.publish(info) and await fanout.publish(warn)
    assert not await fanout.publish(warn)  # delivered twice by Kafka: relayed once
    lines = console.getvalue().splitlines()
    assert lines == ["ALERT INFO engine: tape finished", "ALERT WARNING market [s1]: rejected a message bad"]
    assert [p["id"] for p in posted] == ["2", "2"]  # only the warning, once retried after the 500


def test_checkpoint_snapshots_of_any_size_go_out_in_chunks_and_survive_a_torn_save():
    table: dict[bytes, bytes] = {}
    first = bytes(range(256)) * 1000  # 256,000 bytes
    for key, value in split_snapshot(first, 3, None, chunk_bytes=100_000):
        assert len(value) <= 100_000
        table[key] = value
    assert join_snapshot(table.get, 3) == first
    second = b"x" * 250_001
    writes = split_snapshot(second, 3, join_snapshot(table.get, 3, header=True), chunk_bytes=100_000)
    for key, value in writes[:-1]:  # torn: the chunks are written, the header is not
        table[key] = value
    assert join_snapshot(table.get, 3) == first  # the previous snapshot is still whole
    table[writes[-1][0]] = writes[-1][1]
    assert join_snapshot(table.get, 3) == second
    assert join_snapshot(table.get, 4) is None
