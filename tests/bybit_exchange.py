"""The matching engine of the Bybit stand-in (tests/bybit_private_server.py): one unified account trading linear
perpetuals in one-way mode, matched against the public market data it is given (`on_public_frame`: the frames a
client of tests/bybit_ws_server.py was sent). Pure: no I/O, no clock (each call takes `now`, epoch ms), Decimal
throughout. Each change returns events, ("order" | "execution" | "position", object) and ("wallet", None), in the
order Bybit would push them.

Matching, as Bybit does it where it matters to a client and simpler where it does not:
- a market order, or a limit order that crosses, takes its whole qty at the best opposite price (the order book's
  top, else the ticker's bid1/ask1) as taker; a limit order that does not cross rests (GTC), or is cancelled (IOC,
  FOK: EC_NoImmediateQtyToFill); a PostOnly that would cross is cancelled (EC_PostOnlyWillTakeLiquidity);
- a resting limit fills as maker, at its price, from public trades strictly through it, each trade's size at most,
  better prices first, then older orders; a part fill leaves it PartiallyFilled;
- a conditional order (triggerPrice) is Untriggered until LastPrice or MarkPrice (its triggerBy) rises to it
  (triggerDirection 1) or falls to it (2), then is matched as a new Market or Limit order;
- fees: taker 0.00055, maker 0.0002 of the exec value, rounded half-up to 8 decimals; the wallet takes realized
  P&L minus fees at each fill; cumRealisedPnl includes the fees, as Bybit's does;
- margin: an order needs notional / leverage (default 10) of what the wallet has beyond its positions' and open
  orders' initial margin (reduce-only orders need none), else 110007;
- an order for a symbol with no market data yet is accepted and Rejected (EC_NoMarketData, a made-up reason).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

ZERO = Decimal(0)
TAKER, MAKER = Decimal("0.00055"), Decimal("0.0002")
EIGHT = Decimal("0.00000001")
MM_RATE = Decimal("0.005")  # maintenance margin rate of the first risk tier
OPEN = ("New", "PartiallyFilled", "Untriggered")
Event = tuple[str, Any]


class Refused(Exception):
    """A request Bybit answers with a retCode other than 0."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Instrument:
    tick: Decimal
    step: Decimal
    min_qty: Decimal


@dataclass
class Order:
    order_id: str
    link_id: str
    symbol: str
    side: str
    order_type: str
    qty: Decimal
    price: Decimal
    tif: str
    reduce_only: bool
    trigger_price: Decimal
    trigger_direction: int
    trigger_by: str
    take_profit: Decimal
    stop_loss: Decimal
    created: int
    last_price_on_created: Decimal
    updated: int = 0
    status: str = "New"
    cum_qty: Decimal = ZERO
    cum_value: Decimal = ZERO
    cum_fee: Decimal = ZERO
    reject_reason: str = "EC_NoError"
    cancel_type: str = "UNKNOWN"

    @property
    def leaves(self) -> Decimal:
        return self.qty - self.cum_qty if self.status in OPEN else ZERO

    @property
    def avg_price(self) -> Decimal:
        return (self.cum_value / self.cum_qty).quantize(EIGHT).normalize() if self.cum_qty else ZERO

    @property
    def stop_order_type(self) -> str:
        return "Stop" if self.trigger_price else ""


@dataclass(frozen=True)
class Execution:
    exec_id: str
    order: Order  # a copy, as the order was after this fill
    price: Decimal
    qty: Decimal
    fee: Decimal
    fee_rate: Decimal
    is_maker: bool
    time: int
    closed_size: Decimal
    mark_price: Decimal
    seq: int

    @property
    def value(self) -> Decimal:
        return self.price * self.qty


@dataclass
class Position:
    symbol: str
    leverage: Decimal = Decimal(10)
    size: Decimal = ZERO  # signed: long > 0
    entry: Decimal = ZERO
    cum_realised: Decimal = ZERO
    cur_realised: Decimal = ZERO
    created: int = 0
    updated: int = 0
    seq: int = 0

    @property
    def side(self) -> str:
        return "Buy" if self.size > 0 else "Sell" if self.size < 0 else ""

    @property
    def im(self) -> Decimal:
        return abs(self.size) * self.entry / self.leverage


@dataclass
class Market:
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    ticker: dict[str, str] = field(default_factory=dict)
    trade_ids: set[str] = field(default_factory=set)

    def price(self, name: str) -> Decimal | None:
        return Decimal(self.ticker[name]) if self.ticker.get(name) else None

    def best(self, side: str) -> Decimal | None:
        """What an order of `side` takes: the lowest ask for a buy, the highest bid for a sell."""
        book = self.asks if side == "Buy" else self.bids
        if book:
            return min(book) if side == "Buy" else max(book)
        return self.price("ask1Price" if side == "Buy" else "bid1Price")


def _dec(value: Any, what: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise Refused(10001, f"params error: {what} invalid") from None
    if not number.is_finite():
        raise Refused(10001, f"params error: {what} invalid")
    return number


class BybitExchange:
    def __init__(self, instruments: dict[str, Instrument], wallet: dict[str, Decimal] | None = None) -> None:
        self.instruments = instruments
        self.wallet = wallet if wallet is not None else {"USDT": Decimal(0)}
        self.orders: dict[str, Order] = {}  # by orderId, in creation order
        self.executions: list[Execution] = []  # oldest first
        self.positions: dict[str, Position] = {}
        self.markets: dict[str, Market] = {}
        self.margin_mode = "REGULAR_MARGIN"
        self.seq = 0

    # -- market data -------------------------------------------------------------------------------------------
    def on_public_frame(self, topic: str, frame: dict[str, Any], now: int) -> list[Event]:
        kind, symbol = topic.split(".")[0], topic.rsplit(".", 1)[-1]
        market = self.markets.setdefault(symbol, Market())
        data, events = frame.get("data"), list[Event]()
        if kind == "orderbook" and isinstance(data, dict):
            if frame.get("type") == "snapshot":
                market.bids, market.asks = {}, {}
            for side, book in (("b", market.bids), ("a", market.asks)):
                for price, size in data.get(side, []):
                    if Decimal(size):
                        book[Decimal(price)] = Decimal(size)
                    else:
                        book.pop(Decimal(price), None)
        elif kind == "tickers" and isinstance(data, dict):
            market.ticker = ({} if frame.get("type") == "snapshot" else market.ticker) | data
        elif kind == "publicTrade" and isinstance(data, list):
            for trade in data:
                if trade["i"] in market.trade_ids:  # the same frame seen by a second client
                    continue
                market.trade_ids.add(trade["i"])
                market.ticker["lastPrice"] = trade["p"]
                self._trade(symbol, Decimal(trade["p"]), Decimal(trade["v"]), now, events)
        else:
            return []
        self._triggers(symbol, now, events)
        return events

    def _trade(self, symbol: str, price: Decimal, size: Decimal, now: int, events: list[Event]) -> None:
        resting = [o for o in self.orders.values() if o.symbol == symbol and o.status in ("New", "PartiallyFilled")
                   and o.order_type == "Limit" and (price < o.price if o.side == "Buy" else price > o.price)]
        resting.sort(key=lambda o: (-o.price if o.side == "Buy" else o.price, o.created))
        for order in resting:
            if size <= 0:
                break
            qty = min(order.leaves, size)
            size -= qty
            self._fill(order, qty, order.price, True, now, events)
            events.append(("order", order))

    def _triggers(self, symbol: str, now: int, events: list[Event]) -> None:
        market = self.markets[symbol]
        for order in [o for o in self.orders.values() if o.symbol == symbol and o.status == "Untriggered"]:
            price = market.price("markPrice" if order.trigger_by == "MarkPrice" else "lastPrice")
            if price is not None and (price >= order.trigger_price if order.trigger_direction == 1
                                      else price <= order.trigger_price):
                order.status, order.updated = "New", now
                self._match(order, now, events)

    # -- orders ------------------------------------------------------------------------------------------------
    def create(self, p: dict[str, Any], now: int) -> tuple[Order, list[Event]]:
        symbol = str(p.get("symbol") or "")
        instrument = self.instruments.get(symbol)
        if instrument is None:
            raise Refused(10001, "params error: symbol invalid")
        side, order_type, tif = p.get("side"), p.get("orderType"), p.get("timeInForce") or "GTC"
        if side not in ("Buy", "Sell") or order_type not in ("Market", "Limit"):
            raise Refused(10001, "params error: side or orderType invalid")
        if tif not in ("GTC", "IOC", "FOK", "PostOnly") or order_type == "Market" and tif == "PostOnly":
            raise Refused(10001, "params error: timeInForce invalid")
        link = p.get("orderLinkId") or ""
        if link and any(o.link_id == link for o in self.orders.values()):
            raise Refused(110072, "OrderLinkedID is duplicate")
        qty = self._qty(instrument, p.get("qty"))
        price = self._price(instrument, p["price"], "price") if order_type == "Limit" else ZERO
        trigger = self._price(instrument, p["triggerPrice"], "triggerPrice") if p.get("triggerPrice") else ZERO
        direction = int(p.get("triggerDirection") or 0)
        if trigger and direction not in (1, 2):
            raise Refused(10001, "params error: triggerDirection invalid")
        market = self.markets.get(symbol)
        reduce_only = bool(p.get("reduceOnly"))
        position = self.positions.get(symbol)
        if reduce_only and (position is None or position.side in ("", side)):
            raise Refused(110017, "current position is zero, cannot fix reduce-only order qty")
        order = Order(f"bybit-{len(self.orders) + 1}", link, symbol, side, order_type, qty, price,
                      "IOC" if order_type == "Market" else tif, reduce_only, trigger, direction,
                      p.get("triggerBy") or "LastPrice", _dec(p.get("takeProfit") or 0, "takeProfit"),
                      _dec(p.get("stopLoss") or 0, "stopLoss"), now,
                      (market.price("lastPrice") if market else None) or ZERO, now)
        reference = price or trigger or (market.best(side) if market else None)
        if not reduce_only and reference and qty * reference / self.position(symbol).leverage > self.available():
            raise Refused(110007, "ab not enough for new order")
        self.orders[order.order_id] = order
        events: list[Event] = []
        if market is None or market.best(side) is None and market.price("lastPrice") is None:
            order.status, order.reject_reason = "Rejected", "EC_NoMarketData"
            events.append(("order", order))
        elif trigger:
            order.status = "Untriggered"
            events.append(("order", order))
            self._triggers(symbol, now, events)
        else:
            self._match(order, now, events)
        return order, events

    def amend(self, p: dict[str, Any], now: int) -> tuple[Order, list[Event]]:
        order = self._open(p, "order not exists or too late to replace")
        instrument = self.instruments[order.symbol]
        if p.get("qty"):
            qty = self._qty(instrument, p["qty"])
            if qty <= order.cum_qty:
                raise Refused(10001, "params error: qty must be greater than the filled qty")
            order.qty = qty
        if p.get("price") and order.order_type == "Limit":
            order.price = self._price(instrument, p["price"], "price")
        if p.get("triggerPrice") and order.status == "Untriggered":
            order.trigger_price = self._price(instrument, p["triggerPrice"], "triggerPrice")
        order.updated, events = now, []
        if order.status == "Untriggered":
            events.append(("order", order))
            self._triggers(order.symbol, now, events)
        else:
            self._match(order, now, events)
        return order, events

    def cancel(self, p: dict[str, Any], now: int) -> tuple[Order, list[Event]]:
        order = self._open(p, "order not exists or too late to cancel")
        order.status = "Deactivated" if order.status == "Untriggered" else "Cancelled"
        order.cancel_type, order.updated = "CancelByUser", now
        return order, [("order", order)]

    def set_leverage(self, symbol: str, buy: Any, sell: Any) -> None:
        if symbol not in self.instruments or buy != sell:
            raise Refused(10001, "params error: buyLeverage must equal sellLeverage in one-way mode")
        leverage = _dec(buy, "leverage")
        if not 1 <= leverage <= 100:
            raise Refused(10001, "params error: leverage invalid")
        position = self.position(symbol)
        if position.leverage == leverage:
            raise Refused(110043, "leverage not modified")
        position.leverage = leverage

    def find(self, order_id: str | None = None, link_id: str | None = None) -> Order | None:
        if order_id:
            return self.orders.get(order_id)
        return next((o for o in self.orders.values() if link_id and o.link_id == link_id), None)

    def position(self, symbol: str) -> Position:
        return self.positions.setdefault(symbol, Position(symbol))

    # -- money -------------------------------------------------------------------------------------------------
    def order_im(self) -> Decimal:
        return sum((o.leaves * o.price / self.position(o.symbol).leverage for o in self.orders.values()
                    if o.status in ("New", "PartiallyFilled") and not o.reduce_only), ZERO)

    def position_im(self) -> Decimal:
        return sum((p.im for p in self.positions.values()), ZERO)

    def unrealised(self, position: Position) -> Decimal:
        market = self.markets.get(position.symbol)
        mark = (market.price("markPrice") if market else None) or position.entry
        return (mark - position.entry) * position.size

    def available(self) -> Decimal:
        return self.wallet.get("USDT", ZERO) - self.position_im() - self.order_im()

    # -- matching ----------------------------------------------------------------------------------------------
    def _match(self, order: Order, now: int, events: list[Event]) -> None:
        best = self.markets[order.symbol].best(order.side)
        crosses = best is not None and (order.order_type == "Market" or (
            best <= order.price if order.side == "Buy" else best >= order.price))
        if crosses and order.tif == "PostOnly":
            order.status, order.reject_reason = "Cancelled", "EC_PostOnlyWillTakeLiquidity"
        elif crosses and best is not None:
            self._fill(order, order.leaves, best, False, now, events)
        elif order.tif in ("IOC", "FOK"):
            order.status, order.reject_reason = "Cancelled", "EC_NoImmediateQtyToFill"
        events.append(("order", order))

    def _fill(self, order: Order, qty: Decimal, price: Decimal, maker: bool, now: int,
              events: list[Event]) -> None:
        position = self.position(order.symbol)
        signed = qty if order.side == "Buy" else -qty
        closing = position.size and (position.size > 0) != (signed > 0)
        if order.reduce_only:  # Bybit shrinks a reduce-only order to the position it reduces
            qty = min(qty, abs(position.size)) if closing else ZERO
            order.qty, signed = order.cum_qty + qty, qty if order.side == "Buy" else -qty
            if not qty:
                order.status, order.reject_reason = "Cancelled", "EC_ReduceOnlyNoPosition"
                return
        closed = min(qty, abs(position.size)) if closing else ZERO
        pnl = closed * (price - position.entry) * (1 if position.size > 0 else -1)
        rate = MAKER if maker else TAKER
        fee = (qty * price * rate).quantize(EIGHT, ROUND_HALF_UP)
        size = position.size + signed
        if not position.size:
            position.entry, position.created, position.cur_realised = price, now, ZERO
        elif not closing:
            position.entry = ((position.entry * abs(position.size) + price * qty) / abs(size)).quantize(EIGHT)
        elif abs(signed) > closed:  # through zero: the rest opens the other side
            position.entry, position.created = price, now
        if not size:
            position.entry = ZERO
        position.size, position.updated = size, now
        position.cum_realised += pnl - fee
        position.cur_realised += pnl - fee
        self.wallet["USDT"] = self.wallet.get("USDT", ZERO) + pnl - fee
        order.cum_qty += qty
        order.cum_value += qty * price
        order.cum_fee += fee
        order.status, order.updated = ("Filled" if order.cum_qty >= order.qty else "PartiallyFilled"), now
        self.seq += 1
        position.seq = self.seq
        mark = self.markets[order.symbol].price("markPrice") or price
        execution = Execution(f"{order.order_id}-{self.seq}", Order(**order.__dict__), price, qty, fee, rate, maker,
                              now, closed, mark, self.seq)
        self.executions.append(execution)
        events += [("execution", execution), ("position", position), ("wallet", None)]

    def _open(self, p: dict[str, Any], message: str) -> Order:
        order = self.find(p.get("orderId"), p.get("orderLinkId"))
        if order is None or order.status not in OPEN or p.get("symbol") not in (None, order.symbol):
            raise Refused(110001, message)
        return order

    @staticmethod
    def _qty(instrument: Instrument, value: Any) -> Decimal:
        qty = _dec(value, "qty")
        if qty < instrument.min_qty or qty % instrument.step:
            raise Refused(10001, "params error: qty invalid")
        return qty

    @staticmethod
    def _price(instrument: Instrument, value: Any, what: str) -> Decimal:
        price = _dec(value, what)
        if price <= 0 or price % instrument.tick:
            raise Refused(10001, f"params error: {what} invalid")
        return price
