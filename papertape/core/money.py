"""Exact money: the settle coin's smallest unit, and amounts rounded to it (half-up, as Bybit rounds fees)."""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# The settle coin's smallest unit papertape accounts in (Bybit shows USDT fees with 8 decimals).
SETTLE_UNIT = Decimal("0.00000001")


def to_settle_unit(amount: Decimal) -> Decimal:
    return amount.quantize(SETTLE_UNIT, rounding=ROUND_HALF_UP)
