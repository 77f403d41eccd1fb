"""One paper-trading session: its account, venue and strategy, driven tick by tick in event time."""
from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import schemas as s
from schemas.trading import order_shape_problem

from .account import Account
from .bars import BarBuilder, Volatility
from .book import Book
from .fees import to_settle_unit
from .instruments import Instrument
from .margin_rules import MarginRules
from .risk import RiskGuard
from .scores import opportunity_score, risk_score
from .session_config import RECONFIGURABLE, SessionConfig, merged
from .strategies import make_strategy
from .strategy import AmendIntent, CancelIntent, PlaceOrder, Strategy, Target
from .venue import REQUEST_FIELDS, Execution, PaperVenue, Refusal, StatusChange, VenueOrder, VenueRules


class Session:
    def __init__(self, cfg: SessionConfig, instruments: dict[str, Instrument]) -> None:
        self.cfg = cfg
        self.instruments = instruments
        self.account = Account(cfg.balance, cfg.settle_coin)
        self.fees = cfg.fee_schedule(instruments)
        self.margin = MarginRules(cfg, instruments, self.fees)
        self.venue = PaperVenue(VenueRules(self.fees, cfg.fill, cfg.dex), instruments,
                                lambda sym: self.account.position(sym).qty, self._book_fill, self._admit)
        self._set_strategy(make_strategy(cfg.strategy, cfg.params))
        self.guard = RiskGuard(cfg.risk, cfg.balance)
        self.status = "running"  # running | paused | stopped
        self.announced = False  # its first status message is out
        self.seq = 0  # numbers orders and decisions: ids stay the same when a tape is replayed
        self.changes = 0  # numbers status messages
        self.next_equity_ts: int | None = None
        self.fills = 0
        self.funded: dict[str, int] = {}  # symbol -> the last funding time settled
        self.hold_until: dict[str, int] = {}  # symbol -> when max hold closes its position
        self._books: dict[str, Book] = {}  # the engine's books, for the venue's callbacks

    def _set_strategy(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self.bars = BarBuilder(strategy.bar_ms)
        self.vol = Volatility(strategy.bar_ms)
        self._tick_strategy = strategy.wants_ticks()

    def trades(self, symbol: str) -> bool:
        inst = self.instruments.get(symbol)
        return inst is not None and self.cfg.trades(symbol, inst.category)

    # --- event-time driving -------------------------------------------------------------------------------
    def due_at(self) -> int:
        """The event time from which `before_tick` has something to do (a request arriving, an order expiring,
        a funding time, a position's max hold, the day's end, an equity snapshot)."""
        due = [-1 if self.next_equity_ts is None else self.next_equity_ts]
        arrival = self.venue.next_due()
        if arrival is not None:
            due.append(arrival)
        if self.cfg.funding:
            due += [t for t in (self._funding_due(sym) for sym in self.account.positions) if t is not None]
        due += self.hold_until.values()
        day = self.guard.next_day_at()
        if day is not None:
            due.append(day)
        return min(due)

    def before_tick(self, now: int, books: dict[str, Book]) -> list:
        """What is due up to `now`, against the books as they stood before the tick at `now`."""
        self._books = books
        out: list = []
        if not self.announced:
            self.announced = True
            self.guard.new_day(now, self.account.equity(self._marks(books)))
            out.append(self.status_message(now, "started"))
        while True:  # venue requests and timers in time order: funding sees the positions held at its time
            timer, kind = self._next_timer(now)
            until = now if timer is None else timer - 1
            due = self.venue.next_due()
            if due is not None and due <= until:
                out += self._outcomes(self.venue.on_time(until, books), until)
            if timer is None:
                break
            if kind == "funding":
                out += self._settle_funding(timer, books)
            elif kind == "day":
                out += self._new_day(timer, books)
            elif kind == "hold":
                out += self._max_hold(timer, books)
            else:  # one snapshot for a gap without ticks, at its first due time
                eq = self.equity_message(timer, books)
                out += [eq, *self._watch(eq.equity, timer)]
                self.next_equity_ts = now - now % self.cfg.equity_every_ms + self.cfg.equity_every_ms
        if self.next_equity_ts is None:
            self.next_equity_ts = now - now % self.cfg.equity_every_ms + self.cfg.equity_every_ms
        return out

    def _next_timer(self, now: int) -> tuple[int | None, str]:
        """The earliest timer at or before `now`: a funding time, the day's end, a position's max hold, an equity
        snapshot (in that order at the same time)."""
        timers = []
        if self.next_equity_ts is not None and self.next_equity_ts <= now:
            timers.append((self.next_equity_ts, 3, "equity"))
        if self.cfg.funding:
            funding = self._next_funding(now)
            if funding is not None:
                timers.append((funding, 0, "funding"))
        day = self.guard.next_day_at()
        if day is not None and day <= now:
            timers.append((day, 1, "day"))
        hold = min(self.hold_until.values(), default=None)
        if hold is not None and hold <= now:
            timers.append((hold, 2, "hold"))
        if not timers:
            return None, ""
        ts, _, kind = min(timers)
        return ts, kind

    def on_tick(self, tick, books: dict[str, Book]) -> list:
        self._books = books
        book = books[tick.symbol]
        out = self._outcomes(self.venue.on_tick(tick, book), tick.ts) if self.venue.orders else []
        if self.cfg.liquidation and self._holds_perp(tick.symbol) and self.margin.may_liquidate(self.account, books):
            out += self._liquidations(tick.ts, books)
        if self.status == "stopped":
            return out
        bar = self.bars.on_tick(tick)
        intents: list = []
        try:
            if bar is not None:
                self.vol.on_bar(bar)
                if self.status == "running":
                    intents = list(self.strategy.on_bar(bar))
            if self._tick_strategy and self.status == "running":
                intents += self.strategy.on_tick(tick)
        except Exception as exc:  # the strategy's bug pauses its session only, the same way on every replay
            return out + self._strategy_failed(exc, tick.ts)
        for intent in intents:
            out += self._decide(intent, tick.ts, books)
        return out

    def _strategy_failed(self, exc: Exception, ts: int) -> list:
        self.status = "paused"
        why = f"strategy {self.cfg.strategy} raised {type(exc).__name__}: {exc}"[:1000]
        return [s.Alert(id=f"alert:{self.cfg.id}:strategy:{ts}", ts=ts, severity="error", source="strategy",
                        session=self.cfg.id, title="strategy failed: session paused",
                        text=f"{self.cfg.id}: {why}; resume it once fixed (`papertape session config` a new "
                             f"strategy or params, then `papertape session resume`)"),
                self.status_message(ts, f"paused: {why}")]

    # --- control ---------------------------------------------------------------------------------------------
    def pause(self, ts: int) -> list:
        if self.status != "running":
            return [self.status_message(ts, f"pause ignored: the session is {self.status}")]
        self.status = "paused"
        return [self.status_message(ts, "paused: no new entries")]

    def resume(self, ts: int) -> list:
        if self.status != "paused":
            return [self.status_message(ts, f"resume ignored: the session is {self.status}")]
        self.status = "running"
        return [self.status_message(ts, "resumed")]

    def stop(self, ts: int, books: dict[str, Book]) -> list:
        """Cancel every open order, close every position at market, and take no new entries again."""
        if self.status == "stopped":
            return [self.status_message(ts, "stop ignored: the session is already stopped")]
        self._books = books
        self.status = "stopped"
        out: list = []
        for order in self.venue.open_orders():
            out += self._change(CancelIntent(order.id, "session stopped"), ts, venue_id=order.id)
        for sym in sorted(self.account.positions):
            out += self._close_position(sym, ts, "session stopped: closing the position at market")
        self.hold_until.clear()
        return out + [self.status_message(ts, "stopped")]

    def reconfigure(self, changes: dict, ts: int) -> list:
        """Apply a control `config`. Raises ValueError (nothing changed) when a key may not change or the new
        config is invalid."""
        fixed = sorted(set(changes) - RECONFIGURABLE)
        if fixed:
            raise ValueError(f"a running session cannot change {', '.join(fixed)}: start a new session for that "
                             f"(changeable: {', '.join(sorted(RECONFIGURABLE))})")
        cfg = SessionConfig.model_validate(merged(self.cfg.model_dump(), changes))
        strategy = None
        if cfg.strategy != self.cfg.strategy or cfg.params != self.cfg.params:
            strategy = make_strategy(cfg.strategy, cfg.params)  # raises before anything changed
        self.cfg = cfg
        self.margin.cfg = cfg
        self.guard.settings = cfg.risk
        if strategy is not None:
            self._set_strategy(strategy)
        if cfg.auto_close.max_hold_ms is None:
            self.hold_until.clear()
        return [self.status_message(ts, f"reconfigured: {', '.join(sorted(changes))}")]

    def status_message(self, ts: int, event: str) -> s.SessionStatus:
        self.changes += 1
        # the counter is zero-padded so that ids sort in order
        return s.SessionStatus(id=f"{self.cfg.id}:status:{self.changes:08d}", ts=ts, session=self.cfg.id,
                               status=self.status, event=event[:200], strategy=self.cfg.strategy, intel=self.cfg.intel,
                               breakers=dict(self.guard.tripped), config=self.cfg.model_dump(mode="json"))

    # --- circuit breakers and auto-close ------------------------------------------------------------------------
    def _new_day(self, at: int, books: dict[str, Book]) -> list:
        tripped = dict(self.guard.tripped)
        self.guard.new_day(at, self.account.equity(self._marks(books)))
        if not tripped:
            return []
        return [self.status_message(at, "circuit breakers reset at the day's start"),
                s.Alert(id=f"alert:{self.cfg.id}:reset:{at}", ts=at, severity="info", source="risk",
                        session=self.cfg.id, title="circuit breakers reset",
                        text=f"{self.cfg.id}: a new day began; reset {', '.join(sorted(tripped))}")]

    def _tripped(self, names: list[str], ts: int) -> list:
        out: list = []
        for name in names:
            out.append(s.Alert(id=f"alert:{self.cfg.id}:breaker:{name}:{ts}", ts=ts, severity="warning",
                               source="risk", session=self.cfg.id, title=f"circuit breaker tripped: {name}",
                               text=f"{self.cfg.id}: {self.guard.tripped[name]}; new entries are blocked until the "
                                    f"day ends ({self.cfg.risk.day_starts_at} UTC)"))
            out.append(self.status_message(ts, f"circuit breaker tripped: {name}"))
        return out

    def _watch(self, equity: Decimal, ts: int) -> list:
        return self._tripped(self.guard.watch(equity), ts)

    def _adds_exposure(self, symbol: str, side: str, qty: Decimal, reduce_only: bool) -> bool:
        if reduce_only:
            return False
        pos = self.account.position(symbol).qty
        return not pos or (pos > 0) == (side == "buy") or qty > abs(pos)

    def _entry_block(self, symbol: str, side: str, qty: Decimal, reduce_only: bool, price: Decimal | None,
                     ts: int) -> tuple[str, list]:
        """Why an order may not be sent (a new entry while paused, stopped or a breaker is tripped), and the
        messages of breakers tripping now. `price`: the order's limit price; None values it at the mark."""
        if not self._adds_exposure(symbol, side, qty, reduce_only):
            return "", []
        if self.status != "running":
            return f"the session is {self.status}: no new entries", []
        msgs = self._watch(self.account.equity(self._marks(self._books)), ts)
        entries = {o.symbol for o in self.venue.open_orders() if not o.reduce_only}
        held = {sym for sym, p in self.account.positions.items() if p.qty}
        book = self._books.get(symbol)
        price = price or (book.mark() if book is not None else None)
        notional = qty * price if price is not None else Decimal(0)
        new_symbol = symbol not in held and symbol not in entries
        return self.guard.entry_block(notional, new_symbol, len(held | entries)), msgs

    def _max_hold(self, at: int, books: dict[str, Book]) -> list:
        out: list = []
        hours = self.cfg.auto_close.max_hold_ms / 3_600_000
        for sym in sorted(k for k, v in self.hold_until.items() if v == at):
            self.hold_until[sym] = at + 60_000  # tried again in a minute if it is still open then
            out += self._close_position(sym, at, f"max hold time {hours:g} h reached: closing at market")
        return out

    def _close_position(self, symbol: str, ts: int, reasoning: str) -> list:
        pos = self.account.position(symbol).qty
        if not pos:
            return []
        order = PlaceOrder(symbol, "sell" if pos > 0 else "buy", abs(pos), reduce_only=True)
        return self._place(order, ts, reasoning, 1.0, {"position": str(pos)}, problem=_not_live(symbol, self._books))

    # --- funding and liquidation ---------------------------------------------------------------------------
    def _holds_perp(self, symbol: str) -> bool:
        """Whether a mark move of `symbol` can liquidate: the session holds a perpetual position in it."""
        pos = self.account.positions.get(symbol)
        return pos is not None and bool(pos.qty) and self.instruments[symbol].category == "linear"

    def _funding_due(self, symbol: str) -> int | None:
        book = self._books.get(symbol)
        if book is None or book.next_funding_ts is None or not self._holds_perp(symbol):
            return None
        if book.next_funding_ts <= self.funded.get(symbol, -1):
            return None
        return book.next_funding_ts

    def _next_funding(self, now: int) -> int | None:
        due = [t for t in map(self._funding_due, self.account.positions) if t is not None and t <= now]
        return min(due) if due else None

    def _settle_funding(self, at: int, books: dict[str, Book]) -> list:
        """Funding of every position whose symbol settles at `at`."""
        out: list = []
        for sym in sorted(self.account.positions):
            t = self._funding_due(sym)
            if t != at:
                continue
            self.funded[sym] = t
            book, pos = books[sym], self.account.positions[sym]
            mark = book.mark()
            if book.funding_rate is None or mark is None:
                continue
            rate = Decimal(book.funding_rate)
            amount = self.margin.funding(pos.qty, mark, rate)
            self.account.apply_funding(amount)
            out.append(s.Funding(id=f"{self.cfg.id}:fund:{sym}:{t}", ts=t, session=self.cfg.id, symbol=sym, rate=rate,
                                 mark=mark, qty=pos.qty, amount=amount, settle_coin=self.account.settle_coin))
        return out

    def _liquidations(self, ts: int, books: dict[str, Book]) -> list:
        out: list = []
        for sym, side, qty, price, fee, rate in self.margin.liquidations(self.account, self._marks(books)):
            self.seq += 1
            oid = f"{self.cfg.id}-liq-{self.seq}"
            taken = self.venue.liquidate(self.cfg.id, sym, side, qty, price, fee, rate, ts, oid, self.seq)
            out += self._outcomes(taken, ts)
            out.append(s.Alert(id=f"alert:{oid}", ts=ts, severity="critical", source="venue", session=self.cfg.id,
                               title=f"{sym} position liquidated",
                               text=f"{self.cfg.id}: {qty} {sym} closed at {price} ({self.cfg.margin_mode} margin "
                                    f"reached maintenance), fee {fee}"))
        return out

    # --- decisions -------------------------------------------------------------------------------------------
    def _decide(self, intent, ts: int, books: dict[str, Book]) -> list:
        self._books = books
        if isinstance(intent, (CancelIntent, AmendIntent)):
            return self._change(intent, ts)
        if isinstance(intent, PlaceOrder):
            stale = _not_live(intent.symbol, books)
            block, out = ("", []) if stale else self._entry_block(
                intent.symbol, intent.side, intent.qty, intent.reduce_only, intent.price, ts)
            if block:
                return out + [self._decision(intent.symbol, ts, "blocked", f"{intent.reasoning}; {block}", 1.0, {})]
            return out + self._place(intent, ts, intent.reasoning, 1.0, {}, problem=stale)
        assert isinstance(intent, Target)
        return self._target(intent, ts, books)

    def _target(self, intent: Target, ts: int, books: dict[str, Book]) -> list:
        """A signal: size it, score it, check it, and trade toward it (or say why not)."""
        sym, conf = intent.symbol, intent.confidence
        book = books.get(sym)
        price = book.mark() if book else None
        inst = self.instruments.get(sym)
        pos = self.account.position(sym).qty
        scores = self._scores(sym, conf, book, price)
        features = {**intent.features, "mark": None if price is None else str(price),
                    "volatility_per_bar": self.vol.per_bar(sym)}
        stale = _not_live(sym, books)
        hold = ""
        if conf < self.cfg.confidence_threshold:
            hold = f"confidence {conf:.2f} below threshold {self.cfg.confidence_threshold:.2f}"
        elif price is None or inst is None:
            hold = "no price or instrument for the symbol"
        elif stale:
            hold = stale
        elif any(not o.reduce_only for o in self.venue.open_orders(sym)):
            hold = "an order for the symbol is still open"
        if hold:
            return [self._decision(sym, ts, "hold", f"{intent.reasoning}; {hold}", conf, features, scores)]
        want = Decimal(0)
        if intent.target != "flat":
            size = inst.round_qty_down(self.account.equity(self._marks(books)) * self.cfg.sizing_fraction / price)
            want = size if intent.target == "long" else -size
        if want == pos or (want and pos and (want > 0) == (pos > 0)):  # no resizing while the view holds
            held = "flat" if not pos else ("long" if pos > 0 else "short")
            return [self._decision(sym, ts, "hold", f"{intent.reasoning}; already {held}", conf, features,
                                   scores)]
        if not want:  # an exit: always allowed
            order = PlaceOrder(sym, "sell" if pos > 0 else "buy", abs(pos), reduce_only=True)
            return self._place(order, ts, intent.reasoning, conf, features, scores=scores)
        side = "buy" if want > 0 else "sell"
        risk, _ = scores
        if risk is None:
            seen = self.vol.returns_seen(sym)
            hold = f"volatility not known yet ({seen} of {self.vol.min_returns} bar returns): no risk score"
        elif risk > self.cfg.level.risk_tolerance:
            hold = f"risk score {risk:.3f} above the tolerance {self.cfg.level.risk_tolerance:.2f} of intel level " \
                   f"{self.cfg.intel}"
        if hold:
            return [self._decision(sym, ts, "hold", f"{intent.reasoning}; {hold}", conf, features, scores)]
        block, out = self._entry_block(sym, side, abs(want), False, price, ts)
        if block:
            return out + [self._decision(sym, ts, "blocked", f"{intent.reasoning}; {block}", conf, features,
                                         scores)]
        if pos:  # a reversal: close first (its bracket goes with it), then enter
            out += self._place(PlaceOrder(sym, side, abs(pos), reduce_only=True), ts,
                               f"{intent.reasoning}; closing the {'long' if pos > 0 else 'short'} first", conf,
                               features, scores=scores)
        sl, tp = self.cfg.auto_close.bracket(side, price, inst)
        entry = PlaceOrder(sym, side, abs(want), stop_loss=sl, take_profit=tp)
        return out + self._place(entry, ts, intent.reasoning, conf, features, scores=scores)

    def _scores(self, symbol: str, confidence: float, book: Book | None,
                price: Decimal | None) -> tuple[float | None, float | None]:
        """(risk score, opportunity score) of an entry now (papertape/core/scores.py); None when unknown."""
        if book is None or price is None or symbol not in self.instruments:
            return None, None
        ac = self.cfg.auto_close
        stop = float(ac.stop_loss) if ac.stop_loss is not None else float(1 / self.margin.leverage(symbol))
        sigma = self.vol.per_bar(symbol)
        risk = None if sigma is None else risk_score(sigma, self.strategy.bar_ms, stop, ac.max_hold_ms)
        bid, ask = book.best_bid(), book.best_ask()
        spread = float((ask - bid) / price) if bid is not None and ask is not None else 0.0
        target = float(ac.take_profit) if ac.take_profit is not None else stop
        taker = float(self.fees.rate(symbol, "taker"))
        return risk, opportunity_score(confidence, target, taker, max(spread, 0.0))

    def _change(self, intent: CancelIntent | AmendIntent, ts: int, venue_id: str | None = None) -> list:
        """A strategy's cancel or amend: sent to the venue, and logged as a decision."""
        self.seq += 1
        oid = venue_id or self._client_oid(intent.client_id)
        order = self.venue.orders.get(oid)
        if isinstance(intent, CancelIntent):
            self.venue.cancel(oid, ts + self.cfg.latency_ms, self.seq)
        else:
            self.venue.amend(oid, _amend_changes(intent), ts + self.cfg.latency_ms, self.seq)
        action = "cancel" if isinstance(intent, CancelIntent) else "amend"
        return [s.Decision(id=f"{self.cfg.id}-{self.seq}:d", ts=ts, session=self.cfg.id,
                           symbol=order.symbol if order else "UNKNOWN", action=action, reasoning=intent.reasoning,
                           confidence=1.0, intel=self.cfg.intel, order_id=oid)]

    def _client_oid(self, client_id: str) -> str:
        return f"{self.cfg.id}-c-{client_id}"

    def _place(self, o: PlaceOrder, ts: int, reasoning: str, confidence: float, features: dict,
               problem: str = "", scores: tuple[float | None, float | None] = (None, None)) -> list:
        self.seq += 1
        oid = self._client_oid(o.client_id) if o.client_id else f"{self.cfg.id}-{self.seq}"
        problem = problem or order_shape_problem(o) or self._check(o.symbol, o.qty, o.price, o.reduce_only)
        if problem:
            return [s.Decision(id=f"{oid}:d", ts=ts, session=self.cfg.id, symbol=o.symbol, action="reject",
                               reasoning=f"{reasoning}; {problem}", confidence=confidence, risk_score=scores[0],
                               opportunity_score=scores[1], intel=self.cfg.intel, features=features),
                    *self._tripped(self.guard.order_failed(problem), ts)]
        self.venue.submit(self._venue_order(oid, o, ts + self.cfg.latency_ms, self.seq))
        return [s.Decision(id=f"{oid}:d", ts=ts, session=self.cfg.id, symbol=o.symbol, action=o.side,
                           reasoning=reasoning, confidence=confidence, risk_score=scores[0],
                           opportunity_score=scores[1], intel=self.cfg.intel, features=features, order_id=oid),
                *self._tripped(self.guard.order_sent(), ts)]

    def _venue_order(self, oid: str, o, arrival: int, seq: int) -> VenueOrder:
        """A venue order from a PlaceOrder intent or a schemas.Order (they share REQUEST_FIELDS)."""
        return VenueOrder(id=oid, session=self.cfg.id, arrival=arrival, seq=seq,
                          oco=None if o.oco is None else f"{self.cfg.id}:{o.oco}",
                          **{f: getattr(o, f) for f in REQUEST_FIELDS})

    def submit_external(self, msg, now: int, feed_status: str = "live") -> list:
        """An order, cancel or amend from the orders topic: it reaches the venue `latency_ms` after it is seen.
        An order is refused while its symbol's feed is not live (stale or unpriced)."""
        arrival = max(msg.ts, now) + self.cfg.latency_ms
        oid = f"{self.cfg.id}-x-{msg.id if msg.kind == 'order' else msg.order_id}"
        self.seq += 1
        if msg.kind == "cancel":
            self.venue.cancel(oid, arrival, self.seq)
            return []
        if msg.kind == "amend":
            self.venue.amend(oid, _amend_changes(msg), arrival, self.seq)
            return []
        problem = self._check(msg.symbol, msg.qty, msg.price, msg.reduce_only)
        if not problem and feed_status != "live":
            problem = _stale_reason(msg.symbol, feed_status)
        out: list = []
        if not problem:
            problem, out = self._entry_block(msg.symbol, msg.side, msg.qty, msg.reduce_only, msg.price, now)
        if problem:
            rejected = self._venue_order(oid, msg, now, 0)
            return out + [self._order_event(StatusChange(rejected, now, "rejected", problem, 1, msg.qty, msg.price,
                                                         msg.trigger_price, Decimal(0), None)),
                          *self._tripped(self.guard.order_failed(problem), now)]
        self.venue.submit(self._venue_order(oid, msg, arrival, self.seq))
        return self._tripped(self.guard.order_sent(), now)

    def _check(self, symbol: str, qty: Decimal, price: Decimal | None, reduce_only: bool = False) -> str:
        inst = self.instruments.get(symbol)
        if inst is None:
            return f"unknown symbol {symbol}"
        if qty < inst.min_qty or not inst.on_lot(qty):
            return f"quantity {qty} is not a multiple of the lot step {inst.lot_step} (min {inst.min_qty})"
        if inst.max_qty is not None and qty > inst.max_qty:
            return f"quantity {qty} is above the instrument's maximum {inst.max_qty}"
        if price is not None and not inst.on_tick(price):
            return f"price {price} is not on the tick size {inst.tick_size}"
        if self.account.cash <= 0 and not reduce_only:  # an account in the red may still close what it holds
            return "no cash left in the account"
        return ""

    def _admit(self, order: VenueOrder, price: Decimal) -> str:
        """The account's check when an order goes live at the venue: margin (perpetuals) or balances (spot, DEX)."""
        if order.reduce_only:
            return ""
        inst = self.instruments[order.symbol]
        if price and order.qty * price < inst.min_notional:
            return f"order value {order.qty * price} is below the minimum {inst.min_notional}"
        others = [o for o in self.venue.open_orders() if o is not order and o.status != "pending"]
        return self.margin.admit(self.account, order, price, others, self._marks(self._books))

    def _decision(self, symbol: str, ts: int, action: str, reasoning: str, confidence: float, features: dict,
                  scores: tuple[float | None, float | None] = (None, None)) -> s.Decision:
        """A decision that sends nothing (hold, blocked)."""
        self.seq += 1
        return s.Decision(id=f"{self.cfg.id}-{self.seq}:d", ts=ts, session=self.cfg.id, symbol=symbol, action=action,
                          reasoning=reasoning[:2000], confidence=confidence, risk_score=scores[0],
                          opportunity_score=scores[1], intel=self.cfg.intel, features=features)

    # --- venue outcomes ------------------------------------------------------------------------------------
    def _book_fill(self, ex: Execution) -> None:
        sym = ex.order.symbol
        book = self._books.get(sym)
        if not self.account.position(sym).qty and book is not None and book.next_funding_ts is not None:
            if book.next_funding_ts <= ex.ts:  # a position opened after a funding time owes nothing for it
                self.funded[sym] = max(self.funded.get(sym, -1), book.next_funding_ts)
        before = self.account.position(sym).qty
        ex.realized = self.account.apply_fill(sym, ex.order.side, ex.price, ex.qty, ex.fee)
        ex.position = replace(self.account.position(sym))
        after = ex.position.qty
        hold = self.cfg.auto_close.max_hold_ms
        if not after:
            self.hold_until.pop(sym, None)
        elif hold is not None and self.status != "stopped" and (not before or (before > 0) != (after > 0)):
            self.hold_until[sym] = ex.ts + hold  # opened (or reversed) now

    def _outcomes(self, outcomes, ts: int) -> list:
        out: list = []
        flat: set[str] = set()
        for oc in outcomes:
            if isinstance(oc, StatusChange):
                out.append(self._order_event(oc))
                if oc.status == "rejected":
                    out += self._tripped(self.guard.order_failed(oc.reason), oc.ts)
            elif isinstance(oc, Refusal):
                out.append(s.Alert(id=f"alert:{self.cfg.id}:refused:{oc.order_id}:{oc.ts}", ts=oc.ts,
                                   severity="warning", source="venue", session=self.cfg.id, title="request refused",
                                   text=oc.reason))
            else:
                out += self._fill(oc)
                self.guard.order_filled()
                if oc.exec_type == "trade":
                    out += self._watch(self.account.equity(self._marks(self._books)), oc.ts)
                if not self.account.position(oc.order.symbol).qty:
                    flat.add(oc.order.symbol)
        for sym in sorted(flat):  # a closed position takes its reduce-only orders (TP/SL) with it, as on Bybit
            for order in self.venue.open_orders(sym):
                if order.reduce_only and order.status != "pending" and not self.account.position(sym).qty:
                    out += self._outcomes(self.venue.cancel_now(order, ts, "position closed"), ts)
        return out

    def _fill(self, ex: Execution) -> list:
        o = ex.order
        self.fills += 1
        fill = s.Fill(id=f"{o.id}:f{self.fills}", ts=ex.ts, session=self.cfg.id, order_id=o.id, symbol=o.symbol,
                      side=o.side, price=ex.price, qty=ex.qty, liquidity=ex.liquidity, fee_rate=ex.fee_rate,
                      fee=ex.fee, realized_pnl=ex.realized, settle_coin=self.account.settle_coin,
                      exec_type=ex.exec_type)
        pos = ex.position
        book = self._books.get(o.symbol)
        mark = book.mark() if book else None
        position = s.Position(id=f"{fill.id}:p", ts=ex.ts, session=self.cfg.id, symbol=o.symbol, qty=pos.qty,
                              avg_price=to_settle_unit(pos.avg_price) if pos.avg_price else None,
                              mark=mark, realized_pnl=pos.realized, unrealized_pnl=pos.unrealized(mark))
        return [fill, position]

    def _order_event(self, e: StatusChange) -> s.OrderEvent:
        o = e.order
        return s.OrderEvent(id=f"{o.id}:{e.status}:{e.n}", ts=e.ts, session=self.cfg.id, order_id=o.id,
                            symbol=o.symbol, side=o.side, type=o.type, status=e.status, qty=e.qty, price=e.price,
                            trigger_price=e.trigger_price, filled_qty=e.filled,
                            avg_price=None if e.avg_price is None else to_settle_unit(e.avg_price), reason=e.reason)

    def _marks(self, books: dict[str, Book]) -> dict[str, Decimal]:
        marks = {}
        for sym in self.account.positions:
            book = books.get(sym)
            m = book.mark() if book else None
            if m is not None:
                marks[sym] = m
        return marks

    def equity_message(self, ts: int, books: dict[str, Book]) -> s.Equity:
        marks = self._marks(books)
        unrealized = self.account.unrealized(marks)
        return s.Equity(id=f"{self.cfg.id}:eq:{ts}", ts=ts, session=self.cfg.id, cash=self.account.cash,
                        equity=self.account.cash + unrealized, realized_pnl=self.account.realized,
                        unrealized_pnl=unrealized, fees=self.account.fees, funding=self.account.funding,
                        open_positions=self.account.open_positions())

    # --- checkpoint ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Everything a restarted worker needs, the config included (it may have changed at run time)."""
        return {"cfg": self.cfg.model_dump(mode="json"), "status": self.status, "announced": self.announced,
                "account": self.account.to_dict(), "venue": self.venue.to_dict(), "strategy": self.strategy.to_dict(),
                "bars": self.bars.to_dict(), "vol": self.vol.to_dict(), "guard": self.guard.to_dict(),
                "seq": self.seq, "changes": self.changes, "next_equity_ts": self.next_equity_ts, "fills": self.fills,
                "funded": self.funded, "hold_until": self.hold_until}

    def load(self, d: dict) -> None:
        self.status, self.announced = d["status"], d["announced"]
        self.account = Account.from_dict(d["account"])
        self.venue.load(d["venue"])
        self.strategy.load(d["strategy"])
        self.bars.load(d["bars"])
        self.vol.load(d["vol"])
        self.guard.load(d["guard"])
        self.seq, self.changes, self.next_equity_ts = d["seq"], d["changes"], d["next_equity_ts"]
        self.fills = d["fills"]
        self.funded = dict(d["funded"])
        self.hold_until = dict(d["hold_until"])


def _amend_changes(x) -> dict[str, str | None]:
    """The new values of an amend (an AmendIntent or a schemas.AmendOrder), as the venue keeps them."""
    return {k: None if getattr(x, k) is None else str(getattr(x, k)) for k in ("qty", "price", "trigger_price")}


def _stale_reason(symbol: str, status: str) -> str:
    return f"{symbol} data is {status}: no trading on old prices"


def _not_live(symbol: str, books: dict[str, Book]) -> str:
    """Why the symbol's prices must not be traded on (its feed is stale or unpriced), or ''."""
    book = books.get(symbol)
    return "" if book is None or book.status == "live" else _stale_reason(symbol, book.status)
