"""CSV market data for replays: a generic trades CSV, a generic OHLCV CSV (CryptoDataDownload files included),
QuantConnect Lean crypto minute/second bars, and what every CSV format here shares (columns found by name,
times, the file's exact decimals, event-time order, frames built as real `MarketFrame`s).

Every `read` yields `WireFrame`s in event-time order; a row the schema refuses is reported to `bad` and skipped.
A file with no receive time gets its event time, in ns, as `recv_ts`.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from itertools import pairwise
from operator import itemgetter
from typing import NamedTuple, TypeVar

from pydantic import ValidationError

from schemas import MarketFrame, Trade
from schemas.market import Bar, Ticker
from streams.formats.wire import Bad, Format, WireFrame

VENUE = "csv"
MAX_TRADES = next(m.max_length for m in MarketFrame.model_fields["trades"].metadata if hasattr(m, "max_length"))
NS_PER_MS = 1_000_000
BOM = b"\xef\xbb\xbf"
K = TypeVar("K")


_SUFFIXES = re.compile(r"(?:\.(?:csv|txt|gz|zip))+$", re.IGNORECASE)


def name_stem(name: str) -> str:
    """A file name without its data and compression suffixes: 'BTC-USD.csv.gz' -> 'BTC-USD'."""
    return _SUFFIXES.sub("", name)


def symbol_of(text: str) -> str:
    """A symbol as the schema spells it: uppercased, without '/', '-', '_' or spaces ('btc-usd' -> 'BTCUSD')."""
    return re.sub(r"[/_\-\s]", "", text).upper()


# --- rows and columns -----------------------------------------------------------------------------------------

def fields(line: bytes) -> list[str]:
    """The stripped fields of one CSV line (quoted fields only when the line has quotes)."""
    text = line.decode()
    row = next(csv.reader([text])) if '"' in text else text.split(",")
    return [f.strip() for f in row]


def column_name(name: str) -> str:
    """'Volume BTC' -> 'volume_btc'."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def header(line: bytes) -> dict[str, int]:
    """Column positions by normalized name (the first column of a repeated name wins)."""
    names = [column_name(n) for n in fields(line.removeprefix(BOM))]
    return {name: i for i, name in reversed(list(enumerate(names)))}


def column(cols: dict[str, int], *names: str) -> int | None:
    return next((cols[n] for n in names if n in cols), None)


def data_lines(lines: list[bytes], start: int) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the non-empty lines from index `start`."""
    for number in range(start + 1, len(lines) + 1):
        line = lines[number - 1]
        if line.strip():
            yield number, line


def field(row: list[str], at: int) -> str:
    if at >= len(row):
        raise ValueError(f"row has {len(row)} fields, needs column {at + 1}")
    return row[at]


# --- values ---------------------------------------------------------------------------------------------------

_PLAIN = re.compile(r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")


def exact(text: str) -> str:
    """The file's decimal string when it is plain; else the same value written plainly ('1.347e-05' ->
    '0.00001347', '.5' -> '0.5'), never rounded. Anything else is left for the schema to refuse."""
    text = text.strip()
    if _PLAIN.fullmatch(text):
        return text
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text
    return format(value, "f") if value.is_finite() else text


_NUMERIC = re.compile(r"[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?")
# A number's unit by its size: seconds below 1e11 (year 5138), then ms, us, ns.
_UNITS = ((10**11, 10**9), (10**14, 10**6), (10**17, 10**3))
_CDD_HOUR = re.compile(r"(\d{4}-\d{2}-\d{2}) (\d{1,2})-([AP]M)", re.IGNORECASE)
_FRACTION = re.compile(r"(?<=:\d\d)[.,](\d+)")  # fractional seconds, which fromisoformat cuts to us
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def scaled_ns(text: str, scale: int) -> int:
    """A decimal number of units of `scale` ns, exactly, floored to the ns."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"not a time: {text!r}")
    return int((value * scale).to_integral_value(ROUND_FLOOR))


def epoch_ns(text: str) -> int:
    """ns since the epoch of a time written as s (with a fraction), ms, us or ns since the epoch, as ISO 8601
    (UTC unless it says otherwise) or as CryptoDataDownload's hours ('2019-10-17 09-AM')."""
    text = text.strip()
    if _NUMERIC.fullmatch(text):
        value = Decimal(text)
        scale = next((s for bound, s in _UNITS if value < bound), 1)
        return int((value * scale).to_integral_value(ROUND_FLOOR))
    return date_ns(text)


def date_ns(text: str) -> int:
    hour = _CDD_HOUR.fullmatch(text)
    extra = 0
    if hour:
        when = datetime.strptime(f"{hour[1]} {hour[2]}-{hour[3].upper()}", "%Y-%m-%d %I-%p")
    else:
        fraction = _FRACTION.search(text)
        if fraction:
            extra = int(fraction[1][:9].ljust(9, "0"))
            text = text[:fraction.start()] + text[fraction.end():]
        when = datetime.fromisoformat(text)  # ValueError when it is no date
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - EPOCH
    ns = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000 + extra
    if ns < 0:
        raise ValueError(f"time before 1970: {text!r}")
    return ns


_SIDES = {"buy": "buy", "b": "buy", "sell": "sell", "s": "sell"}


def side_of(text: str) -> str:
    """The aggressor's side from buy/sell/b/s in any case."""
    side = _SIDES.get(text.strip().lower())
    if side is None:
        raise ValueError(f"side {text!r} is not buy/sell/b/s")
    return side


def refusal(exc: ValueError) -> ValueError:
    """A short reason for a row the schema refuses (its first complaint)."""
    if not isinstance(exc, ValidationError):
        return exc
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(map(str, first["loc"])) or first["type"]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ValueError(f"{where}: {first['msg']}, got {first.get('input')!r}{more}")


def wire(frame: MarketFrame) -> WireFrame:
    return WireFrame(frame.ts, frame.recv_ts, frame.symbol, len(frame.trades), frame.model_dump_json().encode())


# --- event-time order -----------------------------------------------------------------------------------------

def chronological(keyed: list[tuple[int, K]]) -> list[tuple[int, K]]:
    """(time, line number or row) pairs in time order, sorted in place.

    A newest-first file (Bybit's older dumps, CryptoDataDownload) is the oldest-first file reversed, rows of one
    timestamp included, so it is reversed first; the stable sort then keeps the file's order among equal times."""
    if keyed and keyed[0][0] > keyed[-1][0]:
        keyed.reverse()
    keyed.sort(key=itemgetter(0))
    return keyed


def keyed_rows(lines: list[bytes], start: int, time_ns: Callable[[bytes], int], bad: Bad) -> list[tuple[int, int]]:
    """(event time ns, line number) of the data rows from index `start`, in time order."""
    keyed = []
    for number, line in data_lines(lines, start):
        try:
            keyed.append((time_ns(line), number))
        except ValueError as exc:
            bad(number, exc)
    return chronological(keyed)


# --- trades ---------------------------------------------------------------------------------------------------

class TradeRow(NamedTuple):
    """One row of a trades file, checked by the schema."""

    symbol: str
    trade_id: str
    ns: int  # event time
    trade: Trade | None  # None: the file names no side, the row gives a last price only
    price: str


def trade_frames(lines: list[bytes], keyed: Iterable[tuple[int, int]], parse: Callable[[bytes, int], TradeRow],
                 venue: str, kind: str, bad: Bad) -> Iterator[WireFrame]:
    """Frames of trade rows taken in `keyed` order. Consecutive rows of one timestamp (to the file's precision)
    and symbol share a frame, up to the schema's limit: the fills of one taker order, as a venue sends them."""
    group: list[tuple[TradeRow, int]] = []
    for _, number in keyed:
        try:
            row = parse(lines[number - 1], number)
        except ValueError as exc:
            bad(number, refusal(exc))
            continue
        if group and (row.trade is None or (row.ns, row.symbol) != (group[0][0].ns, group[0][0].symbol)
                      or len(group) == MAX_TRADES):
            yield from _frame_of(group, venue, kind, bad)
            group = []
        if row.trade is None:
            yield from _frame_of([(row, number)], venue, "last", bad)
        else:
            group.append((row, number))
    if group:
        yield from _frame_of(group, venue, kind, bad)


def _frame_of(group: list[tuple[TradeRow, int]], venue: str, kind: str, bad: Bad) -> Iterator[WireFrame]:
    first = group[0][0]
    ms = first.ns // NS_PER_MS
    extra = ({"ticker": Ticker(last=first.price)} if first.trade is None
             else {"trades": [row.trade for row, _ in group]})
    try:
        frame = MarketFrame(id=f"{venue}:{first.symbol}:{kind}:{ms}:{first.trade_id}", ts=ms, venue=venue,
                            symbol=first.symbol, recv_ts=first.ns, **extra)
    except ValidationError as exc:
        for _, number in group:
            bad(number, refusal(exc))
        return
    yield wire(frame)


def make_trade(ns: int, price: str, qty: str, side: str) -> Trade:
    return Trade(ts=ns // NS_PER_MS, price=exact(price), qty=exact(qty), side=side)


# --- generic trades CSV ---------------------------------------------------------------------------------------

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


# --- bars -----------------------------------------------------------------------------------------------------

class Candle(NamedTuple):
    """A row of a bar file: where it is, whose it is, when it starts, and its fields."""

    number: int
    symbol: str
    start: int  # ms
    row: list[str]


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


BuildFields = Callable[[Candle, int], dict]  # a candle and its interval -> the frame's other fields


def bar_frames(candles: list[Candle], intervals: Callable[[str], int | None], build: BuildFields, venue: str,
               kind: str, bad: Bad) -> Iterator[WireFrame]:
    """One frame per candle at the candle's close (start + interval), when it is known: no look-ahead."""
    keyed, seen = [], set()
    for c in candles:
        interval = intervals(c.symbol)
        if interval is None:
            bad(c.number, ValueError(f"{c.symbol} has one bar: its interval is unknown"))
        elif (c.symbol, c.start) in seen:
            bad(c.number, ValueError(f"repeats the {c.symbol} bar starting at {c.start}"))
        else:
            seen.add((c.symbol, c.start))
            keyed.append((c.start + interval, c))
    for close, c in chronological(keyed):
        interval = close - c.start
        try:
            frame = MarketFrame(id=f"{venue}:{c.symbol}:{kind}:{interval}:{c.start}", ts=close, venue=venue,
                                symbol=c.symbol, recv_ts=close * NS_PER_MS, **build(c, interval))
        except ValueError as exc:
            bad(c.number, refusal(exc))
            continue
        yield wire(frame)


def candles(lines: list[bytes], start: int, key: Callable[[list[str]], tuple[str, int]],
            bad: Bad) -> list[Candle]:
    """The rows from index `start`, with their symbol and start (ms) as `key` reads them."""
    out = []
    for number, line in data_lines(lines, start):
        try:
            row = fields(line)
            symbol, bar_start = key(row)
        except ValueError as exc:
            bad(number, exc)
            continue
        out.append(Candle(number, symbol, bar_start, row))
    return out


# --- generic OHLCV CSV ----------------------------------------------------------------------------------------

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
    names = [column(cols, *BAR_TIME_COLUMNS)] + [cols.get(n) for n in ("open", "high", "low", "close")]
    volume, turnover = volume_columns(cols, symbol)
    if None in names or volume is None:
        return None
    return OhlcvColumns(*names, volume, turnover, cols.get("symbol"))  # type: ignore[arg-type]


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


# --- QuantConnect Lean crypto bars ----------------------------------------------------------------------------

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
