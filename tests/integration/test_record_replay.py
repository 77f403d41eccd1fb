"""`papertape record` as a user runs it, against local stand-ins for Bybit's REST and public WebSocket serving
real recorded answers; then `papertape run --replay` of the tape through the whole pipeline."""
from __future__ import annotations

import contextlib
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest

from bybit_rest_server import HTTP, WETH_PRICE, BybitRest
from bybit_ws_server import DERIVATIVES_FILE, BybitWsServer, load_frames
from papertape.app.cli import main
from streams.bybit.tape import header_of
from streams.sources.coingecko_tape import companion
from streams.sources.replay import Tape


@pytest.fixture()
def rest():
    server = BybitRest()
    yield server
    server.close()


def btcusdt_feed() -> dict[str, list[dict]]:
    """BTCUSDT's frames of one 2023-04-05 recording: order book top (snapshot, delta) and ticker."""
    feed: dict[str, list[dict]] = {}
    for m in load_frames(DERIVATIVES_FILE):
        if m["topic"].endswith(".BTCUSDT") and 1680673820000 <= m.get("ts", 0) <= 1680673824000:
            feed.setdefault(m["topic"], []).append(m)
    return feed


def record(tmp_path: Path, rest: BybitRest, ws: BybitWsServer, *extra: str) -> tuple[int, str, Path]:
    tape = tmp_path / "btc.tape.gz"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["record", str(tape), "--data-dir", str(tmp_path / "data"), "--rest-url", rest.url,
                     "--ws-url", ws.url, "--seconds", "3", *extra])
    return code, out.getvalue(), tape


def test_record_writes_a_tape_of_the_universe_with_its_instruments(tmp_path, rest):
    feed = btcusdt_feed()
    with BybitWsServer(feed) as ws:
        code, out, tape = record(tmp_path, rest, ws, "--symbols", "BTCUSDT")
        subscribed = [a for req in ws.subscribe_requests[0] for a in req]
    assert code == 0, out
    assert sorted(subscribed) == ["orderbook.1.BTCUSDT", "publicTrade.BTCUSDT", "tickers.BTCUSDT"]
    header = header_of(tape)
    fixture = json.loads((HTTP / "instruments.json").read_text())["result"]["list"]
    btc = next(i for i in fixture if i["symbol"] == "BTCUSDT")
    (inst,) = header["instruments"]
    assert (inst["symbol"], inst["tick_size"], inst["lot_step"]) == (
        "BTCUSDT", btc["priceFilter"]["tickSize"], btc["lotSizeFilter"]["qtyStep"])
    frames = list(Tape([tape]))
    sent = sum(map(len, feed.values()))
    assert len([f for f in frames if f.status == "live"]) == sent  # every message made a frame
    assert "recorded" in out and "replay it with: papertape run --replay" in out


def test_record_refuses_clearly_when_no_instrument_passes_the_filters(tmp_path, rest, capsys):
    with BybitWsServer({}) as ws:
        code = main(["record", str(tmp_path / "x.tape.gz"), "--data-dir", str(tmp_path / "data"),
                     "--rest-url", rest.url, "--ws-url", ws.url, "--seconds", "1", "--symbols", "NOSUCHUSDT"])
    assert code == 1
    assert "no instrument passes the filters" in capsys.readouterr().err


@pytest.mark.slow
def test_a_recorded_tape_replays_through_the_pipeline_with_no_rejected_frame(tmp_path, rest, capsys):
    with BybitWsServer(btcusdt_feed()) as ws:
        code, out, tape = record(tmp_path, rest, ws, "--symbols", "BTCUSDT")
    assert code == 0, out
    data = tmp_path / "run"
    assert main(["run", "--replay", str(tape), "--data-dir", str(data)]) == 0
    printed = capsys.readouterr().out
    assert "events processed: 3 market frames" in printed
    capsys.readouterr()
    assert main(["sql", "SELECT count() AS n FROM dead_letters", "--data-dir", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == [[0]]
    assert main(["sql", "SELECT symbol, mark FROM md_marks ORDER BY ts DESC LIMIT 1", "--data-dir", str(data),
                 "--json"]) == 0
    ticker = btcusdt_feed()["tickers.BTCUSDT"][0]["data"]
    ((symbol, mark),) = json.loads(capsys.readouterr().out)["rows"]
    assert (symbol, Decimal(mark)) == ("BTCUSDT", Decimal(ticker["markPrice"]))  # the venue's mark, not the mid


@pytest.mark.slow
def test_run_live_trades_on_the_feed_records_it_and_closes_the_books(tmp_path, rest, capsys):
    tape = tmp_path / "live.tape.gz"
    data = tmp_path / "live"
    config = tmp_path / "live.toml"
    config.write_text(f'[coingecko]\ntokens = {{ WETH = "weth", DAI = "dai" }}\n'
                      f'fallback_url = "{rest.url}/llama"\n')
    with BybitWsServer(btcusdt_feed(), pace_s=0.3) as ws:
        code = main(["run", "--live", "--for", "4", "--symbols", "BTCUSDT", "--rest-url", rest.url,
                     "--ws-url", ws.url, "--data-dir", str(data), "--record", str(tape), "--config", str(config),
                     "--tokens", "--coingecko-url", f"{rest.url}/api/v3"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "live: 1 Bybit linear symbols on 1 connection(s), recording to" in printed
    assert {"trend", "revert"} <= set(printed.split())  # both sessions reported their equity
    assert [f.status for f in Tape([tape])].count("live") == 3
    assert main(["sql", "SELECT count() FROM dead_letters", "--data-dir", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == [[0]]
    # WETH priced by the CoinGecko stand-in; DAI, which no source priced, has no mark at all
    assert main(["sql", "SELECT symbol, mark FROM md_marks WHERE symbol IN ('WETH', 'DAI')", "--data-dir",
                 str(data), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {(s, Decimal(m)) for s, m in rows} == {("WETH", Decimal(WETH_PRICE))}
    # CoinGecko's answers were recorded beside the tape: replayed, they price WETH as the live run did
    (weth,) = [f for f in Tape([companion(tape)]) if f.status == "live"]
    assert (weth.symbol, weth.venue, Decimal(weth.ticker.last)) == ("WETH", "coingecko", Decimal(WETH_PRICE))
    assert "WETH" in {i["symbol"] for i in header_of(companion(tape))["instruments"]}
