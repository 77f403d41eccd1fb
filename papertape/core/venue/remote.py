"""An exchange as a session's venue (Bybit's demo, testnet or mainnet): the session's orders leave as requests and
come back as the exchange reports them; papertape books the exchange's executions in its own ledger.

The venue's interface is the paper venue's (the session's strategy, risk and sizing are unchanged): `submit`,
`cancel` and `amend` queue a request for its arrival time (decision time + the session's latency), when `on_time`
turns it into an `Outbound` outcome, the session's message on `venue.requests`. `apply` takes a report of
`venue.reports`: order updates become status changes, executions fills (each execution id booked once, whatever
re-sends it). Every order is also simulated by a paper venue on the same market data, the `shadow`, whose outcomes
come out wrapped in `Shadow`: the measure of how far paper results can be trusted.
"""
from __future__ import annotations

import hashlib
import heapq
from collections import OrderedDict
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Callable

from papertape.core.market.book import Book
from papertape.core.venue.paper import FINAL, Execution, Outcome, PaperVenue, Refusal, Request, StatusChange, VenueOrder
from schemas.market import Tick
from schemas.trading import Order
from schemas.venue import ExchangeExecution, ExchangeOrder, VenueReport
from schemas.vocabulary import OrderStatus, VenueAction

LINK_ID_MAX = 36  # Bybit's orderLinkId: at most 36 characters of letters, digits, - and _
RECENT_ORDERS = 2_000  # closed orders kept for executions reported after the order's last update
SEEN_EXECUTIONS = 200_000  # execution ids kept to book each once


def link_id(order_id: str) -> str:
    """Bybit's orderLinkId for a papertape order id: the id itself when it fits, else a digest of it, the same each
    time (a retried request names the same order)."""
    if len(order_id) <= LINK_ID_MAX and all(c.isalnum() or c in "-_" for c in order_id):
        return order_id
    return "pt-" + hashlib.sha256(order_id.encode()).hexdigest()[:LINK_ID_MAX - 3]


def exchange_problem(order: VenueOrder | Order) -> str:
    """Why Bybit cannot take `order` as it is, or ''. Its trailing stop exists only on a position, and its orders
    have no expiry time or OCO group: such an order is refused before it is sent."""
    if order.type == "trailing_stop":
        return "Bybit has no trailing-stop order (only a trailing stop on a position)"
    if order.expire_ts is not None or order.oco is not None:
        return "Bybit orders take no expiry time or OCO group"
    return ""


@dataclass(frozen=True)
class Outbound:
    """A request for the exchange, due now: the session publishes it on `venue.requests`."""

    action: VenueAction
    order_id: str
    ts: int
    seq: int
    order: VenueOrder | None = None  # new: the order; cancel, amend: the order when papertape knows it
    changes: dict[str, str | None] | None = None  # an amend's new values
    since: int | None = None  # snapshot: executions from this time


@dataclass(frozen=True)
class Shadow:
    """An outcome of the paper venue's simulation of an exchange session's order."""

    outcome: Outcome


@dataclass(frozen=True)
class FundingSettled:
    """A funding settlement the exchange booked on a position (amount added to the wallet: negative when paid)."""

    symbol: str
    ts: int
    rate: Decimal
    mark: Decimal
    qty: Decimal
    amount: Decimal


RemoteOutcome = Outcome | Outbound | Shadow | FundingSettled


class RemoteVenue:
    def __init__(self, session: str, shadow: PaperVenue, book_fill: Callable[[Execution], None],
                 check_every_ms: int) -> None:
        self.session = session
        self.shadow = shadow
        self.book_fill = book_fill
        self.check_every_ms = check_every_ms
        self.pending: list[Request] = []  # a heap, as the paper venue's
        self.orders: dict[str, VenueOrder] = {}  # sent (status pending until the exchange says) and open
        self.done: OrderedDict[str, VenueOrder] = OrderedDict()  # recently closed
        self.links: dict[str, str] = {}  # Bybit's orderLinkId -> papertape's order id, where they differ
        self.seen: OrderedDict[str, None] = OrderedDict()  # execution ids booked
        self.started_at: int | None = None  # the first check: executions from then on are the session's
        self.next_check: int | None = None
        self.wallet_base: tuple[Decimal, Decimal] | None = None  # (the exchange's wallet, papertape's cash) then
        self.executions_since_base = 0

    # --- requests ------------------------------------------------------------------------------------------
    def submit(self, order: VenueOrder) -> None:
        self.orders[order.id] = order
        link = link_id(order.id)
        if link != order.id:
            self.links[link] = order.id
        heapq.heappush(self.pending, (order.arrival, order.seq, "new", order.id, None))
        self.shadow.submit(replace(order))

    def cancel(self, order_id: str, arrival: int, seq: int) -> None:
        heapq.heappush(self.pending, (arrival, seq, "cancel", order_id, None))
        self.shadow.cancel(order_id, arrival, seq)

    def amend(self, order_id: str, changes: dict[str, str | None], arrival: int, seq: int) -> None:
        heapq.heappush(self.pending, (arrival, seq, "amend", order_id, changes))
        self.shadow.amend(order_id, changes, arrival, seq)

    def check(self, now: int, check_id: str = "") -> list[RemoteOutcome]:
        """A reconciliation snapshot asked of the exchange now (named `check_id`, else by its time); the next
        periodic one `check_every_ms` later."""
        if self.started_at is None:
            self.started_at = now
        self.next_check = now + self.check_every_ms
        return [Outbound("snapshot", check_id, now, 0, since=self.started_at)]

    def open_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        return [o for o in self.orders.values() if symbol is None or o.symbol == symbol]

    def working(self) -> bool:
        """Whether a tick may concern this venue: an order open here or in the shadow."""
        return bool(self.orders or self.shadow.orders)

    def next_due(self) -> int | None:
        due = [t for t in (self.pending[0][0] if self.pending else None, self.shadow.next_due(), self.next_check)
               if t is not None]
        return min(due) if due else None

    def on_time(self, now: int, books: dict[str, Book]) -> list[RemoteOutcome]:
        """Requests due up to `now` leave for the exchange (an order the exchange cannot take is rejected here); the
        shadow's arrivals and expiries; the periodic check."""
        out: list[RemoteOutcome] = []
        while self.pending and self.pending[0][0] <= now:
            arrival, seq, action, oid, changes = heapq.heappop(self.pending)
            order = self.orders.get(oid)
            if action == "new" and order is not None and (problem := exchange_problem(order)):
                out += self.close(order, arrival, "rejected", f"{problem}: refused before it was sent")
            elif action == "new" or order is not None:
                out.append(Outbound(action, oid, arrival, seq, order, changes))
            else:
                out.append(Refusal(oid, arrival, f"{action}: order {oid} is not open"))
        out += [Shadow(x) for x in self.shadow.on_time(now, books)]
        if self.next_check is not None and self.next_check <= now:
            out += self.check(now)
        return out

    def on_tick(self, tick: Tick, book: Book) -> list[RemoteOutcome]:
        """The exchange matches its orders itself: only the shadow works on the tick."""
        return [Shadow(x) for x in self.shadow.on_tick(tick, book)]

    def cancel_now(self, order: VenueOrder, ts: int, reason: str) -> list[RemoteOutcome]:
        """The exchange cancels a closed position's reduce-only orders itself, and reports it."""
        return []

    # --- what the exchange reports -----------------------------------------------------------------------------
    def order_of(self, link: str) -> VenueOrder | None:
        oid = self.links.get(link, link)
        return self.orders.get(oid) or self.done.get(oid)

    def apply(self, report: VenueReport, now: int) -> list[RemoteOutcome]:
        """A report's order updates and executions, each new execution booked once."""
        out: list[RemoteOutcome] = []
        if report.refused:
            out.append(Refusal(self.links.get(report.request, report.request), now, report.refused))
        for x in report.orders:
            out += self.update(x)
        return out + self.book(report.executions)

    def update(self, x: ExchangeOrder) -> list[RemoteOutcome]:
        """An order's state as the exchange reports it: a status change when it differs from what papertape had."""
        order = self.order_of(x.order_id)
        if order is None:
            return []  # not this session's: reconciliation reports it
        status: OrderStatus = x.status
        price = x.price if order.is_limit else None  # Bybit shows a market order's slippage guard as its price
        changed = (x.qty, price, x.trigger_price) != (order.qty, order.price, order.trigger_price)
        if status == order.status and not changed and x.filled_qty == order.filled:
            return []
        if status == "new" and order.status not in ("pending", "triggered") and changed:
            status = "amended"
        order.qty, order.price, order.trigger_price = x.qty, price, x.trigger_price
        if status in FINAL:
            return self.close(order, x.ts, status, x.reason, x)
        order.status = "new" if status == "amended" else status
        return [self._event(order, x.ts, status, x.reason, x)]

    def book(self, executions: list[ExchangeExecution]) -> list[RemoteOutcome]:
        out: list[RemoteOutcome] = []
        for e in executions:
            if e.exec_id in self.seen:
                continue
            self.seen[e.exec_id] = None
            if len(self.seen) > SEEN_EXECUTIONS:
                self.seen.popitem(last=False)
            self.executions_since_base += 1
            if e.exec_type == "funding":  # Bybit: the fee is what the position paid (negative: received)
                out.append(FundingSettled(e.symbol, e.ts, e.fee_rate, e.price, e.qty if e.side == "buy" else -e.qty,
                                          -e.fee))
                continue
            order = self.order_of(e.order_id) if e.order_id else None
            if order is None:  # an order papertape did not place: the account's truth all the same
                order = VenueOrder(f"{self.session}-exchange-{e.venue_order_id or e.exec_id}", self.session, e.symbol,
                                   e.side, "market", e.qty, None, "IOC", False, e.ts, 0, status="filled")
            order.filled += e.qty
            order.cost += e.price * e.qty
            ex = Execution(order, e.ts, e.price, e.qty, e.liquidity, e.fee_rate, e.fee,
                           "trade" if e.exec_type == "trade" else "liquidation")
            self.book_fill(ex)
            out.append(ex)
        return out

    def close(self, order: VenueOrder, ts: int, status: OrderStatus, reason: str,
               x: ExchangeOrder | None = None) -> list[RemoteOutcome]:
        if order.status in FINAL:
            return []
        self.orders.pop(order.id, None)
        order.status = status
        self.done[order.id] = order
        if len(self.done) > RECENT_ORDERS:
            self.done.popitem(last=False)
        return [self._event(order, ts, status, reason, x)]

    @staticmethod
    def _event(order: VenueOrder, ts: int, status: OrderStatus, reason: str,
               x: ExchangeOrder | None) -> StatusChange:
        """The exchange's figures when it sent them (its fills may be reported after its order update)."""
        order.events += 1
        filled, avg = (order.filled, order.avg_price) if x is None else (x.filled_qty, x.avg_price)
        return StatusChange(order, ts, status, reason, order.events, order.qty, order.price, order.trigger_price,
                            filled, avg)

    # --- checkpoint ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        base = None if self.wallet_base is None else [str(x) for x in self.wallet_base]
        return {"orders": [o.to_dict() for o in self.orders.values()], "pending": self.pending,
                "done": [o.to_dict() for o in self.done.values()], "links": self.links, "seen": list(self.seen),
                "started_at": self.started_at, "next_check": self.next_check, "wallet_base": base,
                "executions_since_base": self.executions_since_base, "shadow": self.shadow.to_dict()}

    def load(self, d: dict[str, Any]) -> None:
        self.orders = {o["id"]: VenueOrder.from_dict(o) for o in d["orders"]}
        self.pending = [tuple(p) for p in d["pending"]]
        heapq.heapify(self.pending)
        self.done = OrderedDict((o["id"], VenueOrder.from_dict(o)) for o in d["done"])
        self.links = dict(d["links"])
        self.seen = OrderedDict.fromkeys(d["seen"])
        self.started_at, self.next_check = d["started_at"], d["next_check"]
        base = d["wallet_base"]
        self.wallet_base = None if base is None else (Decimal(base[0]), Decimal(base[1]))
        self.executions_since_base = d["executions_since_base"]
        self.shadow.load(d["shadow"])



Venue = PaperVenue | RemoteVenue  # a session's venue
