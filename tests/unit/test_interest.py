"""Cost follows interest (issue 20): an engine partition gets the ticks of its sessions' symbols only, and the whole
book of a symbol a session starts trading at run time as a snapshot, after which that session's results are those it
would have had on a partition that got the symbol's every tick all along.

The market actor's core and the engine partitions are wired here as a worker wires them (md.interest included), on
the first minute of the bundled Binance USD-M tape (real BTCUSDT and ETHUSDT depth, trades and quotes)."""
import asyncio
from decimal import Decimal

import orjson
import pytest

import schemas as s
from papertape.config import BUNDLED_TAPE, Settings
from papertape.core.engine import ASK_AGAIN_MS, Engine, symbols_traded
from papertape.core.market.partition import MarketPartition, is_snapshot
from papertape.core.session.config import SessionConfig
from papertape.core.session.risk import RiskSettings
from schemas.topics import kafka_partition
from streams.sources.replay import ReplaySource

INSTRUMENTS = Settings().instrument_map()
EMA = {"fast": 3, "slow": 8, "bar_ms": 2_000, "full_confidence_bps": 1.0}
TREND_BTC = SessionConfig(id="trend-btc", strategy="ema_cross", symbols=["BTCUSDT"], params=EMA)
TREND_ETH = SessionConfig(id="trend-eth", strategy="ema_cross", symbols=["ETHUSDT"], params=EMA)
BYSTANDER = SessionConfig(id="bystander", strategy="scripted", symbols=["BTCUSDT"], params={"orders": []})
START_AT = 40  # the md.events message after which the late session is started


@pytest.fixture(scope="module")
def tape() -> list[s.MarketBatch]:
    sent: list[bytes] = []

    async def send(topic, key, value, partition):
        sent.append(value)

    asyncio.run(ReplaySource(list(BUNDLED_TAPE), send, 1, kafka_partition, max_seconds=60).run())
    return [s.decode("md.events", v) for v in sent]


def late_session(tape: list[s.MarketBatch]) -> SessionConfig:
    """Market orders big enough to walk BTCUSDT's book, and resting limits near the touch, all after the start."""
    frames = [f for b in tape[START_AT + 2:] for f in b.frames if f.symbol == "BTCUSDT" and f.trades]
    orders = []
    for n, f in enumerate(frames[::len(frames) // 12][:12]):
        side = ("buy", "sell")[n % 2]
        price = Decimal(f.trades[-1].price) + (-1 if side == "buy" else 1)
        orders.append({"at": f.ts, "symbol": "BTCUSDT", "side": side, "qty": "4", "type": "market"} if n % 3 == 0
                      else {"at": f.ts, "symbol": "BTCUSDT", "side": side, "qty": "0.5", "type": "limit",
                            "price": str(price)})
    return SessionConfig(id="late", strategy="scripted", symbols=["BTCUSDT"], params={"orders": orders},
                         risk=RiskSettings.off(), balance=Decimal(10_000_000))


class Worker:
    """A market partition and the engine partitions, in process: ticks routed as the market agent routes them (or to
    every engine partition, `broadcast`), md.interest fed back to the market actor."""

    def __init__(self, sessions: list[list[SessionConfig]], broadcast: bool = False) -> None:
        interest = [set(INSTRUMENTS) if broadcast else symbols_traded(c, INSTRUMENTS) for c in sessions]
        self.market = MarketPartition(0, INSTRUMENTS, 1, None, interest)
        self.engines = [Engine(e, 1, INSTRUMENTS, c) for e, c in enumerate(sessions)]
        self.out: list[list[s.Message]] = [[] for _ in sessions]
        self.received: list[list[s.Tick]] = [[] for _ in sessions]
        self.interest_offset = 0
        self.lose_snapshots = False  # a restarted market actor's snapshot, dropped as seen by the engine

    def play(self, tape: list[s.MarketBatch], inputs: dict[int, list[tuple[int, object]]] | None = None,
             pause_at: int | None = None) -> int:
        """Feeds md.events messages from `pause_at` on (up to the end); `inputs`: engine inputs after a message."""
        for offset in range(self.market.last_offset + 1, len(tape) if pause_at is None else pause_at):
            self.market.on_message(tape[offset], offset)
            for e, item in (inputs or {}).get(offset, []):
                self.take(e, self.engines[e].on_external(item))
            self.flush()
        return self.market.last_offset

    def take(self, e: int, msgs: list[s.Message]) -> None:
        self.out[e] += msgs
        for m in msgs:
            if isinstance(m, s.Interest):
                assert self.market.on_interest(m, self.interest_offset) == ""
                self.interest_offset += 1

    def flush(self) -> None:
        routes, _ = self.market.flush()
        for engines, batches in routes:
            for batch in batches:
                for e in engines:
                    if self.lose_snapshots and any(is_snapshot(t.pos) for t in batch.ticks):
                        batch = batch.model_copy(update={"ticks": [t for t in batch.ticks if not is_snapshot(t.pos)]})
                    self.received[e] += batch.ticks
                    self.take(e, self.engines[e].on_ticks(batch))


def session_output(out: list[s.Message], session: str, kinds=("fill", "order_event", "position", "decision")):
    return [m.model_dump_json() for m in out if getattr(m, "session", None) == session and m.kind in kinds]


def levels(engine: Engine, symbol: str):
    book = engine.books[symbol]
    return (book.bids, book.asks, book.bid, book.ask, book.bid_qty, book.ask_qty, book.last, book.synced)


def test_each_engine_partition_gets_the_ticks_of_its_sessions_symbols_only(tape):
    routed = Worker([[TREND_BTC], [TREND_ETH], []])
    routed.play(tape)
    assert {t.symbol for t in routed.received[0]} == {"BTCUSDT"}
    assert {t.symbol for t in routed.received[1]} == {"ETHUSDT"}
    assert routed.received[2] == [] and routed.engines[2].merger.ended  # watermarks only, and the tape's end
    frames = [f for b in tape for f in b.frames]
    for e, sym in ((0, "BTCUSDT"), (1, "ETHUSDT")):
        assert len(routed.received[e]) == sum(f.symbol == sym for f in frames)


def test_a_session_does_the_same_whether_its_partition_gets_every_tick_or_its_own_symbols(tape):
    """What a session does cannot depend on the ticks of symbols it does not trade."""
    routed, everything = Worker([[TREND_BTC, TREND_ETH]], broadcast=False), Worker([[TREND_BTC], [TREND_ETH]],
                                                                                  broadcast=True)
    alone = Worker([[TREND_BTC], [TREND_ETH]])
    routed.play(tape), everything.play(tape), alone.play(tape)
    for sid, e in (("trend-btc", 0), ("trend-eth", 1)):
        # a session's "started" status is at its partition's first tick: the one thing that may differ
        kinds = ("fill", "order_event", "position", "decision", "equity")
        expected = session_output(everything.out[e], sid, kinds)
        assert any('"kind":"fill"' in m for m in expected)
        assert session_output(alone.out[e], sid, kinds) == expected
        assert session_output(routed.out[0], sid, kinds) == expected


def start(cfg: SessionConfig) -> s.Control:
    return s.Control(id=f"start-{cfg.id}", ts=0, session=cfg.id, command="start", config=cfg.model_dump(mode="json"))


def test_a_session_started_at_run_time_on_a_new_symbol_trades_on_its_whole_book(tape):
    """The partition did not get BTCUSDT: the start asks for it, and its book comes as a snapshot after message
    START_AT, then its ticks. The session's results equal those on a partition that had BTCUSDT's every tick all
    along, started at the same point (its orders meet the market after the snapshot)."""
    late = late_session(tape)
    ts_next = tape[START_AT + 1].frames[0].ts
    order = s.Order(id="o1", ts=ts_next + 1500, session="late", symbol="BTCUSDT", side="buy", type="market",
                    qty=Decimal("3"))
    inputs = {START_AT: [(0, start(late)), (0, order)]}
    fresh = Worker([[TREND_ETH]])
    fresh.play(tape, inputs)
    asked = [m for m in fresh.out[0] if isinstance(m, s.Interest)]
    assert [(m.symbol, m.engine_partition) for m in asked] == [("BTCUSDT", 0)]
    snapshots = [t for t in fresh.received[0] if t.symbol == "BTCUSDT" and is_snapshot(t.pos)]
    assert len(snapshots) == 1 and snapshots[0].depth[0] and snapshots[0].depth[1]  # both sides of a real book
    first_btc = next(t for t in fresh.received[0] if t.symbol == "BTCUSDT")
    assert first_btc is snapshots[0]  # nothing of BTCUSDT before its book
    assert snapshots[0].ts == tape[START_AT].wm  # the market actor's event time when it read the interest

    there = Worker([[TREND_ETH, BYSTANDER]])
    there.play(tape, inputs)
    kinds = ("fill", "order_event", "position", "decision", "equity", "session")
    expected = session_output(there.out[0], "late", kinds)
    assert sum('"kind":"fill"' in m for m in expected) >= 8 and any('o1' in m for m in expected)
    assert session_output(fresh.out[0], "late", kinds) == expected
    assert levels(fresh.engines[0], "BTCUSDT") == levels(there.engines[0], "BTCUSDT")
    assert session_output(fresh.out[0], "trend-eth") == session_output(there.out[0], "trend-eth")


def test_a_start_waiting_for_its_book_survives_restarts_of_both_actors(tape):
    """The engine saved after asking; the market actor crashed after reading the interest, before sending the book:
    restarted from their checkpoints (the market's from before it), the results are the same."""
    late = late_session(tape)
    inputs = {START_AT: [(0, start(late))]}
    whole = Worker([[TREND_ETH]])
    whole.play(tape, inputs)

    first = Worker([[TREND_ETH]])
    first.play(tape, pause_at=START_AT)
    saved_market = orjson.loads(orjson.dumps(first.market.to_dict()))
    first.market.on_message(tape[START_AT], START_AT)
    first.take(0, first.engines[0].on_external(start(late)))  # the interest goes out; the market dies with it
    saved_engine = orjson.loads(orjson.dumps(first.engines[0].to_dict(), default=list))
    assert list(saved_engine["asked"]) == ["BTCUSDT"]

    again = Worker([[TREND_ETH]])
    again.market.load(saved_market)
    again.engines[0].load(saved_engine)
    again.market.on_message(tape[START_AT], START_AT)  # read again, and the interest after it
    again.take(0, [m for m in first.out[0] if isinstance(m, s.Interest)])
    again.flush()
    again.play(tape)
    assert session_output(first.out[0] + again.out[0], "late") == session_output(whole.out[0], "late")
    assert any('"kind":"fill"' in m for m in session_output(whole.out[0], "late"))


def test_an_engine_whose_snapshot_was_lost_asks_again_and_trades_only_on_the_whole_book(tape):
    late = late_session(tape)
    lossy = Worker([[TREND_ETH]])
    lossy.lose_snapshots = True
    lossy.play(tape, {START_AT: [(0, start(late))]}, pause_at=START_AT + 20)
    assert [t for t in lossy.received[0] if t.symbol == "BTCUSDT"]  # the market sends them: the engine drops them
    assert "BTCUSDT" not in lossy.engines[0].books
    asked = [m for m in lossy.out[0] if isinstance(m, s.Interest)]
    assert len(asked) >= 2 and all(b.ts - a.ts >= ASK_AGAIN_MS for a, b in zip(asked, asked[1:]))  # not a flood
    early = [m for m in lossy.out[0] if getattr(m, "session", None) == "late" and m.kind in ("fill", "order_event")]
    assert early == []  # its strategy has seen nothing of BTCUSDT yet: nothing traded on a partial book
    lossy.lose_snapshots = False
    lossy.play(tape)
    reference = Worker([[TREND_ETH, BYSTANDER]])
    reference.play(tape)
    assert levels(lossy.engines[0], "BTCUSDT") == levels(reference.engines[0], "BTCUSDT")
    assert any(m.kind == "fill" and m.session == "late" for m in lossy.out[0])


def test_the_market_refuses_an_interest_it_cannot_serve():
    mp = MarketPartition(0, INSTRUMENTS, 2, None, [set(), set()])
    other = next(sym for sym in INSTRUMENTS if kafka_partition(sym.encode(), 2) == 1)
    assert "does not exist" in mp.on_interest(s.Interest(id="i", ts=1, symbol="BTCUSDT", engine_partition=5), 0)
    assert "not a symbol of md.events partition 0" in mp.on_interest(
        s.Interest(id="i", ts=1, symbol=other, engine_partition=0), 1)
    assert mp.interest_offset == 1 and mp.interest == [set(), set()]


def test_a_session_widened_at_run_time_trades_its_new_symbol_from_its_book(tape):
    """A reconfigure adding BTCUSDT applies at once (answering its control) and asks for the symbol; the session goes
    on with ETHUSDT, and trades BTCUSDT on its book from the snapshot on."""
    widen = s.Control(id="widen", ts=0, session="trend-eth", command="config",
                      config={"symbols": ["ETHUSDT", "BTCUSDT"]})
    order = s.Order(id="o2", ts=tape[START_AT + 1].frames[0].ts + 1500, session="trend-eth", symbol="BTCUSDT",
                    side="buy", type="market", qty=Decimal("0.01"))
    worker = Worker([[TREND_ETH]])
    worker.play(tape, {START_AT: [(0, widen), (0, order)]})
    snapshot = next(t for t in worker.received[0] if t.symbol == "BTCUSDT")
    assert is_snapshot(snapshot.pos)
    (status,) = [m for m in worker.out[0] if m.kind == "session" and m.control == "widen"]
    assert status.event == "reconfigured: symbols" and status.ts <= snapshot.ts
    fills = [m for m in worker.out[0] if getattr(m, "session", None) == "trend-eth" and m.kind == "fill"]
    assert {"ETHUSDT", "BTCUSDT"} <= {f.symbol for f in fills}
    assert min(f.ts for f in fills if f.symbol == "BTCUSDT") >= snapshot.ts


def test_a_session_started_on_a_partition_without_ticks_announces_itself_at_its_book(tape):
    """Engine partition 1 has no session, so no tick, and no event time of its own: the start answers (its control
    named) when the book it asked for comes, at the snapshot's event time, and the session trades from there."""
    late = late_session(tape)
    worker = Worker([[TREND_ETH], []])
    worker.play(tape, {START_AT: [(1, start(late))]})
    snapshot = next(t for t in worker.received[1] if t.symbol == "BTCUSDT")
    (started,) = [m for m in worker.out[1] if m.kind == "session" and m.event == "started"]
    assert is_snapshot(snapshot.pos) and (started.control, started.ts) == ("start-late", snapshot.ts)
    assert any(m.kind == "fill" for m in worker.out[1])
