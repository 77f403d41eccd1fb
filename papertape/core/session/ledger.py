"""The venue's executions booked into the session's account."""
from __future__ import annotations

from dataclasses import replace

from papertape.core.account import Account
from papertape.core.session.timers import Timers
from papertape.core.venue.paper import Execution


class Ledger:
    """The venue's `book_fill`: called at each execution, so a reduce-only order or a margin check later in the
    same instant sees the position as it now is."""

    def __init__(self, account: Account, timers: Timers) -> None:
        self.account = account
        self.timers = timers

    def book_fill(self, ex: Execution) -> None:
        sym = ex.order.symbol
        before = self.account.position(sym).qty
        if not before:
            self.timers.position_opening(sym, ex.ts)
        ex.realized = self.account.apply_fill(sym, ex.order.side, ex.price, ex.qty, ex.fee)
        position = replace(self.account.position(sym))
        ex.position = position
        self.timers.position_moved(sym, before, position.qty, ex.ts)
