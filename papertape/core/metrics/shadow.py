"""How far the paper venue's simulation of a session's exchange orders was from what the exchange did (issue 18),
per order type and symbol: the error of the paper fill price in basis points and in ticks (positive: paper was
better for the order's side than the exchange), its fill time, quantity and fee, and how often it guessed maker or
taker as the exchange did."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from statistics import mean, median

from schemas.vocabulary import Side


@dataclass(frozen=True)
class ShadowOrder:
    """One exchange order beside its paper simulation (the `shadow_comparison` view's row)."""

    order_id: str
    symbol: str
    side: Side
    type: str
    exchange_qty: Decimal
    exchange_price: Decimal
    exchange_fee: Decimal
    exchange_liquidity: str
    paper_qty: Decimal | None
    paper_price: Decimal | None
    paper_fee: Decimal | None
    paper_liquidity: str | None
    delay_ms: int | None  # the paper fill's time minus the exchange's

    def error(self) -> Decimal | None:
        """Paper's price advantage over the exchange's, in the quote coin (None: paper did not fill)."""
        if self.paper_price is None:
            return None
        return (self.exchange_price - self.paper_price) * (1 if self.side == "buy" else -1)


@dataclass(frozen=True)
class ShadowSummary:
    type: str
    symbol: str
    orders: int
    paper_filled: int  # of them, those the paper venue filled too
    mean_bps: float | None
    median_bps: float | None
    mean_ticks: float | None  # None: the symbol's tick size is unknown
    qty_difference: Decimal  # paper's filled quantity minus the exchange's, summed
    fee_difference: Decimal
    mean_delay_ms: float | None
    same_liquidity: float | None  # share of the filled orders whose maker/taker role paper guessed right


def summarize(orders: list[ShadowOrder], ticks: dict[str, Decimal]) -> list[ShadowSummary]:
    groups: dict[tuple[str, str], list[ShadowOrder]] = {}
    for o in orders:
        groups.setdefault((o.type, o.symbol), []).append(o)
    out = []
    for (kind, symbol), group in sorted(groups.items()):
        filled = [(o, e) for o in group if (e := o.error()) is not None]
        bps = [float(e / o.exchange_price * 10_000) for o, e in filled]
        tick = ticks.get(symbol)
        delays = [o.delay_ms for o, _ in filled if o.delay_ms is not None]
        out.append(ShadowSummary(
            kind, symbol, len(group), len(filled), mean(bps) if bps else None, median(bps) if bps else None,
            mean(float(e / tick) for _, e in filled) if filled and tick else None,
            sum(((o.paper_qty or Decimal(0)) - o.exchange_qty for o in group), Decimal(0)),
            sum(((o.paper_fee or Decimal(0)) - o.exchange_fee for o in group), Decimal(0)),
            mean(delays) if delays else None,
            sum(o.paper_liquidity == o.exchange_liquidity for o, _ in filled) / len(filled) if filled else None))
    return out
