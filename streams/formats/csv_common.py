"""What the CSV recording formats share: columns found by name, times, the file's exact decimals, event-time
order, and frames built as real `MarketFrame`s, of trades (`trade_frames`) or of bars (`bar_frames`).

Every format's `read` yields `WireFrame`s in event-time order; a row the schema refuses is reported to `bad` and
skipped. A file with no receive time gets its event time, in ns, as `recv_ts`.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar

from pydantic import ValidationError

from schemas import MarketFrame, Trade
from schemas.market import Ticker
from streams.frames.wire import Bad, WireFrame

VENUE = "csv"  # of the generic trades and OHLCV CSVs
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
    # beyond 40 digits no plain decimal fits the schema: left for it to refuse, never written out ('1e999999999')
    return format(value, "f") if value.is_finite() and abs(value.adjusted()) <= 40 else text


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
    if not value.is_finite() or value < 0 or value.adjusted() > 20:  # 10^20 s: past any time, never an integer
        raise ValueError(f"not a time: {text!r}")
    return int((value * scale).to_integral_value(ROUND_FLOOR))


def epoch_ns(text: str) -> int:
    """ns since the epoch of a time written as s (with a fraction), ms, us or ns since the epoch, as ISO 8601
    (UTC unless it says otherwise) or as CryptoDataDownload's hours ('2019-10-17 09-AM')."""
    text = text.strip()
    if _NUMERIC.fullmatch(text):
        value = Decimal(text)
        if value.adjusted() > 20:  # past any event time (10^20 ns is year 5138), never made an integer ('1e999999999')
            raise ValueError(f"time out of range: {text!r}")
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


# --- bars -----------------------------------------------------------------------------------------------------

class Candle(NamedTuple):
    """A row of a bar file: where it is, whose it is, when it starts, and its fields."""

    number: int
    symbol: str
    start: int  # ms
    row: list[str]


BuildFields = Callable[[Candle, int], dict[str, Any]]  # a candle and its interval -> the frame's other fields


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
