"""Drift between two runs of a strategy (a paper session on a live tape and a replay of the same period, or two
configs on one tape): their round trips matched one to one, and the difference of their P&L decomposed into terms
that add up to it exactly.

P&L of a run = its equity at the end - its deposit = the sum of its trades' net P&L (realized - fees + funding)
+ the unrealized P&L of what is open at the end. For a matched pair of trades (same symbol and side, opened
within `tolerance_ms`), with Q the quantity closed, E and X the effective entry and exit prices (gross =
dir x Q x (X - E)), M the mid when the orders reached the venue:
  entry_timing   = -dir x Q_b x (M_in_a - M_in_b)              the market moved between the two arrivals
  entry_slippage = -dir x Q_b x ((E_a - M_in_a) - (E_b - M_in_b))  what the book gave against that mid
  exit_timing    =  dir x Q_b x (M_out_a - M_out_b)
  exit_slippage  =  the rest of the gross difference: dir x Q_b x ((X_a - M_out_a) - (X_b - M_out_b))
  size           =  dir x (Q_a - Q_b) x (X_a - E_a)             a different quantity
  fees, funding  =  their differences (fees with their sign: paying more is negative)
Without the mids (no quotes: bars, DEX tokens) the timing terms are 0 and the price difference is slippage.
Trades of one run only count whole, as `only_a` and `only_b`; `unrealized` is the difference of what was open.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from papertape.core.metrics.execution import OrderMids
from papertape.core.metrics.trades import ZERO, Leg, Trade, average_price, quantity

TERMS = {  # each term of a P&L difference, and what it is
    "entry_timing": "the market moved between the two entries' arrivals (latency, signal timing)",
    "entry_slippage": "the entries' fill prices against the mid at arrival",
    "exit_timing": "the market moved between the two exits' arrivals",
    "exit_slippage": "the exits' fill prices against the mid at arrival",
    "size": "a different quantity traded",
    "fees": "fees (paying more is negative)",
    "funding": "funding received minus paid",
    "only_a": "trades of A that B did not make",
    "only_b": "trades of B that A did not make (their P&L, negated)",
    "unrealized": "positions still open at the end",
}
SCALE = Decimal("1e-18")


@dataclass(frozen=True, slots=True)
class Run:
    """One side of a comparison: a session's trades and what its P&L adds up from."""

    label: str
    trades: list[Trade]
    mids: dict[str, OrderMids]
    deposit: Decimal
    end_equity: Decimal
    unrealized: Decimal  # of the positions open at the end

    @property
    def pnl(self) -> Decimal:
        return self.end_equity - self.deposit


@dataclass(slots=True)
class Pair:
    a: Trade | None
    b: Trade | None
    terms: dict[str, Decimal] = field(default_factory=dict)

    @property
    def difference(self) -> Decimal:
        return sum(self.terms.values(), ZERO)


@dataclass(frozen=True, slots=True)
class Drift:
    a: Run
    b: Run
    pairs: list[Pair]
    totals: dict[str, Decimal]  # per term, over every pair; they add up to `difference`

    @property
    def difference(self) -> Decimal:
        return self.a.pnl - self.b.pnl

    @property
    def explained(self) -> Decimal:
        return sum(self.totals.values(), ZERO)


def match(a: list[Trade], b: list[Trade], tolerance_ms: int) -> list[Pair]:
    """Each trade of `a`, in the order they opened, with the unmatched trade of `b` of its symbol and side that
    opened nearest to it (within `tolerance_ms`); then the trades of `b` left over."""
    free = list(b)
    pairs = []
    for t in sorted(a, key=lambda t: (t.open_ts, t.symbol)):
        near = [u for u in free if u.symbol == t.symbol and u.side == t.side
                and abs(u.open_ts - t.open_ts) <= tolerance_ms]
        best = min(near, key=lambda u: (abs(u.open_ts - t.open_ts), u.open_ts), default=None)
        if best is not None:
            free.remove(best)
        pairs.append(Pair(t, best))
    pairs += [Pair(None, u) for u in free]
    return sorted(pairs, key=lambda p: min(t.open_ts for t in (p.a, p.b) if t is not None))


def compare(a: Run, b: Run, tolerance_ms: int = 60_000) -> Drift:
    pairs = match(a.trades, b.trades, tolerance_ms)
    for p in pairs:
        if p.a is not None and p.b is not None:
            p.terms = _pair_terms(p.a, p.b, a.mids, b.mids)
        elif p.a is not None:
            p.terms = {"only_a": p.a.net}
        elif p.b is not None:
            p.terms = {"only_b": -p.b.net}
    totals = {name: sum((p.terms.get(name, ZERO) for p in pairs), ZERO) for name in TERMS}
    totals["unrealized"] = a.unrealized - b.unrealized
    return Drift(a, b, pairs, totals)


def _pair_terms(a: Trade, b: Trade, mids_a: dict[str, OrderMids], mids_b: dict[str, OrderMids]) -> dict[str, Decimal]:
    direction = 1 if a.side == "long" else -1
    qa, qb = quantity(a.exits), quantity(b.exits)
    terms = {"fees": -(a.fees - b.fees), "funding": a.funding - b.funding}
    gross = a.gross - b.gross
    if not qa or not qb:  # one of them closed nothing yet: no prices to compare, the quantity differs
        return terms | {"size": gross}
    xa, xb = average_price(a.exits), average_price(b.exits)
    assert xa is not None and xb is not None  # both closed some
    ea, eb = xa - a.gross / (direction * qa), xb - b.gross / (direction * qb)  # effective entries
    m_in_a, m_in_b = _arrival_mid(a.entries, mids_a), _arrival_mid(b.entries, mids_b)
    m_out_a, m_out_b = _arrival_mid(a.exits, mids_a), _arrival_mid(b.exits, mids_b)
    entry_timing = exit_timing = ZERO
    if m_in_a is not None and m_in_b is not None:
        entry_timing = -direction * qb * (m_in_a - m_in_b)
    if m_out_a is not None and m_out_b is not None:
        exit_timing = direction * qb * (m_out_a - m_out_b)
    entry_price = -direction * qb * (ea - eb)
    size = direction * (qa - qb) * (xa - ea)
    fitted = {"entry_timing": entry_timing, "entry_slippage": entry_price - entry_timing, "exit_timing": exit_timing,
              "size": size}
    fitted = {k: v.quantize(SCALE) for k, v in fitted.items()}
    # what is left of the gross difference: the exit's slippage (exact, so that the terms add up)
    return terms | fitted | {"exit_slippage": gross - sum(fitted.values(), ZERO)}


def _arrival_mid(legs: list[Leg], mids: dict[str, OrderMids]) -> Decimal | None:
    """The quantity-weighted mid at the arrival of the legs' orders; None if one of them has none."""
    total = ZERO
    for leg in legs:
        m = mids.get(leg.order_id)
        if m is None or m.arrival is None:
            return None
        total += m.arrival * leg.qty
    return total / quantity(legs)
