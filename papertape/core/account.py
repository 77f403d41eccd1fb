"""A session's paper account: cash, positions, realized and unrealized P&L, fees. Exact decimals."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from papertape.core.money import to_settle_unit
from schemas.vocabulary import Side

ZERO = Decimal(0)


@dataclass
class PositionState:
    qty: Decimal = ZERO  # signed: long > 0
    cost: Decimal = ZERO  # signed entry value: sum of qty x price of what is still open
    realized: Decimal = ZERO

    @property
    def avg_price(self) -> Decimal | None:
        return self.cost / self.qty if self.qty else None

    def unrealized(self, mark: Decimal | None) -> Decimal:
        if not self.qty or mark is None:
            return ZERO
        return to_settle_unit(self.qty * mark - self.cost)


class Account:
    def __init__(self, balance: Decimal, settle_coin: str = "USDT") -> None:
        self.deposit = balance
        self.settle_coin = settle_coin
        self.cash = balance  # wallet balance: deposit + realized - fees + funding
        self.fees = ZERO
        self.funding = ZERO  # net funding received
        self.realized = ZERO
        self.positions: dict[str, PositionState] = {}

    def position(self, symbol: str) -> PositionState:
        return self.positions.get(symbol) or PositionState()

    def apply_fill(self, symbol: str, side: Side, price: Decimal, qty: Decimal, fee: Decimal) -> Decimal:
        """Book a fill; returns the realized price P&L it closed (before fees), in settle units."""
        pos = self.positions.setdefault(symbol, PositionState())
        signed = qty if side == "buy" else -qty
        realized = ZERO
        if pos.qty and (pos.qty > 0) != (signed > 0):
            closed = min(abs(signed), abs(pos.qty))
            direction = 1 if pos.qty > 0 else -1
            if closed == abs(pos.qty):
                removed_cost = pos.cost
            else:
                removed_cost = pos.cost * closed / abs(pos.qty)
            realized = to_settle_unit(direction * closed * price - removed_cost)
            pos.cost -= removed_cost
            pos.qty += direction * -closed
            signed += direction * closed
            pos.realized += realized
        if signed:
            pos.qty += signed
            pos.cost += signed * price
        if not pos.qty:
            pos.cost = ZERO
        self.realized += realized
        self.fees += fee
        self.cash += realized - fee
        return realized

    def apply_funding(self, amount: Decimal) -> None:
        self.funding += amount
        self.cash += amount

    def unrealized(self, marks: dict[str, Decimal]) -> Decimal:
        return sum((p.unrealized(marks.get(s)) for s, p in self.positions.items()), ZERO)

    def equity(self, marks: dict[str, Decimal]) -> Decimal:
        return self.cash + self.unrealized(marks)

    def open_positions(self) -> int:
        return sum(1 for p in self.positions.values() if p.qty)

    # checkpoint form: plain JSON-able values, decimals as strings
    def to_dict(self) -> dict[str, Any]:
        return {
            "deposit": str(self.deposit), "settle_coin": self.settle_coin, "cash": str(self.cash),
            "fees": str(self.fees), "realized": str(self.realized), "funding": str(self.funding),
            "positions": {s: [str(p.qty), str(p.cost), str(p.realized)] for s, p in self.positions.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Account":
        acc = cls(Decimal(d["deposit"]), d["settle_coin"])
        acc.cash, acc.fees, acc.realized = Decimal(d["cash"]), Decimal(d["fees"]), Decimal(d["realized"])
        acc.funding = Decimal(d.get("funding", "0"))
        acc.positions = {s: PositionState(*map(Decimal, v)) for s, v in d["positions"].items()}
        return acc
