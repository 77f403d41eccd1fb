"""Price alert rules, pure: a user's rule (a symbol crossing a level, or moving X% within a window of event time)
and the state that evaluates it over a symbol's marks."""
from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from schemas.vocabulary import Severity


class PriceRule(BaseModel):
    """One rule: `above`/`below` fire when the mark crosses the level; `move_pct` fires when the mark moved that
    many percent (either way) within `window_s` of event time."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    symbol: str = Field(min_length=1, max_length=64)
    above: Decimal | None = Field(default=None, gt=0)
    below: Decimal | None = Field(default=None, gt=0)
    move_pct: Decimal | None = Field(default=None, gt=0)
    window_s: float = Field(default=300.0, gt=0)
    severity: Severity = "warning"
