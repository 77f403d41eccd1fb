"""One paper-trading session: its account, venue and strategy, driven tick by tick in event time."""
from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

import schemas as s
from schemas.trading import order_shape_problem

from .account import Account
from .book import Book
from .dex import DexSettings
from .fees import FeeSchedule, to_settle_unit
from .fill_model import FillSettings
from .instruments import Instrument
from .margin_account import MarginRules
from .strategy import AmendIntent, CancelIntent, PlaceOrder, Strategy, Target, make_strategy
from .venue import REQUEST_FIELDS, Execution, PaperVenue, Refusal, StatusChange, VenueOrder, VenueRules


class SessionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    balance: Decimal = Field(default=Decimal(10_000), gt=0)
    settle_coin: str = "USDT"
    symbols: list[str] = Field(default_factory=lambda: ["*"])  # "*" = every symbol on the tape
    strategy: str = "ema_cross"
    params: dict[str, Any] = Field(default_factory=dict)
    position_fraction: Decimal = Field(default=Decimal("0.25"), gt=0, le=1)  # of equity per position
    min_confidence: float = Field(default=0.4, ge=0, le=1)
    latency_ms: int = Field(default=50, ge=0)  # decision to venue (orders, cancels, amends), in event time
    maker_fee: Decimal = Decimal("0.0002")  # Bybit VIP0 perpetuals
    taker_fee: Decimal = Decimal("0.00055")
    spot_maker_fee: Decimal = Decimal("0.001")  # Bybit VIP0 spot
    spot_taker_fee: Decimal = Decimal("0.001")
    fee_overrides: dict[str, tuple[Decimal, Decimal]] = Field(default_factory=dict)  # symbol -> (maker, taker)
    leverage: Decimal = Field(default=Decimal(10), gt=0)  # perpetuals; capped by each instrument's maximum
    leverage_by_symbol: dict[str, Decimal] = Field(default_factory=dict)
    margin_mode: Literal["cross", "isolated"] = "cross"
    funding: bool = True  # settle perpetual funding at each funding time
    liquidation: bool = True
    fill: FillSettings = Field(default_factory=FillSettings)
    dex: DexSettings = Field(default_factory=DexSettings)
    equity_every_ms: int = Field(default=60_000, gt=0)

    def trades(self, symbol: str) -> bool:
        return "*" in self.symbols or symbol in self.symbols

    def fee_schedule(self, instruments: dict[str, Instrument]) -> FeeSchedule:
        spot = {sym: (self.spot_maker_fee, self.spot_taker_fee) for sym, i in instruments.items()
                if i.category == "spot"}
        dex = {sym: (Decimal(0), Decimal(0)) for sym, i in instruments.items() if i.category == "dex"}
        return FeeSchedule(self.maker_fee, self.taker_fee, {**spot, **dex, **self.fee_overrides})


class Session:
    def __init__(self, cfg: SessionConfig, instruments: dict[str, Instrument]) -> None:
        self.cfg = cfg
        self.instruments = instruments
        self.account = Account(cfg.balance, cfg.settle_coin)
        self.fees = cfg.fee_schedule(instruments)
        self.margin = MarginRules(cfg, instruments, self.fees)
        self.venue = PaperVenue(VenueRules(self.fees, cfg.fill, cfg.dex), instruments,
                                lambda sym: self.account.position(sym).qty, self._book_fill, self._admit)
        self.strategy: Strategy = make_strategy(cfg.strategy, cfg.params)
        self.seq = 0  # numbers orders and decisions: ids stay the same when a tape is replayed
        self.next_equity_ts: int | None = None
        self.fills = 0
        self.funded: dict[str, int] = {}  # symbol -> the last funding time settled
        self._books: dict[str, Book] = {}  # the engine's books, for the venue's callbacks

    # --- event-time driving -------------------------------------------------------------------------------
    def due_at(self) -> int:
        """The event time from which `before_tick` has something to do (a request arriving, an order expiring,
        a funding time, an equity snapshot)."""
        due = [-1 if self.next_equity_ts is None else self.next_equity_ts]
        arrival = self.venue.next_due()
        if arrival is not None:
            due.append(arrival)
        if self.cfg.funding:
            due += [t for t in (self._funding_due(sym) for sym in self.account.positions) if t is not None]
        return min(due)

    def before_tick(self, now: int, books: dict[str, Book]) -> list:
        """What is due up to `now`, against the books as they stood before the tick at `now`."""
        self._books = books
        out: list = []
        while True:  # venue requests and funding times in time order: funding sees the positions held at its time
            funding = self._next_funding(now) if self.cfg.funding else None
            until = now if funding is None else funding - 1
            due = self.venue.next_due()
            if due is not None and due <= until:
                out += self._outcomes(self.venue.on_time(until, books), until)
            if funding is None:
                break
            out += self._settle_funding(funding, books)
        if self.next_equity_ts is None:
            self.next_equity_ts = now - now % self.cfg.equity_every_ms + self.cfg.equity_every_ms
        elif now >= self.next_equity_ts:
            out.append(self.equity_message(self.next_equity_ts, books))
            self.next_equity_ts = now - now % self.cfg.equity_every_ms + self.cfg.equity_every_ms
        return out

    def on_tick(self, tick, books: dict[str, Book]) -> list:
        self._books = books
        book = books[tick.symbol]
        out = self._outcomes(self.venue.on_tick(tick, book), tick.ts) if self.venue.orders else []
        if self.cfg.liquidation and self._holds_perp(tick.symbol) and self.margin.may_liquidate(self.account, books):
            out += self._liquidations(tick.ts, books)
        for intent in self.strategy.on_tick(tick):
            out += self._decide(intent, tick.ts, books)
        return out

    # --- funding and liquidation ---------------------------------------------------------------------------
    def _holds_perp(self, symbol: str) -> bool:
        """Whether a mark move of `symbol` can liquidate: the session holds a perpetual position in it."""
        pos = self.account.positions.get(symbol)
        return pos is not None and bool(pos.qty) and self.instruments[symbol].category == "linear"

    def _funding_due(self, symbol: str) -> int | None:
        book = self._books.get(symbol)
        if book is None or book.next_funding_ts is None or not self._holds_perp(symbol):
            return None
        if book.next_funding_ts <= self.funded.get(symbol, -1):
            return None
        return book.next_funding_ts

    def _next_funding(self, now: int) -> int | None:
        due = [t for t in map(self._funding_due, self.account.positions) if t is not None and t <= now]
        return min(due) if due else None

    def _settle_funding(self, at: int, books: dict[str, Book]) -> list:
        """Funding of every position whose symbol settles at `at`."""
        out: list = []
        for sym in sorted(self.account.positions):
            t = self._funding_due(sym)
            if t != at:
                continue
            self.funded[sym] = t
            book, pos = books[sym], self.account.positions[sym]
            mark = book.mark()
            if book.funding_rate is None or mark is None:
                continue
            rate = Decimal(book.funding_rate)
            amount = self.margin.funding(pos.qty, mark, rate)
            self.account.apply_funding(amount)
            out.append(s.Funding(id=f"{self.cfg.id}:fund:{sym}:{t}", ts=t, session=self.cfg.id, symbol=sym, rate=rate,
                                 mark=mark, qty=pos.qty, amount=amount, settle_coin=self.account.settle_coin))
        return out

    def _liquidations(self, ts: int, books: dict[str, Book]) -> list:
        out: list = []
        for sym, side, qty, price, fee, rate in self.margin.liquidations(self.account, self._marks(books)):
            self.seq += 1
            oid = f"{self.cfg.id}-liq-{self.seq}"
            taken = self.venue.liquidate(self.cfg.id, sym, side, qty, price, fee, rate, ts, oid, self.seq)
            out += self._outcomes(taken, ts)
            out.append(s.Alert(id=f"alert:{oid}", ts=ts, severity="critical", source="venue", session=self.cfg.id,
                               title=f"{sym} position liquidated",
                               text=f"{self.cfg.id}: {qty} {sym} closed at {price} ({self.cfg.margin_mode} margin "
                                    f"reached maintenance), fee {fee}"))
        return out

    # --- decisions -------------------------------------------------------------------------------------------
    def _decide(self, intent, ts: int, books: dict[str, Book]) -> list:
        if isinstance(intent, (CancelIntent, AmendIntent)):
            return self._change(intent, ts)
        stale = _not_live(intent.symbol, books)
        if isinstance(intent, PlaceOrder):
            return self._place(intent, ts, intent.reasoning, 1.0, {}, problem=stale)
        assert isinstance(intent, Target)
        book = books.get(intent.symbol)
        price = book.mark() if book else None
        pos = self.account.position(intent.symbol).qty
        inst = self.instruments.get(intent.symbol)
        hold = None
        if intent.confidence < self.cfg.min_confidence:
            hold = f"confidence {intent.confidence:.2f} below threshold {self.cfg.min_confidence:.2f}"
        elif price is None or inst is None:
            hold = "no price or instrument for the symbol"
        elif stale:
            hold = stale
        elif any(not o.reduce_only for o in self.venue.open_orders(intent.symbol)):
            hold = "an order for the symbol is still open"
        if hold:
            return [self._decision(intent, ts, "hold", f"{intent.reasoning}; {hold}")]
        want = Decimal(0)
        if intent.target != "flat":
            size = inst.round_qty_down(self.account.equity(self._marks(books)) * self.cfg.position_fraction / price)
            want = size if intent.target == "long" else -size
        delta = want - pos
        if not delta or (want and pos and (want > 0) == (pos > 0)):  # no resizing while the view holds
            return []
        side = "buy" if delta > 0 else "sell"
        order = PlaceOrder(intent.symbol, side, abs(delta), reduce_only=(want == 0))
        return self._place(order, ts, intent.reasoning, intent.confidence, intent.features, intent)

    def _change(self, intent: CancelIntent | AmendIntent, ts: int) -> list:
        """A strategy's cancel or amend: sent to the venue, and logged as a decision."""
        self.seq += 1
        oid = self._client_oid(intent.client_id)
        order = self.venue.orders.get(oid)
        if isinstance(intent, CancelIntent):
            self.venue.cancel(oid, ts + self.cfg.latency_ms, self.seq)
        else:
            self.venue.amend(oid, _amend_changes(intent), ts + self.cfg.latency_ms, self.seq)
        action = "cancel" if isinstance(intent, CancelIntent) else "amend"
        return [s.Decision(id=f"{self.cfg.id}-{self.seq}:d", ts=ts, session=self.cfg.id,
                           symbol=order.symbol if order else "UNKNOWN", action=action, reasoning=intent.reasoning,
                           confidence=1.0, order_id=oid)]

    def _client_oid(self, client_id: str) -> str:
        return f"{self.cfg.id}-c-{client_id}"

    def _place(self, o: PlaceOrder, ts: int, reasoning: str, confidence: float, features: dict,
               target: Target | None = None, problem: str = "") -> list:
        self.seq += 1
        oid = self._client_oid(o.client_id) if o.client_id else f"{self.cfg.id}-{self.seq}"
        problem = problem or order_shape_problem(o) or self._check(o.symbol, o.qty, o.price)
        if problem:
            return [s.Decision(id=f"{oid}:d", ts=ts, session=self.cfg.id, symbol=o.symbol, action="reject",
                               reasoning=f"{reasoning}; {problem}", confidence=confidence, features=features)]
        self.venue.submit(self._venue_order(oid, o, ts + self.cfg.latency_ms, self.seq))
        return [s.Decision(id=f"{oid}:d", ts=ts, session=self.cfg.id, symbol=o.symbol, action=o.side,
                           reasoning=reasoning, confidence=confidence, features=features, order_id=oid)]

    def _venue_order(self, oid: str, o, arrival: int, seq: int) -> VenueOrder:
        """A venue order from a PlaceOrder intent or a schemas.Order (they share REQUEST_FIELDS)."""
        return VenueOrder(id=oid, session=self.cfg.id, arrival=arrival, seq=seq,
                          oco=None if o.oco is None else f"{self.cfg.id}:{o.oco}",
                          **{f: getattr(o, f) for f in REQUEST_FIELDS})

    def submit_external(self, msg, now: int, feed_status: str = "live") -> list:
        """An order, cancel or amend from the orders topic: it reaches the venue `latency_ms` after it is seen.
        An order is refused while its symbol's feed is not live (stale or unpriced)."""
        arrival = max(msg.ts, now) + self.cfg.latency_ms
        oid = f"{self.cfg.id}-x-{msg.id if msg.kind == 'order' else msg.order_id}"
        self.seq += 1
        if msg.kind == "cancel":
            self.venue.cancel(oid, arrival, self.seq)
            return []
        if msg.kind == "amend":
            self.venue.amend(oid, _amend_changes(msg), arrival, self.seq)
            return []
        problem = self._check(msg.symbol, msg.qty, msg.price)
        if not problem and feed_status != "live":
            problem = _stale_reason(msg.symbol, feed_status)
        if problem:
            rejected = self._venue_order(oid, msg, now, 0)
            return [self._order_event(StatusChange(rejected, now, "rejected", problem, 1, msg.qty, msg.price,
                                                   msg.trigger_price, Decimal(0), None))]
        self.venue.submit(self._venue_order(oid, msg, arrival, self.seq))
        return []

    def _check(self, symbol: str, qty: Decimal, price: Decimal | None) -> str:
        inst = self.instruments.get(symbol)
        if inst is None:
            return f"unknown symbol {symbol}"
        if qty < inst.min_qty or not inst.on_lot(qty):
            return f"quantity {qty} is not a multiple of the lot step {inst.lot_step} (min {inst.min_qty})"
        if inst.max_qty is not None and qty > inst.max_qty:
            return f"quantity {qty} is above the instrument's maximum {inst.max_qty}"
        if price is not None and not inst.on_tick(price):
            return f"price {price} is not on the tick size {inst.tick_size}"
        if self.account.cash <= 0:
            return "no cash left in the account"
        return ""

    def _admit(self, order: VenueOrder, price: Decimal) -> str:
        """The account's check when an order goes live at the venue: margin (perpetuals) or balances (spot, DEX)."""
        if order.reduce_only:
            return ""
        inst = self.instruments[order.symbol]
        if price and order.qty * price < inst.min_notional:
            return f"order value {order.qty * price} is below the minimum {inst.min_notional}"
        others = [o for o in self.venue.open_orders() if o is not order and o.status != "pending"]
        return self.margin.admit(self.account, order, price, others, self._marks(self._books))

    def _decision(self, intent: Target, ts: int, action: str, reasoning: str) -> s.Decision:
        self.seq += 1
        return s.Decision(id=f"{self.cfg.id}-{self.seq}:d", ts=ts, session=self.cfg.id, symbol=intent.symbol,
                          action=action, reasoning=reasoning, confidence=intent.confidence, features=intent.features)

    # --- venue outcomes ------------------------------------------------------------------------------------
    def _book_fill(self, ex: Execution) -> None:
        sym = ex.order.symbol
        book = self._books.get(sym)
        if not self.account.position(sym).qty and book is not None and book.next_funding_ts is not None:
            if book.next_funding_ts <= ex.ts:  # a position opened after a funding time owes nothing for it
                self.funded[sym] = max(self.funded.get(sym, -1), book.next_funding_ts)
        ex.realized = self.account.apply_fill(sym, ex.order.side, ex.price, ex.qty, ex.fee)
        ex.position = replace(self.account.position(sym))

    def _outcomes(self, outcomes, ts: int) -> list:
        out: list = []
        flat: set[str] = set()
        for oc in outcomes:
            if isinstance(oc, StatusChange):
                out.append(self._order_event(oc))
            elif isinstance(oc, Refusal):
                out.append(s.Alert(id=f"alert:{self.cfg.id}:refused:{oc.order_id}:{oc.ts}", ts=oc.ts,
                                   severity="warning", source="venue", session=self.cfg.id, title="request refused",
                                   text=oc.reason))
            else:
                out += self._fill(oc)
                if not self.account.position(oc.order.symbol).qty:
                    flat.add(oc.order.symbol)
        for sym in sorted(flat):  # a closed position takes its reduce-only orders (TP/SL) with it, as on Bybit
            for order in self.venue.open_orders(sym):
                if order.reduce_only and order.status != "pending" and not self.account.position(sym).qty:
                    out += self._outcomes(self.venue.cancel_now(order, ts, "position closed"), ts)
        return out

    def _fill(self, ex: Execution) -> list:
        o = ex.order
        self.fills += 1
        fill = s.Fill(id=f"{o.id}:f{self.fills}", ts=ex.ts, session=self.cfg.id, order_id=o.id, symbol=o.symbol,
                      side=o.side, price=ex.price, qty=ex.qty, liquidity=ex.liquidity, fee_rate=ex.fee_rate,
                      fee=ex.fee, realized_pnl=ex.realized, settle_coin=self.account.settle_coin,
                      exec_type=ex.exec_type)
        pos = ex.position
        book = self._books.get(o.symbol)
        mark = book.mark() if book else None
        position = s.Position(id=f"{fill.id}:p", ts=ex.ts, session=self.cfg.id, symbol=o.symbol, qty=pos.qty,
                              avg_price=to_settle_unit(pos.avg_price) if pos.avg_price else None,
                              mark=mark, realized_pnl=pos.realized, unrealized_pnl=pos.unrealized(mark))
        return [fill, position]

    def _order_event(self, e: StatusChange) -> s.OrderEvent:
        o = e.order
        return s.OrderEvent(id=f"{o.id}:{e.status}:{e.n}", ts=e.ts, session=self.cfg.id, order_id=o.id,
                            symbol=o.symbol, side=o.side, type=o.type, status=e.status, qty=e.qty, price=e.price,
                            trigger_price=e.trigger_price, filled_qty=e.filled,
                            avg_price=None if e.avg_price is None else to_settle_unit(e.avg_price), reason=e.reason)

    def _marks(self, books: dict[str, Book]) -> dict[str, Decimal]:
        marks = {}
        for sym in self.account.positions:
            book = books.get(sym)
            m = book.mark() if book else None
            if m is not None:
                marks[sym] = m
        return marks

    def equity_message(self, ts: int, books: dict[str, Book]) -> s.Equity:
        marks = self._marks(books)
        unrealized = self.account.unrealized(marks)
        return s.Equity(id=f"{self.cfg.id}:eq:{ts}", ts=ts, session=self.cfg.id, cash=self.account.cash,
                        equity=self.account.cash + unrealized, realized_pnl=self.account.realized,
                        unrealized_pnl=unrealized, fees=self.account.fees, funding=self.account.funding,
                        open_positions=self.account.open_positions())

    # --- checkpoint ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"account": self.account.to_dict(), "venue": self.venue.to_dict(), "strategy": self.strategy.to_dict(),
                "seq": self.seq, "next_equity_ts": self.next_equity_ts, "fills": self.fills, "funded": self.funded}

    def load(self, d: dict) -> None:
        self.account = Account.from_dict(d["account"])
        self.venue.load(d["venue"])
        self.strategy.load(d["strategy"])
        self.seq, self.next_equity_ts, self.fills = d["seq"], d["next_equity_ts"], d["fills"]
        self.funded = dict(d.get("funded", {}))


def _amend_changes(x) -> dict[str, str | None]:
    """The new values of an amend (an AmendIntent or a schemas.AmendOrder), as the venue keeps them."""
    return {k: None if getattr(x, k) is None else str(getattr(x, k)) for k in ("qty", "price", "trigger_price")}


def _stale_reason(symbol: str, status: str) -> str:
    return f"{symbol} data is {status}: no trading on old prices"


def _not_live(symbol: str, books: dict[str, Book]) -> str:
    """Why the symbol's prices must not be traded on (its feed is stale or unpriced), or ''."""
    book = books.get(symbol)
    return "" if book is None or book.status == "live" else _stale_reason(symbol, book.status)
