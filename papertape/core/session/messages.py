"""The messages a session publishes: its status, decisions, order events, fills and positions, equity, funding
and alerts. Their ids come from the session's counters, so a replayed tape gives the same ids."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import schemas as s
from papertape.core.account import Account
from papertape.core.money import to_settle_unit
from papertape.core.session.market_view import MarketView
from papertape.core.session.risk import RiskGuard
from papertape.core.session.state import Run
from papertape.core.strategy import PlaceOrder
from papertape.core.venue.paper import REQUEST_FIELDS, Execution, Refusal, StatusChange
from papertape.core.venue.reconcile import Finding
from papertape.core.venue.remote import Outbound
from schemas.vocabulary import BYBIT_VENUES, DecisionAction, Severity

Scores = tuple[float | None, float | None]  # (risk score, opportunity score) of an entry; None when unknown
NO_SCORES: Scores = (None, None)


class Messages:
    """Builds every message of the session; numbers its status messages and fills."""

    def __init__(self, run: Run, account: Account, guard: RiskGuard, view: MarketView) -> None:
        self.run = run
        self.account = account
        self.guard = guard
        self.view = view
        self.changes = 0  # numbers status messages
        self.fills = 0

    # --- the session's state ------------------------------------------------------------------------------------
    def status(self, ts: int, event: str) -> s.SessionStatus:
        cfg = self.run.cfg
        self.changes += 1
        # the counter is zero-padded so that ids sort in order
        return s.SessionStatus(id=f"{cfg.id}:status:{self.changes:08d}", ts=ts, session=cfg.id,
                               status=self.run.status, event=event[:200], strategy=cfg.strategy, intel=cfg.intel,
                               breakers=dict(self.guard.tripped), config=cfg.model_dump(mode="json"))

    def strategy_failed(self, exc: Exception, ts: int) -> list[s.Message]:
        cfg = self.run.cfg
        why = f"strategy {cfg.strategy} raised {type(exc).__name__}: {exc}"[:1000]
        return [s.Alert(id=f"alert:{cfg.id}:strategy:{ts}", ts=ts, severity="error", type="error", source="strategy",
                        session=cfg.id, title="strategy failed: session paused",
                        text=f"{cfg.id}: {why}; resume it once fixed (`papertape session config` a new "
                             f"strategy or params, then `papertape session resume`)"),
                self.status(ts, f"paused: {why}")]

    def tripped(self, names: list[str], ts: int) -> list[s.Message]:
        """An alert and a status message for each circuit breaker in `names` (those tripped now)."""
        cfg = self.run.cfg
        out: list[s.Message] = []
        for name in names:
            out.append(s.Alert(id=f"alert:{cfg.id}:breaker:{name}:{ts}", ts=ts, severity="warning",
                               type="performance", source="risk", session=cfg.id,
                               title=f"circuit breaker tripped: {name}",
                               text=f"{cfg.id}: {self.guard.tripped[name]}; new entries are blocked until the "
                                    f"day ends ({cfg.risk.day_starts_at} UTC)"))
            out.append(self.status(ts, f"circuit breaker tripped: {name}"))
        return out

    def breakers_reset(self, at: int, tripped: dict[str, str]) -> list[s.Message]:
        cfg = self.run.cfg
        return [self.status(at, "circuit breakers reset at the day's start"),
                s.Alert(id=f"alert:{cfg.id}:reset:{at}", ts=at, severity="info", type="performance", source="risk",
                        session=cfg.id, title="circuit breakers reset",
                        text=f"{cfg.id}: a new day began; reset {', '.join(sorted(tripped))}")]

    # --- decisions -----------------------------------------------------------------------------------------------
    def decision(self, symbol: str, ts: int, action: DecisionAction, reasoning: str, confidence: float,
                 features: dict[str, Any], scores: Scores = NO_SCORES) -> s.Decision:
        """A decision that sends nothing (hold, blocked)."""
        cfg = self.run.cfg
        seq = self.run.next_seq()
        return s.Decision(id=f"{cfg.id}-{seq}:d", ts=ts, session=cfg.id, symbol=symbol, action=action,
                          reasoning=reasoning[:2000], confidence=confidence, risk_score=scores[0],
                          opportunity_score=scores[1], intel=cfg.intel, features=features)

    def order_decision(self, oid: str, o: PlaceOrder, ts: int, reasoning: str, confidence: float,
                       features: dict[str, Any], scores: Scores, problem: str) -> s.Decision:
        """The decision to send `o` as order `oid`, or to reject it for `problem`."""
        cfg = self.run.cfg
        if problem:
            return s.Decision(id=f"{oid}:d", ts=ts, session=cfg.id, symbol=o.symbol, action="reject",
                              reasoning=f"{reasoning}; {problem}", confidence=confidence, risk_score=scores[0],
                              opportunity_score=scores[1], intel=cfg.intel, features=features)
        return s.Decision(id=f"{oid}:d", ts=ts, session=cfg.id, symbol=o.symbol, action=o.side,
                          reasoning=reasoning, confidence=confidence, risk_score=scores[0],
                          opportunity_score=scores[1], intel=cfg.intel, features=features, order_id=oid)

    def change_decision(self, seq: int, ts: int, symbol: str, action: DecisionAction, reasoning: str,
                        oid: str) -> s.Decision:
        """The decision to cancel or amend order `oid`."""
        cfg = self.run.cfg
        return s.Decision(id=f"{cfg.id}-{seq}:d", ts=ts, session=cfg.id, symbol=symbol, action=action,
                          reasoning=reasoning, confidence=1.0, intel=cfg.intel, order_id=oid)

    # --- the venue's outcomes ------------------------------------------------------------------------------------
    def order_event(self, e: StatusChange) -> s.OrderEvent:
        o = e.order
        return s.OrderEvent(id=f"{o.id}:{e.status}:{e.n}", ts=e.ts, session=self.run.cfg.id, order_id=o.id,
                            symbol=o.symbol, side=o.side, type=o.type, status=e.status, qty=e.qty, price=e.price,
                            trigger_price=e.trigger_price, filled_qty=e.filled,
                            avg_price=None if e.avg_price is None else to_settle_unit(e.avg_price), reason=e.reason)

    def fill(self, ex: Execution) -> list[s.Message]:
        """The fill, and the position it left."""
        o, session = ex.order, self.run.cfg.id
        self.fills += 1
        fill = s.Fill(id=f"{o.id}:f{self.fills}", venue=self.run.cfg.venue, **self._execution(ex))
        pos = ex.position
        assert pos is not None  # the ledger set it when it booked the fill
        mark = self.view.mark(o.symbol)
        position = s.Position(id=f"{fill.id}:p", ts=ex.ts, session=session, symbol=o.symbol, qty=pos.qty,
                              avg_price=to_settle_unit(pos.avg_price) if pos.avg_price else None,
                              mark=mark, realized_pnl=pos.realized, unrealized_pnl=pos.unrealized(mark))
        return [fill, position]

    def shadow_fill(self, ex: Execution) -> s.ShadowFill:
        """The paper venue's fill of an exchange order (numbered by the quantity it had filled then)."""
        return s.ShadowFill(id=f"{ex.order.id}:s{ex.order.filled}", **self._execution(ex))

    def _execution(self, ex: Execution) -> dict[str, Any]:
        """The fields a fill of either kind takes from the venue's execution."""
        o = ex.order
        return {"ts": ex.ts, "session": self.run.cfg.id, "order_id": o.id, "symbol": o.symbol, "side": o.side,
                "price": ex.price, "qty": ex.qty, "liquidity": ex.liquidity, "fee_rate": ex.fee_rate, "fee": ex.fee,
                "realized_pnl": ex.realized, "settle_coin": self.account.settle_coin, "exec_type": ex.exec_type}

    def venue_request(self, oc: Outbound) -> s.VenueRequest:
        cfg = self.run.cfg
        venue = cfg.venue
        assert venue in BYBIT_VENUES  # only a session on an exchange sends requests
        o = oc.order
        if oc.action == "snapshot":
            return s.VenueRequest(id=oc.order_id or f"{cfg.id}:check:{oc.ts}", ts=oc.ts, session=cfg.id,
                                  venue=venue, action="snapshot", since=oc.since)
        if oc.action == "new" and o is not None:
            order = s.Order(id=o.id, ts=oc.ts, session=cfg.id, **{f: getattr(o, f) for f in REQUEST_FIELDS})
            return s.VenueRequest(id=f"{oc.order_id}:new:{oc.seq}", ts=oc.ts, session=cfg.id, venue=venue,
                                  action="new", order=order, order_id=oc.order_id, symbol=o.symbol,
                                  leverage=cfg.leverage_by_symbol.get(o.symbol, cfg.default_leverage),
                                  margin_mode=cfg.margin_mode)
        changes = {k: v for k, v in (oc.changes or {}).items() if v is not None}
        return s.VenueRequest(id=f"{oc.order_id}:{oc.action}:{oc.seq}", ts=oc.ts, session=cfg.id, venue=venue,
                              action=oc.action, order_id=oc.order_id, symbol=o.symbol if o is not None else None,
                              **changes)

    def reconciled(self, check: str, findings: list[Finding], ts: int) -> list[s.Message]:
        """A reconciliation's rows, and an alert for each difference."""
        cfg = self.run.cfg
        out: list[s.Message] = []
        for i, f in enumerate(findings):
            row = s.Reconciliation(id=f"{check}:{i}", ts=ts, session=cfg.id, check=check, difference=f.difference,
                                   symbol=f.symbol, order_id=f.order_id, papertape=f.papertape[:500],
                                   exchange=f.exchange[:500], adopted=f.adopted[:500])
            out.append(row)
            if f.difference != "none":
                severity: Severity = "error" if f.difference in ("position", "balance") else "warning"
                what = " ".join(x for x in (f.symbol, f.order_id) if x)
                out.append(s.Alert(id=f"alert:{row.id}", ts=ts, severity=severity, type="trading", source="reconcile",
                                   session=cfg.id, title=f"reconciliation: {f.difference.replace('_', ' ')}",
                                   text=f"{cfg.id} {what}: papertape {f.papertape}; exchange {f.exchange}"
                                        + (f"; {f.adopted}" if f.adopted else "")))
        return out

    def refused(self, oc: Refusal) -> s.Alert:
        cfg = self.run.cfg
        return s.Alert(id=f"alert:{cfg.id}:refused:{oc.order_id}:{oc.ts}", ts=oc.ts, severity="warning",
                       type="trading", source="venue", session=cfg.id, title="request refused", text=oc.reason)

    def liquidated(self, oid: str, symbol: str, qty: Decimal, price: Decimal, fee: Decimal, ts: int) -> s.Alert:
        cfg = self.run.cfg
        return s.Alert(id=f"alert:{oid}", ts=ts, severity="critical", type="trading", source="venue",
                       session=cfg.id,
                       title=f"{symbol} position liquidated",
                       text=f"{cfg.id}: {qty} {symbol} closed at {price} ({cfg.margin_mode} margin "
                            f"reached maintenance), fee {fee}")

    # --- money ---------------------------------------------------------------------------------------------------
    def equity(self, ts: int) -> s.Equity:
        marks = self.view.marks()
        unrealized = self.account.unrealized(marks)
        acc, session = self.account, self.run.cfg.id
        return s.Equity(id=f"{session}:eq:{ts}", ts=ts, session=session, cash=acc.cash,
                        equity=acc.cash + unrealized, realized_pnl=acc.realized,
                        unrealized_pnl=unrealized, fees=acc.fees, funding=acc.funding,
                        open_positions=acc.open_positions())

    def funding(self, symbol: str, ts: int, rate: Decimal, mark: Decimal, qty: Decimal, amount: Decimal) -> s.Funding:
        session = self.run.cfg.id
        return s.Funding(id=f"{session}:fund:{symbol}:{ts}", ts=ts, session=session, symbol=symbol, rate=rate,
                         mark=mark, qty=qty, amount=amount, settle_coin=self.account.settle_coin)
