"""Auto-close: a stop-loss and a take-profit as real child orders at the venue (a reduce-only OCO bracket on the
entry), and a maximum hold time after which the session closes the position at market, in event time.

The bracket's prices are set from the price the session decided at (as a trader's "-5% / +10%" is set on an
exchange's order form), rounded to the tick away from the entry so the distance is never less than asked.
"""
from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from pydantic import Field

from papertape.core.instruments import Instrument
from papertape.core.session.risk import Rules
from schemas.vocabulary import Side


class AutoCloseSettings(Rules):
    stop_loss: Decimal | None = Field(default=Decimal("0.05"), gt=0, lt=1)  # loss from the entry price
    take_profit: Decimal | None = Field(default=Decimal("0.10"), gt=0)  # gain from the entry price
    max_hold_ms: int | None = Field(default=86_400_000, gt=0)  # 24 h

    def bracket(self, side: Side, price: Decimal, inst: Instrument) -> tuple[Decimal | None, Decimal | None]:
        """(stop-loss, take-profit) trigger prices of an entry on `side` at about `price`."""
        long = side == "buy"
        sl = tp = None
        if self.stop_loss is not None:
            move = 1 - self.stop_loss if long else 1 + self.stop_loss
            sl = inst.round_price(price * move, ROUND_FLOOR if long else ROUND_CEILING)
            sl = sl if sl > 0 else None
        if self.take_profit is not None:
            move = 1 + self.take_profit if long else 1 - self.take_profit
            tp = inst.round_price(price * move, ROUND_CEILING if long else ROUND_FLOOR)
            tp = tp if tp > 0 else None
        return sl, tp
