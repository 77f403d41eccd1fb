"""Binance USD-M futures raw stream lines -> `MarketFrame`s.

A line is `<receive_ts_ns> <json>`, as hftbacktest's collector writes it: either a combined-stream envelope
`{"stream": ..., "data": {...}}` holding a `trade`, `bookTicker` or `depthUpdate` event, or a REST depth
snapshot `{"lastUpdateId", "E", "T", "bids", "asks"}`, which names no symbol (the caller passes it).

Pure functions (no state but caches). A line that is not one of these, or that the schema refuses, raises
`ValueError`; the caller skips and counts it.
"""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import orjson
from pydantic import ValidationError

from schemas import SCHEMA_VERSION, Level, MarketFrame, Trade

VENUE = "binance_usdm"

_SYMBOL = re.compile(r"[A-Z0-9._-]{1,40}")
_valid_symbols: set[str] = set()


def parse_line(line: bytes | str, symbol: str | None = None, *, validate: bool = False) -> MarketFrame:
    """Normalize one raw line. `symbol` names the book of a REST depth snapshot (unused otherwise).

    Values that cheap checks prove valid become models without validation; anything else goes through full
    pydantic validation. Both give equal frames. `validate=True` forces validation (tests, benchmarks).
    """
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
        build = _BUILDERS.get(kind)  # type: ignore[arg-type]
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
    if not validate:
        frame = _construct_if_valid(fields)
        if frame is not None:
            return frame
    return _validate(fields)


_LINE = re.compile(rb"\d+ \{")
_EVENT_TIME = re.compile(rb'"E":(\d+)')


def looks_like(line: bytes) -> bool:
    """Whether a recording line has this format (for format detection)."""
    return _LINE.match(line) is not None


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


# Builders: exchange event -> MarketFrame fields, prices and quantities still as the exchange's strings,
# levels as [price, qty] pairs.

def _trade(d: dict) -> dict[str, Any]:
    m = d["m"]
    if type(m) is not bool:
        raise TypeError(f"'m' is {m!r}, not a bool")
    # m: the buyer is the maker, so the seller took liquidity.
    trade = {"ts": d["T"], "price": d["p"], "qty": d["q"], "side": "sell" if m else "buy"}
    return _common(d, "trade", d["t"]) | {"trades": [trade]}


def _book_ticker(d: dict) -> dict[str, Any]:
    return _common(d, "bookTicker", d["u"]) | {"bid": d["b"], "bid_qty": d["B"], "ask": d["a"], "ask_qty": d["A"]}


def _depth_update(d: dict) -> dict[str, Any]:
    return _common(d, "depth", d["u"]) | {"bids": d["b"], "asks": d["a"], "snapshot": False}


def _snapshot(d: dict) -> dict[str, Any]:
    return _common(d, "snapshot", d["lastUpdateId"]) | {"bids": d["bids"], "asks": d["asks"], "snapshot": True}


def _common(d: dict, kind: str, exchange_id: Any) -> dict[str, Any]:
    if type(exchange_id) is not int:
        raise TypeError(f"update/trade id is {exchange_id!r}, not an int")
    symbol = d["s"]
    return {"id": f"{VENUE}:{symbol}:{kind}:{exchange_id}", "ts": d["E"], "venue": VENUE, "symbol": symbol}


_BUILDERS = {"trade": _trade, "bookTicker": _book_ticker, "depthUpdate": _depth_update}


# Fast path: cheap sufficient conditions for the schema's constraints, then build the models without
# validation. Not with `model_construct`: in pydantic 2.14 it costs 7 us per frame with every field given
# (324 us when it calls a `default_factory`: inspect.signature each time) and 3 us per Level, against about
# 1 us each here. Validation costs 3-4 us per Level (Decimal constraints); the whole tape parses 2x faster.

_decimals: dict[str, Decimal] = {}  # plain decimal string -> Decimal; 75k distinct strings in 1.75M here


def _decimal(s: Any) -> Decimal | None:
    """The Decimal of a plain non-negative decimal string ("61800.20"); None for anything else."""
    d = _decimals.get(s) if type(s) is str else None
    if d is None:
        # No sign, exponent, NaN or infinity; at most 38 digits.
        if type(s) is not str or len(s) > 38 or not s.isascii() or not s.replace(".", "", 1).isdigit():
            return None
        if len(_decimals) >= 500_000:
            _decimals.clear()
        d = _decimals[s] = Decimal(s)
    return d


_new = object.__new__
_set = object.__setattr__
_LEVEL_FIELDS = {"price", "qty"}  # shared: models are frozen, nothing adds to their fields-set


def _trusted(model: type, values: dict[str, Any]) -> Any:
    """What `model.model_construct(**values)` builds when `values` holds every field."""
    obj = _new(model)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", set(values))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def _event_time(t: Any) -> bool:
    return type(t) is int and 0 <= t < 10**14


def _construct_if_valid(f: dict[str, Any]) -> MarketFrame | None:
    symbol = f["symbol"]
    if symbol not in _valid_symbols:
        if type(symbol) is not str or not _SYMBOL.fullmatch(symbol):
            return None
        _valid_symbols.add(symbol)
    if not _event_time(f["ts"]):
        return None
    trades: list[Trade] = []
    bid = bid_qty = ask = ask_qty = None
    bids: list[Level] | None = []
    asks: list[Level] | None = []
    if "trades" in f:
        (t,) = f["trades"]
        price, qty = _decimal(t["price"]), _decimal(t["qty"])
        if not price or qty is None or not _event_time(t["ts"]):
            return None
        trades.append(_trusted(Trade, {"ts": t["ts"], "price": price, "qty": qty, "side": t["side"]}))
    elif "bid" in f:
        bid, bid_qty, ask, ask_qty = _decimal(f["bid"]), _decimal(f["bid_qty"]), _decimal(f["ask"]), _decimal(f["ask_qty"])
        if not bid or not ask or bid_qty is None or ask_qty is None:
            return None
    else:
        bids, asks = _levels(f["bids"]), _levels(f["asks"])
        if bids is None or asks is None:
            return None
    return _trusted(MarketFrame, {
        "v": SCHEMA_VERSION, "id": f["id"], "ts": f["ts"], "kind": "frame", "venue": VENUE, "symbol": symbol,
        "recv_ts": f["recv_ts"], "trades": trades, "bid": bid, "bid_qty": bid_qty, "ask": ask, "ask_qty": ask_qty,
        "bids": bids, "asks": asks, "snapshot": f.get("snapshot", False),
    })


def _levels(pairs: Any) -> list[Level] | None:
    # The hot loop (876k levels in the bundled tape): `_decimal` and `_trusted` inlined.
    if type(pairs) is not list or len(pairs) > 1000:
        return None
    cached, new, set_, fields = _decimals.get, _new, _set, _LEVEL_FIELDS
    levels = []
    try:
        for pair in pairs:
            if type(pair) is not list:
                return None
            p, q = pair
            price = cached(p) or _decimal(p)  # only plain strings are cached keys
            qty = cached(q)
            if qty is None:
                qty = _decimal(q)
            if qty is None or not price:
                return None
            level = new(Level)
            set_(level, "__dict__", {"price": price, "qty": qty})
            set_(level, "__pydantic_fields_set__", fields)
            set_(level, "__pydantic_extra__", None)
            set_(level, "__pydantic_private__", None)
            levels.append(level)
    except (TypeError, ValueError):  # unhashable element, not a pair
        return None
    return levels


def _validate(f: dict[str, Any]) -> MarketFrame:
    for side in ("bids", "asks"):
        if type(f.get(side)) is list:
            f[side] = [_level_dict(pair) for pair in f[side]]
    try:
        return MarketFrame.model_validate(f)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        raise ValueError(f"invalid {f['id']}: {errors}") from None


def _level_dict(pair: Any) -> Any:
    if type(pair) is list and len(pair) == 2:
        return {"price": pair[0], "qty": pair[1]}
    return pair  # validation will refuse it with its location


def _clip(line: bytes, n: int = 120) -> str:
    text = line[:n].decode(errors="replace")
    return text + ("..." if len(line) > n else "")
