"""Whether an order may go: the instrument's limits and the cash, then for a new entry the session's status and
circuit breakers, and at the venue the account's margin or balances."""
from __future__ import annotations

from decimal import Decimal

import schemas as s
from papertape.core.account import Account
from papertape.core.instruments import Instrument
from papertape.core.session.margin_rules import MarginRules
from papertape.core.session.market_view import MarketView
from papertape.core.session.messages import Messages
from papertape.core.session.risk import RiskGuard
from papertape.core.session.state import Run
from papertape.core.venue.paper import VenueOrder
from papertape.core.venue.remote import Venue
from schemas.vocabulary import Side


class Gate:
    def __init__(self, run: Run, instruments: dict[str, Instrument], account: Account, view: MarketView,
                 venue: Venue, guard: RiskGuard, margin: MarginRules, messages: Messages) -> None:
        self.run = run
        self.instruments = instruments
        self.account = account
        self.view = view
        self.venue = venue
        self.guard = guard
        self.margin = margin
        self.messages = messages

    def order_problem(self, symbol: str, qty: Decimal, price: Decimal | None, reduce_only: bool = False) -> str:
        """Why an order cannot be made: an unknown symbol, a quantity or price off the instrument's steps or
        limits, no cash left. '' when it can."""
        inst = self.instruments.get(symbol)
        if inst is None:
            return f"unknown symbol {symbol}"
        if not self.run.cfg.venue_lists(inst.category):
            return f"{symbol} ({inst.category}) is not traded on the session's venue ({self.run.cfg.venue})"
        if problem := magnitude_problem(qty, price or self.view.mark(symbol)):
            return problem
        if qty < inst.min_qty or not inst.on_lot(qty):
            return f"quantity {qty} is not a multiple of the lot step {inst.lot_step} (min {inst.min_qty})"
        if inst.max_qty is not None and qty > inst.max_qty:
            return f"quantity {qty} is above the instrument's maximum {inst.max_qty}"
        if price is not None and not inst.on_tick(price):
            return f"price {price} is not on the tick size {inst.tick_size}"
        if self.account.cash <= 0 and not reduce_only:  # an account in the red may still close what it holds
            return "no cash left in the account"
        return ""

    def _adds_exposure(self, symbol: str, side: Side, qty: Decimal, reduce_only: bool) -> bool:
        if reduce_only:
            return False
        pos = self.account.position(symbol).qty
        return not pos or (pos > 0) == (side == "buy") or qty > abs(pos)

    def entry_block(self, symbol: str, side: Side, qty: Decimal, reduce_only: bool, price: Decimal | None,
                    ts: int) -> tuple[str, list[s.Message]]:
        """Why an order may not be sent (a new entry while paused, stopped or a breaker is tripped), and the
        messages of breakers tripping now. `price`: the order's limit price; None values it at the mark."""
        if not self._adds_exposure(symbol, side, qty, reduce_only):
            return "", []
        if self.run.status != "running":
            return f"the session is {self.run.status}: no new entries", []
        msgs = self.messages.tripped(self.guard.watch(self.view.equity()), ts)
        entries = {o.symbol for o in self.venue.open_orders() if not o.reduce_only}
        held = {sym for sym, p in self.account.positions.items() if p.qty}
        book = self.view.book(symbol)
        price = price or (book.mark() if book is not None else None)
        notional = qty * price if price is not None else Decimal(0)
        new_symbol = symbol not in held and symbol not in entries
        return self.guard.entry_block(notional, new_symbol, len(held | entries)), msgs

    def admit(self, order: VenueOrder, price: Decimal) -> str:
        """The account's check when an order goes live at the venue: margin (perpetuals) or balances (spot, DEX)."""
        if order.reduce_only:
            return ""
        inst = self.instruments[order.symbol]
        if price and order.qty * price < inst.min_notional:
            return f"order value {order.qty * price} is below the minimum {inst.min_notional}"
        others = [o for o in self.venue.open_orders() if o is not order and o.status != "pending"]
        return self.margin.admit(self.account, order, price, others, self.view.marks())


# The schemas take 38 digits (ClickHouse's Decimal(38, 18)); papertape computes in Python's default context of 28
# significant digits, where quantizing a margin or a fee of a larger amount to 1e-8 fails. No instrument trades such
# sizes: an order or amend beyond them is refused with the reason, never left to fail where it is computed.
MAX_QTY = Decimal(10) ** 15
MAX_PRICE = Decimal(10) ** 12
MAX_NOTIONAL = Decimal(10) ** 18


def magnitude_problem(qty: Decimal | None, price: Decimal | None) -> str:
    """Why a quantity or price is beyond what papertape computes exactly, or ''."""
    if qty is not None and qty >= MAX_QTY:
        return f"quantity {qty} is beyond any instrument's range (below {MAX_QTY:.0e})"
    if price is not None and price >= MAX_PRICE:
        return f"price {price} is beyond any instrument's range (below {MAX_PRICE:.0e})"
    if qty is not None and price is not None and qty * price >= MAX_NOTIONAL:
        return f"notional {qty} x {price} is beyond any account's range (below {MAX_NOTIONAL:.0e})"
    return ""
