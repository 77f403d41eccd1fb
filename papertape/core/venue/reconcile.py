"""A session's state against its exchange's (issue 18): what differs, and the exchange's truth adopted.

A snapshot (a `venue.reports` report with `snapshot`) holds the exchange's open and recent orders, the executions
since the session's first check, every position and the wallet's balance. Executions papertape had not booked are
booked (once: their ids are remembered); an order whose state differs takes the exchange's; positions and the
balance are compared, not adjusted (they move only through executions, so a difference left means one is missing).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from papertape.core.account import Account
from papertape.core.venue.paper import FINAL
from papertape.core.venue.remote import RemoteOutcome, RemoteVenue, link_id
from schemas.venue import VenueReport
from schemas.vocabulary import Difference

# Bybit keeps the wallet and each execution's fee and P&L to 8 decimals: each booked execution may leave that much.
ROUNDING = Decimal("1e-8")


@dataclass(frozen=True)
class Finding:
    difference: Difference
    symbol: str | None = None
    order_id: str | None = None
    papertape: str = ""
    exchange: str = ""
    adopted: str = ""


def reconcile(venue: RemoteVenue, account: Account, report: VenueReport,
              now: int) -> tuple[list[RemoteOutcome], list[Finding]]:
    """The outcomes of adopting the exchange's truth, and the findings: each difference, then the summary."""
    found: list[Finding] = []
    out = _executions(venue, report, found) + _orders(venue, report, now, found)
    held = _positions(account, report, found)
    _wallet(venue, account, report, found)
    found.append(Finding("none", None, None, f"{len(venue.orders)} open orders, {len(held)} positions, cash "
                                             f"{account.cash}",
                         f"{len(report.orders)} orders, {len(report.executions)} executions, "
                         f"{len(report.positions)} positions, wallet {report.wallet}",
                         f"{len(found)} differences"))
    return out, found


def _executions(venue: RemoteVenue, report: VenueReport, found: list[Finding]) -> list[RemoteOutcome]:
    """Executions not booked yet are booked (those since the session's first check: the account's older ones were
    another's)."""
    since = venue.started_at or 0
    missed = [e for e in report.executions if e.exec_id not in venue.seen and e.ts >= since]
    for e in missed:
        order = venue.order_of(e.order_id) if e.order_id else None
        found.append(Finding("missed_fill", e.symbol, order.id if order else e.order_id or None, "not booked",
                             f"{e.exec_type} {e.side} {e.qty} @ {e.price}, fee {e.fee} (execution {e.exec_id})",
                             "booked"))
    return venue.book(missed)


def _orders(venue: RemoteVenue, report: VenueReport, now: int, found: list[Finding]) -> list[RemoteOutcome]:
    """Orders take the exchange's state; an open order the exchange does not list is cancelled; the exchange's
    orders papertape did not place are reported and left alone."""
    out: list[RemoteOutcome] = []
    listed: set[str] = set()
    for x in report.orders:
        order = venue.order_of(x.order_id)
        if order is None:
            if x.status not in FINAL:
                found.append(Finding("unknown_order", x.symbol, x.order_id, "not placed by papertape",
                                     f"{x.side} {x.qty} {x.type} {x.status}", "left alone"))
            continue
        listed.add(order.id)
        theirs = "new" if x.status == "amended" else x.status
        differs = order.status != theirs and not (order.status == "pending" and theirs == "new")
        before = f"{order.status}, filled {order.filled}"
        changes = venue.update(x)
        if changes and differs:
            found.append(Finding("order_state", x.symbol, order.id, before, f"{x.status}, filled {x.filled_qty}",
                                 x.status))
        out += changes
    for order in list(venue.orders.values()):
        if order.status != "pending" and order.id not in listed:
            found.append(Finding("order_state", order.symbol, order.id, f"{order.status}, filled {order.filled}",
                                 f"no open or recent order {link_id(order.id)}", "cancelled"))
            out += venue.close(order, now, "cancelled", "not open on the exchange (reconciliation)")
    return out


def _positions(account: Account, report: VenueReport, found: list[Finding]) -> set[str]:
    """Positions compared (they move only through executions: a difference left means one is missing)."""
    theirs = {p.symbol: p for p in report.positions}
    held = {sym for sym, p in account.positions.items() if p.qty} | {p.symbol for p in report.positions if p.qty}
    for sym in sorted(held):
        mine, their = account.position(sym), theirs.get(sym)
        if mine.qty != (their.qty if their else 0):
            found.append(Finding("position", sym, None, f"{mine.qty} @ {mine.avg_price}",
                                 f"{their.qty} @ {their.avg_price}" if their else "flat"))
    return held


def _wallet(venue: RemoteVenue, account: Account, report: VenueReport, found: list[Finding]) -> None:
    """The wallet's change since the first check against papertape's cash's, within the exchange's rounding."""
    if report.wallet is None:
        return
    if venue.wallet_base is None:
        venue.wallet_base, venue.executions_since_base = (report.wallet, account.cash), 0
        return
    wallet0, cash0 = venue.wallet_base
    moved, booked = report.wallet - wallet0, account.cash - cash0
    if abs(moved - booked) > ROUNDING * max(1, venue.executions_since_base):
        found.append(Finding("balance", None, None, f"cash {account.cash} ({booked:+} since the first check)",
                             f"wallet {report.wallet} ({moved:+} since the first check)"))
