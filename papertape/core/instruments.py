"""Instrument specs: tick size, lot step, minimums. Used to validate and round every order."""
from __future__ import annotations

import re
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


# Inverse (coin-margined) contracts by their unambiguous names: Binance COIN-M's BTCUSD_PERP, BTCUSD_250627. Their
# P&L and fees are in the coin, qty x (1/entry - 1/exit), which papertape's linear accounting would misprice by
# orders of magnitude: they are refused. (A bare BTCUSD is not refused: Coinbase's spot pair, or a USD-settled
# linear contract, has that name too; Bybit's inverse contracts are never listed, papertape reads its linear ones.)
INVERSE_SYMBOL = re.compile(r"^[A-Z0-9]+USD_(?:PERP|\d{6})$")


def inverse_reason(symbol: str) -> str:
    """Why `symbol` cannot be traded as a linear contract, or ''."""
    if INVERSE_SYMBOL.match(symbol):
        return (f"{symbol} is an inverse (coin-margined) contract: its P&L and fees are in the coin, which papertape's "
                "linear (USDT) accounting would misprice; it is refused")
    return ""


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

    def __post_init__(self) -> None:
        if self.category == "linear" and (why := inverse_reason(self.symbol)):
            raise ValueError(why)

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
