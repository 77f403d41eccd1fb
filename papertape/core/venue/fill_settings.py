"""The realism switches of the paper venue's fill model (papertape/core/venue/fill_model.py), apart from it: a pydantic
model, which the compiled core leaves in Python (papertape/native.py)."""
from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field


class FillSettings(BaseModel):
    """The realism switches of the paper venue; every one can be turned off."""

    model_config = ConfigDict(extra="forbid")

    book_walk: bool = True  # takers walk the displayed depth; off: every take fills whole at the touch
    queue_position: bool = True  # a maker at a price fills after the volume ahead of it; off: at the first print
    partial_fills: bool = True  # makers fill only the traded or displayed volume; off: whole on the first fill
    quote_through: bool = True  # a maker fills when the opposite quote reaches its price
    max_slippage_bps: Decimal = Field(default=Decimal(500), ge=0)  # takers stay this close to the touch; 0: no cap
    assumed_spread_bps: Decimal = Field(default=Decimal(2), ge=0)  # when only a last price is known
