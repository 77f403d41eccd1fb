"""The paper matching engine of one session: orders against the real market, in event time.

Rules (issue 2 level): an order becomes live at its arrival time (decision time + latency). A market order
takes the top of book as it stood at arrival. A limit order that crosses the book at arrival takes it too;
otherwise it rests and fills at its own price (maker) only when a later trade prints through it.
"""
from __future__ import annotations

import heapq
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Callable

from .book import Book
from .fees import FeeSchedule


@dataclass
class VenueOrder:
    id: str
    session: str
    symbol: str
    side: str  # buy | sell
    type: str  # market | limit
    qty: Decimal
    price: Decimal | None
    tif: str
    reduce_only: bool
    arrival: int  # event time the order reaches the venue
    seq: int  # tie-break among orders arriving at the same time
    filled: Decimal = Decimal(0)
    status: str = "pending"

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("qty", "price", "filled"):
            d[k] = None if d[k] is None else str(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VenueOrder":
        d = dict(d)
        for k in ("qty", "price", "filled"):
            d[k] = None if d[k] is None else Decimal(d[k])
        return cls(**d)


@dataclass(frozen=True)
class Execution:
    order: VenueOrder
    ts: int
    price: Decimal
    qty: Decimal
    liquidity: str
    fee_rate: Decimal
    fee: Decimal


@dataclass(frozen=True)
class StatusChange:
    order: VenueOrder
    ts: int
    status: str
    reason: str = ""


Outcome = Execution | StatusChange


class PaperVenue:
    def __init__(self, fees: FeeSchedule, position_qty: Callable[[str], Decimal]) -> None:
        self.fees = fees
        self.position_qty = position_qty
        self.pending: list[tuple[int, int, str]] = []  # heap of (arrival, seq, order id)
        self.orders: dict[str, VenueOrder] = {}  # pending and resting
        self.resting: dict[str, list[str]] = {}  # symbol -> resting order ids in arrival order

    def submit(self, order: VenueOrder) -> None:
        self.orders[order.id] = order
        heapq.heappush(self.pending, (order.arrival, order.seq, order.id))

    def next_arrival(self) -> int | None:
        return self.pending[0][0] if self.pending else None

    def activate_due(self, now: int, books: dict[str, Book]) -> list[Outcome]:
        """Orders whose arrival time is <= now meet the book as it stood before the tick at `now`."""
        out: list[Outcome] = []
        while self.pending and self.pending[0][0] <= now:
            _, _, oid = heapq.heappop(self.pending)
            order = self.orders[oid]
            out.extend(self._activate(order, books.get(order.symbol)))
        return out

    def _activate(self, order: VenueOrder, book: Book | None) -> list[Outcome]:
        ts = order.arrival
        reject = self._reduce_only_violation(order)
        if reject:
            return self._close(order, ts, "rejected", reject)
        touch = None
        if book is not None:
            touch = book.best_ask() if order.side == "buy" else book.best_bid()
        if order.type == "market":
            if touch is None:
                return self._close(order, ts, "rejected", "no quote for the symbol yet")
            return [StatusChange(order, ts, "new"), *self._execute(order, ts, touch, "taker")]
        crosses = touch is not None and (order.price >= touch if order.side == "buy" else order.price <= touch)
        if crosses:
            if order.tif == "PostOnly":
                return self._close(order, ts, "rejected", "post-only order would take liquidity")
            return [StatusChange(order, ts, "new"), *self._execute(order, ts, touch, "taker")]
        if order.tif in ("IOC", "FOK"):
            return [StatusChange(order, ts, "new"), *self._close(order, ts, "cancelled", f"{order.tif}: no liquidity at the limit")]
        order.status = "new"
        self.resting.setdefault(order.symbol, []).append(order.id)
        return [StatusChange(order, ts, "new")]

    def _reduce_only_violation(self, order: VenueOrder) -> str:
        if not order.reduce_only:
            return ""
        pos = self.position_qty(order.symbol)
        reduces = (pos > 0 and order.side == "sell") or (pos < 0 and order.side == "buy")
        if not reduces or order.qty > abs(pos):
            return "reduce-only order would open or flip a position"
        return ""

    def on_trades(self, symbol: str, trades) -> list[Outcome]:
        """Resting limit orders of `symbol` fill when a trade prints through their price."""
        ids = self.resting.get(symbol)
        if not ids or not trades:
            return []
        out: list[Outcome] = []
        prices = [(t.ts, Decimal(t.price)) for t in trades]
        low = min(p for _, p in prices)
        high = max(p for _, p in prices)
        for oid in list(ids):
            order = self.orders[oid]
            through = low < order.price if order.side == "buy" else high > order.price
            if through:
                ts = next(t for t, p in prices if (p < order.price if order.side == "buy" else p > order.price))
                out.extend(self._execute(order, ts, order.price, "maker"))
        return out

    def _execute(self, order: VenueOrder, ts: int, price: Decimal, liquidity: str) -> list[Outcome]:
        qty = order.qty - order.filled
        rate, fee = self.fees.fee(order.symbol, liquidity, price, qty)
        order.filled += qty
        self._forget(order)
        order.status = "filled"
        return [Execution(order, ts, price, qty, liquidity, rate, fee), StatusChange(order, ts, "filled")]

    def _close(self, order: VenueOrder, ts: int, status: str, reason: str) -> list[Outcome]:
        self._forget(order)
        order.status = status
        return [StatusChange(order, ts, status, reason)]

    def _forget(self, order: VenueOrder) -> None:
        self.orders.pop(order.id, None)
        ids = self.resting.get(order.symbol)
        if ids and order.id in ids:
            ids.remove(order.id)

    def to_dict(self) -> dict:
        return {"orders": [o.to_dict() for o in self.orders.values()],
                "pending": [list(p) for p in self.pending], "resting": self.resting}

    def load(self, d: dict) -> None:
        self.orders = {o["id"]: VenueOrder.from_dict(o) for o in d["orders"]}
        self.pending = [tuple(p) for p in d["pending"]]
        heapq.heapify(self.pending)
        self.resting = {s: list(ids) for s, ids in d["resting"].items()}
