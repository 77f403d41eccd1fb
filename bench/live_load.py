"""Issue 20 (4): a live-like Bybit v5 public load for a whole universe, as the raw WebSocket messages.

The rates come from recorded Bybit frames (`tests/data/bybit/ws/bybit_derivatives_v5_messages.jsonl`, Tardis.dev's
recording of linear and inverse streams): `measure` reads, per topic, the gaps between consecutive pushes of one
topic, the levels per book delta and the trades per `publicTrade` message, and the trade rate of the busiest
USDT perpetual (its ticker's 24 h turnover over the recorded trades' mean notional). The recording is small (a
few pushes per topic), so the rates are rough; `Recorded.lines` prints them with how many samples each rests on.

`messages` generates, for a universe of instruments, seeded and in event-time order:
- `tickers` for every symbol: a snapshot, then deltas on Bybit's 100 ms push grid, each slot pushed with the
  probability that gives the recorded mean gap (quiet and busy symbols alike: a ticker carries mark and index);
- `orderbook.1` and `publicTrade` for every symbol, `orderbook.<depth>` for the `deep` symbols (those a session
  trades) only: bursts of messages at Bybit's push interval of the topic, the bursts' starts a Poisson process,
  so that the hottest symbol gets the recorded rate and the symbol of activity rank r gets that over r^zipf;
- a random walk of each symbol's top of book on its tick grid: an `orderbook.1` delta moves it one tick (four
  levels: the old top removed, the new one set, on both sides) or changes one size (one level), in the
  proportion that gives the recorded levels per delta; trades print at the top; the depth book's 50 levels
  follow the top.
`frames` passes them through the live feed's `BybitNormalizer` (as the live source does), refusing any message
it refuses or a gap it reports.

Pure: no I/O but `load_recorded`, no clock; everything random comes from `random.Random(seed)`.
"""
from __future__ import annotations

import heapq
import math
import random
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from statistics import fmean
from typing import Protocol

import orjson

from streams.bybit.v5 import BybitNormalizer
from streams.frames.wire import WireFrame
from streams.sources.replay import read_lines

RECORDED = Path(__file__).resolve().parents[1] / "tests/data/bybit/ws/bybit_derivatives_v5_messages.jsonl"
SAME_RECORDING_MS = 5_000  # pushes of one topic closer than this are consecutive pushes of one recording
TICKER_GRID_MS = 100  # Bybit's push interval of derivatives tickers (v5 docs, "Ticker": 100ms)
PUSH_MS = {"ob1": 10, "depth": 20, "trade": 5}  # orderbook.1 10 ms, orderbook.50 20 ms (v5 docs); trades: real time
BURST = 3.0  # messages per burst (mean): an assumption, the recording holds no run of one topic long enough to tell
DEPTH_LEVELS = 50
RECV_LATENCY_NS = 3_000_000  # receive time = event time + this


class InstrumentLike(Protocol):
    @property
    def symbol(self) -> str: ...
    @property
    def tick_size(self) -> Decimal: ...
    @property
    def lot_step(self) -> Decimal: ...


@dataclass(frozen=True)
class Recorded:
    """What a recording of Bybit v5 public messages says about the message mix."""

    ticker_gaps_ms: tuple[int, ...]  # between consecutive pushes of one tickers topic
    ob1_gaps_ms: tuple[int, ...]  # ... of one orderbook.1 topic
    depth_gaps_ms: tuple[int, ...]  # ... of one orderbook.N topic, N > 1
    ob1_levels: tuple[int, ...]  # levels (both sides) per orderbook.1 delta
    depth_levels: tuple[int, ...]  # levels per orderbook.N delta
    trades_per_message: tuple[int, ...]
    trade_notional: tuple[float, ...]  # USD per trade (inverse contracts' size is USD)
    hot_symbol: str  # the USDT perpetual with the largest 24 h turnover among the ticker snapshots
    hot_turnover_24h: float  # its turnover, USDT

    def _rate(self, gaps: tuple[int, ...]) -> float:
        return 1000 / fmean(gaps)

    @property
    def ticker_rate(self) -> float:
        """Ticker pushes per second per symbol."""
        return self._rate(self.ticker_gaps_ms)

    @property
    def ob1_rate(self) -> float:
        """orderbook.1 pushes per second of the hottest symbol."""
        return self._rate(self.ob1_gaps_ms)

    @property
    def depth_rate(self) -> float:
        return self._rate(self.depth_gaps_ms)

    @property
    def trade_rate(self) -> float:
        """publicTrade messages per second of the hottest symbol: its turnover / the mean trade / trades per message."""
        return self.hot_turnover_24h / 86_400 / fmean(self.trade_notional) / fmean(self.trades_per_message)

    def lines(self) -> list[str]:
        def n(xs: tuple) -> str:
            return f"n={len(xs)}"
        return [
            f"tickers: a push every {fmean(self.ticker_gaps_ms):.0f} ms per symbol = {self.ticker_rate:.2f}/s "
            f"(gaps {list(self.ticker_gaps_ms)})",
            f"orderbook.1 of the hottest symbol: {self.ob1_rate:.2f}/s (gaps {list(self.ob1_gaps_ms)} ms); "
            f"{fmean(self.ob1_levels):.1f} levels per delta ({n(self.ob1_levels)})",
            f"orderbook.N, N > 1: {self.depth_rate:.2f}/s (gaps {list(self.depth_gaps_ms)} ms); "
            f"{fmean(self.depth_levels):.1f} levels per delta ({n(self.depth_levels)})",
            f"publicTrade of the hottest symbol ({self.hot_symbol}, turnover {self.hot_turnover_24h:,.0f} USDT/24 h): "
            f"{self.trade_rate:.2f} messages/s of {fmean(self.trades_per_message):.1f} trades "
            f"({n(self.trades_per_message)}), {fmean(self.trade_notional):,.0f} USD per trade "
            f"({n(self.trade_notional)})",
        ]


def measure(lines: Iterable[bytes | str]) -> Recorded:
    """The message mix of recorded Bybit v5 public messages (one JSON message per line)."""
    pushes: dict[str, list[int]] = defaultdict(list)
    ob1_levels: list[int] = []
    depth_levels: list[int] = []
    per_message: list[int] = []
    notional: list[float] = []
    hot, hot_turnover = "", 0.0
    for raw in lines:
        line = (raw if isinstance(raw, bytes) else raw.encode()).strip()
        if not line or line.startswith(b"#"):  # a papertape tape's header
            continue
        msg = orjson.loads(line[line.index(b"{"):])  # past a receive time
        topic, data = msg.get("topic", ""), msg.get("data")
        kind, _, rest = topic.partition(".")
        if kind in ("tickers", "orderbook"):
            pushes[topic].append(int(msg["ts"]))
        if kind == "orderbook" and msg["type"] == "delta":
            (ob1_levels if rest.startswith("1.") else depth_levels).append(len(data["b"]) + len(data["a"]))
        elif kind == "publicTrade":
            trades = [t for t in data if not t.get("BT")]
            per_message.append(len(trades))
            notional += [float(t["v"]) if t["s"].endswith("USD") else float(t["v"]) * float(t["p"]) for t in trades]
        elif kind == "tickers" and msg["type"] == "snapshot" and rest.endswith("USDT"):
            turnover = float(data["turnover24h"])
            if turnover > hot_turnover:
                hot, hot_turnover = rest, turnover
    tickers: list[int] = []
    books: dict[str, list[tuple[int, ...]]] = defaultdict(list)  # each book topic's gaps, per kind
    for topic, times in pushes.items():
        times.sort()
        gaps = tuple(b - a for a, b in zip(times, times[1:]) if b - a < SAME_RECORDING_MS)
        if topic.startswith("tickers."):
            tickers += gaps
        elif gaps:
            books["ob1" if topic.startswith("orderbook.1.") else "depth"].append(gaps)
    if not (tickers and books["ob1"] and books["depth"] and per_message and hot):
        raise ValueError("the recording needs two pushes of one tickers, orderbook.1 and orderbook.N topic each, a "
                         "publicTrade message and a USDT perpetual's ticker snapshot")
    # the books of the hottest symbol: the topic with the most pushes, the shortest gaps between equals
    ob1, depth = (min(books[k], key=lambda g: (-len(g), fmean(g))) for k in ("ob1", "depth"))
    return Recorded(tuple(tickers), ob1, depth, tuple(ob1_levels),
                    tuple(depth_levels), tuple(per_message), tuple(notional), hot, hot_turnover)


def load_recorded(path: Path = RECORDED) -> Recorded:
    """`measure` of a file of raw Bybit v5 messages: one per line, or a papertape Bybit tape (gzip)."""
    return measure(read_lines(path))


def activity(ranks: int, zipf: float) -> list[float]:
    """Activity of the symbols of rank 1..ranks relative to the hottest."""
    return [r ** -zipf for r in range(1, ranks + 1)]


@dataclass
class _Grid:
    """Decimal strings of a symbol's prices (in ticks) and sizes (in lots), without Decimal arithmetic."""

    tick_units: int
    tick_places: int
    lot_units: int
    lot_places: int

    @classmethod
    def of(cls, tick: Decimal, lot: Decimal) -> _Grid:
        """The places as written (a tick of 0.10 prints 28550.70, as Bybit does)."""
        places = [max(0, -int(d.as_tuple().exponent)) for d in (tick, lot)]
        return cls(int(tick.scaleb(places[0])), places[0], int(lot.scaleb(places[1])), places[1])

    @staticmethod
    def _fmt(units: int, places: int) -> str:
        if not places:
            return str(units)
        s = str(units).rjust(places + 1, "0")
        return f"{s[:-places]}.{s[-places:]}"

    def price(self, ticks: int) -> str:
        return self._fmt(ticks * self.tick_units, self.tick_places)

    def qty(self, lots: int) -> str:
        return self._fmt(lots * self.lot_units, self.lot_places) if lots else "0"


@dataclass
class _Symbol:
    name: str
    grid: _Grid
    activity: float
    deep: bool
    bid: int  # top of book, in ticks; the ask is one tick above
    depth_bid: int = 0  # the top the depth book was last sent at
    ob1_u: int = 0
    depth_u: int = 0
    cs: int = 0
    last: int = 0  # last trade, ticks
    open_interest: int = 0  # lots
    burst: dict[str, int] = field(default_factory=dict)  # messages left in the current burst of each topic


class LiveLoad:
    """Generates the messages; `counts` tells how many of each topic it made."""

    def __init__(self, instruments: Sequence[InstrumentLike], deep: Iterable[str], rec: Recorded, seed: int = 0,
                 zipf: float = 1.0, burst: float = BURST, start_ms: int = 1_767_225_600_000) -> None:
        self.rec, self.burst, self.start_ms = rec, burst, start_ms
        self.rng = random.Random(seed)
        deep_set = set(deep)
        ranks = list(range(len(instruments)))
        self.rng.shuffle(ranks)  # hot symbols anywhere in the universe
        act = activity(len(instruments), zipf)
        self.symbols = []
        for i, ins in enumerate(instruments):
            bid = int(math.exp(self.rng.uniform(math.log(1_000), math.log(300_000))))  # log-uniform prices
            self.symbols.append(_Symbol(ins.symbol, _Grid.of(ins.tick_size, ins.lot_step), act[ranks[i]],
                                        ins.symbol in deep_set, bid, depth_bid=bid, last=bid,
                                        open_interest=self.rng.randrange(10_000, 10_000_000)))
        self.rates = {"ob1": rec.ob1_rate, "depth": rec.depth_rate, "trade": rec.trade_rate}
        self.p_ticker = min(1.0, TICKER_GRID_MS / fmean(rec.ticker_gaps_ms))
        self.p_move = min(1.0, max(0.0, (fmean(rec.ob1_levels) - 1) / 3))  # 4 levels when it moves, else 1
        self.depth_changes = max(1, round(2 * fmean(rec.depth_levels) - 1))  # 1..this many sizes changed: that mean
        self.trades_mean = fmean(rec.trades_per_message)
        self.counts: dict[str, int] = defaultdict(int)  # messages made per topic ("snapshots": the first ones)

    def by_symbol(self) -> dict[str, float]:
        """Each symbol's activity relative to the hottest."""
        return {s.name: s.activity for s in self.symbols}

    def expected_rates(self) -> dict[str, float]:
        """Messages per second of each topic over the universe, after the snapshots (the keys of `counts`)."""
        total = sum(s.activity for s in self.symbols)
        deep = sum(s.activity for s in self.symbols if s.deep)
        return {"tickers": self.rec.ticker_rate * len(self.symbols), "orderbook.1": self.rec.ob1_rate * total,
                "publicTrade": self.rec.trade_rate * total, f"orderbook.{DEPTH_LEVELS}": self.rec.depth_rate * deep}

    # --- schedule -------------------------------------------------------------------------------------------
    def _geometric(self, mean: float) -> int:
        """1, 2, ... with this mean (>= 1)."""
        if mean <= 1:
            return 1
        return 1 + int(math.log(1 - self.rng.random()) / math.log(1 - 1 / mean))

    def _next(self, s: _Symbol, kind: str, now: int) -> int:
        """When the symbol's next `kind` message goes: the next of its burst, or the start of the next burst, such
        that the mean rate is the topic's rate times the symbol's activity."""
        gap = PUSH_MS[kind]
        left = s.burst.get(kind, 0)
        if left > 0:
            s.burst[kind] = left - 1
            return now + gap
        rate = self.rates[kind] * s.activity
        s.burst[kind] = self._geometric(self.burst) - 1
        # a cycle is (burst - 1) pushes `gap` apart, then the wait: mean cycle burst/rate
        wait_ms = max(float(gap), 1000 * self.burst / rate - (self.burst - 1) * gap)
        return now + max(1, round(self.rng.expovariate(1 / wait_ms)))

    def messages(self, seconds: float) -> Iterator[tuple[int, bytes]]:
        """(event time ms, raw message) for `seconds` of event time, in event-time order."""
        end = self.start_ms + int(seconds * 1000)
        heap: list[tuple[int, int, str]] = []
        snapshots = []
        for i, s in enumerate(self.symbols):
            t0 = self.start_ms + self.rng.randrange(TICKER_GRID_MS)  # each symbol's phase on the push grid
            snapshots += [(t0, self._ticker(s, t0, snapshot=True)), *self._snapshots(s, t0)]
            heap.append((t0 + TICKER_GRID_MS * self._geometric(1 / self.p_ticker), i, "ticker"))
            for kind in ("ob1", "trade") + (("depth",) if s.deep else ()):
                heap.append((self._next(s, kind, t0), i, kind))
        snapshots.sort(key=lambda m: m[0])  # stable: a symbol's ticker, then its books
        yield from snapshots
        heapq.heapify(heap)
        # the snapshots are within the first 100 ms; deltas start after them
        while heap:
            ts, i, kind = heap[0]
            ts = max(ts, self.start_ms + TICKER_GRID_MS)
            if ts >= end:
                return
            s = self.symbols[i]
            if kind == "ticker":
                yield ts, self._ticker(s, ts, snapshot=False)
                nxt = ts + TICKER_GRID_MS * self._geometric(1 / self.p_ticker)
            else:
                yield ts, getattr(self, f"_{kind}")(s, ts)
                nxt = self._next(s, kind, ts)
            heapq.heapreplace(heap, (nxt, i, kind))

    # --- messages ---------------------------------------------------------------------------------------------
    def _dump(self, topic: str, msg: dict) -> bytes:
        prefix = topic.rsplit(".", 1)[0]
        self.counts[prefix if msg["type"] == "delta" or prefix == "publicTrade" else "snapshots"] += 1
        return orjson.dumps(msg)

    def _size(self) -> int:
        return self._geometric(40)

    def _snapshots(self, s: _Symbol, ts: int) -> Iterator[tuple[int, bytes]]:
        g = s.grid
        s.ob1_u += 1
        s.cs += 1
        data = {"s": s.name, "b": [[g.price(s.bid), g.qty(self._size())]],
                "a": [[g.price(s.bid + 1), g.qty(self._size())]], "u": s.ob1_u, "seq": s.cs}
        topic = f"orderbook.1.{s.name}"
        yield ts, self._dump(topic, {"topic": topic, "type": "snapshot", "ts": ts, "data": data})
        if s.deep:
            s.depth_u += 1
            data = {"s": s.name, "b": [[g.price(s.bid - j), g.qty(self._size())] for j in range(DEPTH_LEVELS)
                          if s.bid - j > 0],
                    "a": [[g.price(s.bid + 1 + j), g.qty(self._size())] for j in range(DEPTH_LEVELS)],
                    "u": s.depth_u, "seq": s.cs}
            topic = f"orderbook.{DEPTH_LEVELS}.{s.name}"
            yield ts, self._dump(topic, {"topic": topic, "type": "snapshot", "ts": ts, "data": data})

    def _ticker(self, s: _Symbol, ts: int, snapshot: bool) -> bytes:
        g, rng = s.grid, self.rng
        s.cs += rng.randrange(1, 50)
        s.open_interest += rng.randrange(-20, 21)
        mark = s.bid + rng.randrange(2)
        data = {"symbol": s.name, "lastPrice": g.price(s.last), "markPrice": g.price(mark),
                "indexPrice": g.price(mark + rng.randrange(-1, 2)), "openInterest": g.qty(max(1, s.open_interest)),
                "bid1Price": g.price(s.bid), "bid1Size": g.qty(self._size()), "ask1Price": g.price(s.bid + 1),
                "ask1Size": g.qty(self._size())}
        if snapshot:
            data |= {"tickDirection": "ZeroMinusTick", "price24hPcnt": "0.023333", "prevPrice24h": g.price(s.bid),
                     "highPrice24h": g.price(s.bid + 500), "lowPrice24h": g.price(max(1, s.bid - 500)),
                     "turnover24h": "4273027716.4294", "volume24h": "151185.5160",
                     "nextFundingTime": str((ts // 28_800_000 + 1) * 28_800_000), "fundingRate": "0.0001"}
        topic = f"tickers.{s.name}"
        kind = "snapshot" if snapshot else "delta"
        return self._dump(topic, {"topic": topic, "type": kind, "data": data, "cs": s.cs, "ts": ts})

    def _ob1(self, s: _Symbol, ts: int) -> bytes:
        g, rng = s.grid, self.rng
        if rng.random() < self.p_move:
            old = s.bid
            s.bid = max(1, s.bid + rng.choice((-1, 1)))
            bids = [[g.price(old), "0"], [g.price(s.bid), g.qty(self._size())]]
            asks = [[g.price(old + 1), "0"], [g.price(s.bid + 1), g.qty(self._size())]]
            if old == s.bid:  # at the floor: no move, one size
                bids, asks = bids[1:], []
        elif rng.random() < 0.5:
            bids, asks = [[g.price(s.bid), g.qty(self._size())]], []
        else:
            bids, asks = [], [[g.price(s.bid + 1), g.qty(self._size())]]
        s.ob1_u += 1
        s.cs += rng.randrange(1, 50)
        topic = f"orderbook.1.{s.name}"
        return self._dump(topic, {"topic": topic, "type": "delta", "ts": ts,
                                           "data": {"s": s.name, "b": bids, "a": asks, "u": s.ob1_u, "seq": s.cs}})

    def _depth(self, s: _Symbol, ts: int) -> bytes:
        """A delta of the 50-level book: the levels that left or entered it since the top moved, then a few sizes."""
        g, rng = s.grid, self.rng
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        old, new = s.depth_bid, s.bid
        if abs(new - old) >= DEPTH_LEVELS:
            old = new  # (a walk of 50 ticks between two depth pushes does not happen at these rates)
        lo, hi = min(old, new), max(old, new)
        for t in range(lo + 1, hi + 1):  # bids: (old, new] enter when rising, leave when falling; asks likewise
            bids[t] = self._size() if new > old else 0
            bids[t - DEPTH_LEVELS] = 0 if new > old else self._size()
        for t in range(lo + 1, hi + 1):
            asks[t] = 0 if new > old else self._size()
            asks[t + DEPTH_LEVELS] = self._size() if new > old else 0
        s.depth_bid = new
        for _ in range(rng.randint(1, self.depth_changes)):
            j = rng.randrange(DEPTH_LEVELS)
            if rng.random() < 0.5:
                bids[new - j] = self._size()
            else:
                asks[new + 1 + j] = self._size()
        s.depth_u += 1
        s.cs += rng.randrange(1, 50)
        topic = f"orderbook.{DEPTH_LEVELS}.{s.name}"
        data = {"s": s.name, "b": [[g.price(t), g.qty(q)] for t, q in bids.items() if t > 0],
                "a": [[g.price(t), g.qty(q)] for t, q in asks.items()], "u": s.depth_u, "seq": s.cs}
        return self._dump(topic, {"topic": topic, "type": "delta", "ts": ts, "data": data})

    def _trade(self, s: _Symbol, ts: int) -> bytes:
        g, rng = s.grid, self.rng
        buy = rng.random() < 0.5
        s.last = s.bid + 1 if buy else s.bid
        price = g.price(s.last)
        trades = [{"T": ts - 2, "s": s.name, "S": "Buy" if buy else "Sell", "v": g.qty(self._size()), "p": price,
                   "L": "ZeroPlusTick" if buy else "ZeroMinusTick", "i": str(uuid.UUID(int=rng.getrandbits(128))),
                   "BT": False} for _ in range(self._geometric(self.trades_mean))]
        topic = f"publicTrade.{s.name}"
        return self._dump(topic, {"topic": topic, "type": "snapshot", "ts": ts, "data": trades})


def frames(messages: Iterable[tuple[int, bytes]], normalizer: BybitNormalizer | None = None) -> Iterator[WireFrame]:
    """The messages' frames through the live feed's normalizer; a refused message or a book gap raises."""
    norm = normalizer or BybitNormalizer()
    for ts, raw in messages:
        out, note = norm.on_message(raw, ts * 1_000_000 + RECV_LATENCY_NS)
        if note is not None:
            raise ValueError(f"the normalizer answered {note} to {raw[:200]!r}")
        yield from out
