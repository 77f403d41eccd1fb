"""A normalized frame's JSON without building its model, when cheap checks prove the schema would accept it.

Normalizers build a frame as a dict of every MarketFrame field in the schema's order. When `proven` holds,
`orjson.dumps` of the dict is byte for byte what `MarketFrame.model_validate(dict).model_dump_json()` writes;
otherwise `validate` runs the schema and names what it refuses. A value already seen valid costs a set lookup;
a new one, the schema's own regex.
"""
from __future__ import annotations

import re
from typing import Any

import orjson
from pydantic import ValidationError

from schemas import MarketFrame
from schemas.base import PriceStr, QtyStr, SignedStr
from schemas.market import Ticker
from streams.frames.wire import WireFrame


def _pattern(constrained: Any) -> re.Pattern[str]:
    # fullmatch of '^...$' accepts exactly what pydantic's Rust regex does ('$' cannot match before a final
    # newline when the whole string must match).
    (constraints,) = constrained.__metadata__
    return re.compile(constraints.pattern)


_PRICE, _QTY, _SIGNED = _pattern(PriceStr), _pattern(QtyStr), _pattern(SignedStr)
_SYMBOL = re.compile(r"[A-Z0-9._-]{1,40}")  # schemas.base.Symbol
_prices: set[str] = set()  # strings known to be valid
_qtys: set[str] = set()
_symbols: set[str] = set()
_signed: set[str] = set()
TICKER_FIELDS = tuple(Ticker.model_fields)  # a ticker dict in this order, every field present, dumps as the schema
_LIST = {list}
_MAX_TS = 10**14  # EventTime

if list(MarketFrame.model_fields)[-3:] != ["ticker", "bar", "status"] or TICKER_FIELDS != (
        "last", "mark", "index", "funding_rate", "next_funding_ts", "open_interest", "turnover_24h"):
    raise ImportError("frame_json: MarketFrame's or Ticker's fields changed; review `proven` and `ticker_ok`")


def wire(f: dict[str, Any]) -> WireFrame:
    """The frame as a source sends it; its JSON is what `MarketFrame.model_dump_json()` writes. Raises
    ValueError when the schema refuses it."""
    if proven(f):
        try:
            return WireFrame(f["ts"], f["recv_ts"], f["symbol"], len(f["trades"]), orjson.dumps(f))
        except orjson.JSONEncodeError:  # an int beyond 64 bits: pydantic writes it, orjson cannot
            pass
    frame = validate(f)
    return WireFrame(frame.ts, frame.recv_ts, frame.symbol, len(frame.trades), frame.model_dump_json().encode(),
                     frame.status == "live")


def validate(f: dict[str, Any]) -> MarketFrame:
    try:
        return MarketFrame.model_validate(f)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        raise ValueError(f"invalid {f.get('id')}: {errors}") from None


def _learn(s: Any, pattern: re.Pattern[str], known: set[str]) -> bool:
    """Whether `s` is a string of at most 40 characters (every max_length here) that `pattern` fully matches;
    remembers it when it is."""
    if type(s) is not str or len(s) > 40 or not pattern.fullmatch(s):
        return False
    if len(known) >= 1 << 20:
        known.clear()
    known.add(s)
    return True


def proven(f: dict[str, Any]) -> bool:
    """Whether validation surely accepts `f` (every field, in order, only ASCII strings needing no escapes)
    and changes nothing in it but the levels' type (lists -> tuples). A ticker must pass `ticker_ok` (tickers are
    most of a whole universe's messages); frames with a bar, or not live, are left to `validate`: they are a small
    share of any feed."""
    prices, qtys = _prices, _qtys
    try:
        ts, symbol, bid, ask, bid_qty, ask_qty, bids, asks = (
            f["ts"], f["symbol"], f["bid"], f["ask"], f["bid_qty"], f["ask_qty"], f["bids"], f["asks"])
        if (type(ts) is not int or not 0 <= ts < _MAX_TS or len(f["id"]) > 160
                or symbol not in _symbols and not _learn(symbol, _SYMBOL, _symbols)
                or f["ticker"] is not None and not ticker_ok(f["ticker"])
                or f["bar"] is not None or f["status"] != "live"
                or type(f["recv_ts"]) is not int or f["recv_ts"] < 0 or type(f["snapshot"]) is not bool):
            return False
        for t in f["trades"]:
            ts, price, qty = t["ts"], t["price"], t["qty"]
            if (type(ts) is not int or not 0 <= ts < _MAX_TS or not (price in prices or _learn(price, _PRICE, prices))
                    or not (qty in qtys or _learn(qty, _QTY, qtys)) or t["side"] not in _SIDES):
                return False
        if len(f["trades"]) > 5000:
            return False
        if not (bid in prices and ask in prices and bid_qty in qtys and ask_qty in qtys
                or bid is ask is bid_qty is ask_qty is None):
            for x, pattern, known in ((bid, _PRICE, prices), (ask, _PRICE, prices), (bid_qty, _QTY, qtys),
                                      (ask_qty, _QTY, qtys)):
                if x is not None and x not in known and not _learn(x, pattern, known):
                    return False
        if type(bids) is not list or type(asks) is not list:
            return False
        return not (bids or asks) or levels_ok(bids) and levels_ok(asks)
    except TypeError:  # an unhashable value (a list or an object where a string belongs)
        return False


_SIDES = frozenset(("buy", "sell"))


def ticker_ok(t: Any) -> bool:
    """Whether `t` is a dict of every Ticker field, in order, each None or a value the schema keeps as it is."""
    if type(t) is not dict or tuple(t) != TICKER_FIELDS:
        return False
    prices, qtys, signed = _prices, _qtys, _signed
    last, mark, index, rate, next_ts, oi, turnover = t.values()
    return ((last is None or last in prices or _learn(last, _PRICE, prices))
            and (mark is None or mark in prices or _learn(mark, _PRICE, prices))
            and (index is None or index in prices or _learn(index, _PRICE, prices))
            and (rate is None or rate in signed or _learn(rate, _SIGNED, signed))
            and (next_ts is None or type(next_ts) is int and 0 <= next_ts < _MAX_TS)
            and (oi is None or oi in qtys or _learn(oi, _QTY, qtys))
            and (turnover is None or turnover in qtys or _learn(turnover, _QTY, qtys)))


def levels_ok(pairs: list) -> bool:
    """Whether every pair is a list [price > 0, quantity >= 0] of plain decimal strings (at most 1000)."""
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
