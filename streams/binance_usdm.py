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
from pydantic import ValidationError

from schemas import SCHEMA_VERSION, MarketFrame, Trade
from schemas.base import PriceStr, QtyStr

from .wire import Bad, Format, WireFrame, sorted_lines

VENUE = "binance_usdm"


def parse_line(line: bytes | str, symbol: str | None = None, *, validate: bool = False) -> MarketFrame:
    """Normalize one raw line. `symbol` names the book of a REST depth snapshot (unused otherwise).

    When cheap checks prove the schema accepts the values, the model is built without validation; anything
    else goes through full pydantic validation. Both give equal frames. `validate=True` forces validation.
    """
    f = _fields(line, symbol)
    if validate or not _proven(f):
        return _validate(f)
    trades, bids, asks = f["trades"], f["bids"], f["asks"]
    if trades:
        f["trades"] = [_trusted(Trade, t, _TRADE_FIELDS) for t in trades]
    if bids:
        f["bids"] = list(map(tuple, bids))
    if asks:
        f["asks"] = list(map(tuple, asks))
    return _trusted(MarketFrame, f, _FRAME_FIELDS)


def wire_line(line: bytes | str, symbol: str | None = None) -> tuple[int, int, str, int, bytes]:
    """(ts, recv_ts, symbol, number of trades, json) of the frame of one raw line, where `json` is byte for byte
    `parse_line(line, symbol).model_dump_json().encode()`: what a source sends, without building the model when
    cheap checks prove the values valid. Raises ValueError as `parse_line` does."""
    f = _fields(line, symbol)
    if _proven(f):
        # The dict holds every field in the schema's order and only ASCII strings that need no escaping, so
        # orjson writes what pydantic would.
        try:
            return f["ts"], f["recv_ts"], f["symbol"], len(f["trades"]), orjson.dumps(f)
        except orjson.JSONEncodeError:  # recv_ts beyond 64 bits: pydantic writes it, orjson cannot
            pass
    frame = _validate(f)
    return frame.ts, frame.recv_ts, frame.symbol, len(frame.trades), frame.model_dump_json().encode()


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
    return fields


def read(lines: list[bytes], bad: Bad) -> Iterator[WireFrame]:
    """A recording's frames in event-time order: a Binance file interleaves its streams out of event order."""
    symbol = recording_symbol(lines)
    return sorted_lines(lines, sort_key, lambda line: WireFrame(*wire_line(line, symbol)), bad)


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
    return {"v": SCHEMA_VERSION, "id": f"{VENUE}:{symbol}:{kind}:{exchange_id}", "ts": d["E"], "kind": "frame",
            "venue": VENUE, "symbol": symbol, "recv_ts": 0, "trades": [], "bid": None, "bid_qty": None,
            "ask": None, "ask_qty": None, "bids": [], "asks": [], "snapshot": False,
            "ticker": None, "bar": None, "status": "live"}


_BUILDERS = {"trade": _trade, "bookTicker": _book_ticker, "depthUpdate": _depth_update}

if list(_common({"s": "X", "E": 0}, "", 0)) != list(MarketFrame.model_fields):  # what the fast path relies on
    raise ImportError("binance_usdm: the builders' fields are out of step with MarketFrame's")


# Fast path: cheap sufficient conditions for every constraint of the schema, then the models built without
# validation. A value already seen valid costs a set lookup; a new one, the schema's own regex. Not with
# `model_construct`: in pydantic 2.14 it costs 7 us per frame (324 us when it calls a default_factory).

def _pattern(constrained: Any) -> re.Pattern[str]:
    # fullmatch of '^...$' accepts exactly what pydantic's Rust regex does ('$' cannot match before a final
    # newline when the whole string must match).
    (constraints,) = constrained.__metadata__
    return re.compile(constraints.pattern)


_PRICE, _QTY = _pattern(PriceStr), _pattern(QtyStr)
_SYMBOL = re.compile(r"[A-Z0-9._-]{1,40}")  # schemas.base.Symbol
_prices: set[str] = set()  # strings known to be valid
_qtys: set[str] = set()
_symbols: set[str] = set()
_LIST = {list}
_MAX_TS = 10**14  # EventTime


def _learn(s: Any, pattern: re.Pattern[str], known: set[str]) -> bool:
    """Whether `s` is a string of at most 40 characters (every max_length here) that `pattern` fully matches;
    remembers it when it is."""
    if type(s) is not str or len(s) > 40 or not pattern.fullmatch(s):
        return False
    if len(known) >= 1 << 20:
        known.clear()
    known.add(s)
    return True


def _proven(f: dict[str, Any]) -> bool:
    """Whether validation surely accepts `f` and changes nothing in it but the levels' type (lists -> tuples)."""
    prices, qtys = _prices, _qtys
    try:
        ts, symbol, bid, ask, bid_qty, ask_qty, bids, asks = (
            f["ts"], f["symbol"], f["bid"], f["ask"], f["bid_qty"], f["ask_qty"], f["bids"], f["asks"])
        if (type(ts) is not int or not 0 <= ts < _MAX_TS or len(f["id"]) > 160
                or symbol not in _symbols and not _learn(symbol, _SYMBOL, _symbols)):
            return False
        for t in f["trades"]:
            ts, price, qty = t["ts"], t["price"], t["qty"]
            if (type(ts) is not int or not 0 <= ts < _MAX_TS or not (price in prices or _learn(price, _PRICE, prices))
                    or not (qty in qtys or _learn(qty, _QTY, qtys))):
                return False
        if not (bid in prices and ask in prices and bid_qty in qtys and ask_qty in qtys
                or bid is ask is bid_qty is ask_qty is None):
            for x, pattern, known in ((bid, _PRICE, prices), (ask, _PRICE, prices), (bid_qty, _QTY, qtys),
                                      (ask_qty, _QTY, qtys)):
                if x is not None and x not in known and not _learn(x, pattern, known):
                    return False
        if type(bids) is not list or type(asks) is not list:
            return False
        return not (bids or asks) or _levels_ok(bids) and _levels_ok(asks)
    except TypeError:  # an unhashable value (a list or an object where a string belongs)
        return False


def _levels_ok(pairs: list) -> bool:
    if len(pairs) > 1000:
        return False
    if not pairs:
        return True
    # Only lists: zip would take a two-character string for a pair.
    if set(map(type, pairs)) != _LIST:
        return False
    try:
        prices, qtys = zip(*pairs, strict=True)  # every pair holds two items
    except ValueError:
        return False
    return ((_prices.issuperset(prices) or all(p in _prices or _learn(p, _PRICE, _prices) for p in prices))
            and (_qtys.issuperset(qtys) or all(q in _qtys or _learn(q, _QTY, _qtys) for q in qtys)))


_new, _set = object.__new__, object.__setattr__
# Every field is set, so these never change (pydantic copies them before adding to them): shared.
_FRAME_FIELDS, _TRADE_FIELDS = set(MarketFrame.model_fields), set(Trade.model_fields)


def _trusted(model: type, values: dict[str, Any], fields_set: set[str]) -> Any:
    """What validating `values` (every field of `model`, valid as they are) gives."""
    obj = _new(model)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", fields_set)
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def _validate(f: dict[str, Any]) -> MarketFrame:
    try:
        return MarketFrame.model_validate(f)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        raise ValueError(f"invalid {f['id']}: {errors}") from None


def _clip(line: bytes, n: int = 120) -> str:
    text = line[:n].decode(errors="replace")
    return text + ("..." if len(line) > n else "")
