"""QuantConnect Lean crypto data: minute and second bars (trade or quote) of one day, and a perpetual's funding
rates (`margin_interest`). What a file holds comes from its name, as Lean lays its data out."""
from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import NamedTuple

from schemas import MarketFrame
from schemas.market import Bar, Ticker
from streams.formats.csv_common import (
    EPOCH,
    NS_PER_MS,
    Candle,
    bar_frames,
    candles,
    chronological,
    data_lines,
    exact,
    fields,
    refusal,
    wire,
)
from streams.frames.wire import Bad, Format, WireFrame

# Lean keeps `<security>/<market>/<resolution>/<symbol>/<yyyymmdd>_<trade|quote>.zip`; a replayed file carries
# that path in its name: crypto_bybit_minute_btcusdt_20221213_trade.zip (crypto: spot, cryptofuture: perpetuals).
_LEAN_NAME = re.compile(r"(crypto|cryptofuture)_([a-z0-9]+)_(minute|second)_([a-z0-9]+)_(\d{8})_(trade|quote)"
                        r"(?:\.(?:zip|csv))*", re.IGNORECASE)
_LEAN_INTERVAL = {"minute": 60_000, "second": 1_000}


class LeanFile(NamedTuple):
    security: str
    venue: str
    interval: int  # ms
    symbol: str
    day: int  # ms of the day's midnight UTC
    kind: str  # trade | quote


def lean_file(name: str) -> LeanFile | None:
    found = _LEAN_NAME.fullmatch(name)
    if found is None:
        return None
    security, venue, resolution, symbol, day, kind = (g.lower() for g in found.groups())
    midnight = datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC)
    return LeanFile(security, venue, _LEAN_INTERVAL[resolution], symbol.upper(),
                    int((midnight - EPOCH).total_seconds()) * 1000, kind)


def _lean_looks_like(first: bytes, name: str) -> bool:
    return first[:1].isdigit() and lean_file(name) is not None


def _lean_trade_fields(c: Candle, interval: int) -> dict:
    _, o, h, low, close, volume = (c.row + [""] * 6)[:6]
    return {"bar": Bar(start=c.start, interval_ms=interval, open=exact(o), high=exact(h), low=exact(low),
                       close=exact(close), volume=exact(volume), closed=True)}


def _lean_quote_fields(c: Candle, interval: int) -> dict:
    row = (c.row + [""] * 11)[:11]
    bid, bid_qty, ask, ask_qty = row[4], row[5], row[9], row[10]
    if not (bid or ask):
        raise ValueError("quote bar with neither bid nor ask")
    return {"bid": exact(bid) if bid else None, "bid_qty": exact(bid_qty) if bid else None,
            "ask": exact(ask) if ask else None, "ask_qty": exact(ask_qty) if ask else None}


def read_lean(lines: list[bytes], bad: Bad, name: str) -> Iterator[WireFrame]:
    """A Lean crypto minute (or second) bar file of one day: headerless rows whose first column is ms since the
    day's midnight UTC; the day, symbol, venue and kind come from the file name (see `_LEAN_NAME`).

    Trade bars (ms, open, high, low, close, volume) become closed `Bar`s. Quote bars (ms, bid open, high, low,
    close, last bid size, ask open, high, low, close, last ask size) become top-of-book frames: bid/ask are the
    bar's closing bid and ask with their last sizes (a side the bar lacks stays None). Both are sent at the bar's
    close, when they are known."""
    meta = lean_file(name)
    if meta is None:
        bad(1, ValueError(f"not a Lean crypto bar file name: {name!r}"))
        return

    def key(row: list[str]) -> tuple[str, int]:
        offset = row[0]
        if not offset.isdigit():
            raise ValueError(f"first column {offset!r} is not ms since midnight")
        return meta.symbol, meta.day + int(offset)

    build = _lean_trade_fields if meta.kind == "trade" else _lean_quote_fields
    yield from bar_frames(candles(lines, 0, key, bad), lambda symbol: meta.interval, build, meta.venue,
                          f"{meta.security}_{meta.kind}", bad)


LEAN = Format("lean_crypto", _lean_looks_like, lambda lines, name, bad: read_lean(lines, bad, name))


# Lean's funding rates of a perpetual: `<security>/<market>/margin_interest/<symbol>.csv`, replayed as
# cryptofuture_bybit_margin_interest_btcusdt.csv; rows `yyyymmdd HH:MM:SS,rate`, the rate settled at that time.
_LEAN_FUNDING_NAME = re.compile(r"(crypto|cryptofuture)_([a-z0-9]+)_margin_interest_([a-z0-9]+)(?:\.(?:zip|csv))*",
                                re.IGNORECASE)


def _lean_funding_looks_like(first: bytes, name: str) -> bool:
    return first[:1].isdigit() and _LEAN_FUNDING_NAME.fullmatch(name) is not None


def read_lean_funding(lines: list[bytes], bad: Bad, name: str) -> Iterator[WireFrame]:
    """Each row becomes a ticker frame announcing its rate for its time, 1 ms before it (what a live ticker's
    `fundingRate` and `nextFundingTime` say): the venue settles positions held at that time."""
    found = _LEAN_FUNDING_NAME.fullmatch(name)
    if found is None:
        bad(1, ValueError(f"not a Lean margin_interest file name: {name!r}"))
        return
    venue, symbol = found.group(2).lower(), found.group(3).upper()
    keyed = []
    for number, line in data_lines(lines, 0):
        try:
            when, rate = fields(line)[:2]
            settle = int((datetime.strptime(when, "%Y%m%d %H:%M:%S").replace(tzinfo=UTC) - EPOCH).total_seconds())
            keyed.append((settle * 1000, (number, exact(rate))))
        except ValueError as exc:
            bad(number, exc)
    for settle, (number, rate) in chronological(keyed):
        try:
            frame = MarketFrame(id=f"{venue}:{symbol}:funding:{settle}", ts=settle - 1, venue=venue, symbol=symbol,
                                recv_ts=(settle - 1) * NS_PER_MS,
                                ticker=Ticker(funding_rate=rate, next_funding_ts=settle))
        except ValueError as exc:
            bad(number, refusal(exc))
            continue
        yield wire(frame)


LEAN_FUNDING = Format("lean_funding", _lean_funding_looks_like,
                      lambda lines, name, bad: read_lean_funding(lines, bad, name))
