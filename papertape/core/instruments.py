"""Instrument specs: tick size, lot step, minimums. Used to validate and round every order."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

from schemas.vocabulary import Category


@dataclass(frozen=True)
class RiskTier:
    """A row of a symbol's risk limit table (Bybit's margin tiers: papertape/core/venue/margin.py)."""

    limit: Decimal  # largest position value (settle coin) in this tier, inclusive
    mmr: Decimal  # maintenance margin rate
    mm_deduction: Decimal  # subtracted so MM is continuous at tier edges
    max_leverage: Decimal


@dataclass(frozen=True)
class Instrument:
    symbol: str
    tick_size: Decimal
    lot_step: Decimal
    min_qty: Decimal
    min_notional: Decimal
    settle_coin: str = "USDT"
    max_leverage: Decimal = Decimal(100)
    category: Category = "linear"  # Bybit's "linear" (USDT perpetuals) or "spot", or "dex" (a DEX token)
    funding_interval_min: int = 480  # 0: no funding (spot)
    max_qty: Decimal | None = None  # largest limit order; None: unknown
    base_coin: str = ""
    quote_coin: str = ""
    status: str = "Trading"
    risk_tiers: tuple[RiskTier, ...] = ()  # Bybit's risk limit table; empty: one tier from max_leverage (margin)

    def round_qty_down(self, qty: Decimal) -> Decimal:
        return (qty / self.lot_step).to_integral_value(rounding=ROUND_DOWN) * self.lot_step

    def round_price(self, price: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
        """Price on the tick grid; pass ROUND_DOWN / ROUND_UP (decimal module) to choose the side."""
        return (price / self.tick_size).to_integral_value(rounding=rounding) * self.tick_size

    def on_tick(self, price: Decimal) -> bool:
        return price % self.tick_size == 0

    def on_lot(self, qty: Decimal) -> bool:
        return qty % self.lot_step == 0


def _d(x: str) -> Decimal:
    return Decimal(x)


# Bybit linear USDT perpetual specs of the symbols in the bundled recording (instruments-info, 2024).
DEFAULT_INSTRUMENTS: dict[str, Instrument] = {
    i.symbol: i
    for i in [
        Instrument("BTCUSDT", _d("0.10"), _d("0.001"), _d("0.001"), _d("5")),
        Instrument("ETHUSDT", _d("0.01"), _d("0.01"), _d("0.01"), _d("5")),
    ]
}
