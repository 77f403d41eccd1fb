"""An external producer: sends a signal, a limit order with a stop-loss/take-profit bracket, and a cancel of that
order into one session. Copy it and put your own model where the messages are made.

    .venv/bin/python examples/producer.py SESSION [--symbol BTCUSDT] [--price 60000] [--qty 0.002] [--ts MS]

The broker is the one of the run in progress (its data directory's run.json), else KAFKA_BOOTSTRAP.

Event time: an input meets the market at max(its ts, the session's event time) + the session's latency. The
default `--ts` (now) is right for a live run; when a tape is replaying, pass `--ts 0` so the messages apply at
the session's current event time instead of waiting for the tape to reach today.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

from aiokafka import AIOKafkaProducer

from infra.sql_endpoint import running
from schemas import CancelOrder, Order, Signal, encode


def broker(data_dir: Path) -> tuple[str, str]:
    """The broker and the topics' namespace (their name prefix) of the run in progress, else the environment's."""
    info = running(data_dir) or {}  # run.json of `papertape run`, if that process is alive
    servers = info.get("bootstrap") or os.environ.get("KAFKA_BOOTSTRAP")
    if not servers:
        sys.exit(f"no run in progress in {data_dir} and KAFKA_BOOTSTRAP is not set")
    return servers, info.get("namespace", os.environ.get("PAPERTAPE_NAMESPACE", ""))


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("session")
    p.add_argument("--symbol", default="BTCUSDT")
    p.add_argument("--price", type=Decimal, default=Decimal("60000"), help="limit price, on the symbol's tick")
    p.add_argument("--qty", type=Decimal, default=Decimal("0.002"), help="on the symbol's lot step")
    p.add_argument("--ts", type=int, default=int(time.time() * 1000), help="event time, ms (default: now)")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("PAPERTAPE_DATA", "papertape-data")))
    args = p.parse_args()

    tag = uuid.uuid4().hex[:8]  # ids must be unique per session: a run of this script makes its own
    common = {"ts": args.ts, "session": args.session}

    # A view: hold a long BTCUSDT position. The session sizes it (its intel level, position_fraction), checks it
    # (min_confidence, risk limits, circuit breakers) and logs a decision either way.
    signal = Signal(id=f"sig-{tag}", symbol=args.symbol, target="long", confidence=0.8, strategy="my-model",
                    reasoning="breakout above the 4 h range", **common)

    # An order, as given (no sizing): a limit buy with a bracket. Once the entry fills, the venue places a
    # reduce-only stop-market at stop_loss and take-profit-market at take_profit, one cancelling the other.
    stop_loss = (args.price * Decimal("0.98")).quantize(args.price)  # as many decimals as the price: on its tick
    take_profit = (args.price * Decimal("1.04")).quantize(args.price)
    order = Order(id=f"buy-{tag}", symbol=args.symbol, side="buy", type="limit", price=args.price, qty=args.qty,
                  tif="GTC", stop_loss=stop_loss, take_profit=take_profit, **common)

    # Cancel it by its id (if it has not filled by the time the cancel reaches the venue).
    cancel = CancelOrder(id=f"cancel-{tag}", order_id=order.id, **common)

    # Tansu (the fallback embedded broker) has no idempotent producer: turn it off.
    servers, namespace = broker(args.data_dir)
    producer = AIOKafkaProducer(bootstrap_servers=servers, enable_idempotence=False)
    await producer.start()
    try:
        # keyed by session: the engine partition that owns the session reads them; the order and its cancel share
        # a partition of `orders`, so the cancel is read after the order
        key = args.session.encode()
        await producer.send_and_wait(namespace + "signals", encode(signal), key=key)
        await producer.send_and_wait(namespace + "orders", encode(order), key=key)
        await producer.send_and_wait(namespace + "orders", encode(cancel), key=key)
    finally:
        await producer.stop()
    for m in (signal, order, cancel):
        print(m.model_dump_json())
    print(f"see them with: papertape session show {args.session}")


if __name__ == "__main__":
    asyncio.run(main())
