"""Bybit USDT-perpetual margin, liquidation and funding rules as small pure functions. Exact decimals.

Sources (Bybit help center / API docs; read 2024-2026 through stored copies):

* RiskTier, tier_for, maintenance_margin, DEFAULT_TIERS -- "Maintenance Margin (USDT Contract)" and
  "Risk Limit (Perpetual and Futures Contracts)"; tier fields as in GET /v5/market/risk-limit
  (https://bybit-exchange.github.io/docs/v5/market/risk-limit: riskLimitValue, maintenanceMargin,
  mmDeduction, maxLeverage). MM = position value x MMR - MM deduction of the tier the value falls in.
* initial_margin -- "Initial Margin (USDT Contract)": IM = position value / leverage.
* bankruptcy_price -- "Bankruptcy Price (USDT Contract)" (isolated): long = entry x (1 - 1/leverage),
  short = entry x (1 + 1/leverage); its example: long 1 BTC @ 10,000 at 50x -> 9,800.
* estimated_close_fee -- "Order Cost (USDT Contract)" / "Initial Margin (USDT Perpetual)": fee to close
  = qty x bankruptcy price x taker rate. Bybit adds it to BOTH the position IM and MM it reports; a
  live /v5/position/list row confirms it (BTCUSDT 0.001 @ 60766.7, 10x: positionIM 6.10674952 =
  6.07667 + 0.03007952, positionMM 0.33391302 = 0.3038335 + 0.03007952).
* liquidation_price -- "Liquidation Price (USDT Contract)", isolated margin
  (https://testnet.bybit.com/en-US/help-center/s/article/Liquidation-Price-USDT-Contract):
  long  LP = entry - (IM - MM)/size - extra margin/size,
  short LP = entry + (IM - MM)/size + extra margin/size, position value = size x entry price;
  its example: long 1 BTC @ 20,000, 50x, MMR 0.5% -> 19,700.
* isolated_breached -- same page and "Liquidation Process (USDT Contract)": liquidated when the mark
  reaches LP, i.e. position margin + unrealized P&L at mark <= maintenance margin.
* cross_breached -- "Trading Rules: Liquidation Process (Unified Trading Account)"
  (https://www.bybit.com/en/help-center/article/UTA-Trading-Rules): cross margin is liquidated when
  the account MM rate (MM / margin balance) reaches 100%.
* liquidation_fill -- "Liquidation Process (USDT Contract)" and the UTA isolated-mode LP page: "the
  position will be settled at the bankruptcy price"; the closing is charged the taker fee (it is the
  fee to close that the position margin already holds).
* funding_payment, funding_times -- "Funding Fee Calculation"
  (https://www.bybit.com/en/help-center/article/Funding-fee-calculationDerivatives_Trading_Mechanism_UTA):
  funding fee = position value x funding rate, position value = qty x mark price at the funding
  instant; positive rate: longs pay shorts; with an 8h interval funding is at 00:00, 08:00, 16:00 UTC;
  only a position held at the funding instant pays or receives.

Choices where the sources are silent or disagree are marked "CHOICE" below.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Sequence

from .fees import to_settle_unit

ZERO = Decimal(0)
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class RiskTier:
    limit: Decimal  # largest position value (settle coin) in this tier, inclusive
    mmr: Decimal  # maintenance margin rate
    mm_deduction: Decimal  # subtracted so MM is continuous at tier edges
    max_leverage: Decimal


# Bybit BTCUSDT linear, the first two tiers of GET /v5/market/risk-limit as returned in 2024 (two
# independent captures agree: id 1 riskLimitValue 2000000, maintenanceMargin 0.005, maxLeverage 100,
# mmDeduction ""; id 2 2600000, 0.0056, 90, 1200). Deduction check: 2,000,000 x (0.0056 - 0.005) = 1200.
# Bybit revises these tables (a later capture has a 150x / 0.33% tier up to 300,000 first): load the
# live table for anything beyond a default.
DEFAULT_TIERS: tuple[RiskTier, ...] = (
    RiskTier(Decimal("2000000"), Decimal("0.005"), Decimal("0"), Decimal("100")),
    RiskTier(Decimal("2600000"), Decimal("0.0056"), Decimal("1200"), Decimal("90")),
)


def _sign(side: str) -> int:
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


def initial_margin(position_value: Decimal, leverage: Decimal) -> Decimal:
    """IM = |position value| / leverage, exact (a threshold, not a posting: not rounded)."""
    if leverage <= 0:
        raise ValueError("leverage must be positive")
    return abs(position_value) / Decimal(leverage)


def maintenance_margin(position_value: Decimal, tiers: Sequence[RiskTier] = DEFAULT_TIERS) -> Decimal:
    """MM = |position value| x MMR - MM deduction of its tier, exact. Excludes the fee to close."""
    v = abs(position_value)
    t = tier_for(tiers, v)
    return v * t.mmr - t.mm_deduction


def bankruptcy_price(side: str, entry_price: Decimal, leverage: Decimal,
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


def estimated_close_fee(side: str, qty: Decimal, entry_price: Decimal, leverage: Decimal,
                        taker_rate: Decimal) -> Decimal:
    """Fee to close at the bankruptcy price, settle units: |qty| x bankruptcy price x taker rate.
    Bybit holds it in the position IM and adds it to the position MM (so it cancels out of LP)."""
    return to_settle_unit(abs(qty) * bankruptcy_price(side, entry_price, leverage) * taker_rate)


def liquidation_price(side: str, entry_price: Decimal, qty: Decimal, leverage: Decimal,
                      tiers: Sequence[RiskTier] = DEFAULT_TIERS, extra_margin: Decimal = ZERO) -> Decimal:
    """Isolated liquidation price (mark-price trigger), exact, per "Liquidation Price (USDT Contract)":
    long LP = entry - (IM - MM)/qty - extra/qty, short LP = entry + (IM - MM)/qty + extra/qty, with
    IM and MM on the entry position value and the tier that value falls in.

    Fee to close: Bybit's UTA page writes IM and MM each "+ estimated fee to close"; the same amount
    on both sides cancels in IM - MM, so it is left out (the live positionIM/positionMM agree).
    CHOICE: the newer UTA page shows extra margin divided by (1 +/- taker rate) for inverse
    contracts; for USDT the published formula spreads it plainly (extra/qty), which is used here.
    A long whose LP would be <= 0 has none (Bybit shows no price): 0 is returned."""
    q = abs(qty)
    if not q:
        raise ValueError("qty must be non-zero")
    d = _sign(side)
    value = q * entry_price
    im = initial_margin(value, leverage)
    mm = maintenance_margin(value, tiers)
    price = entry_price - d * (im - mm) / q - d * extra_margin / q
    return max(price, ZERO)


def isolated_breached(side: str, qty: Decimal, entry_price: Decimal, mark: Decimal,
                      position_margin: Decimal, tiers: Sequence[RiskTier] = DEFAULT_TIERS,
                      close_fee: Decimal = ZERO) -> bool:
    """True when position margin + unrealized P&L at the mark <= maintenance margin (MM on the entry
    value, as in the LP formula, so this flips exactly at liquidation_price). Pass close_fee when
    position_margin includes Bybit's estimated fee to close: it is then added to the MM as well."""
    d = _sign(side)
    q = abs(qty)
    upnl = d * q * (mark - entry_price)
    return position_margin + upnl <= maintenance_margin(q * entry_price, tiers) + close_fee


def cross_breached(equity: Decimal, total_maintenance_margin: Decimal) -> bool:
    """Cross margin: account MM rate = MM / margin balance reaches 100%, i.e. equity <= total MM.
    CHOICE: with no maintenance margin (no positions) there is nothing to liquidate: False."""
    return total_maintenance_margin > 0 and equity <= total_maintenance_margin


def liquidation_fill(side: str, qty: Decimal, entry_price: Decimal, leverage: Decimal, mark: Decimal,
                     taker_rate: Decimal, margin_mode: str = "isolated",
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


def funding_times(after_ts: int, up_to_ts: int, interval_min: int) -> list[int]:
    """Funding instants (ms since epoch, UTC) in (after_ts, up_to_ts], on each UTC day's grid of
    interval_min minutes from 00:00 (480 -> 00:00, 08:00, 16:00). An interval that does not divide
    the day restarts at the next 00:00 (CHOICE: Bybit's intervals 60/120/240/480 all divide it).
    interval_min <= 0 means no funding (spot): []."""
    if interval_min <= 0 or up_to_ts <= after_ts:
        return []
    step = interval_min * 60_000
    if _DAY_MS % step == 0:  # one global grid, since the epoch is itself 00:00 UTC
        first = (after_ts // step + 1) * step
        return list(range(first, up_to_ts + 1, step))
    out: list[int] = []
    day = (after_ts // _DAY_MS) * _DAY_MS
    while day <= up_to_ts:
        for t in range(day, day + _DAY_MS, step):
            if after_ts < t <= up_to_ts:
                out.append(t)
        day += _DAY_MS
    return out
