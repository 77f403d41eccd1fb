"""Issue 20 (5): a peer on the same tape. NautilusTrader's backtest engine (Rust core, Cython) and papertape's core,
timed in the same run on the same frames, with the same strategies and the same order schedule.

papertape: bench_core's chained run (MarketPartition -> Engine on every engine partition), the bundled tape cut into
md.events batches and decoded before the clock starts: EMA-cross sessions (bench/synthetic.ema_sessions) plus
bench_core's scripted session (market orders and resting limit orders on BTCUSDT). Compiled or pure Python as
papertape/native.py picks (PAPERTAPE_PURE_PYTHON=1: pure Python); the first line says which.

NautilusTrader: the same decoded frames, each turned into one data object (a trade into a TradeTick, a quote into a
QuoteTick, a depth update into one OrderBookDeltas) before the clock starts, fed to a BacktestEngine with a
simulated Bybit-like venue (margin account in USDT, netting, Bybit's VIP0 fees, the tape's symbols as
CryptoPerpetual with papertape's tick sizes and minimums, an L2 book built from the depth updates, which fills
market orders and resting limit orders); as many EMA-cross strategies (the same EMA periods and bar sizes, long or
flat on each symbol; bars of trade prices, aggregated by the engine) and one strategy submitting the scripted
session's very orders at their times. Only `engine.run()` is timed. An event is a market frame on both sides.

Each side runs --repeat times from fresh state, taking turns; the best time is reported (the machine may be shared).

Run on demand: python bench/bench_peer.py [--sessions N] [--engine-partitions N] [--repeat N] [--limit FRAMES]
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_core import chained, md_messages, new_engines, new_market, scripted_session, timed  # noqa: E402
from synthetic import ema_sessions, load_tape  # noqa: E402

import schemas as s  # noqa: E402
from papertape import native  # noqa: E402
from papertape.config import Settings  # noqa: E402
from papertape.core.engine import Engine  # noqa: E402
from papertape.core.instruments import Instrument  # noqa: E402
from papertape.core.market.partition import MarketPartition  # noqa: E402
from papertape.core.session.config import SessionConfig  # noqa: E402
from papertape.core.venue.fees import FeeSchedule  # noqa: E402

try:
    import nautilus_trader
    from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
    from nautilus_trader.config import LoggingConfig, StrategyConfig
    from nautilus_trader.indicators import ExponentialMovingAverage
    from nautilus_trader.model.currencies import USDT
    from nautilus_trader.model.data import (
        Bar,
        BarType,
        BookOrder,
        OrderBookDelta,
        OrderBookDeltas,
        QuoteTick,
        TradeTick,
    )
    from nautilus_trader.model.enums import (
        AccountType,
        AggressorSide,
        BookAction,
        BookType,
        OmsType,
        OrderSide,
        RecordFlag,
    )
    from nautilus_trader.model.events import OrderDenied, OrderFilled, OrderRejected
    from nautilus_trader.model.identifiers import InstrumentId, Symbol, TradeId, Venue
    from nautilus_trader.model.instruments import CryptoPerpetual
    from nautilus_trader.model.objects import Currency, Money, Price, Quantity
    from nautilus_trader.trading.strategy import Strategy
except ImportError:
    print("bench_peer.py needs NautilusTrader, the bench extra's peer: pip install -e '.[bench]' "
          "(or: .venv/bin/pip install 'nautilus_trader==1.221.0')", file=sys.stderr)
    sys.exit(2)

VENUE = Venue("BYBIT")
SIDE = {"buy": OrderSide.BUY, "sell": OrderSide.SELL}
AGGRESSOR = {"buy": AggressorSide.BUYER, "sell": AggressorSide.SELLER}
# The EMA strategies' fixed order size per symbol (papertape sizes by confidence and equity): about 600 USDT.
TRADE_SIZE = {"BTCUSDT": Decimal("0.01"), "ETHUSDT": Decimal("0.2")}


def decimals(x: Decimal) -> int:
    return max(0, -int(x.as_tuple().exponent))


def perpetual(spec: Instrument, size_precision: int, fees: FeeSchedule) -> CryptoPerpetual:
    """papertape's spec as a linear USDT perpetual. `size_precision` can be finer than the lot step's: sizes on
    the tape can be (ETHUSDT's book: 0.001, its lot step: 0.01), and NautilusTrader keeps one precision for both."""
    price_precision = decimals(spec.tick_size)
    return CryptoPerpetual(
        instrument_id=InstrumentId(Symbol(spec.symbol), VENUE), raw_symbol=Symbol(spec.symbol),
        base_currency=Currency.from_str(spec.base_coin or spec.symbol.removesuffix(spec.settle_coin)),
        quote_currency=USDT, settlement_currency=USDT, is_inverse=False,
        price_precision=price_precision, price_increment=Price(spec.tick_size, price_precision),
        size_precision=size_precision, size_increment=Quantity(spec.lot_step, size_precision),
        min_quantity=Quantity(spec.min_qty, size_precision), min_notional=Money(spec.min_notional, USDT),
        margin_init=1 / spec.max_leverage, margin_maint=1 / (2 * spec.max_leverage),
        maker_fee=fees.maker, taker_fee=fees.taker, ts_event=0, ts_init=0)


def tape_size_precision(frames: list[s.MarketFrame]) -> dict[str, int]:
    """Per symbol, the most decimals of any size on the tape."""
    out: dict[str, int] = {}
    for f in frames:
        sizes = [t.qty for t in f.trades] + [q for _, q in f.bids] + [q for _, q in f.asks]
        sizes += [q for q in (f.bid_qty, f.ask_qty) if q is not None]
        out[f.symbol] = max([out.get(f.symbol, 0)] + [decimals(Decimal(q)) for q in sizes])
    return out


def to_nautilus(frames: list[s.MarketFrame], instruments: dict[str, CryptoPerpetual]) -> dict[tuple[type, str],
                                                                                               list[Any]]:
    """Each frame as one NautilusTrader data object per thing it carries (on the bundled tape every frame carries
    one thing: a trade, a quote or a depth update), grouped by type and symbol as BacktestEngine.add_data wants them
    (it checks the first element of each list alone)."""
    out: dict[tuple[type, str], list[Any]] = defaultdict(list)
    for seq, f in enumerate(frames, 1):
        inst = instruments[f.symbol]
        iid, pp, sp = inst.id, inst.price_precision, inst.size_precision
        ns = f.ts * 1_000_000
        for t in f.trades:
            out[TradeTick, f.symbol].append(TradeTick(iid, Price(float(t.price), pp), Quantity(float(t.qty), sp),
                                            AGGRESSOR[t.side], TradeId(str(seq)), t.ts * 1_000_000, ns))
        if f.bid is not None and f.ask is not None and f.bid_qty is not None and f.ask_qty is not None:
            out[QuoteTick, f.symbol].append(QuoteTick(iid, Price(float(f.bid), pp), Price(float(f.ask), pp),
                                            Quantity(float(f.bid_qty), sp), Quantity(float(f.ask_qty), sp), ns, ns))
        if f.bids or f.asks:
            flags = RecordFlag.F_SNAPSHOT if f.snapshot else 0
            deltas = [OrderBookDelta.clear(iid, seq, ns, ns)] if f.snapshot else []
            levels = [(OrderSide.BUY, *lv) for lv in f.bids] + [(OrderSide.SELL, *lv) for lv in f.asks]
            for i, (side, p, q) in enumerate(levels, 1):
                size = float(q)
                action = (BookAction.ADD if f.snapshot else BookAction.UPDATE) if size else BookAction.DELETE
                order = BookOrder(side, Price(float(p), pp), Quantity(size, sp), 0)
                last = RecordFlag.F_LAST if i == len(levels) else 0  # the book is consistent after this delta
                deltas.append(OrderBookDelta(iid, action, order, flags | last, seq, ns, ns))
            out[OrderBookDeltas, f.symbol].append(OrderBookDeltas(iid, deltas))
    return out


class EmaCrossConfig(StrategyConfig, frozen=True):
    symbols: tuple[str, ...]
    fast: int
    slow: int
    bar_seconds: int


class EmaCross(Strategy):
    """papertape's trend_following as its ema_cross sessions run it: on every bar close, long while the fast EMA
    of closes is above the slow one, flat while below; each symbol apart, this strategy's own position."""

    def __init__(self, config: EmaCrossConfig) -> None:
        super().__init__(config)
        self.emas: dict[BarType, tuple[ExponentialMovingAverage, ExponentialMovingAverage]] = {}

    def on_start(self) -> None:
        cfg = self.config
        for sym in cfg.symbols:
            bar_type = BarType.from_str(f"{sym}.{VENUE}-{cfg.bar_seconds}-SECOND-LAST-INTERNAL")
            self.emas[bar_type] = (ExponentialMovingAverage(cfg.fast), ExponentialMovingAverage(cfg.slow))
            for ema in self.emas[bar_type]:
                self.register_indicator_for_bars(bar_type, ema)
            self.subscribe_bars(bar_type)

    def on_bar(self, bar: Bar) -> None:
        fast, slow = self.emas[bar.bar_type]
        if not slow.initialized:
            return
        iid = bar.bar_type.instrument_id
        holding = self.cache.positions_open_count(instrument_id=iid, strategy_id=self.id) > 0
        if fast.value > slow.value and not holding:
            qty = TRADE_SIZE[iid.symbol.value]
            self.submit_order(self.order_factory.market(iid, OrderSide.BUY, self.cache.instrument(iid).make_qty(qty)))
        elif fast.value <= slow.value and holding:
            self.close_all_positions(iid)


class ScriptedOrders(Strategy):
    """bench_core's scripted session: its orders (market, or limit resting until the book reaches them), each
    submitted at the first trade of its symbol at or after its time, as papertape's scripted strategy places them
    at the first tick at or after it."""

    def __init__(self, orders: list[dict[str, Any]], instruments: dict[str, CryptoPerpetual]) -> None:
        super().__init__(StrategyConfig(strategy_id="Scripted-000"))
        self.symbols = sorted({o["symbol"] for o in orders})
        self.orders = [(o["at"] * 1_000_000, instruments[o["symbol"]], SIDE[o["side"]], o)
                       for o in sorted(orders, key=lambda o: o["at"])]
        self.next = 0

    def on_start(self) -> None:
        for sym in self.symbols:
            self.subscribe_trade_ticks(InstrumentId(Symbol(sym), VENUE))

    def on_trade_tick(self, tick: TradeTick) -> None:
        while self.next < len(self.orders) and self.orders[self.next][0] <= tick.ts_event:
            _, inst, side, o = self.orders[self.next]
            self.next += 1
            qty = inst.make_qty(Decimal(o["qty"]))
            if o.get("type") == "limit":
                order = self.order_factory.limit(inst.id, side, qty, inst.make_price(Decimal(o["price"])))
            else:
                order = self.order_factory.market(inst.id, side, qty)
            self.submit_order(order)


def new_nautilus(instruments: dict[str, CryptoPerpetual], data: dict[tuple[type, str], list[Any]],
                 sessions: list[SessionConfig], verbose: bool) -> BacktestEngine:
    logging = LoggingConfig(log_level="WARNING") if verbose else LoggingConfig(bypass_logging=True)
    engine = BacktestEngine(BacktestEngineConfig(trader_id="PEER-001", logging=logging, run_analysis=False))
    # Resting orders fill when the book reaches them. (trade_execution=True, trades filling them too as papertape's
    # do, logs "no fills from book when fills were expected" with an L2 book in 1.221 and retries: the same fills.)
    book_type = BookType.L2_MBP if any(t is OrderBookDeltas for t, _ in data) else BookType.L1_MBP
    engine.add_venue(VENUE, OmsType.NETTING, AccountType.MARGIN, [Money(1_000_000, USDT)], base_currency=USDT,
                     book_type=book_type)
    for inst in instruments.values():
        engine.add_instrument(inst)
    for objects in data.values():
        engine.add_data(objects)
    for c in sessions:
        if c.strategy == "ema_cross":
            p = c.params
            engine.add_strategy(EmaCross(EmaCrossConfig(
                strategy_id=f"EmaCross-{c.id}", symbols=tuple(instruments), fast=p["fast"], slow=p["slow"],
                bar_seconds=p["bar_ms"] // 1000)))
        elif c.strategy == "scripted":
            engine.add_strategy(ScriptedOrders(c.params["orders"], instruments))
    return engine


def run_papertape(mps: list[MarketPartition], engines: list[Engine], batches: list[tuple[int, s.MarketBatch]]
                  ) -> Counter[str]:
    """bench_core's chained run, counting its orders (the ids of its order events), fills and decisions."""
    out: Counter[str] = Counter()
    orders = set()
    for m in chained(mps, engines, batches):
        if isinstance(m, s.OrderEvent):
            orders.add(m.order_id)
        elif isinstance(m, s.Fill):
            out["fills"] += 1
        elif isinstance(m, s.Decision):
            out["decisions"] += 1
    out["orders"] = len(orders)
    return out


def ran(engine: BacktestEngine) -> BacktestEngine:
    """What is timed of NautilusTrader (its start and stop included: about 0.1 s); the engine, for its counts."""
    engine.run()
    return engine


def nautilus_counts(engine: BacktestEngine) -> Counter[str]:
    out: Counter[str] = Counter()
    for order in engine.cache.orders():
        out["orders"] += 1
        out["open at the end"] += order.is_open
        for e in order.events:
            out["fills"] += isinstance(e, OrderFilled)
            out["denied or rejected"] += isinstance(e, OrderDenied | OrderRejected)
    return out


def main(n_sessions: int, engine_partitions: int, repeat: int, limit: int | None, verbose: bool) -> None:
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; one process, one thread; "
          f"papertape's {native.status()}; NautilusTrader {nautilus_trader.__version__}")
    batches = [(p, s.decode("md.events", v)) for p, v in md_messages(load_tape(limit))]
    frames = [f for _, b in batches for f in b.frames]
    n = len(frames)
    sessions = ema_sessions(n_sessions) + [scripted_session(frames)]

    started = time.perf_counter()
    specs, precision = Settings().instrument_map(), tape_size_precision(frames)
    instruments = {sym: perpetual(specs[sym], max(decimals(specs[sym].lot_step), precision[sym]), FeeSchedule())
                   for sym in sorted(precision)}
    data = to_nautilus(frames, instruments)
    per_type = Counter({t.__name__: 0 for t in (TradeTick, QuoteTick, OrderBookDeltas)})
    for (t, _), objects in data.items():
        per_type[t.__name__] += len(objects)
    print(f"tape: {n} frames; {n_sessions} EMA-cross sessions + 1 scripted ({len(sessions[-1].params['orders'])} "
          f"orders); as NautilusTrader data: {', '.join(f'{v} {k}' for k, v in per_type.items())} "
          f"(converted in {time.perf_counter() - started:.1f} s, off the clock)")

    gc.freeze()  # the tape and its converted copy are the bench's, not the engines': keep them out of the GC's scans
    ours_s = theirs_s = float("inf")
    ours: Counter[str] = Counter()
    theirs: Counter[str] = Counter()
    for _ in range(repeat):  # the sides take turns, so a busy spell of the shared machine is less likely to hit one
        ours, took = timed(run_papertape, lambda: new_market(sessions, engine_partitions),
                           lambda: new_engines(sessions, engine_partitions), batches)
        ours_s = min(ours_s, took)
        engine, took = timed(ran, lambda: new_nautilus(instruments, data, sessions, verbose))  # run() alone timed
        theirs_s = min(theirs_s, took)
        theirs = nautilus_counts(engine)
        engine.dispose()
    print(f"papertape core, chained:     {n / ours_s:>10,.0f} events/s  ({ours_s:.2f} s)  orders {ours['orders']}, "
          f"fills {ours['fills']}, decisions {ours['decisions']}  [{engine_partitions} engine partitions]")
    print(f"NautilusTrader engine.run(): {n / theirs_s:>10,.0f} events/s  ({theirs_s:.2f} s)  "
          + ", ".join(f"{k} {v}" for k, v in theirs.items()))
    print(f"papertape / NautilusTrader: {theirs_s / ours_s:.2f}x  (target >= 2x; best of {repeat} runs each, "
          f"taking turns)")
    assert ours["fills"] > 0 and theirs["fills"] > 0, "no fills: matching and accounting did not run"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=4, help="EMA-cross sessions (plus one scripted)")
    ap.add_argument("--engine-partitions", type=int, default=Settings().session_partitions)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side; the best is reported")
    ap.add_argument("--limit", type=int, default=None, help="only the tape's first N frames (a quick try)")
    ap.add_argument("--verbose", action="store_true", help="NautilusTrader's warnings and errors (slower)")
    args = ap.parse_args()
    main(args.sessions, args.engine_partitions, args.repeat, args.limit, args.verbose)
