"""A strategy's or a signal's intent turned into orders: a Target sized from the equity, scored, checked and
traded toward (or a decision saying why not); an exact order gated as a new entry; a cancel or amend sent."""
from __future__ import annotations

from decimal import Decimal

import schemas as s
from papertape.core.account import Account
from papertape.core.instruments import Instrument
from papertape.core.market.book import Book
from papertape.core.session.gate import Gate
from papertape.core.session.margin_rules import MarginRules
from papertape.core.session.market_view import MarketView
from papertape.core.session.messages import Messages, Scores
from papertape.core.session.placement import Placement
from papertape.core.session.scores import opportunity_score, risk_score
from papertape.core.session.state import Run
from papertape.core.session.strategy_runner import StrategyRunner
from papertape.core.strategy import AmendIntent, CancelIntent, Intent, PlaceOrder, Target
from papertape.core.venue.fees import FeeSchedule
from papertape.core.venue.remote import Venue
from schemas.vocabulary import Exposure, Side


class Sizer:
    def __init__(self, run: Run, instruments: dict[str, Instrument], account: Account, view: MarketView,
                 venue: Venue, fees: FeeSchedule, margin: MarginRules, runner: StrategyRunner, gate: Gate,
                 placement: Placement, messages: Messages) -> None:
        self.run = run
        self.instruments = instruments
        self.account = account
        self.view = view
        self.venue = venue
        self.fees = fees
        self.margin = margin
        self.runner = runner
        self.gate = gate
        self.placement = placement
        self.messages = messages

    def decide(self, intent: Intent, ts: int) -> list[s.Message]:
        if isinstance(intent, (CancelIntent, AmendIntent)):
            return self.placement.change(intent, ts)
        if isinstance(intent, PlaceOrder):
            return self._order(intent, ts)
        assert isinstance(intent, Target)
        return self._target(intent, ts)

    def _order(self, intent: PlaceOrder, ts: int) -> list[s.Message]:
        """An exact order: blocked if it is a new entry the session may not make now, else placed."""
        stale = self.view.not_live(intent.symbol)
        block = ""
        out: list[s.Message] = []
        if not stale:
            block, out = self.gate.entry_block(intent.symbol, intent.side, intent.qty, intent.reduce_only,
                                               intent.price, ts)
        if block:
            return out + [self.messages.decision(intent.symbol, ts, "blocked", f"{intent.reasoning}; {block}", 1.0,
                                                 {})]
        return out + self.placement.place(intent, ts, intent.reasoning, 1.0, {}, problem=stale)

    def _target(self, intent: Target, ts: int) -> list[s.Message]:
        """A signal: size it, score it, check it, and trade toward it (or say why not)."""
        sym, conf = intent.symbol, intent.confidence
        book = self.view.book(sym)
        price = book.mark() if book else None
        inst = self.instruments.get(sym)
        pos = self.account.position(sym).qty
        scores = self._scores(sym, conf, book, price)
        features = {**intent.features, "mark": None if price is None else str(price),
                    "volatility_per_bar": self.runner.vol.per_bar(sym)}

        def hold(why: str) -> list[s.Message]:
            return [self.messages.decision(sym, ts, "hold", f"{intent.reasoning}; {why}", conf, features, scores)]

        why = self._not_now(intent, price, inst)
        if why:
            return hold(why)
        assert price is not None and inst is not None  # else _not_now said why not
        want = self._size(intent.target, inst, price)
        if want == pos or (want and pos and (want > 0) == (pos > 0)):  # no resizing while the view holds
            return hold(f"already {'flat' if not pos else ('long' if pos > 0 else 'short')}")
        if not want:  # an exit: always allowed
            order = PlaceOrder(sym, "sell" if pos > 0 else "buy", abs(pos), reduce_only=True)
            return self.placement.place(order, ts, intent.reasoning, conf, features, scores=scores)
        why = self._too_risky(sym, scores[0])
        if why:
            return hold(why)
        side: Side = "buy" if want > 0 else "sell"
        block, out = self.gate.entry_block(sym, side, abs(want), False, price, ts)
        if block:
            return out + [self.messages.decision(sym, ts, "blocked", f"{intent.reasoning}; {block}", conf, features,
                                                 scores)]
        if pos:  # a reversal: close first (its bracket goes with it), then enter
            out += self.placement.place(PlaceOrder(sym, side, abs(pos), reduce_only=True), ts,
                                        f"{intent.reasoning}; closing the {'long' if pos > 0 else 'short'} first",
                                        conf, features, scores=scores)
        sl, tp = self.run.cfg.auto_close.bracket(side, price, inst)
        entry = PlaceOrder(sym, side, abs(want), stop_loss=sl, take_profit=tp)
        return out + self.placement.place(entry, ts, intent.reasoning, conf, features, scores=scores)

    def _not_now(self, intent: Target, price: Decimal | None, inst: Instrument | None) -> str:
        """Why no order goes toward the signal whatever the position: too little confidence, no price or
        instrument, stale data, an entry order still open. '' when one may."""
        cfg = self.run.cfg
        if intent.confidence < cfg.confidence_threshold:
            return f"confidence {intent.confidence:.2f} below threshold {cfg.confidence_threshold:.2f}"
        if price is None or inst is None:
            return "no price or instrument for the symbol"
        stale = self.view.not_live(intent.symbol)
        if stale:
            return stale
        if any(not o.reduce_only for o in self.venue.open_orders(intent.symbol)):
            return "an order for the symbol is still open"
        return ""

    def _size(self, target: Exposure, inst: Instrument, price: Decimal) -> Decimal:
        """The signed position the signal asks for: the sizing fraction of the equity, in lots."""
        if target == "flat":
            return Decimal(0)
        size = inst.round_qty_down(self.view.equity() * self.run.cfg.sizing_fraction / price)
        return size if target == "long" else -size

    def _too_risky(self, symbol: str, risk: float | None) -> str:
        """Why a new entry's risk is not acceptable (unknown, or above the intel level's tolerance), or ''."""
        cfg = self.run.cfg
        if risk is None:
            seen = self.runner.vol.returns_seen(symbol)
            return f"volatility not known yet ({seen} of {self.runner.vol.min_returns} bar returns): no risk score"
        if risk > cfg.level.risk_tolerance:
            return f"risk score {risk:.3f} above the tolerance {cfg.level.risk_tolerance:.2f} of intel level " \
                   f"{cfg.intel}"
        return ""

    def _scores(self, symbol: str, confidence: float, book: Book | None, price: Decimal | None) -> Scores:
        """(risk score, opportunity score) of an entry now (papertape/core/session/scores.py); None when unknown."""
        if book is None or price is None or symbol not in self.instruments:
            return None, None
        ac = self.run.cfg.auto_close
        stop = float(ac.stop_loss) if ac.stop_loss is not None else float(1 / self.margin.leverage(symbol))
        sigma = self.runner.vol.per_bar(symbol)
        risk = None if sigma is None else risk_score(sigma, self.runner.strategy.bar_ms, stop, ac.max_hold_ms)
        bid, ask = book.best_bid(), book.best_ask()
        spread = float((ask - bid) / price) if bid is not None and ask is not None else 0.0
        target = float(ac.take_profit) if ac.take_profit is not None else stop
        taker = float(self.fees.rate(symbol, "taker"))
        return risk, opportunity_score(confidence, target, taker, max(spread, 0.0))
