"""A generic OHLCV CSV (CryptoDataDownload's files included): one closed bar a row, sent at its close."""
from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import pairwise
from typing import NamedTuple

from schemas.market import Bar
from streams.formats.csv_common import (
    NS_PER_MS,
    VENUE,
    Candle,
    bar_frames,
    candles,
    column,
    data_lines,
    epoch_ns,
    exact,
    field,
    fields,
    header,
    name_stem,
    symbol_of,
)
from streams.frames.wire import Bad, Format, WireFrame

# --- the bar interval -----------------------------------------------------------------------------------------

def smallest_gaps(candles: list[Candle]) -> dict[str, int]:
    """Each symbol's smallest positive gap between consecutive bar starts: its bar interval."""
    starts: dict[str, set[int]] = {}
    for c in candles:
        starts.setdefault(c.symbol, set()).add(c.start)
    gaps = {}
    for symbol, times in starts.items():
        ordered = sorted(times)
        steps = [b - a for a, b in pairwise(ordered)]
        if steps:
            gaps[symbol] = min(steps)
    return gaps


_NAME_INTERVAL = re.compile(r"(?:^|[_\-.])(\d*)(m|min|minute|h|hour|d|day)(?=$|[_\-.])", re.IGNORECASE)
_UNIT_MS = {"m": 60_000, "min": 60_000, "minute": 60_000, "h": 3_600_000, "hour": 3_600_000,
            "d": 86_400_000, "day": 86_400_000}


def interval_from_name(name: str) -> int | None:
    """A bar interval a file name states ('Coinbase_BTCUSD_1h.csv' -> 1 h), for a symbol with one bar."""
    found = _NAME_INTERVAL.search(name_stem(name))
    return None if found is None else int(found[1] or 1) * _UNIT_MS[found[2].lower()]


# --- columns --------------------------------------------------------------------------------------------------

BAR_TIME_COLUMNS = ("timestamp", "time", "date", "datetime", "ts", "unix", "open_time")
TURNOVER_COLUMNS = ("turnover", "quote_volume", "quote_asset_volume", "volume_quote")


class OhlcvColumns(NamedTuple):
    time: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    turnover: int | None
    symbol: int | None


def volume_columns(cols: dict[str, int], symbol: str) -> tuple[int | None, int | None]:
    """(base volume, quote volume) columns. 'volume_btc' of BTCUSD is the base volume and a plain 'volume' next
    to it the quote one (CryptoDataDownload's 'Volume BTC,Volume USD', or 'volume_btc,volume' once renamed)."""
    base = quote = None
    for name, at in cols.items():
        if name.startswith("volume_") and name not in TURNOVER_COLUMNS:
            currency = name.removeprefix("volume_").upper()
            if symbol.startswith(currency) and base is None:
                base = at
            elif symbol.endswith(currency) and quote is None:
                quote = at
    turnover = column(cols, *TURNOVER_COLUMNS)
    if turnover is None:
        turnover = quote
    plain = cols.get("volume")
    if base is None:
        return plain, turnover
    return base, plain if turnover is None else turnover


def ohlcv_columns(cols: dict[str, int], symbol: str) -> OhlcvColumns | None:
    time = column(cols, *BAR_TIME_COLUMNS)
    open_, high, low, close = (cols.get(n) for n in ("open", "high", "low", "close"))
    volume, turnover = volume_columns(cols, symbol)
    if time is None or open_ is None or high is None or low is None or close is None or volume is None:
        return None
    return OhlcvColumns(time, open_, high, low, close, volume, turnover, cols.get("symbol"))


def _is_ohlcv_header(line: bytes) -> bool:
    try:
        cols = header(line)
    except ValueError:
        return False
    return column(cols, *BAR_TIME_COLUMNS) is not None and all(n in cols for n in ("open", "high", "low", "close"))


def _ohlcv_looks_like(first: bytes, name: str) -> bool:
    # CryptoDataDownload files open with a banner line naming the site, the header follows.
    return b"cryptodatadownload" in first.lower() or _is_ohlcv_header(first)


def read_ohlcv_csv(lines: list[bytes], bad: Bad, name: str) -> Iterator[WireFrame]:
    """An OHLCV CSV: a header (after an optional banner line) naming a time (time/timestamp/date: s, ms, ISO 8601
    UTC or '2019-10-17 09-AM'), open, high, low, close, volume and optionally turnover (quote volume) and symbol
    (else the file name's). Rows in any order. Each row is one closed bar, sent at its close; the interval is each
    symbol's smallest positive gap between consecutive starts (or, for a symbol with one bar, the file name's)."""
    at = next((i for i, line in enumerate(lines[:5]) if _is_ohlcv_header(line)), None)
    if at is None:
        bad(1, ValueError("no header naming time, open, high, low, close and volume columns"))
        return
    cols_by_name = header(lines[at])
    default = symbol_of(name_stem(name))
    first_row = next((fields(line) for _, line in data_lines(lines, at + 1)), [])
    sym_at = cols_by_name.get("symbol")
    file_symbol = symbol_of(first_row[sym_at]) if sym_at is not None and sym_at < len(first_row) else default
    cols = ohlcv_columns(cols_by_name, file_symbol)
    if cols is None:
        bad(at + 1, ValueError("no volume column (volume, or volume_<base currency>)"))
        return

    def key(row: list[str]) -> tuple[str, int]:
        symbol = symbol_of(field(row, cols.symbol)) if cols.symbol is not None else default
        return symbol, epoch_ns(field(row, cols.time)) // NS_PER_MS

    def build(c: Candle, interval: int) -> dict:
        r = c.row
        turnover = exact(field(r, cols.turnover)) if cols.turnover is not None else None
        return {"bar": Bar(start=c.start, interval_ms=interval, open=exact(field(r, cols.open)),
                           high=exact(field(r, cols.high)), low=exact(field(r, cols.low)),
                           close=exact(field(r, cols.close)), volume=exact(field(r, cols.volume)),
                           turnover=turnover or None, closed=True)}

    found = candles(lines, at + 1, key, bad)
    gaps, fallback = smallest_gaps(found), interval_from_name(name)
    yield from bar_frames(found, lambda symbol: gaps.get(symbol, fallback), build, VENUE, "bar", bad)


OHLCV_CSV = Format("csv_ohlcv", _ohlcv_looks_like, lambda lines, name, bad: read_ohlcv_csv(lines, bad, name))
