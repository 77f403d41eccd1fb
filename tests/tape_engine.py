"""The pure core over a real tape, in process: the replay source's md.events batches through the market actor's
core into one engine partition (no Kafka, no ClickHouse), for tests of sessions on real data."""
import asyncio

import schemas as s
from builders import DATA
from papertape.app.live import with_tape_instruments
from papertape.config import Settings
from papertape.core.engine import Engine
from papertape.core.market.partition import MarketPartition
from schemas.topics import kafka_partition
from streams.sources.replay import ReplaySource

DATA = DATA / "replay"
LEAN_DAY = [DATA / "cryptofuture_bybit_minute_btcusdt_20221213_trade.zip",
            DATA / "cryptofuture_bybit_minute_btcusdt_20221213_quote.zip",
            DATA / "cryptofuture_bybit_margin_interest_btcusdt.csv"]
LEAN_START = 1670889600000  # 2022-12-13 00:00 UTC


def tick_batches(tape=LEAN_DAY) -> tuple[dict, list[s.TickBatch]]:
    """(instruments, every TickBatch the market actor makes of the tape)."""
    instruments = with_tape_instruments(Settings(replay=list(tape))).instrument_map()
    sent: list[bytes] = []

    async def send(topic, key, value, partition):
        sent.append(value)

    asyncio.run(ReplaySource(list(tape), send, 1, kafka_partition).run())
    market = MarketPartition(0, instruments, 1)
    batches: list[s.TickBatch] = []
    for offset, value in enumerate(sent):
        market.on_message(s.decode("md.events", value), offset)
        batches += [b for _, bs in market.flush()[0] for b in bs]
    return instruments, batches


def play(engine: Engine, batches, controls=None) -> list:
    """Every output of `engine` fed `batches`; `controls` maps a batch index to control messages applied before it."""
    out: list = []
    for i, batch in enumerate(batches):
        for ctrl in (controls or {}).get(i, []):
            out += engine.on_control(ctrl)
        out += engine.on_ticks(batch)
    return out
