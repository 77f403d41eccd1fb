"""A generic trades CSV: a header naming its columns, one trade (or, without a side, one last price) a row."""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from schemas.market import Ticker
from streams.formats.csv_common import (
    VENUE,
    TradeRow,
    column,
    epoch_ns,
    exact,
    field,
    fields,
    header,
    keyed_rows,
    make_trade,
    name_stem,
    side_of,
    symbol_of,
    trade_frames,
)
from streams.frames.wire import Bad, Format, WireFrame

TIME_COLUMNS = ("timestamp", "time", "ts", "date", "datetime", "unix")
QTY_COLUMNS = ("qty", "size", "amount", "volume", "quantity")
ID_COLUMNS = ("id", "trade_id", "tradeid", "tid")


class TradeColumns(NamedTuple):
    time: int
    price: int
    qty: int
    side: int | None
    symbol: int | None
    trade_id: int | None


def trade_columns(cols: dict[str, int]) -> TradeColumns | None:
    time, price, qty = column(cols, *TIME_COLUMNS), column(cols, "price"), column(cols, *QTY_COLUMNS)
    if time is None or price is None or qty is None:
        return None
    return TradeColumns(time, price, qty, column(cols, "side"), column(cols, "symbol"), column(cols, *ID_COLUMNS))


def _trades_csv_looks_like(first: bytes, name: str) -> bool:
    try:
        return trade_columns(header(first)) is not None
    except ValueError:
        return False


def read_trades_csv(lines: list[bytes], bad: Bad, name: str) -> Iterator[WireFrame]:
    """A trades CSV with a header naming its columns (any case): a time (time/timestamp/ts/date: s with a
    fraction, ms, or ISO 8601 UTC), price, a quantity (qty/size/amount/volume/quantity) and optionally side
    (buy/sell/b/s), symbol (else the file name's) and a trade id (else the line number).

    Without a side column the aggressor is unknown and the schema's trades need one, so nothing is invented:
    each row becomes a frame carrying only `ticker.last` = its price (its quantity is dropped)."""
    start = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    cols = trade_columns(header(lines[start])) if start < len(lines) else None
    if cols is None:
        bad(start + 1, ValueError("no header naming time, price and quantity columns"))
        return
    default = symbol_of(name_stem(name))

    def time_ns(line: bytes) -> int:
        return epoch_ns(field(fields(line), cols.time))

    def parse(line: bytes, number: int) -> TradeRow:
        row = fields(line)
        ns = epoch_ns(field(row, cols.time))
        symbol = symbol_of(field(row, cols.symbol)) if cols.symbol is not None else default
        trade_id = (field(row, cols.trade_id) if cols.trade_id is not None else "") or str(number)
        price = exact(field(row, cols.price))
        if cols.side is None:
            Ticker(last=price)  # the schema's word on the price, before the row is taken
            return TradeRow(symbol, trade_id, ns, None, price)
        trade = make_trade(ns, price, field(row, cols.qty), side_of(field(row, cols.side)))
        return TradeRow(symbol, trade_id, ns, trade, price)

    yield from trade_frames(lines, keyed_rows(lines, start + 1, time_ns, bad), parse, VENUE, "trade", bad)


TRADES_CSV = Format("csv_trades", _trades_csv_looks_like, lambda lines, name, bad: read_trades_csv(lines, bad, name))
