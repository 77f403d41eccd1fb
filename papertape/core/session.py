"""One paper-trading session: its account, venue and strategy, driven tick by tick in event time."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

import schemas as s

from .account import Account
from .book import Book
from .fees import FeeSchedule, to_settle_unit
from .instruments import Instrument
from .strategy import PlaceOrder, Strategy, Target, make_strategy
from .venue import Execution, PaperVenue, StatusChange, VenueOrder


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
    latency_ms: int = Field(default=50, ge=0)  # decision to venue, in event time
    maker_fee: Decimal = Decimal("0.0002")
    taker_fee: Decimal = Decimal("0.00055")
    equity_every_ms: int = Field(default=60_000, gt=0)

    def trades(self, symbol: str) -> bool:
        return "*" in self.symbols or symbol in self.symbols


class Session:
    def __init__(self, cfg: SessionConfig, instruments: dict[str, Instrument]) -> None:
        self.cfg = cfg
        self.instruments = instruments
        self.account = Account(cfg.balance, cfg.settle_coin)
        self.venue = PaperVenue(FeeSchedule(cfg.maker_fee, cfg.taker_fee), lambda sym: self.account.position(sym).qty)
        self.strategy: Strategy = make_strategy(cfg.strategy, cfg.params)
        self.seq = 0  # numbers orders and decisions: ids stay the same when a tape is replayed
        self.next_equity_ts: int | None = None
        self.fills = 0

    # --- event-time driving -------------------------------------------------------------------------------
    def due_at(self) -> int:
        """The event time from which `before_tick` has something to do (an order arriving, an equity snapshot)."""
        arrival = self.venue.next_arrival()
        equity = -1 if self.next_equity_ts is None else self.next_equity_ts
        return equity if arrival is None else min(arrival, equity)

    def before_tick(self, now: int, books: dict[str, Book]) -> list:
        out: list = []
        arrival = self.venue.next_arrival()
        if arrival is not None and arrival <= now:
            out += self._outcomes(self.venue.activate_due(now, books), books)
        if self.next_equity_ts is None:
            self.next_equity_ts = now - now % self.cfg.equity_every_ms + self.cfg.equity_every_ms
        elif now >= self.next_equity_ts:
            out.append(self.equity_message(self.next_equity_ts, books))
            self.next_equity_ts = now - now % self.cfg.equity_every_ms + self.cfg.equity_every_ms
        return out

    def on_tick(self, tick, books: dict[str, Book]) -> list:
        out = self._outcomes(self.venue.on_trades(tick.symbol, tick.trades), books) if tick.trades else []
        for intent in self.strategy.on_tick(tick):
            out += self._decide(intent, tick.ts, books)
        return out

    # --- decisions -------------------------------------------------------------------------------------------
    def _decide(self, intent, ts: int, books: dict[str, Book]) -> list:
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
        elif any(o.symbol == intent.symbol for o in self.venue.orders.values()):
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

    def _place(self, o: PlaceOrder, ts: int, reasoning: str, confidence: float, features: dict,
               target: Target | None = None, problem: str = "") -> list:
        self.seq += 1
        oid = f"{self.cfg.id}-{self.seq}"
        problem = problem or self._check(o.symbol, o.qty, o.price)
        if problem:
            return [s.Decision(id=f"{oid}:d", ts=ts, session=self.cfg.id, symbol=o.symbol, action="reject",
                               reasoning=f"{reasoning}; {problem}", confidence=confidence, features=features)]
        self.venue.submit(VenueOrder(oid, self.cfg.id, o.symbol, o.side, o.type, o.qty, o.price, o.tif,
                                     o.reduce_only, ts + self.cfg.latency_ms, self.seq))
        return [s.Decision(id=f"{oid}:d", ts=ts, session=self.cfg.id, symbol=o.symbol, action=o.side,
                           reasoning=reasoning, confidence=confidence, features=features, order_id=oid)]

    def submit_external(self, order: s.Order, now: int, feed_status: str = "live") -> list:
        """An order from the orders topic: it reaches the venue `latency_ms` after it is seen. Refused while its
        symbol's feed is not live (stale or unpriced)."""
        problem = self._check(order.symbol, order.qty, order.price)
        if not problem and feed_status != "live":
            problem = _stale_reason(order.symbol, feed_status)
        oid = f"{self.cfg.id}-x-{order.id}"
        if problem:
            return [self._order_event(VenueOrder(oid, self.cfg.id, order.symbol, order.side, order.type, order.qty,
                                                 order.price, order.tif, order.reduce_only, now, 0),
                                      now, "rejected", problem)]
        self.seq += 1
        self.venue.submit(VenueOrder(oid, self.cfg.id, order.symbol, order.side, order.type, order.qty, order.price,
                                     order.tif, order.reduce_only, max(order.ts, now) + self.cfg.latency_ms, self.seq))
        return []

    def _check(self, symbol: str, qty: Decimal, price: Decimal | None) -> str:
        inst = self.instruments.get(symbol)
        if inst is None:
            return f"unknown symbol {symbol}"
        if qty < inst.min_qty or not inst.on_lot(qty):
            return f"quantity {qty} is not a multiple of the lot step {inst.lot_step} (min {inst.min_qty})"
        if price is not None and not inst.on_tick(price):
            return f"price {price} is not on the tick size {inst.tick_size}"
        if self.account.cash <= 0:
            return "no cash left in the account"
        return ""

    def _decision(self, intent: Target, ts: int, action: str, reasoning: str) -> s.Decision:
        self.seq += 1
        return s.Decision(id=f"{self.cfg.id}-{self.seq}:d", ts=ts, session=self.cfg.id, symbol=intent.symbol,
                          action=action, reasoning=reasoning, confidence=intent.confidence, features=intent.features)

    # --- venue outcomes ------------------------------------------------------------------------------------
    def _outcomes(self, outcomes, books: dict[str, Book]) -> list:
        out: list = []
        for oc in outcomes:
            if isinstance(oc, StatusChange):
                out.append(self._order_event(oc.order, oc.ts, oc.status, oc.reason))
            else:
                out += self._fill(oc, books)
        return out

    def _fill(self, ex: Execution, books: dict[str, Book]) -> list:
        o = ex.order
        realized = self.account.apply_fill(o.symbol, o.side, ex.price, ex.qty, ex.fee)
        self.fills += 1
        fill = s.Fill(id=f"{o.id}:f{self.fills}", ts=ex.ts, session=o.session, order_id=o.id, symbol=o.symbol,
                      side=o.side, price=ex.price, qty=ex.qty, liquidity=ex.liquidity, fee_rate=ex.fee_rate,
                      fee=ex.fee, realized_pnl=realized, settle_coin=self.account.settle_coin)
        pos = self.account.position(o.symbol)
        book = books.get(o.symbol)
        mark = book.mark() if book else None
        position = s.Position(id=f"{fill.id}:p", ts=ex.ts, session=o.session, symbol=o.symbol, qty=pos.qty,
                              avg_price=to_settle_unit(pos.avg_price) if pos.avg_price else None,
                              mark=mark, realized_pnl=pos.realized, unrealized_pnl=pos.unrealized(mark))
        return [fill, position]

    def _order_event(self, o: VenueOrder, ts: int, status: str, reason: str) -> s.OrderEvent:
        return s.OrderEvent(id=f"{o.id}:{status}", ts=ts, session=o.session, order_id=o.id, symbol=o.symbol,
                            side=o.side, type=o.type, status=status, qty=o.qty, price=o.price,
                            filled_qty=o.filled, reason=reason)

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
                        unrealized_pnl=unrealized, fees=self.account.fees,
                        open_positions=self.account.open_positions())

    # --- checkpoint ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"account": self.account.to_dict(), "venue": self.venue.to_dict(), "strategy": self.strategy.to_dict(),
                "seq": self.seq, "next_equity_ts": self.next_equity_ts, "fills": self.fills}

    def load(self, d: dict) -> None:
        self.account = Account.from_dict(d["account"])
        self.venue.load(d["venue"])
        self.strategy.load(d["strategy"])
        self.seq, self.next_equity_ts, self.fills = d["seq"], d["next_equity_ts"], d["fills"]


def _stale_reason(symbol: str, status: str) -> str:
    return f"{symbol} data is {status}: no trading on old prices"


def _not_live(symbol: str, books: dict[str, Book]) -> str:
    """Why the symbol's prices must not be traded on (its feed is stale or unpriced), or ''."""
    book = books.get(symbol)
    return "" if book is None or book.status == "live" else _stale_reason(symbol, book.status)
