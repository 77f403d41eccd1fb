"""Bybit v5 public WebSocket messages -> market frames.

One `BybitNormalizer` per stream of messages in receive order (a connection, or a tape): it merges ticker
deltas into snapshots, checks that each order book's update ids follow one another, and tells the caller
about acks, errors and gaps. Pure: no I/O, no clock.

- `publicTrade.S`: one frame with every trade of the message (block trades left out: they do not cross the
  book).
- `orderbook.1.S`: the top of book as the frame's bid/ask (a top feed); `orderbook.N.S` for N > 1: levels
  (snapshot or delta). A delta repeating the last update id applied is a duplicate, already in the book:
  dropped. Any other id but the next is a gap (lost or reordered updates, or a new sequence): the book is out of
  sync, a `stale` frame says so, its deltas are dropped until the next snapshot, and every other frame of the
  symbol (trades, tickers, klines, its other book) says `stale` too, so nothing trades on the old book meanwhile.
- `tickers.S`: the merged ticker (last, mark, index, funding rate and time, open interest, turnover). Not its
  bid1/ask1: the top of book comes from `orderbook.1`, which is fresher; two top feeds would flap.
- `kline.I.S`: one bar frame per candle.
- `liquidation.S`, `allLiquidation.S`: known, not used (liquidations also print as trades).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import orjson

from schemas import SCHEMA_VERSION
from streams.frames.frame_json import TICKER_FIELDS, levels_ok, wire
from streams.frames.wire import WireFrame

VENUE = "bybit"
IGNORED_TOPICS = ("liquidation", "allLiquidation")
_TICKER_FIELDS = {"lastPrice": "last", "markPrice": "mark", "indexPrice": "index", "fundingRate": "funding_rate",
                  "nextFundingTime": "next_funding_ts", "openInterest": "open_interest", "turnover24h": "turnover_24h"}
_INTERVALS = {"D": 86_400_000, "W": 7 * 86_400_000}


class Reply(NamedTuple):
    """The venue's answer to a request: a subscribe/unsubscribe ack or refusal, or a pong."""

    op: str
    success: bool
    message: str
    req_id: str | None


class Gap(NamedTuple):
    """An order book lost updates: resubscribe `topic` for a new snapshot."""

    topic: str
    symbol: str
    expected: int
    got: int


@dataclass
class _BookState:
    last_u: int = -1
    synced: bool = False
    bids: dict[str, str] = field(default_factory=dict)  # kept for the top feed and for checking snapshots
    asks: dict[str, str] = field(default_factory=dict)


@dataclass
class BookCheck:
    """Books compared with the exchange's later snapshots (when `check_books`)."""

    compared: int = 0
    mismatches: list[str] = field(default_factory=list)


class BybitNormalizer:
    def __init__(self, check_books: bool = False) -> None:
        self.check_books = check_books
        self.books: dict[str, _BookState] = {}
        self.out_of_sync: dict[str, set[str]] = {}  # symbol -> its book topics that lost updates, until a snapshot
        self.tickers: dict[str, dict[str, str]] = {}
        self.book_check = BookCheck()
        self.ignored = 0  # known messages that make no frame

    def on_message(self, raw: bytes | str | dict, recv_ns: int) -> tuple[list[WireFrame], Reply | Gap | None]:
        """Frames of one message, and what the client must know of it. Raises ValueError on a malformed or
        unknown message, naming why."""
        msg = raw if isinstance(raw, dict) else _loads(raw)
        topic = msg.get("topic")
        if topic is None:
            return [], _reply(msg)
        if type(topic) is not str:
            raise ValueError(f"topic is {topic!r}")
        kind, _, rest = topic.partition(".")
        try:
            if kind == "publicTrade":
                return self._trades(msg, rest, recv_ns), None
            if kind == "orderbook":
                return self._book(msg, topic, rest, recv_ns)
            if kind == "tickers":
                return self._ticker(msg, rest, recv_ns), None
            if kind == "kline":
                return self._klines(msg, rest, recv_ns), None
        except (KeyError, TypeError, ValueError, InvalidOperation, AttributeError) as exc:
            if isinstance(exc, ValueError) and str(exc).startswith("invalid "):
                raise
            raise ValueError(f"malformed {topic} message ({type(exc).__name__}: {exc})") from None
        if kind in IGNORED_TOPICS:
            self.ignored += 1
            return [], None
        raise ValueError(f"unknown topic {topic!r}")

    # --- trades ------------------------------------------------------------------------------------------
    def _trades(self, msg: dict, symbol: str, recv_ns: int) -> list[WireFrame]:
        trades = [{"ts": _int(t["T"]), "price": t["p"], "qty": t["v"], "side": _side(t["S"])}
                  for t in msg["data"] if not t.get("BT")]
        if not trades:
            self.ignored += 1
            return []
        f = self._frame(symbol, "trade", msg["data"][0]["i"], msg["ts"], recv_ns)
        f["trades"] = trades
        return [wire(f)]

    # --- order books -------------------------------------------------------------------------------------
    def _book(self, msg: dict, topic: str, rest: str, recv_ns: int) -> tuple[list[WireFrame], Gap | None]:
        depth, _, symbol = rest.partition(".")
        data, kind = msg["data"], msg["type"]
        u, bids, asks = _int(data["u"]), data["b"], data["a"]
        if data["s"] != symbol:
            raise ValueError(f"data for {data['s']!r} on {topic}")
        for side, levels in (("bids", bids), ("asks", asks)):
            if not levels_ok(levels):
                raise ValueError(f"invalid {topic} {side}: each level must be [price > 0, size >= 0], plain decimals")
        state = self.books.get(topic)
        if state is None:
            state = self.books[topic] = _BookState()
        top = depth == "1"
        if kind == "snapshot":
            if state.synced and self.check_books:
                self._compare(topic, state, bids, asks)
            state.synced, state.last_u = True, u
            state.bids, state.asks = {}, {}
            self._resynced(symbol, topic)
            _apply(state, bids, asks, top or self.check_books)
        elif kind == "delta":
            if not state.synced:
                self.ignored += 1  # before the first snapshot, or after a gap until the next
                return [], None
            if u == state.last_u:  # a lower id is no duplicate: a new sequence (Bybit restarted), so a gap
                self.ignored += 1
                return [], None
            if u != state.last_u + 1:
                state.synced = False
                self.out_of_sync.setdefault(symbol, set()).add(topic)
                gap = Gap(topic, symbol, state.last_u + 1, u)
                return [wire(_status_frame(symbol, "stale", f"gap:{topic}:{u}", msg["ts"], recv_ns))], gap
            state.last_u = u
            _apply(state, bids, asks, top or self.check_books)
        else:
            raise ValueError(f"type {kind!r}")
        f = self._frame(symbol, f"ob{depth}", data.get("seq", u), msg["ts"], recv_ns)
        if top:
            _top(f, state)
        else:
            f["bids"], f["asks"], f["snapshot"] = bids, asks, kind == "snapshot"
        return [wire(f)], None

    def _compare(self, topic: str, state: _BookState, bids: list, asks: list) -> None:
        """Our book against the exchange's snapshot, over the snapshot's depth."""
        self.book_check.compared += 1
        for name, ours, theirs, best_first in (("bids", state.bids, bids, True), ("asks", state.asks, asks, False)):
            want = sorted(((Decimal(p), Decimal(q)) for p, q in theirs), reverse=best_first)
            have = sorted(((Decimal(p), Decimal(q)) for p, q in ours.items()), reverse=best_first)[:len(want)]
            if have != want:
                self.book_check.mismatches.append(f"{topic} {name}: ours {have[:3]}... vs snapshot {want[:3]}...")

    # --- tickers and klines --------------------------------------------------------------------------------
    def _ticker(self, msg: dict, symbol: str, recv_ns: int) -> list[WireFrame]:
        data, kind = msg["data"], msg["type"]
        if kind == "snapshot":
            merged = {}
        elif kind == "delta":
            kept = self.tickers.get(symbol)
            if kept is None:  # a delta before any snapshot: nothing to merge it into
                self.ignored += 1
                return []
            merged = dict(kept)  # kept only once the frame is valid: a refused delta changes nothing
        else:
            raise ValueError(f"type {kind!r}")
        changed = False
        for key, name in _TICKER_FIELDS.items():
            value = data.get(key)
            if value is not None:
                merged[name] = value
                changed = True
        if not changed:
            self.ignored += 1
            return []
        # every field, in the schema's order (the frame's JSON needs no validation then); "": it does not apply
        ticker: dict[str, Any] = {k: None if (v := merged.get(k)) == "" else v for k in TICKER_FIELDS}
        if ticker["next_funding_ts"] is not None:
            ticker["next_funding_ts"] = _int(ticker["next_funding_ts"])
        f = self._frame(symbol, "ticker", msg.get("cs", msg["ts"]), msg["ts"], recv_ns)
        f["ticker"] = ticker
        frame = wire(f)
        self.tickers[symbol] = merged
        return [frame]

    def _klines(self, msg: dict, rest: str, recv_ns: int) -> list[WireFrame]:
        interval, _, symbol = rest.partition(".")
        frames = []
        for k in msg["data"]:
            start, end = _int(k["start"]), _int(k["end"])
            bar = {"start": start, "interval_ms": _INTERVALS.get(interval, end - start + 1), "open": k["open"],
                   "high": k["high"], "low": k["low"], "close": k["close"], "volume": k["volume"],
                   "turnover": k.get("turnover"), "closed": _bool(k["confirm"])}
            ts = _int(k.get("timestamp", msg["ts"]))
            f = self._frame(symbol, f"kline{interval}", f"{start}:{ts}", ts, recv_ns)
            f["bar"] = bar
            frames.append(wire(f))
        return frames

    def _frame(self, symbol: str, kind: str, key: Any, ts: Any, recv_ns: int) -> dict[str, Any]:
        """A frame of `symbol`: stale while one of its books is out of sync."""
        f = _frame(symbol, kind, key, ts, recv_ns)
        if symbol in self.out_of_sync:
            f["status"] = "stale"
        return f

    def _resynced(self, symbol: str, topic: str) -> None:
        gapped = self.out_of_sync.get(symbol)
        if gapped is not None:
            gapped.discard(topic)
            if not gapped:
                del self.out_of_sync[symbol]


def stale_frame(symbol: str, ts: int, recv_ns: int, status: str = "stale") -> WireFrame:
    """A frame saying the symbol's feed went quiet (or could not be priced) at event time `ts`."""
    return wire(_status_frame(symbol, status, f"{status}:{ts}", ts, recv_ns))


def _status_frame(symbol: str, status: str, key: str, ts: int, recv_ns: int) -> dict:
    f = _frame(symbol, "status", key, ts, recv_ns)
    f["status"] = status
    return f


def _frame(symbol: str, kind: str, key: Any, ts: Any, recv_ns: int) -> dict[str, Any]:
    """Every MarketFrame field in the schema's order."""
    return {"v": SCHEMA_VERSION, "id": f"{VENUE}:{symbol}:{kind}:{key}", "ts": _int(ts), "kind": "frame",
            "venue": VENUE, "symbol": symbol, "recv_ts": recv_ns, "trades": [], "bid": None, "bid_qty": None,
            "ask": None, "ask_qty": None, "bids": [], "asks": [], "snapshot": False, "ticker": None, "bar": None,
            "status": "live"}


def _apply(state: _BookState, bids: list, asks: list, keep: bool) -> None:
    if not keep:
        return
    for side, levels in ((state.bids, bids), (state.asks, asks)):
        for price, qty in levels:
            if Decimal(qty) == 0:
                side.pop(price, None)
            else:
                side[price] = qty


def _top(f: dict, state: _BookState) -> None:
    if state.bids:
        price = max(state.bids, key=Decimal)
        f["bid"], f["bid_qty"] = price, state.bids[price]
    if state.asks:
        price = min(state.asks, key=Decimal)
        f["ask"], f["ask_qty"] = price, state.asks[price]


def _reply(msg: dict) -> Reply:
    """Acks, refusals and pongs, in the shapes Bybit's categories use (linear/spot: op and success; option and
    spread: `{"op":"pong","args":[..]}` and `{"type":"COMMAND_RESP",..}`; 2019's: a `request` object)."""
    request = msg.get("request")
    op = msg.get("op") or (request.get("op") if type(request) is dict else None)
    if op is None and msg.get("type") == "COMMAND_RESP":
        op = "subscribe"
    if type(op) is not str or "success" not in msg and op not in ("pong", "ping") and msg.get("ret_msg") != "pong":
        raise ValueError(f"unknown message with keys {sorted(msg)[:8]}")
    return Reply(op, bool(msg.get("success", True)), str(msg.get("ret_msg", "")), msg.get("req_id"))


def _loads(raw: bytes | str) -> dict:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError(f"not JSON: {_clip(raw)}") from None
    if type(msg) is not dict:
        raise ValueError(f"not a JSON object: {_clip(raw)}")
    return msg


def _int(x: Any) -> int:
    if type(x) is int:
        return x
    if type(x) is str and x.isdigit():
        return int(x)
    raise ValueError(f"{x!r} is not a whole number")


def _bool(x: Any) -> bool:
    if type(x) is not bool:
        raise ValueError(f"{x!r} is not true or false")
    return x


def _side(s: Any) -> str:
    if s == "Buy":
        return "buy"
    if s == "Sell":
        return "sell"
    raise ValueError(f"side {s!r}")


def _clip(raw: bytes | str, n: int = 120) -> str:
    text = raw if isinstance(raw, str) else raw[:n].decode(errors="replace")
    return text[:n] + ("..." if len(raw) > n else "")
