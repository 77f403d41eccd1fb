"""Orders on the venue: the session's own (placed, cancelled, amended, a position closed at market), those of the
orders topic, and liquidations; and what becomes of them (the venue's outcomes, as messages)."""
from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import schemas as s
from papertape.core.account import Account
from papertape.core.session.gate import Gate, magnitude_problem
from papertape.core.session.margin_rules import MarginRules
from papertape.core.session.market_view import MarketView, stale_reason
from papertape.core.session.messages import NO_SCORES, Messages, Scores
from papertape.core.session.risk import RiskGuard
from papertape.core.session.state import Run
from papertape.core.strategy import AmendIntent, CancelIntent, PlaceOrder
from papertape.core.venue.paper import REQUEST_FIELDS, Execution, PaperVenue, Refusal, StatusChange, VenueOrder
from papertape.core.venue.remote import FundingSettled, Outbound, RemoteOutcome, Shadow, Venue
from schemas.trading import order_shape_problem
from schemas.vocabulary import DecisionAction, FeedStatus

External = s.Order | s.CancelOrder | s.AmendOrder  # a request of the orders topic
PRICE_FIELDS = ("trigger_price", "activation_price", "trail_amount", "stop_loss", "take_profit")  # besides `price`


class Placement:
    def __init__(self, run: Run, account: Account, view: MarketView, venue: Venue, guard: RiskGuard,
                 margin: MarginRules, gate: Gate, messages: Messages) -> None:
        self.run = run
        self.account = account
        self.view = view
        self.venue = venue
        self.guard = guard
        self.margin = margin
        self.gate = gate
        self.messages = messages

    # --- the session's orders ------------------------------------------------------------------------------------
    def place(self, o: PlaceOrder, ts: int, reasoning: str, confidence: float, features: dict[str, Any],
              problem: str = "", scores: Scores = NO_SCORES) -> list[s.Message]:
        """Send `o` to the venue (it arrives `latency_ms` later) and log the decision, or reject it for `problem`
        or for its shape, lot, tick or the cash."""
        cfg = self.run.cfg
        seq = self.run.next_seq()
        oid = self._client_oid(o.client_id) if o.client_id else f"{cfg.id}-{seq}"
        problem = problem or order_shape_problem(o) or self.gate.order_problem(o.symbol, o.qty, o.price, o.reduce_only)
        if problem:
            return [self.messages.order_decision(oid, o, ts, reasoning, confidence, features, scores, problem),
                    *self.messages.tripped(self.guard.order_failed(problem), ts)]
        self.venue.submit(self._venue_order(oid, o, ts + cfg.latency_ms, seq))
        return [self.messages.order_decision(oid, o, ts, reasoning, confidence, features, scores, ""),
                *self.messages.tripped(self.guard.order_sent(), ts)]

    def change(self, intent: CancelIntent | AmendIntent, ts: int, venue_id: str | None = None) -> list[s.Message]:
        """A strategy's cancel or amend: sent to the venue, and logged as a decision."""
        cfg = self.run.cfg
        seq = self.run.next_seq()
        oid = venue_id or self._client_oid(intent.client_id)
        order = self.venue.orders.get(oid)
        action: DecisionAction
        if isinstance(intent, CancelIntent):
            action = "cancel"
            self.venue.cancel(oid, ts + cfg.latency_ms, seq)
        else:
            action = "amend"
            self.venue.amend(oid, amend_changes(intent), ts + cfg.latency_ms, seq)
        return [self.messages.change_decision(seq, ts, order.symbol if order else "UNKNOWN", action, intent.reasoning,
                                              oid)]

    def close_position(self, symbol: str, ts: int, reasoning: str) -> list[s.Message]:
        """A reduce-only market order for the whole position, if there is one."""
        pos = self.account.position(symbol).qty
        if not pos:
            return []
        order = PlaceOrder(symbol, "sell" if pos > 0 else "buy", abs(pos), reduce_only=True)
        return self.place(order, ts, reasoning, 1.0, {"position": str(pos)}, problem=self.view.not_live(symbol))

    def _client_oid(self, client_id: str) -> str:
        return f"{self.run.cfg.id}-c-{client_id}"

    def _venue_order(self, oid: str, o: PlaceOrder | s.Order, arrival: int, seq: int) -> VenueOrder:
        """A venue order from a PlaceOrder intent or a schemas.Order (they share REQUEST_FIELDS)."""
        session = self.run.cfg.id
        return VenueOrder(id=oid, session=session, arrival=arrival, seq=seq,
                          oco=None if o.oco is None else f"{session}:{o.oco}",
                          **{f: getattr(o, f) for f in REQUEST_FIELDS})

    # --- the orders topic ----------------------------------------------------------------------------------------
    def submit_external(self, msg: External, now: int, feed_status: FeedStatus = "live",
                        closed: str = "") -> list[s.Message]:
        """An order, cancel or amend from the orders topic: it reaches the venue `latency_ms` after it is seen.
        An order is refused while its symbol's feed is not live (stale or unpriced), and everything is refused
        with the reason `closed` when the venue takes nothing any more (the tape finished)."""
        cfg = self.run.cfg
        arrival = max(msg.ts, now) + cfg.latency_ms
        oid = f"{cfg.id}-x-{msg.id if isinstance(msg, s.Order) else msg.order_id}"
        seq = self.run.next_seq()
        if not isinstance(msg, s.Order):
            problem = closed or (magnitude_problem(msg.qty, msg.price) or magnitude_problem(None, msg.trigger_price)
                                 if isinstance(msg, s.AmendOrder) else "")
            if problem:
                return [self.messages.refused(Refusal(oid, now, f"{msg.kind} refused: {problem}"))]
            if isinstance(msg, s.CancelOrder):
                self.venue.cancel(oid, arrival, seq)
            else:
                self.venue.amend(oid, amend_changes(msg), arrival, seq)
            return []
        problem = self.gate.order_problem(msg.symbol, msg.qty, msg.price, msg.reduce_only) or next(
            (p for f in PRICE_FIELDS if (p := magnitude_problem(None, getattr(msg, f)))), "")
        if not problem and feed_status != "live":
            problem = stale_reason(msg.symbol, feed_status)
        problem = problem or closed
        out: list[s.Message] = []
        if not problem:
            problem, out = self.gate.entry_block(msg.symbol, msg.side, msg.qty, msg.reduce_only, msg.price, now)
        if problem:
            rejected = self._venue_order(oid, msg, now, 0)
            return out + [self.messages.order_event(StatusChange(rejected, now, "rejected", problem, 1, msg.qty,
                                                                 msg.price, msg.trigger_price, Decimal(0), None)),
                          *self.messages.tripped(self.guard.order_failed(problem), now)]
        self.venue.submit(self._venue_order(oid, msg, arrival, seq))
        return self.messages.tripped(self.guard.order_sent(), now)

    # --- the venue's work ----------------------------------------------------------------------------------------
    def on_time(self, now: int) -> list[s.Message]:
        """Requests arriving and orders expiring up to `now`."""
        return self.outcomes(self.venue.on_time(now, self.view.books), now)

    def on_tick(self, tick: s.Tick) -> list[s.Message]:
        """Resting orders and triggers of the tick's symbol, after the tick moved its book."""
        outcomes = self.venue.on_tick(tick, self.view.books[tick.symbol])
        return self.outcomes(outcomes, tick.ts) if outcomes else []  # most ticks (the hot path)

    def liquidations(self, ts: int) -> list[s.Message]:
        """The positions the venue takes over now (after a tick of a perpetual the session holds, when the
        session's config has liquidation on)."""
        if not isinstance(self.venue, PaperVenue) or not self.margin.may_liquidate(self.account, self.view.books):
            return []  # an exchange liquidates itself, and reports it
        cfg = self.run.cfg
        out: list[s.Message] = []
        for sym, side, qty, price, fee, rate in self.margin.liquidations(self.account, self.view.marks()):
            seq = self.run.next_seq()
            oid = f"{cfg.id}-liq-{seq}"
            taken = self.venue.liquidate(cfg.id, sym, side, qty, price, fee, rate, ts, oid, seq)
            out += self.outcomes(taken, ts)
            out.append(self.messages.liquidated(oid, sym, qty, price, fee, ts))
        return out

    def outcomes(self, outcomes: Sequence[RemoteOutcome], ts: int) -> list[s.Message]:
        """The venue's outcomes as messages; the breakers they trip."""
        out: list[s.Message] = []
        flat: dict[str, int] = {}  # symbol -> when its position closed
        for oc in outcomes:
            if isinstance(oc, (Outbound, Shadow, FundingSettled)):
                out += self._exchange_outcome(oc)
            elif isinstance(oc, StatusChange):
                out.append(self.messages.order_event(oc))
                if oc.status == "rejected":
                    out += self.messages.tripped(self.guard.order_failed(oc.reason), oc.ts)
            elif isinstance(oc, Refusal):
                out.append(self.messages.refused(oc))
            else:
                out += self.messages.fill(oc)
                self.guard.order_filled()
                if oc.exec_type == "trade":
                    out += self.messages.tripped(self.guard.watch(self.view.equity()), oc.ts)
                if not self.account.position(oc.order.symbol).qty:
                    flat[oc.order.symbol] = oc.ts
        return out + self._reduce_only_cancelled(flat)

    def _reduce_only_cancelled(self, flat: dict[str, int]) -> list[s.Message]:
        """A closed position takes its reduce-only orders (TP/SL) with it when it closes, as on Bybit."""
        out: list[s.Message] = []
        for sym, ts in sorted(flat.items()):
            for order in self.venue.open_orders(sym):
                if order.reduce_only and order.status != "pending" and not self.account.position(sym).qty:
                    out += self.outcomes(self.venue.cancel_now(order, ts, "position closed"), ts)
        return out

    def _exchange_outcome(self, oc: Outbound | Shadow | FundingSettled) -> list[s.Message]:
        """A request leaving for the exchange, a fill of the shadow simulating it, the exchange's funding."""
        if isinstance(oc, Outbound):
            return [self.messages.venue_request(oc)]
        if isinstance(oc, Shadow):
            return [self.messages.shadow_fill(oc.outcome)] if isinstance(oc.outcome, Execution) else []
        self.account.apply_funding(oc.amount)
        return [self.messages.funding(oc.symbol, oc.ts, oc.rate, oc.mark, oc.qty, oc.amount)]


def amend_changes(x: AmendIntent | s.AmendOrder) -> dict[str, str | None]:
    """The new values of an amend (an AmendIntent or a schemas.AmendOrder), as the venue keeps them."""
    return {k: None if getattr(x, k) is None else str(getattr(x, k)) for k in ("qty", "price", "trigger_price")}
