"""Places, cancels and amends at given event times: for tests, and to replay a known order sequence."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from papertape.core.strategy import AmendIntent, CancelIntent, Intent, PlaceOrder, Strategy
from schemas.market import Tick

_DECIMAL_FIELDS = ("qty", "price", "trigger_price", "trail_amount", "trail_percent", "activation_price", "stop_loss",
                   "take_profit")


def _decimals(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (Decimal(str(v)) if k in _DECIMAL_FIELDS and v is not None else v) for k, v in d.items()}


class Scripted(Strategy):
    """Each item has `at` and either the fields of an order (`id` names it), or `cancel: id`, or `amend: id` with
    the new qty, price or trigger_price."""

    name = "scripted"

    def __init__(self, orders: list[dict[str, Any]]) -> None:
        self.orders = sorted(orders, key=lambda o: o["at"])
        self.next = 0

    def on_tick(self, tick: Tick) -> list[Intent]:
        out: list[Intent] = []
        while self.next < len(self.orders) and self.orders[self.next]["at"] <= tick.ts:
            item = _decimals({k: v for k, v in self.orders[self.next].items() if k != "at"})
            self.next += 1
            reasoning = item.pop("reasoning", "scripted")
            if "cancel" in item:
                out.append(CancelIntent(item["cancel"], reasoning))
            elif "amend" in item:
                out.append(AmendIntent(item.pop("amend"), reasoning=reasoning, **item))
            else:
                out.append(PlaceOrder(reasoning=reasoning, client_id=item.pop("id", None), **item))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"next": self.next}

    def load(self, state: dict[str, Any]) -> None:
        self.next = state["next"]
