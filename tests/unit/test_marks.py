"""md.marks is conflated in event time: per symbol, its prices at the end of each second in which it had a frame,
the same however the tape is cut into batches and flushes, and across a restore from a checkpoint."""
from __future__ import annotations

import json
import random
from decimal import Decimal

from papertape.core.instruments import DEFAULT_INSTRUMENTS
from papertape.core.market.partition import MarketPartition
from schemas import MarketBatch, MarketFrame

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def tape(seed: int = 7, n: int = 400) -> list[MarketFrame]:
    """Quotes of two symbols over a few minutes of event time, in order, some seconds without a frame."""
    rng = random.Random(seed)
    ts, frames = 0, []
    for i in range(n):
        ts += rng.choice([0, 1, 7, 60, 60, 120, 2500])
        bid = Decimal(1000 + rng.randint(0, 50)) / 10
        frames.append(MarketFrame(id=f"f{i}", ts=ts, venue="t", symbol=rng.choice(SYMBOLS), recv_ts=0,
                                  bid=str(bid), ask=str(bid + Decimal(rng.randint(1, 5)) / 10)))
    return frames


def expected(frames: list[MarketFrame]) -> dict[str, tuple[int, Decimal]]:
    """By hand: the last frame of each (symbol, second) and its mid."""
    last: dict[tuple[str, int], MarketFrame] = {}
    for f in frames:
        last[(f.symbol, f.ts // 1000)] = f
    return {f"mark:{f.symbol}:{f.ts}": (f.ts, (Decimal(f.bid) + Decimal(f.ask)) / 2) for f in last.values()}


def run(frames: list[MarketFrame], cuts: list[int], restore_at: int | None = None) -> dict[str, tuple[int, Decimal]]:
    """The frames in batches ending at `cuts`, each batch's watermark its last frame's time, flushed after each;
    the last batch ends the tape. With `restore_at`, the partition is checkpointed and restored after that batch."""
    mp = MarketPartition(0, DEFAULT_INSTRUMENTS, 1)
    marks: dict[str, tuple[int, Decimal]] = {}
    bounds = [0, *cuts, len(frames)]
    for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
        if a == b:
            continue
        end = b == len(frames)
        mp.on_message(MarketBatch(id=f"b{k}", ts=frames[b - 1].ts, origin="t", wm=frames[b - 1].ts, end=end,
                                  frames=frames[a:b]), k)
        for m in mp.flush()[1]:
            assert m.id not in marks, f"{m.id} twice"
            marks[m.id] = (m.ts, Decimal(m.mark))
        if k == restore_at:
            restored = MarketPartition(0, DEFAULT_INSTRUMENTS, 1)
            restored.load(json.loads(json.dumps(mp.to_dict())))
            mp = restored
    return marks


def test_a_mark_per_symbol_and_second_at_the_seconds_end_however_the_batches_fall():
    frames = tape()
    want = expected(frames)
    assert len(want) < len(frames) / 2  # it does conflate
    rng = random.Random(1)
    for cuts in ([], list(range(1, len(frames))), sorted(rng.sample(range(1, len(frames)), 40)),
                 sorted(rng.sample(range(1, len(frames)), 5))):
        assert run(frames, cuts) == want


def test_marks_survive_a_restore_from_a_checkpoint():
    frames = tape(seed=3)
    cuts = sorted(random.Random(2).sample(range(1, len(frames)), 30))
    for at in (0, 7, 15, 29):
        assert run(frames, cuts, restore_at=at) == expected(frames)


def test_a_quiet_symbols_mark_comes_when_the_watermark_passes_its_second():
    mp = MarketPartition(0, DEFAULT_INSTRUMENTS, 1)
    mp.on_message(MarketBatch(id="a", ts=1500, origin="t", wm=1500, frames=[
        MarketFrame(id="f", ts=1500, venue="t", symbol="BTCUSDT", recv_ts=0, bid="10", ask="12")]), 0)
    assert mp.flush()[1] == []
    mp.on_message(MarketBatch(id="b", ts=1999, origin="t", wm=1999), 1)
    assert mp.flush()[1] == []
    mp.on_message(MarketBatch(id="c", ts=2000, origin="t", wm=2000), 2)
    assert [(m.id, m.mark) for m in mp.flush()[1]] == [("mark:BTCUSDT:1500", "11")]
