"""Bybit's public trade history dumps -> trade frames, venue "bybit".

Derivatives (public.bybit.com/trading/SYMBOL/SYMBOL2024-01-01.csv.gz): a header
`timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional` (newer files
add columns, e.g. RPI), the timestamp in seconds with a fraction, side Buy/Sell the aggressor's, size as Bybit
counts it (base coin for linear contracts, contracts, i.e. USD, for inverse ones). Older files are newest-first.

Spot (public.bybit.com/spot/SYMBOL/SYMBOL_2024-01-01.csv.gz): a header `id,timestamp,price,volume,side` (maybe
more columns), the timestamp in ms, side buy/sell the aggressor's; the symbol comes from the file name.

Trades of one timestamp (to the file's precision) share a frame, as Bybit sends the fills of one taker order;
`recv_ts` is that timestamp in ns (the files hold no receive time).
"""
from __future__ import annotations

import re
from collections.abc import Iterator

from streams.formats.csv_common import (
    NS_PER_MS,
    TradeRow,
    column,
    field,
    header,
    keyed_rows,
    make_trade,
    name_stem,
    scaled_ns,
    side_of,
    symbol_of,
    trade_frames,
)
from streams.frames.wire import Bad, Format, WireFrame

VENUE = "bybit"
_HEADER = b"timestamp,symbol,side,size,price,"
_SPOT_HEADER = b"id,timestamp,price,volume,side"
_BOM = b"\xef\xbb\xbf"


def _split(line: bytes) -> list[str]:
    # The dumps quote nothing: a plain split is exact and several times faster than the csv module.
    return line.decode().split(",")


def _first_line(lines: list[bytes]) -> int:
    return next((i for i, line in enumerate(lines) if line.strip()), len(lines))


def _columns(line: bytes, *names: str) -> list[int]:
    cols = header(line)
    found = [at for name in names if (at := column(cols, name.lower())) is not None]
    if len(found) < len(names):
        raise ValueError(f"header lacks {[n for n in names if column(cols, n.lower()) is None]}")
    return found


def read_trading(lines: list[bytes], bad: Bad) -> Iterator[WireFrame]:
    """A derivatives dump's trades in event-time order."""
    start = _first_line(lines)
    try:
        ts_at, symbol_at, side_at, size_at, price_at, id_at = _columns(
            lines[start], "timestamp", "symbol", "side", "size", "price", "trdMatchID")
    except (IndexError, ValueError) as exc:
        bad(start + 1, ValueError(f"not a Bybit trading dump header: {exc}"))
        return iter(())

    def time_ns(line: bytes) -> int:
        return scaled_ns(field(_split(line), ts_at), 10**9)

    def parse(line: bytes, number: int) -> TradeRow:
        row = _split(line)
        ns = scaled_ns(field(row, ts_at), 10**9)
        trade = make_trade(ns, field(row, price_at), field(row, size_at), side_of(field(row, side_at)))
        return TradeRow(symbol_of(field(row, symbol_at)), field(row, id_at) or str(number), ns, trade, trade.price)

    return trade_frames(lines, keyed_rows(lines, start + 1, time_ns, bad), parse, VENUE, "trade", bad)


_SPOT_NAME = re.compile(r"([A-Za-z0-9]+)_(\d{4}-\d{2}-\d{2})")


def spot_symbol(name: str) -> str:
    """'BTCUSDT_2024-01-01.csv.gz' -> 'BTCUSDT' (another name: the whole of it, as a symbol)."""
    found = _SPOT_NAME.match(name_stem(name))
    return found[1].upper() if found else symbol_of(name_stem(name))


def read_spot(lines: list[bytes], bad: Bad, name: str) -> Iterator[WireFrame]:
    """A spot dump's trades in event-time order; the symbol comes from the file's name."""
    start = _first_line(lines)
    id_at, ts_at, price_at, volume_at, side_at = _columns(lines[start], "id", "timestamp", "price", "volume", "side")
    symbol = spot_symbol(name)

    def time_ns(line: bytes) -> int:
        return scaled_ns(field(_split(line), ts_at), NS_PER_MS)

    def parse(line: bytes, number: int) -> TradeRow:
        row = _split(line)
        ns = scaled_ns(field(row, ts_at), NS_PER_MS)
        trade = make_trade(ns, field(row, price_at), field(row, volume_at), side_of(field(row, side_at)))
        return TradeRow(symbol, field(row, id_at) or str(number), ns, trade, trade.price)

    return trade_frames(lines, keyed_rows(lines, start + 1, time_ns, bad), parse, VENUE, "spot_trade", bad)


TRADING = Format("bybit_trading", lambda first, name: first.removeprefix(_BOM).startswith(_HEADER),
                 lambda lines, name, bad: read_trading(lines, bad))
SPOT = Format("bybit_spot", lambda first, name: first.removeprefix(_BOM).startswith(_SPOT_HEADER),
              lambda lines, name, bad: read_spot(lines, bad, name))
