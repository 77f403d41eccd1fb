"""Bybit USDT-perpetual margin, liquidation and funding rules as small pure functions. Exact decimals.

Sources (Bybit help center / API docs; read 2024-2026 through stored copies):

* RiskTier, tier_for, maintenance_margin, DEFAULT_TIERS -- "Maintenance Margin (USDT Contract)" and
  "Risk Limit (Perpetual and Futures Contracts)"; tier fields as in GET /v5/market/risk-limit
  (https://bybit-exchange.github.io/docs/v5/market/risk-limit: riskLimitValue, maintenanceMargin,
  mmDeduction, maxLeverage). MM = position value x MMR - MM deduction of the tier the value falls in.
* bankruptcy_price -- "Bankruptcy Price (USDT Contract)" (isolated): long = entry x (1 - 1/leverage),
  short = entry x (1 + 1/leverage); its example: long 1 BTC @ 10,000 at 50x -> 9,800.
* isolated_breached -- "Liquidation Price (USDT Contract)", isolated margin
  (https://testnet.bybit.com/en-US/help-center/s/article/Liquidation-Price-USDT-Contract):
  long  LP = entry - (IM - MM)/size - extra margin/size,
  short LP = entry + (IM - MM)/size + extra margin/size, position value = size x entry price,
  IM = position value / leverage ("Initial Margin (USDT Contract)"); its example: long 1 BTC @ 20,000,
  50x, MMR 0.5% -> 19,700. With "Liquidation Process (USDT Contract)": liquidated when the mark
  reaches LP, i.e. position margin + unrealized P&L at mark <= maintenance margin.
  Bybit's position IM and MM both hold an estimated fee to close ("Order Cost (USDT Contract)": qty x
  bankruptcy price x taker rate; a live /v5/position/list row confirms it: BTCUSDT 0.001 @ 60766.7,
  10x: positionIM 6.10674952 = 6.07667 + 0.03007952, positionMM 0.33391302 = 0.3038335 + 0.03007952);
  the same amount on both sides cancels out of the breach test.
* cross_breached -- "Trading Rules: Liquidation Process (Unified Trading Account)"
  (https://www.bybit.com/en/help-center/article/UTA-Trading-Rules): cross margin is liquidated when
  the account MM rate (MM / margin balance) reaches 100%.
* liquidation_fill -- "Liquidation Process (USDT Contract)" and the UTA isolated-mode LP page: "the
  position will be settled at the bankruptcy price"; the closing is charged the taker fee (it is the
  fee to close that the position margin already holds).
* funding_payment -- "Funding Fee Calculation"
  (https://www.bybit.com/en/help-center/article/Funding-fee-calculationDerivatives_Trading_Mechanism_UTA):
  funding fee = position value x funding rate, position value = qty x mark price at the funding
  instant; positive rate: longs pay shorts; with an 8h interval funding is at 00:00, 08:00, 16:00 UTC;
  only a position held at the funding instant pays or receives.

Choices where the sources are silent or disagree are marked "CHOICE" below.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Sequence

from papertape.core.instruments import RiskTier
from papertape.core.money import to_settle_unit
from schemas.vocabulary import MarginMode, PositionSide, Side

ZERO = Decimal(0)
LongOrShort = PositionSide | Side  # a position's side, or the side of the order that opens it


# Bybit BTCUSDT linear, the first two tiers of GET /v5/market/risk-limit as returned in 2024 (two
# independent captures agree: id 1 riskLimitValue 2000000, maintenanceMargin 0.005, maxLeverage 100,
# mmDeduction ""; id 2 2600000, 0.0056, 90, 1200). Deduction check: 2,000,000 x (0.0056 - 0.005) = 1200.
# Bybit revises these tables (a later capture has a 150x / 0.33% tier up to 300,000 first): load the
# live table for anything beyond a default.
DEFAULT_TIERS: tuple[RiskTier, ...] = (
    RiskTier(Decimal("2000000"), Decimal("0.005"), Decimal("0"), Decimal("100")),
    RiskTier(Decimal("2600000"), Decimal("0.0056"), Decimal("1200"), Decimal("90")),
)


def _sign(side: LongOrShort) -> int:
    """+1 for a long ("long"/"buy"), -1 for a short ("short"/"sell")."""
    s = side.lower()
    if s in ("long", "buy"):
        return 1
    if s in ("short", "sell"):
        return -1
    raise ValueError(f"side must be long/short (or buy/sell), got {side!r}")


def tier_for(tiers: Sequence[RiskTier], position_value: Decimal) -> RiskTier:
    """The tier whose limit is the first >= |position_value| (a value equal to a limit is in that tier).
    Raises ValueError above the last limit: Bybit rejects orders beyond the risk limit."""
    v = abs(position_value)
    for t in sorted(tiers, key=lambda t: t.limit):
        if v <= t.limit:
            return t
    raise ValueError(f"position value {v} exceeds the largest risk limit")


def maintenance_margin(position_value: Decimal, tiers: Sequence[RiskTier] = DEFAULT_TIERS) -> Decimal:
    """MM = |position value| x MMR - MM deduction of its tier, exact. Excludes the fee to close."""
    v = abs(position_value)
    t = tier_for(tiers, v)
    return v * t.mmr - t.mm_deduction


def bankruptcy_price(side: LongOrShort, entry_price: Decimal, leverage: Decimal,
                     extra_margin: Decimal = ZERO, qty: Decimal | None = None) -> Decimal:
    """Isolated: the price at which the position margin (IM, plus any extra margin) is all lost.
    long = entry x (1 - 1/lev) - extra/qty; short = entry x (1 + 1/lev) + extra/qty.
    Not rounded to the tick (CHOICE: Bybit's old inverse page rounds long up / short down to 0.5;
    nothing says so for USDT contracts, and the API's bustPrice/liqPrice are not on the tick)."""
    if leverage <= 0:
        raise ValueError("leverage must be positive")
    d = _sign(side)
    price = entry_price * (1 - d / Decimal(leverage))
    if extra_margin:
        if not qty:
            raise ValueError("qty is needed to spread extra margin")
        price -= d * extra_margin / abs(qty)
    return price


def isolated_breached(side: LongOrShort, qty: Decimal, entry_price: Decimal, mark: Decimal,
                      position_margin: Decimal, tiers: Sequence[RiskTier] = DEFAULT_TIERS,
                      close_fee: Decimal = ZERO) -> bool:
    """True when position margin + unrealized P&L at the mark <= maintenance margin (MM on the entry
    value, as in the LP formula, so this flips exactly at the liquidation price). Pass close_fee when
    position_margin includes Bybit's estimated fee to close: it is then added to the MM as well.
    position_margin: the IM (entry value / leverage) plus any extra margin added to the position."""
    d = _sign(side)
    q = abs(qty)
    upnl = d * q * (mark - entry_price)
    return position_margin + upnl <= maintenance_margin(q * entry_price, tiers) + close_fee


def cross_breached(equity: Decimal, total_maintenance_margin: Decimal) -> bool:
    """Cross margin: account MM rate = MM / margin balance reaches 100%, i.e. equity <= total MM.
    CHOICE: with no maintenance margin (no positions) there is nothing to liquidate: False."""
    return total_maintenance_margin > 0 and equity <= total_maintenance_margin


def liquidation_fill(side: LongOrShort, qty: Decimal, entry_price: Decimal, leverage: Decimal, mark: Decimal,
                     taker_rate: Decimal, margin_mode: MarginMode = "isolated",
                     extra_margin: Decimal = ZERO) -> tuple[Decimal, Decimal]:
    """(price, fee) of the liquidation close; fee = |qty| x price x taker rate in settle units.
    isolated: Bybit settles the position at its bankruptcy price (published).
    cross: CHOICE, the mark price. Bybit takes a cross position over at the account's bankruptcy
    price, which depends on the whole account's equity (not known here); at the trigger it sits a
    hair past the mark, so the mark is the nearest per-position stand-in."""
    mode = margin_mode.lower()
    if mode == "isolated":
        price = bankruptcy_price(side, entry_price, leverage, extra_margin, qty)
    elif mode == "cross":
        price = mark
    else:
        raise ValueError(f"margin_mode must be isolated or cross, got {margin_mode!r}")
    return price, to_settle_unit(abs(qty) * price * taker_rate)


def funding_payment(signed_qty: Decimal, mark_price: Decimal, rate: Decimal) -> Decimal:
    """Amount added to the account at a funding instant (negative when paid):
    -sign(qty) x |qty| x mark x rate, i.e. positive rate: longs pay, shorts receive.
    CHOICE: Bybit publishes no rounding for the funding fee; rounded half-up (away from zero on a
    tie, as to_settle_unit does) to the 1e-8 settle unit."""
    return to_settle_unit(-signed_qty * mark_price * rate) + ZERO  # + ZERO turns -0 into 0
