"""The market actor -> engine path on the bundled real tape (Binance USD-M BTCUSDT + ETHUSDT depth diffs, trades
and best bid/ask): what the engine rebuilds from md.ticks is the market actor's own book, and a tick batch's
fast JSON is pydantic's, byte for byte."""
import warnings

import orjson
import pytest

import schemas as s
from agents.engine import decode as engine_decode
from papertape.config import BUNDLED_TAPE
from papertape.core.engine import batch_of
from papertape.core.instruments import DEFAULT_INSTRUMENTS
from papertape.core.market.book import MAX_LEVELS, Book
from papertape.core.market.partition import MarketPartition
from streams.sources.replay import Tape

pytestmark = pytest.mark.slow  # the whole bundled tape through the market actor

FRAMES_PER_BATCH = 100


@pytest.fixture(scope="module")
def market_run():
    """Every tick batch of one market partition over the whole tape, with a copy of each symbol's book taken
    after every batch (levels as the market actor holds them)."""
    mp = MarketPartition(0, DEFAULT_INSTRUMENTS, 1)
    frames = list(Tape(BUNDLED_TAPE))
    out = []
    for i in range(0, len(frames), FRAMES_PER_BATCH):
        chunk = frames[i:i + FRAMES_PER_BATCH]
        batch = s.MarketBatch(id=f"b{i}", ts=chunk[-1].ts, origin="replay", wm=chunk[-1].ts, frames=chunk)
        assert mp.on_message(batch, i // FRAMES_PER_BATCH) == []
        books = {sym: (dict(b.bids), dict(b.asks)) for sym, b in mp.books.items()}
        out += [(tb, books) for _, tbs in mp.flush()[0] for tb in tbs]
    return out


def test_engine_books_are_the_market_actors_books_trims_included(market_run):
    books: dict[str, Book] = {}
    changes = 0  # level changes the ticks carried
    for i, (tb, market_books) in enumerate(market_run):
        for t in tb.ticks:
            books.setdefault(t.symbol, Book()).apply_tick(t)
        changes += sum(len(t.depth[0]) + len(t.depth[1]) for t in tb.ticks if t.depth)
        if i % 7 == 0 or i == len(market_run) - 1:  # reading a lazy book applies what it queued
            for sym, (bids, asks) in market_books.items():
                assert (books[sym].bids, books[sym].asks) == (bids, asks), f"batch {i} {sym}"
    frame_levels = sum(len(f.bids) + len(f.asks) for f in Tape(BUNDLED_TAPE))
    assert changes > frame_levels  # the diff feed grows books past MAX_LEVELS: the trims reached the engine
    assert max(len(b.bids) for b in books.values()) <= MAX_LEVELS * 5 // 4


def test_unread_engine_books_settle_to_the_same_levels(market_run):
    """A book read only at the end (queued changes applied in bulk, now and then unasked) equals one read after
    every tick."""
    lazy: dict[str, Book] = {}
    eager: dict[str, Book] = {}
    for tb, _ in market_run:
        for t in tb.ticks:
            lazy.setdefault(t.symbol, Book()).apply_tick(t)
            b = eager.setdefault(t.symbol, Book())
            b.apply_tick(t)
            b.bids, b.asks  # noqa: B018  (a read settles the queue)
    for sym in eager:
        assert lazy[sym].bids == eager[sym].bids and lazy[sym].asks == eager[sym].asks
        saved = Book.from_dict(orjson.loads(orjson.dumps(lazy[sym].to_dict())))  # through a checkpoint's JSON
        assert (saved.bids, saved.asks) == (eager[sym].bids, eager[sym].asks)
        assert all(type(k) is float for k in saved.bids)
        old = {**lazy[sym].to_dict(), "bids": [[repr(k), q] for k, q in eager[sym].bids.items()],
               "asks": [[repr(k), q] for k, q in eager[sym].asks.items()]}
        del old["levels"]  # a checkpoint written before levels were saved as columns still loads
        assert Book.from_dict(old).asks == eager[sym].asks


def test_tick_batch_json_is_pydantics_and_decodes_back(market_run):
    for tb, _ in market_run[::5]:
        fast = s.encode(tb)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydantic warns that levels are lists, not tuples: same JSON
            assert fast == tb.model_dump_json().encode()
        back = batch_of(orjson.loads(fast))  # the engine's fast path
        assert orjson.dumps(back.ticks, default=list) == orjson.dumps(tb.ticks, default=list)
        checked = s.decode("md.ticks", fast)  # the schema accepts it
        assert orjson.dumps(checked.ticks, default=list) == orjson.dumps(back.ticks, default=list)
        assert engine_decode("md.ticks", fast) is engine_decode("md.ticks", fast)  # decoded once per worker
