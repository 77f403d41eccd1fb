"""Trading fees: maker or taker by how the fill happened, with per-symbol overrides."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from papertape.core.money import to_settle_unit
from schemas.vocabulary import LiquidityRole


@dataclass(frozen=True)
class FeeSchedule:
    maker: Decimal = Decimal("0.0002")  # Bybit VIP0 USDT perpetuals
    taker: Decimal = Decimal("0.00055")
    overrides: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # symbol -> (maker, taker)

    def rate(self, symbol: str, liquidity: LiquidityRole) -> Decimal:
        maker, taker = self.overrides.get(symbol, (self.maker, self.taker))
        return maker if liquidity == "maker" else taker

    def fee(self, symbol: str, liquidity: LiquidityRole, price: Decimal, qty: Decimal) -> tuple[Decimal, Decimal]:
        """(rate, fee) for a fill: fee = price x qty x rate, rounded to the settle unit."""
        rate = self.rate(symbol, liquidity)
        return rate, to_settle_unit(price * qty * rate)
