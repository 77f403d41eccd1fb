"""A session's config: an isolated paper account's money, venue, symbols, strategy, intel level, risk limits and
venue rules, and what of it may change while the session runs."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from papertape.core.instruments import Instrument
from papertape.core.session.auto_close import AutoCloseSettings
from papertape.core.session.intel import INTEL_LEVELS, IntelLevel
from papertape.core.session.risk import RiskSettings
from papertape.core.venue.dex import DexSettings
from papertape.core.venue.fees import FeeSchedule
from papertape.core.venue.fill_settings import FillSettings
from schemas.vocabulary import BYBIT_VENUES, Category, MarginMode, VenueKind


class SessionConfig(BaseModel):
    """A session: an isolated paper account with its own money, strategy and risk limits. `position_fraction`,
    `min_confidence` and `leverage` default to the intel level's (papertape/core/session/intel.py)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    balance: Decimal = Field(default=Decimal(10_000), gt=0)
    settle_coin: str = "USDT"
    # paper: Bybit perpetuals and spot on papertape's paper venue; dex: DEX tokens; bybit_demo, bybit_testnet,
    # bybit_mainnet: real orders on Bybit, which then matches, liquidates and settles funding itself
    venue: VenueKind = "paper"
    symbols: list[str] = Field(default_factory=lambda: ["*"])  # "*" = every symbol of the venue on the tape
    strategy: str = "trend_following"  # a built-in, or a user's class by dotted path (package.module:Class)
    params: dict[str, Any] = Field(default_factory=dict)
    intel: int = Field(default=5, ge=1, le=10)
    position_fraction: Decimal | None = Field(default=None, gt=0, le=1)  # of equity per position
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    auto_close: AutoCloseSettings = Field(default_factory=AutoCloseSettings)
    latency_ms: int = Field(default=50, ge=0)  # decision to venue (orders, cancels, amends), in event time
    maker_fee: Decimal = Decimal("0.0002")  # Bybit VIP0 perpetuals
    taker_fee: Decimal = Decimal("0.00055")
    spot_maker_fee: Decimal = Decimal("0.001")  # Bybit VIP0 spot
    spot_taker_fee: Decimal = Decimal("0.001")
    fee_overrides: dict[str, tuple[Decimal, Decimal]] = Field(default_factory=dict)  # symbol -> (maker, taker)
    leverage: Decimal | None = Field(default=None, gt=0)  # perpetuals; capped by each instrument's maximum
    leverage_by_symbol: dict[str, Decimal] = Field(default_factory=dict)
    margin_mode: MarginMode = "cross"
    funding: bool = True  # settle perpetual funding at each funding time
    liquidation: bool = True
    fill: FillSettings = Field(default_factory=FillSettings)
    dex: DexSettings = Field(default_factory=DexSettings)
    equity_every_ms: int = Field(default=60_000, gt=0)
    reconcile_every_s: int = Field(default=60, gt=0)  # a session on an exchange: how often it is reconciled

    @model_validator(mode="after")
    def _exchange_does_its_own(self) -> "SessionConfig":
        """On an exchange, funding and liquidation are the exchange's: papertape books what it reports."""
        if self.venue in BYBIT_VENUES and (self.funding or self.liquidation):
            self.funding = self.liquidation = False
        return self

    @property
    def level(self) -> IntelLevel:
        return INTEL_LEVELS[self.intel]

    @property
    def sizing_fraction(self) -> Decimal:
        return self.level.position_fraction if self.position_fraction is None else self.position_fraction

    @property
    def confidence_threshold(self) -> float:
        return self.level.min_confidence if self.min_confidence is None else self.min_confidence

    @property
    def default_leverage(self) -> Decimal:
        return self.level.leverage if self.leverage is None else self.leverage

    def trades(self, symbol: str, category: Category) -> bool:
        return self.venue_lists(category) and ("*" in self.symbols or symbol in self.symbols)

    def venue_lists(self, category: Category) -> bool:
        """Whether the session's venue has instruments of `category`: DEX tokens only on the DEX model, Bybit's
        USDT perpetuals only (of its categories) on Bybit itself."""
        if self.venue in BYBIT_VENUES:
            return category == "linear"
        return (category == "dex") == (self.venue == "dex")

    def fee_schedule(self, instruments: dict[str, Instrument]) -> FeeSchedule:
        spot = {sym: (self.spot_maker_fee, self.spot_taker_fee) for sym, i in instruments.items()
                if i.category == "spot"}
        dex = {sym: (Decimal(0), Decimal(0)) for sym, i in instruments.items() if i.category == "dex"}
        return FeeSchedule(self.maker_fee, self.taker_fee, {**spot, **dex, **self.fee_overrides})


# What a running session may change (control `config`); the rest makes a new session.
RECONFIGURABLE = {"symbols", "strategy", "params", "intel", "position_fraction", "min_confidence", "risk",
                  "auto_close", "latency_ms", "leverage", "leverage_by_symbol", "equity_every_ms"}


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied; nested settings (risk, auto_close, params) change key by key, except a new
    strategy's params, which replace the old strategy's."""
    out = dict(base)
    for k, v in changes.items():
        whole = k == "params" and changes.get("strategy", base.get("strategy")) != base.get("strategy")
        out[k] = merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) and not whole else v
    return out
