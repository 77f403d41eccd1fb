"""A session's margin rules: what an order needs before it may go live, and which positions the venue liquidates.

Perpetuals (category "linear") are margined at the session's leverage per symbol, capped by the instrument's
maximum, in cross or isolated mode (core/venue/margin.py holds Bybit's formulas). Spot and DEX tokens are bought
with the settle coin and sold only from the coin held: no leverage, no short."""
from __future__ import annotations

from decimal import Decimal
from typing import cast

from papertape.core.account import Account, PositionState
from papertape.core.instruments import Instrument, RiskTier
from papertape.core.market.book import Book
from papertape.core.money import SETTLE_UNIT
from papertape.core.session.config import SessionConfig
from papertape.core.venue import margin as m
from papertape.core.venue.dex import gas_cost, swap
from papertape.core.venue.fees import FeeSchedule
from papertape.core.venue.paper import VenueOrder
from schemas.vocabulary import PositionSide, Side

ZERO = Decimal(0)
UNLIMITED = Decimal(10) ** 30
# A position the venue takes over: (symbol, closing side, qty, price, fee, fee rate).
Liquidation = tuple[str, Side, Decimal, Decimal, Decimal, Decimal]


class MarginRules:
    def __init__(self, cfg: SessionConfig, instruments: dict[str, Instrument], fees: FeeSchedule | None = None) -> None:
        self.cfg = cfg
        self.instruments = instruments
        self.fees = fees or cfg.fee_schedule(instruments)
        self._mmr: dict[str, float] = {}

    def leverage(self, symbol: str) -> Decimal:
        inst = self.instruments[symbol]
        return min(self.cfg.leverage_by_symbol.get(symbol, self.cfg.default_leverage), inst.max_leverage)

    def tiers(self, symbol: str) -> tuple[RiskTier, ...]:
        """The instrument's risk tiers; without a table, one tier whose maintenance rate is half the initial rate
        at the maximum leverage (Bybit's first tiers: 100x -> 0.5%, 50x -> 1%, 25x -> 2%)."""
        inst = self.instruments[symbol]
        tiers = inst.risk_tiers
        if tiers:
            return (*tiers, RiskTier(UNLIMITED, tiers[-1].mmr, tiers[-1].mm_deduction, tiers[-1].max_leverage))
        return (RiskTier(UNLIMITED, 1 / (2 * inst.max_leverage), ZERO, inst.max_leverage),)

    def _max_mmr(self, symbol: str) -> float:
        rate = self._mmr.get(symbol)
        if rate is None:
            rate = self._mmr[symbol] = float(max(t.mmr for t in self.tiers(symbol)))
        return rate

    def funding(self, qty: Decimal, mark: Decimal, rate: Decimal) -> Decimal:
        return m.funding_payment(qty, mark, rate)

    # --- admission -----------------------------------------------------------------------------------------
    def admit(self, account: Account, order: VenueOrder, price: Decimal, others: list[VenueOrder],
              marks: dict[str, Decimal]) -> str:
        """Why the account cannot take `order` at `price`, given its other open orders, or ''."""
        inst = self.instruments[order.symbol]
        if inst.category == "linear":
            return self._perp(account, order, price, others, marks)
        return self._spot(account, order, price, others, inst)

    def _perp(self, account: Account, order: VenueOrder, price: Decimal, others: list[VenueOrder],
              marks: dict[str, Decimal]) -> str:
        opening = self._opening_qty(account, order.symbol, order.side, order.left)
        if not opening:
            return ""
        need = opening * price / self.leverage(order.symbol) + opening * price * self.fees.rate(order.symbol, "taker")
        free = self.free_balance(account, others, marks)
        if need > free:
            return (f"insufficient available balance: {_q(need)} {account.settle_coin} of initial margin and fee "
                    f"needed, {_q(free)} available")
        return ""

    def _spot(self, account: Account, order: VenueOrder, price: Decimal, others: list[VenueOrder],
              inst: Instrument) -> str:
        if order.side == "sell":
            held = account.position(order.symbol).qty
            selling = sum((o.left for o in others if o.symbol == order.symbol and o.side == "sell"), ZERO)
            if order.left > held - selling:
                return f"not enough {inst.base_coin or order.symbol} to sell: holds {held}, {selling} already on sale"
            return ""
        if inst.category == "dex":
            dex = self.cfg.dex
            try:
                cost = swap("buy", order.left, price, dex.depth(order.symbol), dex.pool_fee).quote_amount
            except ValueError as exc:
                return f"the pool cannot fill it: {exc}"
            cost += gas_cost(dex, order.symbol)
        else:
            cost = order.left * price * (1 + self.fees.rate(order.symbol, "taker"))
        free = self.free_balance(account, others, {})
        if cost > free:
            return f"insufficient {account.settle_coin}: {_q(cost)} needed, {_q(free)} available"
        return ""

    def free_balance(self, account: Account, others: list[VenueOrder], marks: dict[str, Decimal]) -> Decimal:
        """Wallet balance less what positions and open orders hold: perpetual initial margin, the cost of coins
        held, the value of open spot buys. In cross mode unrealized P&L counts too."""
        free = account.cash
        for sym, pos in account.positions.items():
            if not pos.qty:
                continue
            if self.instruments[sym].category == "linear":
                free -= abs(pos.cost) / self.leverage(sym)
                if self.cfg.margin_mode == "cross" and sym in marks:
                    free += pos.unrealized(marks[sym])
            else:
                free -= pos.cost
        for o in others:
            if o.reduce_only:
                continue
            price = o.price or o.trigger_price or marks.get(o.symbol) or ZERO
            if self.instruments[o.symbol].category == "linear":
                free -= self._opening_qty(account, o.symbol, o.side, o.left) * price / self.leverage(o.symbol)
            elif o.side == "buy":
                free -= o.left * price
        return free

    @staticmethod
    def _opening_qty(account: Account, symbol: str, side: Side, qty: Decimal) -> Decimal:
        """The part of an order that opens or adds to a position (a closing part needs no margin)."""
        pos = account.position(symbol).qty
        if (pos > 0 and side == "sell") or (pos < 0 and side == "buy"):
            return max(ZERO, qty - abs(pos))
        return qty

    # --- liquidation ---------------------------------------------------------------------------------------
    def may_liquidate(self, account: Account, books: dict[str, Book]) -> bool:
        """A float screen before the exact check: False only when every perpetual position (isolated) or the
        account (cross) is more than 1% of its maintenance margin plus 1 settle unit away from it."""
        cross_equity, cross_mm = float(account.cash), 0.0
        for sym, p in account.positions.items():
            book = books.get(sym)
            mark = book.mark_f() if book is not None and p.qty else None
            if mark is None:
                continue
            qty, cost = float(p.qty), float(p.cost)
            upnl = qty * mark - cost
            if self.instruments[sym].category != "linear":
                cross_equity += upnl
                continue
            mm = abs(qty) * mark * self._max_mmr(sym)  # >= the tier's value x rate - deduction
            if self.cfg.margin_mode == "isolated" and abs(cost) / float(self.leverage(sym)) + upnl <= mm * 1.01 + 1:
                return True
            cross_equity += upnl
            cross_mm += mm
        return self.cfg.margin_mode == "cross" and cross_mm > 0 and cross_equity <= cross_mm * 1.01 + 1

    def liquidations(self, account: Account, marks: dict[str, Decimal]) -> list[Liquidation]:
        """Each perpetual position the venue takes over now."""
        perps = {sym: p for sym, p in account.positions.items()
                 if p.qty and self.instruments[sym].category == "linear" and sym in marks}
        if not perps:
            return []
        if self.cfg.margin_mode == "isolated":
            hit = [sym for sym, p in sorted(perps.items())
                   if m.isolated_breached(_side(p.qty), abs(p.qty), _entry(p), marks[sym],
                                          abs(p.cost) / self.leverage(sym), self.tiers(sym))]
        else:
            total_mm = sum((m.maintenance_margin(abs(p.qty) * marks[sym], self.tiers(sym)) for sym, p in perps.items()),
                           ZERO)
            hit = sorted(perps) if m.cross_breached(account.equity(marks), total_mm) else []
        out: list[Liquidation] = []
        for sym in hit:
            p = perps[sym]
            rate = self.fees.rate(sym, "taker")
            price, fee = m.liquidation_fill(_side(p.qty), abs(p.qty), _entry(p), self.leverage(sym), marks[sym], rate,
                                            self.cfg.margin_mode)
            out.append((sym, "sell" if p.qty > 0 else "buy", abs(p.qty), price, fee, rate))
        return out


def _entry(p: PositionState) -> Decimal:
    """The average entry price of an open position (qty != 0: it has one)."""
    return cast(Decimal, p.avg_price)


def _side(qty: Decimal) -> PositionSide:
    return "long" if qty > 0 else "short"


def _q(x: Decimal) -> str:
    return format(x.quantize(SETTLE_UNIT), "f")
