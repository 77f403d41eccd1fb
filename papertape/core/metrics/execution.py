"""Execution cost: what fills paid against the mid price at the order's decision and at its arrival at the
venue. Against the decision's mid it is the whole cost of trading (latency and slippage); against the arrival's
mid, slippage alone (the book's spread and depth); their difference is what the latency cost."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from papertape.core.metrics.trades import ZERO, FillRecord


@dataclass(frozen=True, slots=True)
class OrderMids:
    decision: Decimal | None  # the mid when the order was decided (or, for a stop, triggered)
    arrival: Decimal | None  # the mid when it reached the venue


@dataclass(frozen=True, slots=True)
class ExecutionCost:
    vs_decision: Decimal | None  # settle coin; positive: paid more (bought higher, sold lower) than the mid
    vs_arrival: Decimal | None  # None: no fill had both mids
    vs_decision_bps: float | None  # of the traded notional at the mid
    vs_arrival_bps: float | None
    priced_fills: int  # fills whose order has both mids
    unpriced_fills: int  # fills left out: no quote (bars, DEX) before their decision or arrival


def fill_cost(fill: FillRecord, mid: Decimal) -> Decimal:
    """What the fill paid over `mid`: positive when worse than the mid."""
    return (fill.price - mid) * fill.qty * (1 if fill.side == "buy" else -1)


def execution_cost(fills: list[FillRecord], mids: dict[str, OrderMids]) -> ExecutionCost:
    vs_decision = vs_arrival = notional_d = notional_a = ZERO
    priced = 0
    for f in fills:
        m = mids.get(f.order_id)
        if m is None or m.decision is None or m.arrival is None:
            continue
        priced += 1
        vs_decision += fill_cost(f, m.decision)
        vs_arrival += fill_cost(f, m.arrival)
        notional_d += m.decision * f.qty
        notional_a += m.arrival * f.qty
    if not priced:
        return ExecutionCost(None, None, None, None, 0, len(fills))
    return ExecutionCost(vs_decision, vs_arrival,
                         float(vs_decision / notional_d * 10_000) if notional_d else None,
                         float(vs_arrival / notional_a * 10_000) if notional_a else None,
                         priced, len(fills) - priced)
