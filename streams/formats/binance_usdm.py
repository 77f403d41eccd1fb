"""Binance USD-M futures raw stream lines -> `MarketFrame`s.

A line is `<receive_ts_ns> <json>`, as hftbacktest's collector writes it: either a combined-stream envelope
`{"stream": ..., "data": {...}}` holding a `trade`, `bookTicker` or `depthUpdate` event, or a REST depth
snapshot `{"lastUpdateId", "E", "T", "bids", "asks"}`, which names no symbol (the caller passes it).

Pure functions (no state but caches). A line that is not one of these, or that the schema refuses, raises
`ValueError`; the caller skips and counts it.
"""
from __future__ import annotations

import re
from typing import Any, Iterator

import orjson

from papertape.core.instruments import inverse_reason
from schemas import SCHEMA_VERSION, MarketFrame, Trade
from streams.frames.frame_json import proven, validate, wire
from streams.frames.wire import Bad, Format, WireFrame, sorted_lines

VENUE = "binance_usdm"


def parse_line(line: bytes | str, symbol: str | None = None, *, validate: bool = False) -> MarketFrame:
    """Normalize one raw line. `symbol` names the book of a REST depth snapshot (unused otherwise).

    When cheap checks prove the schema accepts the values, the model is built without validation; anything
    else goes through full pydantic validation. Both give equal frames. `validate=True` forces validation.
    """
    f = _fields(line, symbol)
    if validate or not proven(f):
        return _validate(f)
    trades, bids, asks = f["trades"], f["bids"], f["asks"]
    if trades:
        f["trades"] = [_trusted(Trade, t, _TRADE_FIELDS) for t in trades]
    if bids:
        f["bids"] = list(map(tuple, bids))
    if asks:
        f["asks"] = list(map(tuple, asks))
    return _trusted(MarketFrame, f, _FRAME_FIELDS)


def wire_line(line: bytes | str, symbol: str | None = None) -> WireFrame:
    """(ts, recv_ts, symbol, number of trades, json) of the frame of one raw line, where `json` is byte for byte
    `parse_line(line, symbol).model_dump_json().encode()`: what a source sends, without building the model when
    cheap checks prove the values valid. Raises ValueError as `parse_line` does."""
    return wire(_fields(line, symbol))


def _fields(line: bytes | str, symbol: str | None) -> dict[str, Any]:
    """Every MarketFrame field of a line, in the schema's order, not yet validated."""
    if isinstance(line, str):
        line = line.encode()
    head, _, body = line.partition(b" ")
    try:
        recv_ts = int(head)
        msg = orjson.loads(body)
    except ValueError:
        raise ValueError(f"not a '<receive_ts_ns> <json>' line: {_clip(line)}") from None
    if recv_ts < 0 or type(msg) is not dict:
        raise ValueError(f"not a '<receive_ts_ns> <json>' line: {_clip(line)}")

    data = msg.get("data")
    if data is not None:
        kind = data.get("e") if type(data) is dict else None
        build = _BUILDERS.get(kind) if type(kind) is str else None  # JSON may hold a list there: unhashable
        if build is None:
            raise ValueError(f"unknown event type {kind!r} in stream {msg.get('stream')!r}")
        where = kind
    elif "lastUpdateId" in msg:
        if symbol is None:
            raise ValueError("REST depth snapshot without a symbol (the line names none; pass symbol=)")
        data, build, where = dict(msg, s=symbol), _snapshot, "depth snapshot"
    else:
        raise ValueError(f"unknown message with keys {sorted(msg)[:8]}")

    try:
        fields = build(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed {where} message ({type(exc).__name__}: {exc})") from None
    fields["recv_ts"] = recv_ts
    return fields


def read(lines: list[bytes], name: str, bad: Bad) -> Iterator[WireFrame]:
    """A recording's frames in event-time order: a Binance file interleaves its streams out of event order."""
    symbol = recording_symbol(lines)
    return sorted_lines(lines, sort_key, lambda line: wire_line(line, symbol), bad)


_LINE = re.compile(rb"\d+ \{")
_EVENT_TIME = re.compile(rb'"E":(\d+)')


def looks_like(line: bytes) -> bool:
    """Whether a recording line has this format (for format detection)."""
    return _LINE.match(line) is not None


FORMAT = Format(VENUE, lambda first, name: looks_like(first), read)


def sort_key(line: bytes) -> tuple[int, int]:
    """(event time ms, receive ns) of a line without building its frame. `parse_line` agrees for valid lines."""
    head, _, body = line.partition(b" ")
    found = _EVENT_TIME.search(body)
    if found is None or not head.isdigit():
        raise ValueError(f"no event time in line: {_clip(line)}")
    return int(found[1]), int(head)


def recording_symbol(lines: list[bytes], scan: int = 1000) -> str | None:
    """The symbol of a one-symbol recording (as hftbacktest writes them): the first envelope's `data.s`."""
    for line in lines[:scan]:
        try:
            data = orjson.loads(line.partition(b" ")[2]).get("data")
        except (ValueError, AttributeError):
            continue
        if type(data) is dict and type(data.get("s")) is str:
            return data["s"]
    return None


# Builders: exchange event -> every MarketFrame field, in the schema's order (the order model_dump_json
# writes); prices and quantities still the exchange's strings, levels [price, qty] lists.

def _trade(d: dict) -> dict[str, Any]:
    m = d["m"]
    if type(m) is not bool:
        raise TypeError(f"'m' is {m!r}, not a bool")
    f = _common(d, "trade", d["t"])
    # m: the buyer is the maker, so the seller took liquidity.
    f["trades"] = [{"ts": d["T"], "price": d["p"], "qty": d["q"], "side": "sell" if m else "buy"}]
    return f


def _book_ticker(d: dict) -> dict[str, Any]:
    f = _common(d, "bookTicker", d["u"])
    f["bid"], f["bid_qty"], f["ask"], f["ask_qty"] = d["b"], d["B"], d["a"], d["A"]
    return f


def _depth_update(d: dict) -> dict[str, Any]:
    f = _common(d, "depth", d["u"])
    f["bids"], f["asks"] = d["b"], d["a"]
    return f


def _snapshot(d: dict) -> dict[str, Any]:
    f = _common(d, "snapshot", d["lastUpdateId"])
    f["bids"], f["asks"], f["snapshot"] = d["bids"], d["asks"], True
    return f


def _common(d: dict, kind: str, exchange_id: Any) -> dict[str, Any]:
    if type(exchange_id) is not int:
        raise TypeError(f"update/trade id is {exchange_id!r}, not an int")
    symbol = d["s"]
    if symbol not in _LINEAR:
        if why := inverse_reason(symbol):  # a COIN-M stream replayed as a USD-M one
            raise ValueError(why)
        _LINEAR.add(symbol)
    return {"v": SCHEMA_VERSION, "id": f"{VENUE}:{symbol}:{kind}:{exchange_id}", "ts": d["E"], "kind": "frame",
            "venue": VENUE, "symbol": symbol, "recv_ts": 0, "trades": [], "bid": None, "bid_qty": None,
            "ask": None, "ask_qty": None, "bids": [], "asks": [], "snapshot": False,
            "ticker": None, "bar": None, "status": "live"}


_LINEAR: set[str] = set()  # symbols seen linear: the check runs once per symbol
_BUILDERS = {"trade": _trade, "bookTicker": _book_ticker, "depthUpdate": _depth_update}

if list(_common({"s": "X", "E": 0}, "", 0)) != list(MarketFrame.model_fields):  # what the fast path relies on
    raise ImportError("binance_usdm: the builders' fields are out of step with MarketFrame's")


_new, _set = object.__new__, object.__setattr__
# Every field is set, so these never change (pydantic copies them before adding to them): shared.
_FRAME_FIELDS, _TRADE_FIELDS = set(MarketFrame.model_fields), set(Trade.model_fields)


def _trusted(model: type, values: dict[str, Any], fields_set: set[str]) -> Any:
    """What validating `values` (every field of `model`, valid as they are) gives. Not with `model_construct`:
    in pydantic 2.14 it costs 7 us per frame (324 us when it calls a default_factory)."""
    obj: Any = _new(model)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", fields_set)
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def _validate(f: dict[str, Any]) -> MarketFrame:
    return validate(f)


def _clip(line: bytes, n: int = 120) -> str:
    text = line[:n].decode(errors="replace")
    return text + ("..." if len(line) > n else "")
