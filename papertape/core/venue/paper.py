"""The paper venue of one session: its orders against the real market, in event time.

An order, cancel or amend reaches the venue at its arrival time (decision time + latency) and meets the book as it
stood then. Takers walk the book (fill_model.take); a limit order's rest waits in the queue (fill_model.queue_ahead)
and fills from later trades and quotes. Conditional orders (stops, take-profits, trailing stops) wait for their
trigger price; OCO groups and brackets link orders. Every state change is an outcome the session publishes.

The venue never books money: `book_fill` (the session's account) is called at each execution, so a reduce-only
order or a margin check later in the same instant sees the position as it now is.
"""
from __future__ import annotations

import heapq
from dataclasses import asdict, dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Any, Callable, Literal, cast

from papertape.core.account import PositionState
from papertape.core.instruments import Instrument
from papertape.core.market.book import Book
from papertape.core.venue.dex import DexSettings, gas_cost, swap
from papertape.core.venue.fees import FeeSchedule
from papertape.core.venue.fill_model import BookSide, Liquidity, queue_ahead, take
from papertape.core.venue.fill_settings import FillSettings
from schemas.market import Tick, TickTrade
from schemas.vocabulary import (
    LIMIT_TYPES,
    TRIGGER_TYPES,
    ExecType,
    LiquidityRole,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    TriggerBy,
)

ZERO = Decimal(0)
FINAL: tuple[OrderStatus, ...] = ("filled", "cancelled", "rejected", "expired")
# The types that wait at the venue for a price: the trigger types, and a trailing stop, whose trigger follows the price.
CONDITIONAL_TYPES: tuple[OrderType, ...] = (*TRIGGER_TYPES, "trailing_stop")
VenueOrderStatus = Literal["pending"] | OrderStatus  # pending: on its way to the venue (latency), not there yet
# The fields an order request shares with the venue's order (schemas.Order, strategy.PlaceOrder); `oco` is
# scoped to its session when copied.
REQUEST_FIELDS = ("symbol", "side", "type", "qty", "price", "tif", "reduce_only", "trigger_price", "trigger_by",
                  "trail_amount", "trail_percent", "activation_price", "expire_ts", "stop_loss", "take_profit")
_DECIMALS = ("qty", "price", "filled", "cost", "trigger_price", "trail_amount", "trail_percent", "activation_price",
             "stop_loss", "take_profit", "queue", "peak")


@dataclass
class VenueOrder:
    id: str
    session: str
    symbol: str
    side: Side
    type: OrderType
    qty: Decimal
    price: Decimal | None  # the limit price of LIMIT_TYPES (they always have one), else None
    tif: TimeInForce
    reduce_only: bool
    arrival: int  # event time the order reaches the venue
    seq: int  # tie-break among orders arriving at the same time, and time priority at a price
    trigger_price: Decimal | None = None
    trigger_by: TriggerBy = "last"
    trail_amount: Decimal | None = None
    trail_percent: Decimal | None = None
    activation_price: Decimal | None = None
    expire_ts: int | None = None
    oco: str | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    parent: str | None = None  # the entry of a bracket child
    filled: Decimal = ZERO
    cost: Decimal = ZERO  # sum of price x qty filled: the average price's numerator
    status: VenueOrderStatus = "pending"  # pending, new or partially_filled (open), or a FINAL state
    triggered: bool = False
    queue: Decimal | None = None  # displayed size ahead of a resting order; None: unknown
    peak: Decimal | None = None  # a trailing stop's best price since activation
    events: int = 0  # numbers this order's events, so each has its own id

    @property
    def left(self) -> Decimal:
        return self.qty - self.filled

    @property
    def waiting_trigger(self) -> bool:
        return self.type in CONDITIONAL_TYPES and not self.triggered

    @property
    def is_limit(self) -> bool:
        return self.type in LIMIT_TYPES

    @property
    def avg_price(self) -> Decimal | None:
        return self.cost / self.filled if self.filled else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in _DECIMALS:
            d[k] = None if d[k] is None else str(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VenueOrder":
        d = dict(d)
        for k in _DECIMALS:
            d[k] = None if d[k] is None else Decimal(d[k])
        return cls(**d)


def _priority(order: VenueOrder) -> tuple[Decimal, int]:
    """Price, then time priority, of a resting order of LIMIT_TYPES (which has its limit price)."""
    price = cast(Decimal, order.price)
    return -price if order.side == "buy" else price, order.seq


@dataclass
class Execution:
    order: VenueOrder
    ts: int
    price: Decimal
    qty: Decimal
    liquidity: LiquidityRole
    fee_rate: Decimal
    fee: Decimal
    exec_type: ExecType = "trade"
    realized: Decimal = ZERO  # set by the account when it books the fill
    position: PositionState | None = None  # the account's position in the symbol after this fill (set with realized)


@dataclass(frozen=True)
class StatusChange:
    """An order's state change, with the order's figures as they were at that moment."""

    order: VenueOrder
    ts: int
    status: OrderStatus
    reason: str
    n: int  # the order's event number
    qty: Decimal
    price: Decimal | None
    trigger_price: Decimal | None
    filled: Decimal
    avg_price: Decimal | None


@dataclass(frozen=True)
class Refusal:
    """A cancel or amend the venue could not apply (the order is not open, or the change is not allowed)."""

    order_id: str
    ts: int
    reason: str


Outcome = Execution | StatusChange | Refusal
# A request on its way to the venue, in the heap by arrival: (arrival, seq, action, order id, an amend's changes).
Request = (tuple[int, int, Literal["new", "cancel"], str, None]
           | tuple[int, int, Literal["amend"], str, dict[str, str | None]])


@dataclass
class VenueRules:
    fees: FeeSchedule = field(default_factory=FeeSchedule)
    fill: FillSettings = field(default_factory=FillSettings)
    dex: DexSettings = field(default_factory=DexSettings)


class PaperVenue:
    def __init__(self, rules: VenueRules, instruments: dict[str, Instrument],
                 position_qty: Callable[[str], Decimal], book_fill: Callable[[Execution], None],
                 admit: Callable[[VenueOrder, Decimal], str]) -> None:
        self.rules = rules
        self.instruments = instruments
        self.position_qty = position_qty
        self.book_fill = book_fill
        self.admit = admit  # why the account cannot take this order at this price, or ''
        self.pending: list[Request] = []  # a heap
        self.orders: dict[str, VenueOrder] = {}  # pending and open
        self.liquidity = Liquidity()

    # --- requests ------------------------------------------------------------------------------------------
    def submit(self, order: VenueOrder) -> None:
        self.orders[order.id] = order
        heapq.heappush(self.pending, (order.arrival, order.seq, "new", order.id, None))

    def cancel(self, order_id: str, arrival: int, seq: int) -> None:
        heapq.heappush(self.pending, (arrival, seq, "cancel", order_id, None))

    def amend(self, order_id: str, changes: dict[str, str | None], arrival: int, seq: int) -> None:
        heapq.heappush(self.pending, (arrival, seq, "amend", order_id, changes))

    def open_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        return [o for o in self.orders.values() if symbol is None or o.symbol == symbol]

    def working(self) -> bool:
        """Whether a tick may concern this venue: an order open or on its way."""
        return bool(self.orders)

    def _expiring(self) -> list[tuple[int, VenueOrder]]:
        """(expiry time, order) of the open orders (at the venue, not on their way) that have an expiry time."""
        return [(o.expire_ts, o) for o in self.orders.values() if o.expire_ts is not None and o.status != "pending"]

    def next_due(self) -> int | None:
        """The event time of the next request arrival or order expiry."""
        due = [self.pending[0][0]] if self.pending else []
        due += [expire_ts for expire_ts, _ in self._expiring()]
        return min(due) if due else None

    def on_time(self, now: int, books: dict[str, Book]) -> list[Outcome]:
        """Requests arriving and orders expiring up to `now`, in time order, against the books as they stood."""
        out: list[Outcome] = []
        while True:
            arrival = self.pending[0][0] if self.pending and self.pending[0][0] <= now else None
            expiring = [e for e in self._expiring() if e[0] <= now]
            first = min(expiring, key=lambda e: (e[0], e[1].seq)) if expiring else None
            if first is not None and (arrival is None or first[0] < arrival):
                out += self._close(first[1], first[0], "expired", "good till its expiry time")
                continue
            if arrival is None:
                return out
            request = heapq.heappop(self.pending)
            if request[2] == "new":
                order = self.orders.get(request[3])
                if order is not None:  # None: an OCO partner cancelled it on its way
                    out += self._arrive(order, books.get(order.symbol))
            elif request[2] == "cancel":
                out += self._cancel(request[3], arrival)
            else:
                out += self._amend(request[3], request[4], arrival, books)

    # --- arrival ---------------------------------------------------------------------------------------------
    def _arrive(self, order: VenueOrder, book: Book | None) -> list[Outcome]:
        ts = order.arrival
        if order.expire_ts is not None and order.expire_ts <= ts:
            return self._close(order, ts, "rejected", "expiry time already passed when the order arrived")
        if order.reduce_only and not self._reduces(order):
            return self._close(order, ts, "rejected", "reduce-only order would open or increase a position")
        if book is None or book.mark() is None:
            return self._close(order, ts, "rejected", "no quote for the symbol yet")
        if order.waiting_trigger:
            problem = self.admit(order, order.trigger_price or self._ref_price(order, book))
            if problem:
                return self._close(order, ts, "rejected", problem)
            order.status = "new"
            if order.type == "trailing_stop" and order.activation_price is None:
                order.peak = self._trigger_prices(order, book, None)[-1]
            return [self._event(order, ts, "new")]
        return self._work(order, ts, book, arriving=True)

    def _admission(self, order: VenueOrder, book: Book) -> str:
        """Why the account cannot take `order` at its limit (a market order: at the touch it meets), or ''."""
        limit = order.price if order.is_limit else None
        return self.admit(order, limit or self._ref_price(order, book))

    def _work(self, order: VenueOrder, ts: int, book: Book, arriving: bool, admitted: bool = False) -> list[Outcome]:
        """A live (untriggered or triggered) market or limit order meets the book: it takes what crosses, then
        rests, is cancelled or is rejected by its time in force."""
        problem = "" if admitted else self._admission(order, book)
        if problem:
            return self._close(order, ts, "rejected", problem)
        crosses = self._crosses(order, book)
        if order.tif == "PostOnly" and crosses:
            return self._close(order, ts, "rejected", "post-only order would take liquidity")
        out: list[Outcome] = [self._event(order, ts, "new")] if arriving else []
        if order.tif == "FOK" and not self._fillable_whole(order, book):
            return out + self._close(order, ts, "cancelled", "FOK: not enough liquidity for the whole quantity")
        if not order.is_limit or crosses:
            out += self._take(order, ts, book, order.price if order.is_limit else None)
        if order.status in FINAL:
            return out
        if not order.is_limit:
            reason = "no liquidity within the slippage cap" if self.rules.fill.max_slippage_bps else "no liquidity"
            return out + self._close(order, ts, "cancelled", f"market order: {reason} for the rest")
        if order.tif in ("IOC", "FOK"):
            return out + self._close(order, ts, "cancelled", f"{order.tif}: no more liquidity at the limit")
        order.status = "new" if not order.filled else "partially_filled"
        order.queue = queue_ahead(book, order.side, cast(Decimal, order.price))  # a limit order has its price
        return out

    # --- taking ----------------------------------------------------------------------------------------------
    def _take(self, order: VenueOrder, ts: int, book: Book, limit: Decimal | None) -> list[Outcome]:
        inst = self.instruments[order.symbol]
        qty = self._capped(order)
        if qty is None:
            return self._close(order, ts, "cancelled", "reduce-only: no position left to reduce")
        if qty < order.left:  # a reduce-only taker larger than the position shrinks to it, as on Bybit
            order.qty = order.filled + qty
        if inst.category == "dex":
            return self._swap(order, ts, book, qty, limit)
        levels = take(book, order.symbol, order.side, qty, limit, inst.tick_size, self.rules.fill, self.liquidity)
        out: list[Outcome] = []
        for price, q in levels:
            out += self._execute(order, ts, price, q, "taker")
        return out + self._progress(order, ts, len(levels))

    def _swap(self, order: VenueOrder, ts: int, book: Book, qty: Decimal, limit: Decimal | None) -> list[Outcome]:
        """A DEX order swaps against a constant-product pool centred on the oracle price; gas is its fee."""
        oracle = cast(Decimal, book.mark())  # the order arrived to a priced book, and a price never goes away
        dex, inst = self.rules.dex, self.instruments[order.symbol]
        try:
            result = swap(order.side, qty, oracle, dex.depth(order.symbol), dex.pool_fee)
        except ValueError as exc:
            return self._close(order, ts, "rejected", f"pool cannot fill it: {exc}")
        price = inst.round_price(result.avg_price, ROUND_UP if order.side == "buy" else ROUND_DOWN)
        if limit is not None and (price > limit if order.side == "buy" else price < limit):
            return []  # the pool's price is beyond the limit: a limit order keeps waiting
        gas = gas_cost(dex, order.symbol)
        return self._execute(order, ts, price, qty, "taker", fee=(ZERO, gas)) + self._progress(order, ts, 1)

    def _execute(self, order: VenueOrder, ts: int, price: Decimal, qty: Decimal, liquidity: LiquidityRole,
                 fee: tuple[Decimal, Decimal] | None = None, exec_type: ExecType = "trade") -> list[Outcome]:
        rate, amount = fee or self.rules.fees.fee(order.symbol, liquidity, price, qty)
        order.filled += qty
        order.cost += price * qty
        ex = Execution(order, ts, price, qty, liquidity, rate, amount, exec_type)
        self.book_fill(ex)
        return [ex]

    def _progress(self, order: VenueOrder, ts: int, executions: int) -> list[Outcome]:
        """The order's state after a batch of executions at one instant, and what it sets off (OCO, bracket)."""
        if not executions:
            return []
        if order.left:
            order.status = "partially_filled"
            return [self._event(order, ts, "partially_filled"), *self._oco_cancel(order, ts, "filled in part")]
        return self._close(order, ts, "filled", "")

    def _capped(self, order: VenueOrder) -> Decimal | None:
        """What the order may still trade: a reduce-only order never more than the position it reduces."""
        if not order.reduce_only:
            return order.left
        if not self._reduces(order):
            return None
        return min(order.left, abs(self.position_qty(order.symbol)))

    def _reduces(self, order: VenueOrder) -> bool:
        pos = self.position_qty(order.symbol)
        return (pos > 0 and order.side == "sell") or (pos < 0 and order.side == "buy")

    def _crosses(self, order: VenueOrder, book: Book) -> bool:
        if not order.is_limit:
            return True
        if self.instruments[order.symbol].category == "dex":
            return True  # a pool always quotes; _swap checks the limit against its price
        price = book.best_ask() if order.side == "buy" else book.best_bid()
        limit = cast(Decimal, order.price)  # a limit order has its price
        return price is not None and (limit >= price if order.side == "buy" else limit <= price)

    def _fillable_whole(self, order: VenueOrder, book: Book) -> bool:
        inst = self.instruments[order.symbol]
        if inst.category == "dex" or not self.rules.fill.book_walk:
            return True
        probe = Liquidity()
        probe.taken = dict(self.liquidity.taken)
        got = take(book, order.symbol, order.side, order.left, order.price, inst.tick_size, self.rules.fill, probe)
        return sum((q for _, q in got), ZERO) >= order.left

    @staticmethod
    def _ref_price(order: VenueOrder, book: Book) -> Decimal:
        """The price a margin check of a market order uses: the touch it will meet, else the mark."""
        p = book.best_ask() if order.side == "buy" else book.best_bid()
        return p if p is not None else (book.mark() or ZERO)

    # --- resting orders and triggers, on each tick -----------------------------------------------------------
    def on_tick(self, tick: Tick, book: Book) -> list[Outcome]:
        """After the tick moved `book`: makers fill from its trades and quotes, then triggers fire."""
        symbol = tick.symbol
        resting: list[VenueOrder] = []
        triggers: list[VenueOrder] = []  # dicts keep insertion order, so by seq, as placed
        for o in self.orders.values():  # (the engine's hot path: each order's type is looked at once)
            if o.symbol != symbol or o.status == "pending":
                continue
            if o.type in CONDITIONAL_TYPES and not o.triggered:
                triggers.append(o)
            elif o.type in LIMIT_TYPES:
                resting.append(o)
        if not resting and not triggers:
            return []
        out: list[Outcome] = []
        if resting:
            if len(resting) > 1:
                resting.sort(key=_priority)
            if tick.trades:
                out += self._maker_trades(resting, tick.trades)
            out += self._maker_quotes(resting, tick.ts, book)
        for order in triggers:  # only a trigger sets `triggered`: the makers above did not change this list
            if order.id in self.orders:  # an OCO partner may have cancelled it
                out += self._check_trigger(order, tick, book)
        return out

    def _maker_trades(self, resting: list[VenueOrder], trades: list[TickTrade]) -> list[Outcome]:
        """`resting`: of LIMIT_TYPES, each with its limit price."""
        out: list[Outcome] = []
        fill = self.rules.fill
        for t in trades:
            price, left = Decimal(t.price), Decimal(t.qty)
            for order in resting:
                if order.id not in self.orders or not left:
                    continue
                if t.side == order.side:  # an aggressor on our side takes the other side of the book
                    continue
                limit = cast(Decimal, order.price)
                through = price < limit if order.side == "buy" else price > limit
                if not through and price != limit:
                    continue
                avail = left
                if not through and fill.queue_position and order.queue is not None:
                    eaten = min(order.queue, left)
                    order.queue -= eaten
                    avail = left - eaten
                elif not through and fill.queue_position:
                    continue  # at our price but our place in the queue is unknown: wait for a trade through
                if avail <= 0:
                    continue
                cap = self._capped(order)
                if cap is None:
                    out += self._close(order, t.ts, "cancelled", "reduce-only: no position left to reduce")
                    continue
                q = min(cap, avail) if fill.partial_fills else cap
                out += self._execute(order, t.ts, limit, q, "maker") + self._progress(order, t.ts, 1)
                left -= q
        return out

    def _maker_quotes(self, resting: list[VenueOrder], ts: int, book: Book) -> list[Outcome]:
        """Queue sizes shrink with the displayed level; an opposite quote at or through a resting price fills it.
        `resting`: of LIMIT_TYPES, each with its limit price."""
        out: list[Outcome] = []
        fill = self.rules.fill
        for order in resting:
            if order.id not in self.orders:
                continue
            limit = cast(Decimal, order.price)
            if order.queue is None or order.queue > 0:
                now = queue_ahead(book, order.side, limit)
                if now is not None and (order.queue is None or now < order.queue):
                    order.queue = now
            if not fill.quote_through:
                continue
            buy = order.side == "buy"
            opp = book.ask if buy else book.bid
            # float screen first (exact for exchange prices: core/market/book.py), the Decimal only when it may cross
            if opp is None or (float(opp) > float(limit) if buy else float(opp) < float(limit)):
                continue
            shown = book.ask_qty if buy else book.bid_qty
            cap = self._capped(order)
            if cap is None:
                out += self._close(order, ts, "cancelled", "reduce-only: no position left to reduce")
                continue
            side: BookSide = "ask" if order.side == "buy" else "bid"
            avail = self.liquidity.available(order.symbol, side, float(opp), shown)
            q = cap if avail is None or not fill.partial_fills else min(cap, avail)
            if q > 0:
                self.liquidity.take(order.symbol, side, float(opp), shown, q)
                out += self._execute(order, ts, limit, q, "maker") + self._progress(order, ts, 1)
        return out

    def _trigger_prices(self, order: VenueOrder, book: Book, tick: Tick | None) -> list[Decimal]:
        """The prices a trigger watches in this tick, in order: each trade's (last) or the mark after it."""
        if order.trigger_by == "mark":
            m = book.mark()
            return [m] if m is not None else []
        if tick is not None and tick.trades:
            return [Decimal(t.price) for t in tick.trades]
        if book.last is not None:
            return [Decimal(book.last)]
        m = book.mark()
        return [m] if m is not None else []

    def _check_trigger(self, order: VenueOrder, tick: Tick, book: Book) -> list[Outcome]:
        trigger = order.trigger_price
        if trigger is not None and tick.trades and order.trigger_by != "mark" and order.type != "trailing_stop":
            # a float screen first (per tick and trigger): string and Decimal to float are correctly rounded, so
            # monotone, and a trade whose float is beyond the trigger's cannot reach it as a Decimal either
            limit, falls = float(trigger), (order.side == "sell") == order.type.startswith("stop")
            if all(float(t.price) > limit for t in tick.trades) if falls else \
                    all(float(t.price) < limit for t in tick.trades):
                return []
        for i, p in enumerate(self._trigger_prices(order, book, tick)):
            if self._fires(order, p):
                ts = tick.trades[i].ts if order.trigger_by == "last" and tick.trades else tick.ts
                return self._trigger(order, ts, book, p)
        return []

    def _fires(self, order: VenueOrder, p: Decimal) -> bool:
        sell = order.side == "sell"
        if order.type == "trailing_stop":
            if order.activation_price is not None and order.peak is None:
                if (p < order.activation_price) if sell else (p > order.activation_price):
                    return False
                order.peak = p
            peak = order.peak = p if order.peak is None else (max(order.peak, p) if sell else min(order.peak, p))
            stop = self._trail_stop(order, peak)
            order.trigger_price = stop
            return p <= stop if sell else p >= stop
        is_stop = order.type.startswith("stop")
        falls = sell == is_stop  # a sell stop and a buy take-profit trigger on a fall
        trigger = order.trigger_price
        if trigger is None:  # a stop or take-profit always has one (no cast: this runs per tick and order)
            return False
        return p <= trigger if falls else p >= trigger

    @staticmethod
    def _trail_stop(order: VenueOrder, peak: Decimal) -> Decimal:
        sell = order.side == "sell"
        if order.trail_amount is not None:
            return peak - order.trail_amount if sell else peak + order.trail_amount
        step = peak * cast(Decimal, order.trail_percent) / 100  # a trailing stop has one or the other
        return peak - step if sell else peak + step

    def _trigger(self, order: VenueOrder, ts: int, book: Book, price: Decimal) -> list[Outcome]:
        order.triggered = True
        out: list[Outcome] = [self._event(order, ts, "triggered", f"{order.trigger_by} price {price}")]
        out += self._oco_cancel(order, ts, "triggered")
        return out + self._work(order, ts, book, arriving=False)

    # --- links, cancels, amends ------------------------------------------------------------------------------
    def _oco_cancel(self, order: VenueOrder, ts: int, what: str) -> list[Outcome]:
        if order.oco is None:
            return []
        group, order.oco = order.oco, None
        out: list[Outcome] = []
        for other in [o for o in self.orders.values() if o.oco == group]:
            out += self._close(other, ts, "cancelled", f"OCO: {order.id} was {what}")
        return out

    def _bracket(self, entry: VenueOrder, ts: int) -> list[Outcome]:
        """Once an entry is done, a reduce-only stop-loss and take-profit for what it filled, as an OCO pair."""
        out: list[Outcome] = []
        exit_side: Side = "sell" if entry.side == "buy" else "buy"
        legs: tuple[tuple[str, OrderType, Decimal | None], ...] = (("sl", "stop_market", entry.stop_loss),
                                                                   ("tp", "take_profit_market", entry.take_profit))
        for suffix, kind, trigger in legs:
            if trigger is None or not entry.filled:
                continue
            child = VenueOrder(f"{entry.id}-{suffix}", entry.session, entry.symbol, exit_side, kind, entry.filled,
                               None, "GTC", True, ts, entry.seq, trigger_price=trigger, trigger_by=entry.trigger_by,
                               oco=f"{entry.id}:bracket", parent=entry.id, status="new")
            self.orders[child.id] = child
            out.append(self._event(child, ts, "new", f"bracket of {entry.id}"))
        return out

    def cancel_now(self, order: VenueOrder, ts: int, reason: str) -> list[Outcome]:
        """The venue itself cancels an open order (a closed position takes its reduce-only orders with it)."""
        return self._close(order, ts, "cancelled", reason)

    def _cancel(self, oid: str, ts: int) -> list[Outcome]:
        order = self.orders.get(oid)
        if order is None or order.status == "pending":
            return [Refusal(oid, ts, f"cancel: order {oid} is not open")]
        return self._close(order, ts, "cancelled", "cancelled on request")

    def _amend(self, oid: str, changes: dict[str, str | None], ts: int, books: dict[str, Book]) -> list[Outcome]:
        order = self.orders.get(oid)
        if order is None or order.status == "pending":
            return [Refusal(oid, ts, f"amend: order {oid} is not open")]
        qty, price, trigger = (None if (v := changes.get(k)) is None else Decimal(v)
                               for k in ("qty", "price", "trigger_price"))
        problem = ""
        if qty is not None and qty <= order.filled:
            problem = f"new quantity {qty} is not above the filled {order.filled}"
        elif price is not None and not order.is_limit:  # (an open order: a pending one was refused above)
            problem = f"a {order.type} order has no limit price to change"
        elif trigger is not None and not (order.waiting_trigger and order.type != "trailing_stop"):
            problem = "only an untriggered stop or take-profit has a trigger price to change"
        if problem:
            return [Refusal(oid, ts, f"amend refused: {problem}")]
        requeue = (price is not None and price != order.price) or (qty is not None and qty > order.qty)
        before = order.qty, order.price, order.trigger_price
        order.qty = qty if qty is not None else order.qty
        order.price = price if price is not None else order.price
        order.trigger_price = trigger if trigger is not None else order.trigger_price
        book = books.get(order.symbol)
        requeue = requeue and not order.waiting_trigger and book is not None
        if requeue and book is not None and (problem := self._admission(order, book)):
            # as on Bybit, an amend the account cannot carry is refused and the order stays as it was
            order.qty, order.price, order.trigger_price = before
            return [Refusal(oid, ts, f"amend refused: {problem}")]
        out: list[Outcome] = [self._event(order, ts, "amended")]
        if requeue and book is not None:
            order.seq = max(o.seq for o in self.orders.values()) + 1  # back of the queue
            out += self._work(order, ts, book, arriving=False, admitted=True)
        return out

    def _close(self, order: VenueOrder, ts: int, status: OrderStatus, reason: str) -> list[Outcome]:
        if order.status in FINAL:  # already closed by a link (OCO, bracket, a closed position) in this instant
            return []
        self.orders.pop(order.id, None)
        order.status = status
        out: list[Outcome] = [self._event(order, ts, status, reason)]
        if status != "rejected":
            out += self._oco_cancel(order, ts, status)
        if order.stop_loss is not None or order.take_profit is not None:
            out += self._bracket(order, ts)
        return out

    @staticmethod
    def _event(order: VenueOrder, ts: int, status: OrderStatus, reason: str = "") -> StatusChange:
        order.events += 1
        return StatusChange(order, ts, status, reason, order.events, order.qty, order.price, order.trigger_price,
                            order.filled, order.avg_price)

    # --- liquidation -----------------------------------------------------------------------------------------
    def liquidate(self, session: str, symbol: str, side: Side, qty: Decimal, price: Decimal, fee: Decimal,
                  fee_rate: Decimal, ts: int, oid: str, seq: int) -> list[Outcome]:
        """The venue takes over a position: cancels the symbol's orders and closes it with a liquidation fill."""
        out: list[Outcome] = []
        for order in self.open_orders(symbol):
            if order.status != "pending":
                out += self._close(order, ts, "cancelled", "position liquidated")
        order = VenueOrder(oid, session, symbol, side, "market", qty, None, "IOC", True, ts, seq, status="new")
        out += self._execute(order, ts, price, qty, "taker", (fee_rate, fee), "liquidation")
        order.status = "filled"
        return out + [self._event(order, ts, "filled", "liquidation")]

    # --- checkpoint ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"orders": [o.to_dict() for o in self.orders.values()], "pending": self.pending,
                "liquidity": self.liquidity.to_dict()}

    def load(self, d: dict[str, Any]) -> None:
        self.orders = {o["id"]: VenueOrder.from_dict(o) for o in d["orders"]}
        self.pending = [tuple(p) for p in d["pending"]]
        heapq.heapify(self.pending)
        self.liquidity.load(d.get("liquidity", []))

